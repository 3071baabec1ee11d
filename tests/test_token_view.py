"""A run's per-token view (agents/token_view.py) on the real bundled model: the pieces are the
text, the numbers are the model's, the steering's effect shows only where there is steering."""

from __future__ import annotations

import math

import pytest

from agents.token_view import TokenViewConfig, score_run
from inference import GenerationRequest, SteeringSpec
from tests.inference_support import inference

pytestmark = pytest.mark.model

OPENING = "The harbour was quiet that morning. Mara walked along the pier,"
TEXT = " counting the boats that had not come back."


@pytest.fixture(scope="module")
def engine():
    return inference().engine(None)


def test_unsteered_pieces_are_the_text_and_their_numbers_the_models(engine):
    view = score_run(engine, GenerationRequest(prompt=OPENING), TEXT)
    assert view["steered"] is False and view["truncated"] is False
    assert "".join(p for p, _s, _b in view["tokens"]) == TEXT
    assert all(s == b and s <= 0 for _p, s, b in view["tokens"])
    # the same numbers /v1's echo scoring gives (prompt_logprobs), summed over the text
    ids, lps = engine.prompt_logprobs(GenerationRequest(prompt=OPENING + TEXT))
    n = len(engine.tokenize(OPENING))
    assert math.isclose(sum(s for _p, s, _b in view["tokens"]), sum(e.logprob for e in lps[n:]), abs_tol=0.01)
    # a likely continuation is less surprising than an unlikely one
    odd = score_run(engine, GenerationRequest(prompt=OPENING), " purple quantum spreadsheet violin.")
    mean = lambda v: -sum(s for _p, s, _b in v["tokens"]) / len(v["tokens"])  # noqa: E731
    assert mean(odd) > mean(view) + 1


def test_steering_shows_as_a_difference_from_the_unsteered_model(engine):
    steering = SteeringSpec.from_json([{"source": "caa:joyful", "strength": 0.4}])
    view = score_run(engine, GenerationRequest(prompt=OPENING, steering=steering), TEXT)
    assert view["steered"] is True
    plain = score_run(engine, GenerationRequest(prompt=OPENING), TEXT)
    assert [b for _p, _s, b in view["tokens"]] == [s for _p, s, _b in plain["tokens"]]  # base: the unsteered model
    assert any(abs(s - b) > 0.05 for _p, s, b in view["tokens"])


def test_characters_split_over_tokens_stay_whole_and_long_texts_are_cut(engine):
    text = " Le café était plein — ☕ et naïveté 🌊."
    view = score_run(engine, GenerationRequest(prompt=OPENING), text)
    assert "".join(p for p, _s, _b in view["tokens"]) == text
    assert "\ufffd" not in "".join(p for p, _s, _b in view["tokens"])
    cut = score_run(engine, GenerationRequest(prompt=OPENING), TEXT * 5, TokenViewConfig(max_tokens=6))
    assert cut["truncated"] is True and len(cut["tokens"]) <= 6
    assert score_run(engine, GenerationRequest(prompt=OPENING), "  ") is None
