"""Token log-probabilities in the OpenAI API's two shapes.

Chat completions: ``{"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}], "refusal"}``.
Completions (the legacy shape): ``{"tokens", "token_logprobs", "top_logprobs", "text_offset"}``,
where ``echo`` puts the prompt's tokens first (the first one's logprob is null: nothing predicts it).
The log-probabilities are the model's own distribution (before penalties and temperature), as vLLM
reports them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .engines.base import TokenLogprob

__all__ = ["chat_logprobs", "completion_logprobs"]

TokenBytes = Callable[[int], bytes]


def _text(piece: bytes) -> str:
    return piece.decode("utf-8", errors="replace")


def chat_logprobs(entries: Sequence[TokenLogprob], token_bytes: TokenBytes) -> dict:
    def one(tok: int, lp: float) -> dict:
        b = token_bytes(tok)
        return {"token": _text(b), "logprob": lp, "bytes": list(b)}

    return {"content": [{**one(e.token_id, e.logprob), "top_logprobs": [one(t, lp) for t, lp in e.top]}
                        for e in entries], "refusal": None}


def completion_logprobs(entries: Sequence[TokenLogprob | None], token_ids: Sequence[int], token_bytes: TokenBytes,
                        top: int, offset: int = 0) -> dict:
    """``entries`` line up with ``token_ids`` (None: a token nothing predicts); ``offset`` is where
    the first token starts in the choice's text."""
    tokens, logprobs, tops, offsets = [], [], [], []
    for tok, e in zip(token_ids, entries):
        text = _text(token_bytes(tok))
        tokens.append(text)
        offsets.append(offset)
        offset += len(text)
        logprobs.append(None if e is None else e.logprob)
        if e is None:
            tops.append(None)
        else:  # the ``top`` likeliest and, as OpenAI does, always the chosen token
            alts: dict[str, float] = {}
            for t, lp in e.top[:top]:
                alts.setdefault(_text(token_bytes(t)), lp)
            alts.setdefault(text, e.logprob)
            tops.append(alts)
    return {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops, "text_offset": offsets}
