"""``tinymorph eval writing``: do the shipped personas' runs write prose about the document?

Each persona's ``continue`` runs on a set of story and essay openings (``data/writing_openings.json``)
through the run path itself (``build_prompt`` → ``build_request`` → ``participant.compose``, the
functions a worker's run calls), with fixed seeds. A judge marks each continuation *bad* when it
is degenerate (too short, repeated n-grams, few distinct words, lists, markup, chat residue,
copying the opening) or off topic: among all the openings, its own must be one of the two
closest to it by MiniLM embedding. Every opening comes with a continuation a person wrote; the
judge has to pass all of those (``judge_humans``), or it is the judge that is wrong.

Fluency is reported beside it: the mean negative log-likelihood per token of the continuation
after its opening under the unsteered model (``Engine.prompt_logprobs``, what ``/v1`` ``echo``
answers).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["Opening", "JudgeConfig", "Verdict", "Judge", "Sample", "load_openings", "judge_humans",
           "continue_opening", "evaluate", "table", "register"]

DATA = Path(__file__).parent / "data" / "writing_openings.json"


@dataclass(frozen=True)
class Opening:
    id: str
    kind: str
    opening: str
    human: str


def load_openings(path: Path = DATA) -> list[Opening]:
    return [Opening(o["id"], o["kind"], o["opening"], o["human"]) for o in json.loads(path.read_text())["openings"]]


@dataclass(frozen=True)
class JudgeConfig:
    min_words: int = 8
    #: Share of word trigrams that are repeats of an earlier one ("she had seen the sea ... she had seen the sun").
    max_repeated_trigrams: float = 0.12
    #: Distinct words over words, for texts of 20 words or more.
    min_distinct: float = 0.45
    #: Letters among the non-space characters ("1.1", "#hashtag", "12. 12." fail).
    min_letters: float = 0.8
    #: This many consecutive words of the opening, repeated: copying, not continuing.
    copy_words: int = 7
    #: On topic when the continuation's own opening is among this many closest.
    top_k: int = 2


@dataclass(frozen=True)
class Verdict:
    reasons: tuple[str, ...]
    rank: int  # 1 = its own opening is the closest

    @property
    def bad(self) -> bool:
        return bool(self.reasons)

    @property
    def degenerate(self) -> bool:
        return any(r != "off topic" for r in self.reasons)


_WORD = re.compile(r"[A-Za-z0-9']+")
_LIST_LINE = re.compile(r"^\s*(?:\d+[.)]|[-*•#>]|[A-Za-z][.)])\s", re.M)
_MARKUP = re.compile(r"#\w|https?://|www\.|<\|?[a-z_]+\|?>|\*\*|__|\[\d+\]|@\w", re.I)
_CHAT = re.compile(r"\b(?:assistant|user|system)\s*:|\bas an ai\b|\bi'm sorry\b|\bi cannot\b", re.I)


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def degeneracy(text: str, opening: str, cfg: JudgeConfig = JudgeConfig()) -> list[str]:
    """The rules a continuation breaks, as short reasons (empty: none)."""
    words = _words(text)
    reasons = []
    if len(words) < cfg.min_words:
        reasons.append(f"too short ({len(words)} words)")
        return reasons
    trigrams = list(zip(words, words[1:], words[2:]))
    repeated = sum(c - 1 for c in Counter(trigrams).values() if c > 1)
    if trigrams and repeated / len(trigrams) > cfg.max_repeated_trigrams:
        reasons.append(f"repeats itself ({repeated}/{len(trigrams)} trigrams)")
    if len(words) >= 20 and len(set(words)) / len(words) < cfg.min_distinct:
        reasons.append(f"few distinct words ({len(set(words))}/{len(words)})")
    visible = [c for c in text if not c.isspace()]
    letters = sum(c.isalpha() for c in visible) / max(1, len(visible))
    if letters < cfg.min_letters:
        reasons.append(f"not prose ({letters:.0%} letters)")
    if _LIST_LINE.search(text):
        reasons.append("a list")
    if _MARKUP.search(text):
        reasons.append("markup")
    if _CHAT.search(text):
        reasons.append("chat residue")
    ow = _words(opening)
    grams = {tuple(ow[i:i + cfg.copy_words]) for i in range(len(ow) - cfg.copy_words + 1)}
    if any(tuple(words[i:i + cfg.copy_words]) in grams for i in range(len(words) - cfg.copy_words + 1)):
        reasons.append("copies the opening")
    return reasons


class Judge:
    """Degenerate or off topic; topicality by MiniLM against every opening of the set."""

    def __init__(self, openings: Sequence[Opening], embedder: Any = None, cfg: JudgeConfig = JudgeConfig()) -> None:
        if embedder is None:
            from inference.embeddings import Embedder

            embedder = Embedder()
        self.openings = list(openings)
        self.index = {o.id: i for i, o in enumerate(self.openings)}
        self.embedder = embedder
        self.cfg = cfg
        self.vectors = self._embed([o.opening for o in self.openings])

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        vecs, _ = self.embedder.embed(list(texts))
        m = np.asarray(vecs, dtype=np.float64)
        return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)

    def judge(self, opening_id: str, text: str) -> Verdict:
        return self.judge_many([(opening_id, text)])[0]

    def judge_many(self, items: Sequence[tuple[str, str]]) -> list[Verdict]:
        sims = self._embed([t if t.strip() else "-" for _, t in items]) @ self.vectors.T
        out = []
        for (oid, text), row in zip(items, sims):
            i = self.index[oid]
            rank = 1 + int(np.sum(row > row[i]))
            reasons = degeneracy(text, self.openings[i].opening, self.cfg)
            if rank > self.cfg.top_k:
                reasons.append("off topic")
            out.append(Verdict(tuple(reasons), rank))
        return out


def judge_humans(judge: Judge) -> list[tuple[Opening, Verdict]]:
    """The person-written continuations, judged: all must pass."""
    verdicts = judge.judge_many([(o.id, o.human) for o in judge.openings])
    return list(zip(judge.openings, verdicts))


@dataclass
class Sample:
    persona: str
    opening: str
    seed: int
    text: str
    verdict: Verdict | None = None
    nll: float | None = None


def continue_opening(engine: Any, persona: Any, opening: Opening, seed: int) -> str:
    """What a ``continue`` run of ``persona`` writes after ``opening``: the worker's own path
    (``Participant._freeze_prompt`` → ``build_request`` → ``compose``), without the hub."""
    from .participant import compose
    from .prompts import Task, build_prompt, build_request

    run_id = f"eval-{persona.id}-{opening.id}-{seed}"
    prompt = build_prompt(Task.CONTINUE, persona.prompt, opening.opening, "", {"seed": seed}, run_id)
    request = build_request(prompt.to_json(), persona.steering)
    return "".join(compose(engine, request, prompt.max_tokens)).strip()


def fluency_nll(engine: Any, opening: str, text: str) -> float | None:
    """Mean NLL per token of ``text`` after ``opening`` under the unsteered model (what strength
    calibration measures too: ``inference.steering.calibration.continuation_nll``)."""
    from inference.steering.calibration import continuation_nll

    return continuation_nll(engine, opening, text)


@dataclass
class Report:
    samples: list[Sample] = field(default_factory=list)
    humans: list[tuple[Opening, Verdict]] = field(default_factory=list)


def evaluate(inference: Any, personas: Sequence[Any], openings: Sequence[Opening], seeds: Sequence[int],
             judge: Judge | None = None, progress: bool = False) -> Report:
    import sys

    judge = judge or Judge(openings)
    report = Report(humans=judge_humans(judge))
    reference = inference.engine(None)
    for persona in personas:
        engine = inference.engine(persona.model or None)
        for o in openings:
            for seed in seeds:
                text = continue_opening(engine, persona, o, seed)
                report.samples.append(Sample(persona.id, o.id, seed, text, nll=fluency_nll(reference, o.opening, text)))
                if progress:
                    print(f"\r[tinymorph] {persona.id}: {len(report.samples)} continuations", end="",
                          file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    verdicts = judge.judge_many([(s.opening, s.text) for s in report.samples])
    for s, v in zip(report.samples, verdicts):
        s.verdict = v
    return report


def table(report: Report) -> list[list[str]]:
    """One row per persona (and the human continuations): bad rate, why, fluency."""
    groups: dict[str, list[tuple[Verdict, float | None]]] = {}
    for s in report.samples:
        groups.setdefault(s.persona, []).append((s.verdict, s.nll))
    groups["(human)"] = [(v, None) for _, v in report.humans]
    rows = []
    for name, items in groups.items():
        n = len(items)
        bad = sum(v.bad for v, _ in items)
        nlls = [x for _, x in items if x is not None]
        rows.append([name, f"{bad}/{n}", f"{bad / n:.0%}", str(sum(v.degenerate for v, _ in items)),
                     str(sum("off topic" in v.reasons for v, _ in items)),
                     f"{np.mean(nlls):.2f}" if nlls else "-"])
    return rows


HEADERS = ["persona", "bad", "bad rate", "degenerate", "off topic", "NLL/token"]


def _print_table(rows: list[list[str]], headers: list[str]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def _run(args: argparse.Namespace) -> int:
    from inference import Inference, InferenceConfig

    from .personas import SHIPPED

    config = getattr(args, "inference_config", None) or InferenceConfig.from_env
    personas = [p for p in SHIPPED if not args.persona or p.id in args.persona]
    every = load_openings()
    openings = every[: args.openings or None]
    seeds = list(range(args.seed, args.seed + args.seeds))
    # topicality is always judged against the whole set (the two closest of three says little)
    report = evaluate(Inference(config()), personas, openings, seeds, judge=Judge(every), progress=True)
    _print_table(table(report), HEADERS)
    print()
    for name in [p.id for p in personas]:
        shown = [s for s in report.samples if s.persona == name and s.verdict.bad][: args.examples]
        shown += [s for s in report.samples if s.persona == name and not s.verdict.bad][:1]
        for s in shown:
            mark = "BAD " + "; ".join(s.verdict.reasons) if s.verdict.bad else "ok"
            print(f"{name} · {s.opening} · seed {s.seed} · {mark}\n    {s.text[:300]!r}")
    failed = [o.id for o, v in report.humans if v.bad]
    if failed:
        print(f"\nthe judge fails human continuations: {', '.join(failed)}")
    if args.json:
        args.json.write_text(json.dumps([{"persona": s.persona, "opening": s.opening, "seed": s.seed,
                                          "text": s.text, "bad": s.verdict.bad, "reasons": list(s.verdict.reasons),
                                          "rank": s.verdict.rank, "nll": s.nll} for s in report.samples], indent=1))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """``tinymorph eval writing`` (under the ``eval`` command the inference layer shares)."""
    from inference.evalcli import eval_subcommands

    w = eval_subcommands(subparsers).add_parser(
        "writing", help="the shipped personas' continue runs on story/essay openings: bad rate, fluency")
    w.add_argument("--persona", action="append", help="only this persona (repeatable)")
    w.add_argument("--seeds", type=int, default=2, help="runs per persona and opening")
    w.add_argument("--seed", type=int, default=0, help="the first seed")
    w.add_argument("--openings", type=int, default=0, help="only the first N openings (0: all)")
    w.add_argument("--examples", type=int, default=2, help="bad continuations shown per persona")
    w.add_argument("--json", type=Path, help="write every continuation and its verdict here")
    w.set_defaults(func=_run)
