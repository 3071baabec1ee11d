"""``tinymorph eval voice``: does an "in my voice" vector move the model toward the writer?

The writer is a real one: the paragraphs of a blog post from the editing traces (seph-blog1, the
text its author typed). Split four ways, each used once:

1. *build*: the voice vector, each of the paragraphs' sentences against the model's rewrite of
   it (the same ``voice_pairs`` the REST build uses);
2. *writer*: held-out paragraphs, the positive class of the classifiers (and, rewritten by the
   model, the negative class of the content-matched one);
3. *model*: unsteered continuations of other openings, the default probe's negative class;
4. *test*: openings the classifier never saw, continued unsteered and steered at several
   strengths, one of them the vector's calibrated default (``inference.steering.calibration``,
   as a REST build calibrates: the fluency budget, toward the writer's side of the pairs); the
   classifier's P(writer) for each, and the writing judge's degenerate rate.

A second way to the same voice is compared on the same test openings: PSR from the *build*
paragraphs shown in context (``psr.example_contexts``): it learns what reading the writer does
to the model, at the strength its training arrived at and at half of it. And the prompt it
imitates, as the reference for what this model can do with the writer's voice at all: "in
context" continues each test opening after two of the *build* paragraphs.

The classifier is logistic regression on MiniLM sentence embeddings: it learns what separates
this writer from the model's default prose, whatever that is, without hand-picked features.
Two of them, because "whatever that is" includes the topic: the *default* probe takes the
model's continuations of other openings as the model's prose, so it also rewards writing about
what this writer writes about (which a voice vector, built from pairs with the same content,
cannot add by design); the *content-matched* probe takes the model's rewrites of the writer's
held-out paragraphs (the vector's own kind of pair), so what separates its classes is the way
the same things are said.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inference.steering.calibration import CalibrationConfig
from inference.steering.psr import PSRConfig

__all__ = ["VoiceEvalConfig", "LogisticProbe", "split_corpus", "evaluate", "plot", "register"]


@dataclass(frozen=True)
class VoiceEvalConfig:
    trace: str = "seph-blog1.json.gz"
    min_chars: int = 150
    n_build: int = 24
    n_writer: int = 32
    n_model_prompts: int = 16
    n_test: int = 16
    #: Continuations per test opening (each its own seed): P(writer) is a mean over
    #: ``n_test * samples`` texts, printed with its standard error.
    samples: int = 2
    strengths: tuple[float, ...] = (0.1, 0.2, 0.4)
    max_tokens: int = 64
    seed: int = 0
    name: str = "eval-voice"
    calibration: CalibrationConfig = CalibrationConfig()
    #: The in-context voice (PSR from the build paragraphs); None: not compared.
    psr: PSRConfig | None = PSRConfig()
    #: The voice PSR's rows: these multiples of the strength its training arrived at.
    psr_scales: tuple[float, ...] = (0.5, 1.0)


class LogisticProbe:
    """Binary logistic regression, full-batch gradient descent with L2 (a few hundred points)."""

    def __init__(self, l2: float = 1e-2, steps: int = 2000, lr: float = 0.5) -> None:
        self.l2, self.steps, self.lr = l2, steps, lr
        self.w: np.ndarray | None = None
        self.b = 0.0

    def fit(self, x: np.ndarray, y: np.ndarray) -> "LogisticProbe":
        w, b = np.zeros(x.shape[1]), 0.0
        for _ in range(self.steps):
            p = 1 / (1 + np.exp(-(x @ w + b)))
            g = p - y
            w -= self.lr * (x.T @ g / len(y) + self.l2 * w)
            b -= self.lr * g.mean()
        self.w, self.b = w, b
        return self

    def prob(self, x: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-(x @ self.w + self.b)))

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(((self.prob(x) > 0.5) == (y > 0.5)).mean())


def opening_of(paragraph: str, words: int = 12) -> str:
    """The first sentence, or the first ``words`` words if that is shorter."""
    first = paragraph.split(". ")[0]
    return " ".join(first.split()[:words])


def split_corpus(text: str, cfg: VoiceEvalConfig) -> dict[str, list[str]]:
    paragraphs = [p.strip() for p in text.split("\n") if len(p.strip()) >= cfg.min_chars]
    random.Random(cfg.seed).shuffle(paragraphs)
    cuts = np.cumsum([0, cfg.n_build, cfg.n_writer, cfg.n_model_prompts, cfg.n_test])
    if len(paragraphs) < cuts[-1]:
        raise ValueError(f"the corpus has {len(paragraphs)} paragraphs of {cfg.min_chars}+ characters; "
                         f"{cuts[-1]} are needed")
    names = ["build", "writer", "model", "test"]
    return {n: paragraphs[a:b] for n, a, b in zip(names, cuts[:-1], cuts[1:])}


def _continue(engine: Any, opening: str, steering: list[dict], cfg: VoiceEvalConfig, seed: int,
              context: str = "") -> str:
    """The model's continuation of ``opening`` (after ``context``, when given: only the new text
    is returned and scored)."""
    from inference import GenerationRequest, SamplingParams, SteeringSpec

    prompt = f"{context}\n\n{opening}" if context else opening
    out = engine.generate(GenerationRequest(prompt=prompt, steering=SteeringSpec.from_json(steering), params=SamplingParams(
        max_tokens=cfg.max_tokens, temperature=0.8, top_p=0.95, min_p=0.05, repetition_penalty=1.1, seed=seed)))
    return out.text.strip()


@dataclass
class Row:
    condition: str
    strength: float
    p_writer: float
    #: Standard error of ``p_writer`` (over the continuations): differences smaller than about
    #: twice it are noise.
    p_writer_se: float
    judged_writer: float
    degenerate: float
    samples: list[str] = field(default_factory=list)
    #: P(writer) by the content-matched probe (the writer's paragraphs vs the model's rewrites of them).
    p_voice: float = float("nan")
    p_voice_se: float = float("nan")
    #: Both, over the continuations the writing judge passes only: a probe trained against
    #: fluent model prose may read broken text as "not the model", so as the writer's.
    p_writer_fluent: float = float("nan")
    p_voice_fluent: float = float("nan")
    #: Each continuation's P(writer) by both probes, in the order of the openings and seeds
    #: (the same in every row: a gain over unsteered is a paired difference, ``_paired_se``).
    p_each: list[float] = field(default_factory=list, repr=False)
    p_voice_each: list[float] = field(default_factory=list, repr=False)


def evaluate(inference: Any, embed: Any, text: str, cfg: VoiceEvalConfig = VoiceEvalConfig(),
             progress: bool = True) -> tuple[list[Row], dict[str, Any]]:
    """Build the vector, fit the probe, score the test continuations (see the module docstring)."""
    from inference.steering.calibration import calibrate, pair_concept

    from .vector_jobs import rewrite_pairs, voice_pairs
    from .writing_eval import degeneracy

    def say(msg: str) -> None:
        if progress:
            print(f"[voice] {msg}", file=sys.stderr, flush=True)

    parts = split_corpus(text, cfg)
    engine = inference.engine()
    say(f"rewriting the sentences of {len(parts['build'])} paragraphs with the model")
    pairs = voice_pairs(engine, parts["build"])
    info = inference.torch_engine().info
    layer = info.n_layers // 3
    say(f"building the voice vector from {len(pairs)} pairs at layer {layer}")
    inference.library.build(cfg.name, info, pairs, [layer], source=f"eval:{cfg.trace}")
    say("calibrating its strength")
    guide, points = calibrate(engine, {"source": f"caa:{cfg.name}"},
                              pair_concept(lambda texts: np.asarray(embed(list(texts))), pairs), cfg.calibration)
    inference.library.set_provenance(cfg.name, info.key, strength=guide.to_json() | {
        "points": [p.to_json() for p in points]})

    say("model's default prose for the probe")
    model_texts = [_continue(engine, opening_of(p), [], cfg, seed) for p in parts["model"] for seed in (1, 2)]
    x = np.asarray(embed(parts["writer"] + model_texts))
    y = np.asarray([1.0] * len(parts["writer"]) + [0.0] * len(model_texts))
    probe = LogisticProbe().fit(x, y)
    train_acc = probe.accuracy(x, y)
    say("the model's rewrites of the writer's held-out paragraphs, for the content-matched probe")
    matched = rewrite_pairs(engine, parts["writer"])
    xv = np.asarray(embed([w for w, _ in matched] + [r for _, r in matched]))
    yv = np.asarray([1.0] * len(matched) + [0.0] * len(matched))
    voice_probe = LogisticProbe().fit(xv, yv)
    voice_train_acc = voice_probe.accuracy(xv, yv)

    conditions = [("unsteered", 0.0, None), ("in context", 0.0, None)] + [
        ("calibrated" if s == guide.default else "voice vector", s, f"caa:{cfg.name}")
        for s in sorted({*cfg.strengths, guide.default})]
    psr_facts: dict[str, Any] = {}
    if cfg.psr is not None:
        from inference.steering.psr import train

        say(f"voice PSR: imitating the model that reads {len(parts['build'])} of the writer's paragraphs")
        psr = train(inference.torch_engine(), f"the voice of {cfg.trace}", cfg.psr, writer=engine,
                    examples=parts["build"], progress=lambda f, m: None)
        inference.library.put_psr(f"{cfg.name}-psr", info, psr, source=f"eval:{cfg.trace}")
        conditions += [("voice PSR", round(psr.strength * k, 3), f"psr:{cfg.name}-psr") for k in cfg.psr_scales]
        psr_facts = {"psr_trained_strength": psr.strength, "psr_losses": psr.losses}

    rows = []
    openings = [opening_of(p) for p in parts["test"]]
    build = parts["build"]
    for condition, strength, source in conditions:
        steering = [{"source": source, "strength": strength}] if source else []
        say(f"test continuations: {condition} at strength {strength:g}")
        texts, of = [], []
        for i, o in enumerate(openings):
            # "in context": two build paragraphs before the opening, as PSR's teacher reads them
            context = ("\n\n".join(build[(2 * i + j) % len(build)][:600] for j in range(2))
                       if condition == "in context" else "")
            for k in range(cfg.samples):
                texts.append(_continue(engine, o, steering, cfg, seed=100 + i + 1000 * k, context=context))
                of.append(o)
        e = np.asarray(embed([t or "." for t in texts]))
        p, pv = probe.prob(e), voice_probe.prob(e)
        bad = np.asarray([bool(degeneracy(t, o)) for t, o in zip(texts, of)])
        fluent = ~bad if (~bad).any() else np.ones_like(bad)
        rows.append(Row(condition, strength, float(p.mean()), _se(p), float((p > 0.5).mean()), float(bad.mean()),
                        texts[:3], float(pv.mean()), _se(pv), float(p[fluent].mean()), float(pv[fluent].mean()),
                        p.round(4).tolist(), pv.round(4).tolist()))
    test = np.asarray(embed(parts["test"]))  # the writer's own test paragraphs
    human, human_voice = probe.prob(test).mean(), voice_probe.prob(test).mean()
    base = rows[0]
    at = next(r for r in rows if r.condition == "calibrated")
    in_context = next(r for r in rows if r.condition == "in context")
    return rows, {"p_writer_gain_in_context": in_context.p_writer - base.p_writer, "samples_per_opening": cfg.samples,
                  "p_voice_gain_in_context": in_context.p_voice - base.p_voice,
                  "p_voice_gain_at_calibrated": at.p_voice - base.p_voice,
                  "p_writer_gain_at_calibrated_se": _paired_se(base.p_each, at.p_each),
                  "p_voice_gain_at_calibrated_se": _paired_se(base.p_voice_each, at.p_voice_each),
                  "calibration_points": [p.to_json() for p in points],
                  "voice_probe_train_accuracy": voice_train_acc, "writer_test_p_voice": float(human_voice),
                  "probe_train_accuracy": train_acc, "writer_test_p": float(human), "pairs": len(pairs),
                  "layer": layer, "trace": cfg.trace, "calibrated_strength": guide.default,
                  "strength_basis": guide.basis, "p_writer_gain_at_calibrated": at.p_writer - base.p_writer, "n_test": len(openings),
                  **psr_facts}


def _paired_se(base: list[float], steered: list[float]) -> float:
    """Standard error of the mean difference, continuation by continuation (same opening and
    seed): tighter than comparing two means' errors, since the opening moves both alike."""
    return _se(np.subtract(steered, base))


def _se(p: np.ndarray) -> float:
    """Standard error of the mean of ``p``."""
    return float(p.std(ddof=1) / np.sqrt(len(p))) if len(p) > 1 else 0.0


def plot(data: dict[str, Any], path: Path) -> Path:
    """The rows as a picture (``--json F`` writes it beside F, as ``F.png``): P(writer) by both
    probes with their standard errors, each beside where the probe puts the writer's own held-out
    paragraphs, and how many continuations the writing judge finds degenerate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, facts = data["rows"], data["facts"]
    x = np.arange(len(rows))
    labels = [f"{r['condition']}\n{r['strength']:g}" for r in rows]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.4), dpi=110, gridspec_kw={"width_ratios": [3, 1.4]})
    for k, (key, name, writer) in enumerate((("p_writer", "default probe", "writer_test_p"),
                                             ("p_voice", "content-matched probe", "writer_test_p_voice"))):
        bars = ax.bar(x + (k - 0.5) * 0.38, [r[key] for r in rows], 0.38, yerr=[r[key + "_se"] for r in rows],
                      capsize=2, label=name)
        ax.axhline(facts[writer], color=bars.patches[0].get_facecolor(), ls=":", lw=1,
                   label=f"the writer's own paragraphs ({name})")
    ax.axhline(0.5, color="grey", lw=0.5)
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("P(writer)")
    ax.set_title(f"continuations of {facts['n_test']} unseen openings, by condition and strength", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    bx.bar(x, [100 * r["degenerate"] for r in rows], 0.6, color="grey")
    bx.set_xticks(x, [label.replace("\n", " ") for label in labels], fontsize=6, rotation=40, ha="right")
    bx.set_ylabel("degenerate or off topic (%)")
    bx.set_title("the writing judge", fontsize=9)
    fig.suptitle(f"tinymorph eval voice: {facts['trace']}, calibrated strength {facts['calibrated_strength']:g}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def _run(args: argparse.Namespace) -> int:
    from collab.config import Settings
    from collab.testing import load_trace
    from inference import Inference, InferenceConfig
    from inference.embeddings import Embedder

    settings = Settings.load()
    inference = Inference(InferenceConfig(data_dir=settings.data_dir, database_url=settings.database_url))
    embedder = Embedder()
    cfg = VoiceEvalConfig(strengths=tuple(args.strength) if args.strength else VoiceEvalConfig.strengths,
                          seed=args.seed, samples=args.samples)
    text = load_trace(cfg.trace)["endContent"]
    rows, facts = evaluate(inference, lambda texts: embedder.embed(list(texts))[0], text, cfg)
    print(f"\nIn my voice: {facts['trace']}, vector from {facts['pairs']} (sentence, model rewrite) pairs at "
          f"layer {facts['layer']}; probe: MiniLM + logistic regression, train accuracy "
          f"{facts['probe_train_accuracy']:.2f}; the writer's own held-out paragraphs score {facts['writer_test_p']:.2f}; "
          f"content-matched probe: train accuracy {facts['voice_probe_train_accuracy']:.2f}, the writer's "
          f"paragraphs {facts['writer_test_p_voice']:.2f}")
    print(f"{'condition':<14}{'strength':>9}{'P(writer)':>17}{'content-matched':>19}{'judged writer':>15}"
          f"{'degenerate':>12}   both probes, fluent continuations only")
    for r in rows:
        print(f"{r.condition:<14}{r.strength:>9g}{r.p_writer:>11.3f} ±{r.p_writer_se:.3f}{r.p_voice:>13.3f} ±"
              f"{r.p_voice_se:.3f}{r.judged_writer:>15.0%}{r.degenerate:>12.0%}   {r.p_writer_fluent:.3f} "
              f"{r.p_voice_fluent:.3f}")
    # a difference, not a verdict: with a few openings a few hundredths is noise
    print(f"calibrated strength {facts['calibrated_strength']:g} ({facts['strength_basis']}): P(writer) "
          f"{facts['p_writer_gain_at_calibrated']:+.3f} ± {facts['p_writer_gain_at_calibrated_se']:.3f} (paired) vs "
          f"unsteered, over {facts['n_test']} openings x "
          f"{facts['samples_per_opening']}; the writer's paragraphs in context: {facts['p_writer_gain_in_context']:+.3f}")
    print(f"content-matched probe: calibrated {facts['p_voice_gain_at_calibrated']:+.3f} ± "
          f"{facts['p_voice_gain_at_calibrated_se']:.3f} (paired), in context "
          f"{facts['p_voice_gain_in_context']:+.3f} vs unsteered")
    for r in rows[1:]:
        if r.condition == "voice PSR":
            print(f"voice PSR at {r.strength:g}: P(writer) {r.p_writer - rows[0].p_writer:+.3f}, content-matched "
                  f"{r.p_voice - rows[0].p_voice:+.3f} vs unsteered")
    if args.json:
        data = {"facts": facts, "rows": [r.__dict__ for r in rows]}
        args.json.write_text(json.dumps(data, indent=1))
        try:
            print(f"wrote {args.json} and {plot(data, args.json.with_suffix('.png'))}")
        except ImportError:  # matplotlib is an optional extra: the JSON stands alone
            print(f"wrote {args.json}")
    return 0


def _samples(text: str) -> int:
    """``--samples``: 1 to 16 continuations per opening (each its own seed; 0 would leave nothing
    to score, and the run grows linearly with it)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--samples: a whole number, not {text!r}") from None
    if not 1 <= n <= 16:
        raise argparse.ArgumentTypeError(f"--samples: 1 to 16 continuations per opening, not {n}")
    return n


def register(subparsers: argparse._SubParsersAction) -> None:
    """``tinymorph eval voice``."""
    from inference.evalcli import eval_subcommands

    v = eval_subcommands(subparsers).add_parser(
        "voice", help="an 'in my voice' vector from a real writer's paragraphs: does it move outputs toward them?")
    v.add_argument("--strength", type=float, action="append", help="steering strengths to test (repeatable)")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--samples", type=_samples, default=VoiceEvalConfig.samples,
                   help="continuations per test opening (each its own seed)")
    v.add_argument("--json", type=Path, help="write the rows and example continuations here (and a picture of them "
                   "beside it, .png)")
    v.set_defaults(func=_run)
