"""One exception class per failure, each carrying its HTTP status and OpenAI error type.

The server turns any of these into ``{"error": {"message", "type", "param", "code"}}`` with the
status below, so a client (the official ``openai`` package included) sees a normal API error and
the server keeps serving.
"""

from __future__ import annotations

__all__ = [
    "InferenceError",
    "InvalidRequest",
    "InvalidSteering",
    "UnknownModel",
    "UnknownVector",
    "UnknownSAE",
    "UnknownFeature",
    "LayerOutOfRange",
    "UnsupportedSteering",
    "ContextOverflow",
    "BodyTooLarge",
    "BackendUnavailable",
    "SAETrainingError",
    "EmptyCorpus",
    "SAEIncompatible",
]


class InferenceError(Exception):
    status_code = 500
    error_type = "server_error"
    code: str | None = None
    #: What a 5xx body says instead of the message (which may name paths or internals: it is logged).
    public_message = "internal server error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def to_dict(self) -> dict:
        return {"error": {"message": self.message, "type": self.error_type,
                          "param": self.param, "code": self.code}}


class InvalidRequest(InferenceError):
    """A malformed body or a sampling parameter out of range."""
    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class InvalidSteering(InvalidRequest):
    """The steering spec does not validate (bad source, NaN or huge strength, wrong shape...)."""
    code = "invalid_steering"


class LayerOutOfRange(InvalidSteering):
    code = "layer_out_of_range"


class UnsupportedSteering(InvalidSteering):
    """The spec is valid but this backend cannot do it (e.g. ``orthogonal`` on llama.cpp)."""
    code = "unsupported_steering"


class ContextOverflow(InvalidRequest):
    code = "context_length_exceeded"


class BodyTooLarge(InvalidRequest):
    """A request body over ``InferenceConfig.max_body_bytes``."""
    status_code = 413
    code = "body_too_large"


class UnknownModel(InferenceError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class UnknownVector(InferenceError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "vector_not_found"


class UnknownSAE(InferenceError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "sae_not_found"


class UnknownFeature(InferenceError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "feature_not_found"


class BackendUnavailable(InferenceError):
    """An optional backend (vLLM) or model file is not installed."""
    status_code = 503
    error_type = "server_error"
    code = "backend_unavailable"
    public_message = "this backend or model is not available on this server"


class SAETrainingError(InferenceError):
    """Training an SAE failed (bad sizes, a checkpoint that does not match the requested run)."""
    status_code = 400
    error_type = "invalid_request_error"
    code = "sae_training_failed"


class EmptyCorpus(SAETrainingError):
    """There is no text to train, index or evaluate on (no documents and no self-written corpus)."""
    code = "empty_corpus"


class SAEIncompatible(InvalidRequest):
    """An SAE does not fit the model or layer it is used with (width, layer, missing index)."""
    code = "sae_incompatible"
