"""The shared sampler's loop breakers (DRY, repetition penalty, min-p) and its log-probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from inference.engines._sampling import dry_penalties, logprobs_of, sample
from inference.engines.base import SamplingParams
from inference.exceptions import InvalidRequest


def test_dry_penalises_the_token_that_extends_a_repeat():
    p = SamplingParams(dry_multiplier=0.8, dry_base=1.75, dry_allowed_length=2)
    # ... 1 2 3 9 ... 1 2 3: a 9 next would repeat "1 2 3 9"; the run so far is 3 long
    assert dry_penalties([1, 2, 3, 9, 1, 2, 3], p) == {9: pytest.approx(0.8 * 1.75 ** 1)}
    assert dry_penalties([5, 1, 2, 7, 1, 2], p) == {7: pytest.approx(0.8)}
    assert dry_penalties([1, 2, 3, 4], p) == {}  # nothing repeats
    assert dry_penalties([4, 1, 4], p) == {}  # a repeat of one token is allowed (allowed_length 2)


def looping_logits(prev: int) -> np.ndarray:
    """A "model" that always wants the cycle 0 1 2 0 1 2 ..., with 3 a close second."""
    x = np.zeros(8)
    x[(prev + 1) % 3] = 3.0
    x[3] = 2.0
    return x


def generate(params: SamplingParams, n: int = 30) -> list[int]:
    rng, out, prev = np.random.default_rng(0), [], 2
    for _ in range(n):
        prev = sample(looping_logits(prev), params, rng, out)
        out.append(prev)
    return out


def longest_repeat(seq: list[int]) -> int:
    """The length of the longest run of tokens that occurs twice."""
    best = 0
    for i in range(len(seq)):
        for j in range(i + 1, len(seq)):
            n = 0
            while j + n < len(seq) and seq[i + n] == seq[j + n]:
                n += 1
            best = max(best, n)
    return best


def test_dry_breaks_a_greedy_loop():
    looped = generate(SamplingParams(temperature=0))
    assert set(looped) == {0, 1, 2} and longest_repeat(looped) == 27  # the cycle, over and over
    broken = generate(SamplingParams(temperature=0, dry_multiplier=0.8))
    assert 3 in broken
    # the penalty passes the model's margin of 1 once a repeat is 3 long (0.8 * 1.75 ** 1)
    assert longest_repeat(broken) <= 6


def test_repetition_penalty_and_min_p():
    x = np.array([2.0, 1.9, -1.0, -1.1])
    rng = np.random.default_rng(0)
    # token 0 was just used: divided by the penalty it falls under token 1
    assert sample(x, SamplingParams(temperature=0, repetition_penalty=1.5), rng, [0]) == 1
    assert sample(x, SamplingParams(temperature=0, repetition_penalty=1.5), rng, [], context=[0]) == 1  # prompt too
    assert sample(x, SamplingParams(temperature=0), rng, [0]) == 0
    # min-p 0.2: tokens 2 and 3 (about 4% each) are never drawn
    drawn = {sample(x, SamplingParams(temperature=1.0, min_p=0.2), rng, []) for _ in range(300)}
    assert drawn == {0, 1}
    assert {sample(x, SamplingParams(temperature=1.0), rng, []) for _ in range(300)} == {0, 1, 2, 3}


def test_logprobs_are_the_models_own_distribution():
    x = np.array([1.0, 3.0, 2.0, 0.0])
    record: list = []
    tok = sample(x, SamplingParams(temperature=0, logprobs=2, repetition_penalty=3.0), np.random.default_rng(0),
                 [], context=[1], record=record)
    assert tok == 2  # the penalty moved the choice ...
    lse = np.log(np.exp(x).sum())
    (entry,) = record
    assert entry.token_id == 2 and entry.logprob == pytest.approx(2.0 - lse)  # ... but not the logprob
    assert [t for t, _ in entry.top] == [1, 2] and entry.top[0][1] == pytest.approx(3.0 - lse)
    assert logprobs_of(x, 3, 0).top == ()


@pytest.mark.parametrize("field, value", [("min_p", 1.5), ("repetition_penalty", 0), ("dry_multiplier", -1),
                                          ("dry_allowed_length", True), ("penalty_last_n", 1.5), ("logprobs", 21),
                                          ("logprobs", False), ("max_tokens", True), ("top_k", True)])
def test_sampling_params_are_validated(field, value):
    with pytest.raises(InvalidRequest) as err:
        SamplingParams(**{field: value})
    assert err.value.param == field
