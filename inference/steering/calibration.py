"""Strength calibration: measure a vector's default strength and recommended range (issue 16,
requirement 2) by continuing a few neutral openings at a rising ladder of strengths and keeping
the largest strength whose fluency cost stays within budget while the concept score rises:

* fluency: the continuation's NLL per token under the *unsteered* model, given its opening, at
  most ``max_delta_nll`` (0.5) nats above the unsteered continuations', and no rise in the share
  of repeated word trigrams: each continuation is set against the unsteered one of the same
  opening and seed, and a rise counts when it is above ``trigram_slack`` and more than
  ``trigram_z`` standard errors of those paired differences (a fixed slack alone stopped ladders
  on sampling noise: a couple of dozen short continuations give a noisy share);
* concept: a score the caller gives (for a vector from pairs: MiniLM closeness to the positive
  examples minus to the negative ones) above the unsteered continuations'.

The ladder stops at the first strength that breaks the fluency budget (stronger only gets worse).
The recommended range runs from the smallest passing strength to the default. The result is a
``strengths.StrengthGuide``, stored with the vector (``VectorLibrary.set_provenance``).

Kept apart from ``strengths.py`` because it drives an engine: the spec reads strengths, engines
read the spec, and this reads engines (one way, no cycle).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..engines.base import GenerationRequest, SamplingParams
from ._envconfig import from_env
from .spec import SteeringSpec
from .strengths import StrengthGuide

__all__ = ["CalibrationConfig", "StrengthPoint", "calibrate", "guide_from_points", "continuation_nll",
           "repeated_trigrams", "trigram_rise", "repeats_more", "pair_concept", "CALIBRATION_OPENINGS"]

#: Neutral openings (no style, no strong topic) the ladder continues; a caller may give its own.
CALIBRATION_OPENINGS = (
    "The meeting had been moved to Thursday, and",
    "When we first looked at the numbers,",
    "She put the letter down on the table and",
    "There are a few things to know about the old house on the hill.",
    "In the morning the town was quiet, and",
    "The main problem with the plan was",
)

_WORD = re.compile(r"[A-Za-z0-9']+")


def repeated_trigrams(text: str) -> float:
    """Share of word trigrams that repeat an earlier one (0 for fewer than three words)."""
    words = [w.lower() for w in _WORD.findall(text)]
    grams = list(zip(words, words[1:], words[2:]))
    return sum(c - 1 for c in Counter(grams).values()) / len(grams) if grams else 0.0


def trigram_rise(base: Sequence[float], steered: Sequence[float]) -> tuple[float, float]:
    """The mean rise in repeated trigrams from ``base`` to ``steered`` (continuations of the same
    openings with the same seeds, in the same order) and its standard error: paired, because
    the same opening and seed make similar texts at a gentle strength, which a comparison of the
    two means would count as noise."""
    if len(base) != len(steered) or not base:
        raise ValueError("trigram_rise compares the same continuations, steered and not")
    d = np.subtract(steered, base, dtype=np.float64)
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0


def repeats_more(rise: float, se: float, cfg: "CalibrationConfig") -> bool:
    """Whether a rise in repeated trigrams (``trigram_rise``) counts: more than the slack and than its noise."""
    return rise > cfg.trigram_slack and rise > cfg.trigram_z * se


def continuation_nll(engine: Any, opening: str, text: str) -> float | None:
    """Mean NLL per token of ``text`` after ``opening`` under the unsteered model (None: empty)."""
    if not text.strip():
        return None
    n_open = len(engine.tokenize(opening))
    _ids, lps = engine.prompt_logprobs(GenerationRequest(prompt=f"{opening} {text}"))
    tail = [e.logprob for e in lps[n_open:] if e is not None]
    return float(-np.mean(tail)) if tail else None


@dataclass(frozen=True)
class CalibrationConfig:
    strengths: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6)
    openings: tuple[str, ...] = CALIBRATION_OPENINGS
    seeds: tuple[int, ...] = (0, 1, 2)
    max_tokens: int = 48
    max_delta_nll: float = 0.5
    #: "No rise in repeated trigrams": a rise counts above this share ...
    trigram_slack: float = 0.02
    #: ... and above this many standard errors of the paired rise (``trigram_rise``).
    trigram_z: float = 2.0

    @classmethod
    def from_env(cls) -> "CalibrationConfig":
        """Defaults, overridden by ``TINYMORPH_CALIBRATION`` (a JSON object of fields; the tests' tiny ladder)."""
        return from_env(cls, "TINYMORPH_CALIBRATION")


@dataclass(frozen=True)
class StrengthPoint:
    strength: float
    nll: float
    delta_nll: float
    repeated_trigrams: float
    concept: float
    fluent: bool
    rises: bool
    samples: tuple[str, ...] = field(default=(), repr=False)
    #: Standard error of the rise in repeated trigrams over the unsteered point (``trigram_rise``).
    trigram_se: float = 0.0

    def to_json(self) -> dict:
        return {"strength": self.strength, "delta_nll": round(self.delta_nll, 3),
                "repeated_trigrams": round(self.repeated_trigrams, 3), "trigram_se": round(self.trigram_se, 3),
                "concept": round(self.concept, 4), "fluent": self.fluent, "rises": self.rises}


def pair_concept(embed: Callable[[list[str]], np.ndarray],
                 pairs: Sequence[tuple[str, str]]) -> Callable[[list[str]], float]:
    """The concept score of a vector built from (positive, negative) pairs: a text's cosine to
    the positive examples' mean embedding minus its cosine to the negative ones', averaged.
    ``embed`` returns unit vectors, one row per text (MiniLM: ``inference.embeddings``)."""
    def unit(v: np.ndarray) -> np.ndarray:
        return v / max(float(np.linalg.norm(v)), 1e-12)

    pos = unit(np.asarray(embed([p for p, _ in pairs]), np.float64).mean(0))
    neg = unit(np.asarray(embed([n for _, n in pairs]), np.float64).mean(0))

    def score(texts: list[str]) -> float:
        e = np.asarray(embed(texts), np.float64)
        return float(np.mean(e @ pos - e @ neg))

    return score


def calibrate(engine: Any, term: dict, concept: Callable[[list[str]], float],
              cfg: CalibrationConfig = CalibrationConfig(),
              progress: Callable[[float], None] | None = None) -> tuple[StrengthGuide, list[StrengthPoint]]:
    """Measure ``term`` (a steering term without ``strength``, e.g. ``{"source": "caa:mine"}``)
    up the strength ladder (module docstring). ``engine`` generates and scores (its unsteered
    NLL is the fluency measure); ``concept(texts)`` is the mean concept score of continuations."""
    def measure(strength: float) -> tuple[float, list[float], float, list[str]]:
        steering = SteeringSpec.from_json([{**term, "strength": strength}] if strength else None)
        texts, nlls = [], []
        for opening in cfg.openings:
            for seed in cfg.seeds:
                out = engine.generate(GenerationRequest(prompt=opening, steering=steering, params=SamplingParams(
                    max_tokens=cfg.max_tokens, min_tokens=cfg.max_tokens // 2, temperature=0.7, top_p=0.95,
                    min_p=0.05, seed=seed)))
                text = out.text.strip()
                texts.append(text)
                nll = continuation_nll(engine, opening, text)
                nlls.append(nll if nll is not None else 20.0)  # an empty continuation: no fluency at all
        return (float(np.mean(nlls)), [repeated_trigrams(t) for t in texts],
                float(concept([t or "." for t in texts])), texts)

    steps = len(cfg.strengths) + 1
    nll0, reps0, concept0, texts0 = measure(0.0)
    points = [StrengthPoint(0.0, nll0, 0.0, float(np.mean(reps0)), concept0, True, False, tuple(texts0))]
    if progress is not None:
        progress(1 / steps)
    for i, s in enumerate(sorted(cfg.strengths)):
        nll, reps, c, texts = measure(s)
        rise, se = trigram_rise(reps0, reps)
        fluent = nll - nll0 <= cfg.max_delta_nll and not repeats_more(rise, se, cfg)
        points.append(StrengthPoint(s, nll, nll - nll0, float(np.mean(reps)), c, fluent, c > concept0, tuple(texts),
                                    se))
        if progress is not None:
            progress((i + 2) / steps)
        if not fluent:
            break
    return guide_from_points(points, cfg), points


def guide_from_points(points: Sequence[StrengthPoint], cfg: CalibrationConfig = CalibrationConfig()) -> StrengthGuide:
    """The largest fluent strength whose concept score rose; the range from the smallest such."""
    good = [p.strength for p in points if p.strength > 0 and p.fluent and p.rises]
    budget = (f"within {cfg.max_delta_nll:g} nats/token of the unsteered NLL and no rise in repeated trigrams "
              f"beyond {cfg.trigram_slack:g} and {cfg.trigram_z:g} standard errors")
    if not good:
        first = min((p for p in points if p.strength > 0), key=lambda p: p.strength)
        lowest = first.strength
        base = next((p for p in points if p.strength == 0), None)
        if not first.fluent and base is not None:  # say which limit: the writer can judge a noisy one
            why = (f"the smallest strength tried already broke the fluency budget (NLL {first.delta_nll:+.2f} "
                   f"nats/token, repeated trigrams {base.repeated_trigrams:.3f} -> {first.repeated_trigrams:.3f}, "
                   f"rise ± {first.trigram_se:.3f}; {budget}); the default is that strength")
        else:
            why = f"no strength raised the concept score {budget}; the smallest tried"
        return StrengthGuide(lowest, lowest, lowest, f"calibrated: {why}")
    return StrengthGuide(max(good), min(good), max(good),
                         f"calibrated: the largest strength {budget} whose concept score rose "
                         f"({len(cfg.openings) * len(cfg.seeds)} continuations per strength)")
