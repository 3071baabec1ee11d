"""Steered inference: llama.cpp, torch and vLLM engines with CAA and SAE-feature steering, and an
OpenAI-compatible server. Importing this package loads no model; engines load on first use.

    from inference import Inference, GenerationRequest, SamplingParams, SteeringSpec
    inf = Inference()
    spec = SteeringSpec.from_json([{"source": "caa:formal", "strength": 0.5}])
    for event in inf.engine().stream(GenerationRequest(prompt="Hi", steering=spec)):
        print(event.text, end="")
"""

from .engines import (Backend, Completion, Engine, FinishReason, GenerationRequest, SamplingParams,
                      StreamEvent, Usage)
from .exceptions import (BackendUnavailable, ContextOverflow, EmptyCorpus, InferenceError,
                         InvalidRequest, InvalidSteering, LayerOutOfRange, SAEIncompatible,
                         SAETrainingError, UnknownFeature, UnknownModel, UnknownSAE, UnknownVector,
                         UnsupportedSteering)
from .registry import Inference, ModelEntry
from .sae import SAE, FeatureInfo, SAERegistry
from .steering import (MAX_STRENGTH, Method, ModelInfo, ResolvedSteering, Scope, Source, SourceKind,
                       SteeringSpec, SteeringTerm)
from .vectors import GGUFLayers, StoredVector, VectorLibrary, read_control_vector, write_control_vector

__all__ = [
    "Backend", "Completion", "Engine", "FinishReason", "GenerationRequest", "SamplingParams",
    "StreamEvent", "Usage",
    "BackendUnavailable", "ContextOverflow", "InferenceError", "InvalidRequest", "InvalidSteering",
    "LayerOutOfRange", "UnknownFeature", "UnknownModel", "UnknownSAE", "UnknownVector",
    "UnsupportedSteering", "SAETrainingError", "EmptyCorpus", "SAEIncompatible",
    "Inference", "ModelEntry", "SAE", "FeatureInfo", "SAERegistry",
    "MAX_STRENGTH", "Method", "ModelInfo", "ResolvedSteering", "Scope", "Source", "SourceKind",
    "SteeringSpec", "SteeringTerm",
    "GGUFLayers", "StoredVector", "VectorLibrary", "read_control_vector", "write_control_vector",
]
