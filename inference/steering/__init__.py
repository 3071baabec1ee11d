"""Steering: the spec (what to add to the residual stream, where, how strongly), the vector
library it names directions from (CAA vectors and PSR vectors, ``psr.train``), and llama.cpp
control-vector files."""

from .gguf import GGUFLayers, confine, read_control_vector, write_control_vector
from . import psr
from .psr import PSRConfig, PSRVector
from .spec import (MAX_STRENGTH, DirectionProvider, Gate, Intervention, Method, ModelInfo, ResolvedSteering, Scope,
                   Source, SourceKind, SteeringSpec, SteeringTerm, apply_interventions, gate_coefficients, resolve)
from .strengths import CAA_GUIDE, CAA_GUIDES, StrengthGuide, guide_for, sae_guide
from .vectors import StoredVector, VectorLibrary, build_caa, shipped_vectors

__all__ = [
    "MAX_STRENGTH", "DirectionProvider", "Intervention", "Method", "ModelInfo", "ResolvedSteering", "Scope",
    "Source", "SourceKind", "SteeringSpec", "SteeringTerm", "apply_interventions", "resolve",
    "Gate", "gate_coefficients", "psr", "PSRConfig", "PSRVector",
    "GGUFLayers", "confine", "read_control_vector", "write_control_vector",
    "StoredVector", "VectorLibrary", "build_caa", "shipped_vectors",
    "CAA_GUIDE", "CAA_GUIDES", "StrengthGuide", "guide_for", "sae_guide",
]
