"""A run's per-token view: how surprising each token it wrote is to the model, and how much the
steering moved it (issue 16, requirement 7).

Scored in the worker once the run has written its text, never in the hub: the model reads the
run's prompt followed by the text the run left in the document, once with the run's steering and
once without, and each written token gets its log-probability under both
(``Engine.prompt_logprobs``, the same scoring ``echo`` answers on ``/v1``). The text scored is what
the document holds (after the participant's sentence cut), so the view explains the words a
writer sees, not a draft the cut threw away.

Stored with the run (``result["tokens"]``, answered by ``GET /api/docs/{id}/runs/{run_id}``), not
in the shared document: two floats per token would grow every peer's copy of the doc for a view
one person opens now and then.
"""

from __future__ import annotations

import codecs
import logging
from dataclasses import dataclass
from typing import Any

__all__ = ["TokenViewConfig", "score_run"]

log = logging.getLogger("tinymorph.agents.token_view")


@dataclass(frozen=True)
class TokenViewConfig:
    #: Tokens scored at most (a run writes 512 plus a few to end a sentence).
    max_tokens: int = 640
    #: Decimals kept per log-probability: the view colours by tenths of a nat.
    decimals: int = 3


def score_run(engine: Any, request: Any, text: str, config: TokenViewConfig = TokenViewConfig()) -> dict[str, Any] | None:
    """``{"tokens": [[piece, steered_logprob, base_logprob], ...], "steered": bool}`` for ``text``
    written after ``request``'s prompt; None for an empty text.

    ``base_logprob`` equals ``steered_logprob`` when the request is not steered (one pass). A piece
    is the text of one token, or of several where a character spans tokens (their log-probabilities
    summed), so the pieces joined are the scored text. Engine errors propagate: the caller decides
    that a run without a view is still a run."""
    from inference import GenerationRequest

    if not text.strip():
        return None
    prompt = engine.render_prompt(request)
    n_prompt = len(engine.tokenize(prompt))
    full = GenerationRequest(prompt=prompt + text, steering=request.steering)
    ids, steered = engine.prompt_logprobs(full)
    is_steered = bool(request.steering)
    base = engine.prompt_logprobs(GenerationRequest(prompt=prompt + text))[1] if is_steered else steered
    end = min(len(ids), n_prompt + config.max_tokens)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    tokens: list[list[Any]] = []
    lp_s = lp_b = 0.0
    for i in range(n_prompt, end):
        if steered[i] is None:  # the first position: nothing predicts it (never past the prompt)
            continue
        lp_s += steered[i].logprob
        lp_b += base[i].logprob
        piece = decoder.decode(engine.token_bytes(ids[i]))
        if piece:  # else a character continues in the next token: its log-probability carries over
            tokens.append([piece, round(lp_s, config.decimals), round(lp_b, config.decimals)])
            lp_s = lp_b = 0.0
    _trim_front(tokens, sum(len(t[0]) for t in tokens) - len(text), text)
    return {"tokens": tokens, "steered": is_steered, "truncated": len(ids) > end}


def _trim_front(tokens: list[list[Any]], extra: int, text: str) -> None:
    """Where the tokenizer merged the prompt's last characters with the text's first, the
    first pieces hold ``extra`` characters of the prompt: drop them, so the pieces are the text."""
    if extra <= 0 or not "".join(t[0] for t in tokens).endswith(text):
        return
    while extra > 0 and tokens:
        cut = min(extra, len(tokens[0][0]))
        tokens[0][0] = tokens[0][0][cut:]
        extra -= cut
        if not tokens[0][0]:
            tokens.pop(0)
