"""Token sampling from a logits vector, in numpy so every backend samples identically.

llama.cpp and transformers each have their own samplers, with different defaults and RNGs; a
spec must behave the same on every backend, so the backends hand us raw logits and we pick.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .base import SamplingParams


def sample(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator,
           generated: list[int], eos: Iterable[int] = ()) -> int:
    """``eos`` are the end-of-generation ids, masked while fewer than ``min_tokens`` are out."""
    x = np.array(logits, dtype=np.float64).reshape(-1)  # a copy: the backend's buffer stays as it was
    if len(generated) < params.min_tokens:
        x[list(eos)] = -np.inf
    if generated and (params.presence_penalty or params.frequency_penalty):
        counts = np.bincount(np.asarray(generated), minlength=x.shape[0])[: x.shape[0]]
        x = x - params.frequency_penalty * counts - params.presence_penalty * (counts > 0)
    if params.temperature <= 0:
        return int(np.argmax(x))
    x = x / params.temperature
    if 0 < params.top_k < x.shape[0]:
        kth = np.partition(x, -params.top_k)[-params.top_k]
        x = np.where(x >= kth, x, -np.inf)
    p = np.exp(x - x.max())
    p /= p.sum()
    if params.top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        keep = np.cumsum(p[order]) - p[order] < params.top_p  # smallest prefix reaching top_p
        mask = np.zeros_like(p, dtype=bool)
        mask[order[keep]] = True
        p = np.where(mask, p, 0.0)
        p /= p.sum()
    return int(rng.choice(p.shape[0], p=p))
