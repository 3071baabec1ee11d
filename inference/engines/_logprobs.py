"""Token log-probabilities from a logits row: what the sampler records for ``logprobs`` and what
``Engine.prompt_logprobs`` gives for each prompt position."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TokenLogprob", "logprobs_of"]


@dataclass(frozen=True)
class TokenLogprob:
    """One token's log-probability under the model and its likeliest alternatives (id, logprob)."""
    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


def logprobs_of(logits: np.ndarray, tok: int, top: int) -> TokenLogprob:
    """The log-probability of ``tok`` under ``logits`` and the ``top`` most likely tokens'."""
    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    m = x.max()
    lse = m + np.log(np.exp(x - m).sum())
    alternatives: tuple[tuple[int, float], ...] = ()
    if top > 0:
        best = np.argpartition(-x, top - 1)[:top] if top < x.shape[0] else np.arange(x.shape[0])
        best = best[np.argsort(-x[best], kind="stable")]
        alternatives = tuple((int(t), float(x[t] - lse)) for t in best)
    return TokenLogprob(tok, float(x[tok] - lse), alternatives)
