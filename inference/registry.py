"""The models a process serves, their engines (created on first use), the vector library and SAEs.

One ``Inference`` object per process: the HTTP server holds one, a Celery worker builds its own
and calls ``engine(name).stream(request)`` in-process. Nothing is loaded until asked for. What it
needs from its host (data dir, database, workspace texts) comes in an ``InferenceConfig``.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ._modelfiles import DEFAULT_MODEL, default_gguf, model_key
from .config import InferenceConfig
from .engines import Backend, Engine, LlamaCppEngine, TorchEngine, VLLMEngine
from .exceptions import BackendUnavailable, UnknownModel
from .sae.saelens import SAERegistry
from .steering.spec import ModelInfo
from .steering.vectors import VectorLibrary

__all__ = ["Inference", "ModelEntry"]


@dataclass(frozen=True)
class ModelEntry:
    name: str  # what clients put in "model"
    path: Path  # the GGUF
    backend: Backend


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


class Inference:
    """Model name -> engine. ``<base>`` is llama.cpp, ``<base>@torch`` and ``<base>@vllm`` the others.

    The GGUF defaults to the bundled SmolLM2-135M-Instruct; ``gguf=`` (or ``TINYMORPH_GGUF``)
    serves any other GGUF instead, named after its file. ``config`` defaults to
    ``InferenceConfig.from_env()``.
    """

    def __init__(self, config: InferenceConfig | None = None, *, gguf: Path | None = None,
                 n_ctx: int = 2048, pool_size: int = 4) -> None:
        self.config = config if config is not None else InferenceConfig.from_env()
        self.data_dir = self.config.data_dir
        self.n_ctx, self.pool_size = n_ctx, pool_size
        gguf = gguf or (Path(os.environ["TINYMORPH_GGUF"]) if os.environ.get("TINYMORPH_GGUF") else None)
        self._gguf = Path(gguf) if gguf else None
        self.base_name = Path(gguf).stem.lower() if gguf else DEFAULT_MODEL
        self.saes = SAERegistry(self.data_dir / "saes", residuals=self._layer_residuals)
        self._library: VectorLibrary | None = None
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()

    # -- catalogue ------------------------------------------------------------------------------
    @property
    def gguf(self) -> Path:
        return self._gguf or default_gguf()

    def models(self) -> list[ModelEntry]:
        out = [ModelEntry(self.base_name, self.gguf, Backend.LLAMA_CPP),
               ModelEntry(f"{self.base_name}@torch", self.gguf, Backend.TORCH)]
        if vllm_available():
            out.append(ModelEntry(f"{self.base_name}@vllm", self.gguf, Backend.VLLM))
        return out

    @property
    def library(self) -> VectorLibrary:
        with self._lock:
            if self._library is None:
                self._library = VectorLibrary(self.config.database_url, residuals=self._residuals,
                                              control_vectors=self.data_dir / "control_vectors",
                                              saes=self.saes)
            return self._library

    def engine(self, name: str | None = None) -> Engine:
        name = name or self.base_name
        with self._lock:
            if name in self._engines:
                return self._engines[name]
        entry = next((m for m in self.models() if m.name == name), None)
        if entry is None:
            if name == f"{self.base_name}@vllm":
                raise BackendUnavailable("the vllm backend is not installed (pip install tinymorph[vllm])")
            raise UnknownModel(f"the model {name!r} does not exist; available: "
                               f"{', '.join(m.name for m in self.models())}", param="model")
        library = self.library
        if entry.backend is Backend.LLAMA_CPP:
            engine: Engine = LlamaCppEngine(name, entry.path, library, data_dir=self.data_dir,
                                            n_ctx=self.n_ctx, pool_size=self.pool_size)
        elif entry.backend is Backend.TORCH:
            engine = TorchEngine(name, entry.path, library, data_dir=self.data_dir, n_ctx=self.n_ctx)
        else:
            engine = VLLMEngine(name, entry.path, library, data_dir=self.data_dir, n_ctx=self.n_ctx)
        with self._lock:
            return self._engines.setdefault(name, engine)

    def torch_engine(self) -> TorchEngine:
        """The reference engine: activations, norms, SAE work."""
        return self.engine(f"{self.base_name}@torch")

    def model_info(self, name: str | None = None) -> ModelInfo:
        return self.engine(name).info

    # -- activations for the library and SAEs (always the torch reference engine) ----------------
    def _torch_for(self, model: ModelInfo):
        if model.key != model_key(self.gguf):
            raise UnknownModel(f"no configured model has key {model.key}")
        return self.torch_engine()

    def _residuals(self, model: ModelInfo):
        return self._torch_for(model).residuals

    def _layer_residuals(self, model: ModelInfo):
        engine = self._torch_for(model)
        return lambda texts, layer: [a[layer] for a in engine.residuals(texts, [layer])]
