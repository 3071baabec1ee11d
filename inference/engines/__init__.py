"""Engines: one API (``Engine.stream(GenerationRequest)``) over llama.cpp, torch and vLLM.

Importing this package loads no model and imports neither torch nor llama.cpp nor vLLM: each
engine imports its backend when it first loads.
"""

from .base import (Backend, Completion, Engine, FinishReason, GenerationRequest, RunStats, SamplingParams,
                   StreamEvent, Usage, rng_for)
from .llamacpp import LlamaCppEngine
from .torch_engine import TorchEngine, convert_gguf
from .vllm_engine import VLLMEngine

__all__ = [
    "Backend", "Completion", "Engine", "FinishReason", "GenerationRequest", "RunStats", "SamplingParams",
    "StreamEvent", "Usage", "rng_for",
    "LlamaCppEngine", "TorchEngine", "VLLMEngine", "convert_gguf",
]
