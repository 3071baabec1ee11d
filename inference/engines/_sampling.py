"""Token sampling from a logits vector, in numpy so every backend samples identically.

llama.cpp and transformers each have their own samplers, with different defaults and RNGs; a
spec must behave the same on every backend, so the backends hand us raw logits and we pick.

The order is llama.cpp's: penalties (repetition, frequency/presence, DRY) on the raw logits,
then temperature, top-k, top-p and min-p on the probabilities. Small models loop ("She had seen
the sea, and she had seen the sun. She had seen the stars, and she had seen the sea."): the
repetition penalty pushes down every token of the recent window, DRY (Weidmann's "don't repeat
yourself", as in llama.cpp and koboldcpp) pushes down exactly the token that would extend a
sequence already seen, growing exponentially with the length of the repeat.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ._logprobs import TokenLogprob, logprobs_of
from .base import SamplingParams

__all__ = ["sample", "dry_penalties", "logprobs_of"]


def sample(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator,
           generated: list[int], eos: Iterable[int] = (), context: Sequence[int] = (),
           record: list[TokenLogprob] | None = None) -> int:
    """``eos`` are the end-of-generation ids, masked while fewer than ``min_tokens`` are out;
    ``context`` the prompt ids (the penalty window reaches back into them, so the document is not
    copied); ``record``: where the chosen token's log-probability goes when ``params.logprobs``
    asks for it (the model's own distribution, before any penalty or temperature, as vLLM does)."""
    raw = np.asarray(logits).reshape(-1)
    x = np.array(raw, dtype=np.float64)  # a copy: the backend's buffer stays as it was
    if len(generated) < params.min_tokens:
        x[list(eos)] = -np.inf
    if params.repetition_penalty != 1.0 or params.dry_multiplier > 0:
        window = _window(context, generated, params.penalty_last_n)
        if params.repetition_penalty != 1.0 and window:
            seen = np.unique(np.asarray(window))
            seen = seen[seen < x.shape[0]]
            x[seen] = np.where(x[seen] > 0, x[seen] / params.repetition_penalty, x[seen] * params.repetition_penalty)
        if params.dry_multiplier > 0:
            for tok, penalty in dry_penalties(window, params).items():
                if tok < x.shape[0]:
                    x[tok] -= penalty
    if generated and (params.presence_penalty or params.frequency_penalty):
        counts = np.bincount(np.asarray(generated), minlength=x.shape[0])[: x.shape[0]]
        x = x - params.frequency_penalty * counts - params.presence_penalty * (counts > 0)
    if params.temperature <= 0:
        tok = int(np.argmax(x))
    else:
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
        if params.min_p > 0:
            p = np.where(p >= params.min_p * p.max(), p, 0.0)
            p /= p.sum()
        tok = int(rng.choice(p.shape[0], p=p))
    if record is not None and params.logprobs is not None:
        record.append(logprobs_of(raw, tok, params.logprobs))
    return tok


def _window(context: Sequence[int], generated: list[int], last_n: int) -> list[int]:
    if last_n <= len(generated):
        return list(generated[len(generated) - last_n:]) if last_n else []
    need = last_n - len(generated)
    return list(context[max(0, len(context) - need):]) + list(generated)


def dry_penalties(window: Sequence[int], params: SamplingParams) -> dict[int, float]:
    """DRY: for every earlier occurrence of the window's last token, the length ``n`` of the
    repeated run ending there; the token that followed it would extend the repeat, so it loses
    ``multiplier * base ** (n - allowed_length)`` (the longest run per token counts)."""
    n = len(window)
    if n < 2:
        return {}
    last = window[-1]
    longest: dict[int, int] = {}
    for i in range(n - 2, -1, -1):  # i: an earlier position holding the same token as the end
        if window[i] != last:
            continue
        length = 1
        while length <= i and window[i - length] == window[n - 1 - length]:
            length += 1
        follower = window[i + 1]
        if length > longest.get(follower, 0):
            longest[follower] = length
    return {tok: params.dry_multiplier * params.dry_base ** (length - params.dry_allowed_length)
            for tok, length in longest.items() if length >= params.dry_allowed_length}
