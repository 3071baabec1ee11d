"""The judge of ``tinymorph eval steering``: three scores on [0, 1] and their harmonic mean.

AxBench (Wu et al. 2025) asks an LLM judge for three 0-2 scores per output: concept score (is the
concept in it), instruction relevance (does it answer the instruction), fluency, and ranks methods
by their harmonic mean (0 when any score is 0). Offline there is no LLM judge worth the name (the
only model here is the 135M one being judged), so each score is measured instead:

* **concept score**: MiniLM cosine of the output to the concept's description, calibrated per
  concept against hand-written texts: ``(cos - lo) / (hi - lo)`` clipped to [0, 1], where ``hi`` is
  the mean cosine of the concept's reference texts (texts *about* it) and ``lo`` the mean cosine of
  every other reference text of the set (texts about other things). 1: as much about the concept as
  a text written about it; 0: no more than a text about something else.
* **instruction relevance**: the same calibration between the output and the instruction, with each
  instruction's reference answers as ``hi`` and the other instructions' answers as ``lo``.
* **fluency**: ``(1 - max(0, dNLL) / nll_zero) * (1 - repetition)``, clipped to [0, 1]. dNLL is the
  output's NLL per token under the *unsteered* model given the prompt it was written for, minus
  the unsteered (or prompt-only) output's for that same prompt: what steering costs on top of what
  the model itself writes (2 nats/token, four times requirement 2's calibration budget of 0.5,
  is 0). Repetition is the share of word trigrams that repeat an earlier one.

The calibration texts are no method's input. ``sanity`` checks the judge against texts it was not
calibrated on (tests/test_steering_eval.py): texts about a concept must score high on it and low
on the others.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["JudgeConfig", "Scores", "Judge", "repetition", "harmonic_mean"]

_WORD = re.compile(r"[A-Za-z0-9']+")


def repetition(text: str) -> float:
    """Share of word trigrams that repeat an earlier one (0 for fewer than three words)."""
    words = [w.lower() for w in _WORD.findall(text)]
    grams = list(zip(words, words[1:], words[2:]))
    if not grams:
        return 0.0
    return sum(c - 1 for c in Counter(grams).values()) / len(grams)


def harmonic_mean(*scores: float) -> float:
    """AxBench's aggregate: 0 when any score is 0 (a fluent text about nothing asked scores 0)."""
    if any(s <= 0 for s in scores):
        return 0.0
    return len(scores) / sum(1 / s for s in scores)


@dataclass(frozen=True)
class JudgeConfig:
    #: dNLL (nats/token) at which the NLL part of fluency reaches 0.
    nll_zero: float = 2.0


@dataclass(frozen=True)
class Scores:
    concept: float
    instruction: float
    fluency: float
    concept_cosine: float
    instruction_cosine: float
    nll_delta: float
    repetition: float

    @property
    def harmonic(self) -> float:
        return harmonic_mean(self.concept, self.instruction, self.fluency)


@dataclass(frozen=True)
class _Target:
    vector: np.ndarray
    lo: float
    hi: float

    def score(self, cos: np.ndarray) -> np.ndarray:
        return np.clip((cos - self.lo) / max(self.hi - self.lo, 1e-6), 0.0, 1.0)


class Judge:
    """Calibrated once for a set of concepts and instructions (each with its reference texts).

    ``concepts``: ``{name: (description, references)}``; ``instructions``: ``{text: references}``.
    """

    def __init__(self, concepts: dict[str, tuple[str, Sequence[str]]],
                 instructions: dict[str, Sequence[str]], embedder: Any = None,
                 cfg: JudgeConfig = JudgeConfig()) -> None:
        if embedder is None:
            from ..embeddings import Embedder

            embedder = Embedder()
        self.embedder, self.cfg = embedder, cfg
        self.concepts = self._calibrate({n: (d, refs) for n, (d, refs) in concepts.items()})
        self.instructions = self._calibrate({t: (t, refs) for t, refs in instructions.items()})

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), 256):
            vecs, _ = self.embedder.embed([t if t.strip() else "-" for t in texts[i:i + 256]])
            out.append(np.asarray(vecs, dtype=np.float64))
        return np.concatenate(out) if out else np.zeros((0, 384))

    def _calibrate(self, targets: dict[str, tuple[str, Sequence[str]]]) -> dict[str, _Target]:
        """hi: mean cosine of a target's own references; lo: of everyone else's."""
        keys = list(targets)
        goal = self._embed([targets[k][0] for k in keys])
        refs = [(k, r) for k in keys for r in targets[k][1]]
        if any(not targets[k][1] for k in keys):
            raise ValueError("every concept and instruction needs at least one reference text")
        cos = self._embed([r for _, r in refs]) @ goal.T
        owner = np.array([keys.index(k) for k, _ in refs])
        out = {}
        for j, k in enumerate(keys):
            mine, others = cos[owner == j, j], cos[owner != j, j]
            if not len(others):
                raise ValueError("calibration needs at least two concepts/instructions (lo is the others' texts)")
            out[k] = _Target(goal[j], float(others.mean()), float(mine.mean()))
        return out

    # -- scores --------------------------------------------------------------------------------
    def concept_scores(self, concept: str, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated score, raw cosine) of each text for ``concept``."""
        t = self.concepts[concept]
        cos = self._embed(texts) @ t.vector
        return t.score(cos), cos

    def score(self, concept: str, instruction: str, text: str, nll_delta: float) -> Scores:
        return self.score_many([(concept, instruction, text, nll_delta)])[0]

    def score_many(self, items: Sequence[tuple[str, str, str, float]]) -> list[Scores]:
        """Scores of ``(concept, instruction, text, dNLL)`` items (embedded in one batch)."""
        emb = self._embed([text for _, _, text, _ in items])
        out = []
        for (concept, instruction, text, dnll), e in zip(items, emb):
            c, i = self.concepts[concept], self.instructions[instruction]
            ccos, icos = float(e @ c.vector), float(e @ i.vector)
            rep = repetition(text)
            flu = float(np.clip((1 - max(0.0, dnll) / self.cfg.nll_zero) * (1 - rep), 0.0, 1.0))
            if not text.strip():
                flu = 0.0
            out.append(Scores(float(c.score(np.array(ccos))), float(i.score(np.array(icos))), flu,
                              ccos, icos, float(dnll), rep))
        return out

    def calibration(self) -> dict:
        """The lo/hi cosines per concept and instruction (written with the results)."""
        return {kind: {k: {"lo": round(t.lo, 4), "hi": round(t.hi, 4)} for k, t in targets.items()}
                for kind, targets in (("concepts", self.concepts), ("instructions", self.instructions))}
