"""Steered inference: llama.cpp, torch and vLLM engines with CAA and SAE-feature steering, and an
OpenAI-compatible server. Importing this package loads no model; engines load on first use.

    from inference import Inference, InferenceConfig, GenerationRequest, SamplingParams, SteeringSpec
    inf = Inference(InferenceConfig.from_env())
    spec = SteeringSpec.from_json([{"source": "caa:formal", "strength": 0.5}])
    for event in inf.engine().stream(GenerationRequest(prompt="Hi", steering=spec)):
        print(event.text, end="")

A leaf: nothing here imports the hub or the agents. The host hands over a data dir, a database
URL and (optionally) the workspace texts in an ``InferenceConfig``, and runs the inference
tables' migrations (``MIGRATIONS``, version table ``VERSION_TABLE``) or lets the library do it.
"""

from ._modelfiles import reference_texts
from .config import DocumentSource, InferenceConfig
from .engines import (Backend, Completion, Engine, FinishReason, GenerationRequest, SamplingParams,
                      StreamEvent, Usage)
from .exceptions import (BackendUnavailable, ContextOverflow, EmptyCorpus, InferenceError,
                         InvalidRequest, InvalidSteering, LayerOutOfRange, SAEIncompatible,
                         SAETrainingError, UnknownFeature, UnknownModel, UnknownSAE, UnknownVector,
                         UnsupportedSteering)
from .migrations import MIGRATIONS, VERSION_TABLE
from .registry import Inference, ModelEntry
from .sae import SAE, FeatureInfo, SAERegistry
from .steering import (MAX_STRENGTH, GGUFLayers, Method, ModelInfo, ResolvedSteering, Scope, Source, SourceKind,
                       SteeringSpec, SteeringTerm, StoredVector, VectorLibrary, read_control_vector,
                       write_control_vector)

__all__ = [
    "InferenceConfig", "DocumentSource", "MIGRATIONS", "VERSION_TABLE", "reference_texts",
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
