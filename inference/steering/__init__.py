"""Steering: the spec (what to add to the residual stream, where, how strongly), the CAA vector
library it names directions from, and llama.cpp control-vector files."""

from .gguf import GGUFLayers, confine, read_control_vector, write_control_vector
from .spec import (MAX_STRENGTH, DirectionProvider, Intervention, Method, ModelInfo, ResolvedSteering, Scope,
                   Source, SourceKind, SteeringSpec, SteeringTerm, apply_interventions, resolve)
from .strengths import CAA_GUIDE, CAA_GUIDES, StrengthGuide, guide_for, sae_guide
from .vectors import StoredVector, VectorLibrary, build_caa, shipped_vectors

__all__ = [
    "MAX_STRENGTH", "DirectionProvider", "Intervention", "Method", "ModelInfo", "ResolvedSteering", "Scope",
    "Source", "SourceKind", "SteeringSpec", "SteeringTerm", "apply_interventions", "resolve",
    "GGUFLayers", "confine", "read_control_vector", "write_control_vector",
    "StoredVector", "VectorLibrary", "build_caa", "shipped_vectors",
    "CAA_GUIDE", "CAA_GUIDES", "StrengthGuide", "guide_for", "sae_guide",
]
