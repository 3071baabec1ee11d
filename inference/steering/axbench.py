"""``tinymorph eval steering``: AxBench-style (Wu et al. 2025), does steering beat prompting?

The concept set (``data/axbench/concepts.json``) has 16 *eval* concepts and 4 *tuning* concepts,
each a description and hand-written reference texts (the judge's, ``axbench_judge.py``), and
disjoint eval and tuning instructions. Each eval concept is asked 3 eval instructions. Methods:

* ``unsteered``: the instruction alone (the baseline of dNLL, not ranked);
* ``prompt``: the instruction plus "Make it about <description>.";
* ``caa``: DiffMean/CAA (``vectors.build_caa``) of the model's own answers to the *build*
  instructions with the concept asked for vs without it, added at ``layer``;
* ``sae-input``: the SAE feature whose activation rises most from the plain answers to the concept ones;
* ``sae-output``: among the ``candidates`` best input features, the one whose steering most raises
  next tokens close to the concept (Arad et al. 2025's output score: MiniLM cosine of the 20
  tokens whose logits it raises most, to the description);
* ``psr``: prompt-imitating steering (``psr.py``) trained on the concept's instruction;
* ``prompt+X``: the concept instruction and steering X together.

Strengths are calibrated, never per concept: for each method one strength from a grid, the one
with the best mean harmonic score on the *tuning* concepts and instructions, is used for every
eval concept. Generation is sampled as runs sample (temperature 0.7, top-p 0.95, min-p 0.05,
frequency penalty 0.2, DRY 0.8), one seed per (concept, instruction) shared by every method, on
llama.cpp (PSR on the torch engine, which steers per token). Every generation is cached in the
data dir, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._modelfiles import DATA, model_key
from ..engines.base import GenerationRequest, SamplingParams
from ..steering.spec import SteeringSpec
from .axbench_judge import Judge, Scores
from .vectors import build_caa

if TYPE_CHECKING:
    from ..registry import Inference

__all__ = ["CONCEPTS", "Concept", "Instruction", "ConceptSet", "Steer", "Method", "EvalConfig", "Row",
           "ConceptSteering", "prepare", "calibrate", "evaluate", "run", "summarize", "Result"]

CONCEPTS = DATA / "axbench" / "concepts.json"


class ConceptSetError(ValueError):
    """The concept file does not have what the evaluation needs (the message says what)."""


@dataclass(frozen=True)
class Concept:
    name: str
    description: str
    references: tuple[str, ...]


@dataclass(frozen=True)
class Instruction:
    text: str
    references: tuple[str, ...]


@dataclass(frozen=True)
class ConceptSet:
    eval: tuple[Concept, ...]
    tuning: tuple[Concept, ...]
    eval_instructions: tuple[Instruction, ...]
    tuning_instructions: tuple[Instruction, ...]
    build_prompts: tuple[str, ...]

    @classmethod
    def load(cls, path: Path = CONCEPTS) -> "ConceptSet":
        try:
            raw = json.loads(Path(path).read_text())
            concepts = {split: tuple(Concept(c["name"], c["description"], tuple(c["references"]))
                                     for c in raw[split]) for split in ("eval", "tuning")}
            ins = {split: tuple(Instruction(i["text"], tuple(i["references"])) for i in raw["instructions"][split])
                   for split in ("eval", "tuning")}
            build = tuple(raw["instructions"]["build"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConceptSetError(f"{path}: not a concept set ({type(exc).__name__}: {exc})") from None
        out = cls(concepts["eval"], concepts["tuning"], ins["eval"], ins["tuning"], build)
        out.check()
        return out

    def check(self) -> None:
        names = [c.name for c in self.eval + self.tuning]
        if len(set(names)) != len(names):
            raise ConceptSetError("concept names must be unique across eval and tuning")
        texts = [i.text for i in self.eval_instructions + self.tuning_instructions]
        if len(set(texts)) != len(texts) or set(texts) & set(self.build_prompts):
            raise ConceptSetError("eval, tuning and build instructions must be disjoint")
        if not (self.eval and self.tuning and self.eval_instructions and self.tuning_instructions
                and self.build_prompts):
            raise ConceptSetError("a concept set needs eval and tuning concepts, eval, tuning and build instructions")
        for c in self.eval + self.tuning:
            if not c.description.strip() or not c.references:
                raise ConceptSetError(f"concept {c.name!r} needs a description and reference texts")

    def judge(self, embedder: Any = None) -> Judge:
        return Judge({c.name: (c.description, c.references) for c in self.eval + self.tuning},
                     {i.text: i.references for i in self.eval_instructions + self.tuning_instructions},
                     embedder)

    def concept(self, name: str) -> Concept:
        return next(c for c in self.eval + self.tuning if c.name == name)


class Steer(StrEnum):
    NONE = "none"
    CAA = "caa"
    SAE_INPUT = "sae-input"
    SAE_OUTPUT = "sae-output"
    PSR = "psr"


@dataclass(frozen=True)
class Method:
    steer: Steer
    prompted: bool

    @property
    def name(self) -> str:
        if self.steer is Steer.NONE:
            return "prompt" if self.prompted else "unsteered"
        return f"prompt+{self.steer}" if self.prompted else str(self.steer)

    @classmethod
    def all(cls, steers: Sequence[Steer]) -> list["Method"]:
        return [cls(Steer.NONE, False), cls(Steer.NONE, True)] + [cls(s, p) for s in steers for p in (False, True)]


def concept_prompt(instruction: str, concept: Concept) -> str:
    """The prompting baseline, and the positive side of CAA's pairs (AxBench's template, simplified)."""
    return f"{instruction} Make it about {concept.description}."


@dataclass(frozen=True)
class EvalConfig:
    #: SAE for the sae-input/sae-output methods (its layer is where every direction acts); None: no SAE methods.
    sae_id: str | None = None
    steers: tuple[Steer, ...] = (Steer.CAA, Steer.SAE_INPUT, Steer.SAE_OUTPUT, Steer.PSR)
    #: The grid each method's one strength is picked from (residual norms; PSR too: its training lands near 0.15-0.2).
    strengths: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5, 0.8)
    psr_strengths: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    #: Eval concepts used (None: all), instructions asked of each, tuning concepts and instructions.
    concepts: int | None = None
    prompts_per_concept: int = 3
    tuning_concepts: int | None = None
    tuning_prompts: int = 2
    #: Where CAA acts without an SAE (with one, the SAE's layer).
    layer: int = 10
    build_prompts: int | None = None
    candidates: int = 8
    max_tokens: int = 64
    build_max_tokens: int = 96
    seed: int = 0
    temperature: float = 0.7

    def params(self, seed: int, max_tokens: int | None = None) -> SamplingParams:
        return SamplingParams(max_tokens=max_tokens or self.max_tokens, temperature=self.temperature, top_p=0.95,
                              min_p=0.05, frequency_penalty=0.2, dry_multiplier=0.8, dry_base=1.75,
                              dry_allowed_length=2, penalty_last_n=256, seed=seed)


@dataclass
class Row:
    split: str  # "tuning" or "eval"
    concept: str
    instruction: str
    method: str
    strength: float | None
    seed: int
    text: str
    nll: float
    concept_score: float
    instruction_score: float
    fluency: float
    nll_delta: float
    repetition: float
    harmonic: float
    concept_cosine: float
    instruction_cosine: float


# -- the steering per concept -----------------------------------------------------------------------

@dataclass
class ConceptSteering:
    """What each method steers one concept with (built from the build instructions only)."""
    concept: str
    layer: int
    caa: np.ndarray | None = None
    sae_input: int | None = None
    sae_output: int | None = None
    sae_candidates: list[dict] = field(default_factory=list)
    psr: str | None = None  # a steering source (psr:NAME)

    def spec(self, steer: Steer, strength: float, sae_id: str | None) -> list[dict] | None:
        if steer is Steer.NONE:
            return None
        if steer is Steer.CAA:
            return [{"source": "inline", "vector": [float(x) for x in self.caa], "layer": self.layer,
                     "strength": strength}]
        if steer in (Steer.SAE_INPUT, Steer.SAE_OUTPUT):
            fid = self.sae_input if steer is Steer.SAE_INPUT else self.sae_output
            return [{"source": f"sae:{sae_id}#{fid}", "strength": strength}]
        return [{"source": self.psr, "strength": strength}]

    def describe(self) -> dict:
        return {"concept": self.concept, "layer": self.layer,
                "caa_norm": None if self.caa is None else round(float(np.linalg.norm(self.caa)), 4),
                "sae_input": self.sae_input, "sae_output": self.sae_output,
                "sae_candidates": self.sae_candidates, "psr": self.psr}


class _Cache:
    """Generations by request (engine, prompt, steering, sampling): a rerun only generates what is new."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, str] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a crash: generated again
                    continue
                self.rows[row["key"]] = row["text"]

    @staticmethod
    def key(engine: str, request: GenerationRequest) -> str:
        blob = json.dumps([engine, request.messages, request.steering.to_json(), asdict(request.params)],
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def generate(self, inf: Inference, engine_name: str, request: GenerationRequest) -> str:
        k = self.key(engine_name, request)
        if k not in self.rows:
            text = inf.engine(engine_name).generate(request).text.strip()
            self.rows[k] = text
            with self.path.open("a") as f:
                f.write(json.dumps({"key": k, "text": text}) + "\n")
        return self.rows[k]


def _messages(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def build_texts(inf: Inference, cs: ConceptSet, concept: Concept, cfg: EvalConfig,
                cache: _Cache) -> list[tuple[str, str]]:
    """(with the concept, without) answers of the model to each build instruction."""
    pairs = []
    for j, p in enumerate(cs.build_prompts[:cfg.build_prompts]):
        params = cfg.params(10_000 + j, cfg.build_max_tokens)
        pos = cache.generate(inf, inf.base_name, GenerationRequest(messages=_messages(concept_prompt(p, concept)),
                                                                   params=params))
        neg = cache.generate(inf, inf.base_name, GenerationRequest(messages=_messages(p), params=params))
        if pos and neg:
            pairs.append((pos, neg))
    if not pairs:
        raise ConceptSetError(f"the model wrote nothing for the build instructions of {concept.name!r}")
    return pairs


def choose_features(inf: Inference, sae_id: str, concept: Concept, pairs: Sequence[tuple[str, str]],
                    candidates: int, embedder: Any) -> tuple[int, int, list[dict]]:
    """(input-chosen, output-chosen, candidates) SAE features for a concept.

    Input: mean activation on the concept answers minus on the plain ones (first token skipped).
    Output: of the ``candidates`` best by input, the one whose steering (at twice its typical
    strength, at least 0.5) raises most the logits of tokens MiniLM finds close to the description.
    """
    import torch

    engine = inf.torch_engine().load()
    sae = inf.saes.get(sae_id)
    pos = [a[sae.layer][1:] for a in engine.residuals([p for p, _ in pairs], [sae.layer])]
    neg = [a[sae.layer][1:] for a in engine.residuals([n for _, n in pairs], [sae.layer])]
    diff = (np.mean([sae.encode(a).mean(0) for a in pos], 0) - np.mean([sae.encode(a).mean(0) for a in neg], 0))
    top = [int(i) for i in np.argsort(-diff)[:candidates] if diff[i] > 0]
    if not top:
        raise ConceptSetError(f"no feature of {sae_id} is more active on {concept.name!r} texts")
    target = np.asarray(embedder.embed([concept.description])[0][0])
    ids = engine.tokenize(engine.render_prompt(GenerationRequest(messages=_messages("Write a short paragraph."))))
    with engine.lock, torch.inference_mode():
        base = engine.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1].float()
    info = engine.info
    scored = []
    for fid in top:
        s = max(0.5, 2 * inf.saes.feature_info(sae_id, fid, info).typical_strength)
        steering = engine.resolve(SteeringSpec.from_json([{"source": f"sae:{sae_id}#{fid}", "strength": min(s, 4.0)}]))
        with engine.lock, torch.inference_mode(), engine.hooks(steering, [False]):
            logits = engine.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1].float()
        raised = torch.topk(logits - base, 20).indices.tolist()
        words = " ".join(engine.tokenizer.decode([t]).strip() for t in raised)
        score = float(np.asarray(embedder.embed([words])[0][0]) @ target)
        scored.append({"feature": fid, "input": round(float(diff[fid]), 4), "output": round(score, 4),
                       "raised": words[:160]})
    return top[0], max(scored, key=lambda d: d["output"])["feature"], scored


def prepare(inf: Inference, cs: ConceptSet, concept: Concept, cfg: EvalConfig, cache: _Cache,
            embedder: Any, psr: Callable[[Concept], str] | None = None) -> ConceptSteering:
    """Every method's steering for one concept, from the build instructions (never the eval ones)."""
    layer = inf.saes.get(cfg.sae_id).layer if cfg.sae_id else cfg.layer
    pairs = build_texts(inf, cs, concept, cfg, cache)
    out = ConceptSteering(concept.name, layer)
    if Steer.CAA in cfg.steers:
        out.caa = build_caa(inf.torch_engine().load().residuals, pairs, [layer], progress=False)[layer]
    if cfg.sae_id and ({Steer.SAE_INPUT, Steer.SAE_OUTPUT} & set(cfg.steers)):
        out.sae_input, out.sae_output, out.sae_candidates = choose_features(
            inf, cfg.sae_id, concept, pairs, cfg.candidates, embedder)
    if Steer.PSR in cfg.steers and psr is not None:
        out.psr = psr(concept)
    return out


# -- generating and scoring --------------------------------------------------------------------------

def _nll(inf: Inference, messages: list[dict], text: str) -> float:
    """Mean NLL per token of ``text`` after ``messages`` under the unsteered model (torch reference)."""
    import torch
    import torch.nn.functional as F

    engine = inf.torch_engine().load()
    prompt_ids = engine.tokenize(engine.render_prompt(GenerationRequest(messages=messages)))
    out_ids = engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not out_ids:
        return 0.0
    with engine.lock, torch.inference_mode():
        logits = engine.model(input_ids=torch.tensor([prompt_ids + out_ids]), use_cache=False).logits[0]
    n = len(prompt_ids)
    return float(F.cross_entropy(logits[n - 1:-1].float(), torch.tensor(out_ids)))


@dataclass(frozen=True)
class _Job:
    split: str
    concept: Concept
    instruction: str
    method: Method
    strength: float | None
    seed: int


class _Runner:
    """Generates, measures NLL and scores jobs; one baseline NLL per (concept, instruction, prompted)."""

    def __init__(self, inf: Inference, cfg: EvalConfig, judge: Judge, steering: dict[str, ConceptSteering],
                 cache: _Cache, progress: bool) -> None:
        self.inf, self.cfg, self.judge, self.steering, self.cache = inf, cfg, judge, steering, cache
        self.progress = progress
        self.steers = _active(cfg, steering)
        self._nll: dict[tuple, float] = {}

    def messages(self, job: _Job) -> list[dict]:
        return _messages(concept_prompt(job.instruction, job.concept) if job.method.prompted else job.instruction)

    def text(self, job: _Job) -> tuple[str, float]:
        spec = self.steering[job.concept.name].spec(job.method.steer, job.strength, self.cfg.sae_id) \
            if job.method.steer is not Steer.NONE else None
        engine = f"{self.inf.base_name}@torch" if job.method.steer is Steer.PSR else self.inf.base_name
        messages = self.messages(job)
        req = GenerationRequest(messages=messages, params=self.cfg.params(job.seed),
                                steering=SteeringSpec.from_json(spec))
        text = self.cache.generate(self.inf, engine, req)
        return text, _nll(self.inf, messages, text)

    def run(self, jobs: Sequence[_Job], desc: str) -> list[Row]:
        from tqdm.auto import tqdm

        # baselines first: dNLL of every other job is against them
        order = sorted(jobs, key=lambda j: j.method.steer is not Steer.NONE)
        done: list[tuple[_Job, str, float]] = []
        for job in tqdm(order, desc=desc, disable=not self.progress, file=sys.stderr):
            text, nll = self.text(job)
            if job.method.steer is Steer.NONE:
                self._nll[(job.split, job.concept.name, job.instruction, job.method.prompted, job.seed)] = nll
            done.append((job, text, nll))
        items = []
        for job, text, nll in done:
            base = self._nll.get((job.split, job.concept.name, job.instruction, job.method.prompted, job.seed))
            if base is None:
                base = self.text(replace(job, method=Method(Steer.NONE, job.method.prompted), strength=None))[1]
            items.append((job.concept.name, job.instruction, text, nll - base))
        scores = self.judge.score_many(items) if items else []
        return [self._row(job, text, nll, s) for (job, text, nll), s in zip(done, scores)]

    @staticmethod
    def _row(job: _Job, text: str, nll: float, s: Scores) -> Row:
        return Row(job.split, job.concept.name, job.instruction, job.method.name, job.strength, job.seed, text,
                   round(nll, 4), round(s.concept, 4), round(s.instruction, 4), round(s.fluency, 4),
                   round(s.nll_delta, 4), round(s.repetition, 4), round(s.harmonic, 4),
                   round(s.concept_cosine, 4), round(s.instruction_cosine, 4))


def _cells(concepts: Sequence[Concept], instructions: Sequence[Instruction], per_concept: int,
           seed: int) -> list[tuple[Concept, str, int]]:
    """Each concept asks ``per_concept`` instructions in turn (concept i starts at i * per_concept),
    with one seed per cell that every method shares."""
    out = []
    for i, c in enumerate(concepts):
        for j in range(per_concept):
            k = (i * per_concept + j) % len(instructions)
            out.append((c, instructions[k].text, seed + 1000 * i + j))
    return out


def _grid(cfg: EvalConfig, steer: Steer) -> tuple[float, ...]:
    return cfg.psr_strengths if steer is Steer.PSR else cfg.strengths


def calibrate(runner: _Runner, cs: ConceptSet, cfg: EvalConfig) -> tuple[dict[str, float], list[Row]]:
    """One strength per steered method: the grid point with the best mean harmonic score on the
    tuning concepts and instructions."""
    cells = _cells(cs.tuning[:cfg.tuning_concepts], cs.tuning_instructions, cfg.tuning_prompts, cfg.seed + 500_000)
    jobs = [_Job("tuning", c, ins, m, s if m.steer is not Steer.NONE else None, seed)
            for c, ins, seed in cells for m in Method.all(runner.steers)
            for s in (_grid(cfg, m.steer) if m.steer is not Steer.NONE else (None,))]
    rows = runner.run(jobs, "calibrating strengths (tuning concepts)")
    best = {}
    for m in Method.all(runner.steers):
        if m.steer is Steer.NONE:
            continue
        by_s = {s: np.mean([r.harmonic for r in rows if r.method == m.name and r.strength == s])
                for s in _grid(cfg, m.steer)}
        best[m.name] = max(by_s, key=lambda s: (by_s[s], -s))  # ties: the gentler strength
    return best, rows


def evaluate(runner: _Runner, cs: ConceptSet, cfg: EvalConfig, strengths: dict[str, float]) -> list[Row]:
    cells = _cells(cs.eval[:cfg.concepts], cs.eval_instructions, cfg.prompts_per_concept, cfg.seed)
    jobs = [_Job("eval", c, ins, m, strengths.get(m.name), seed)
            for c, ins, seed in cells for m in Method.all(runner.steers)]
    return runner.run(jobs, "evaluating (held-out concepts)")


def _active(cfg: EvalConfig, steering: dict[str, ConceptSteering]) -> tuple[Steer, ...]:
    """The steered methods this run can do (SAE ones need an SAE; PSR its trainer)."""
    out = []
    for s in cfg.steers:
        if s in (Steer.SAE_INPUT, Steer.SAE_OUTPUT) and not cfg.sae_id:
            continue
        if s is Steer.PSR and any(cs.psr is None for cs in steering.values()):
            continue
        out.append(s)
    return tuple(out)


@dataclass
class Result:
    config: dict
    strengths: dict[str, float]
    tuning: list[Row]
    rows: list[Row]
    steering: list[dict]
    calibration: dict
    skipped: list[str]

    def to_json(self) -> dict:
        table, verdict = summarize(self.rows)
        return {"config": self.config, "strengths": self.strengths, "table": table, "verdict": verdict,
                "tuning": tuning_table(self.tuning), "judge_calibration": self.calibration,
                "steering": self.steering, "skipped": self.skipped,
                "rows": [asdict(r) for r in self.rows], "tuning_rows": [asdict(r) for r in self.tuning]}


def run(inf: Inference, cfg: EvalConfig = EvalConfig(), cs: ConceptSet | None = None,
        psr: Callable[[Concept], str] | None = None, progress: bool = True) -> Result:
    """Build every concept's steering, calibrate strengths on the tuning concepts, evaluate."""
    from tqdm.auto import tqdm

    from ..embeddings import Embedder

    cs = cs or ConceptSet.load()
    embedder = Embedder()
    judge = cs.judge(embedder)
    cache = _Cache(inf.data_dir / "eval" / f"steering-{model_key(inf.gguf)}.jsonl")
    used = list(cs.tuning[:cfg.tuning_concepts]) + list(cs.eval[:cfg.concepts])
    steering = {c.name: prepare(inf, cs, c, cfg, cache, embedder, psr)
                for c in tqdm(used, desc="building steering per concept", disable=not progress, file=sys.stderr)}
    runner = _Runner(inf, cfg, judge, steering, cache, progress)
    skipped = [str(s) for s in cfg.steers if s not in runner.steers]
    strengths, tuning = calibrate(runner, cs, cfg)
    rows = evaluate(runner, cs, cfg, strengths)
    conf = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    return Result(conf, strengths, tuning, rows, [steering[c.name].describe() for c in used],
                  judge.calibration(), skipped)


# -- summary ----------------------------------------------------------------------------------------

_KEYS = ("concept_score", "instruction_score", "fluency", "harmonic", "nll_delta", "repetition")


def _means(rows: Sequence[Row]) -> dict:
    return {k: round(float(np.mean([getattr(r, k) for r in rows])), 4) for k in _KEYS}


def tuning_table(rows: Sequence[Row]) -> list[dict]:
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        groups.setdefault((r.method, r.strength), []).append(r)
    return [{"method": m, "strength": s, "n": len(g), **_means(g)} for (m, s), g in groups.items()]


def summarize(rows: Sequence[Row]) -> tuple[list[dict], dict]:
    """Means per method (best harmonic first) and the verdict on issue 16's two targets."""
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(r.method, []).append(r)
    table = sorted(({"method": m, "strength": g[0].strength, "n": len(g), **_means(g)} for m, g in groups.items()),
                   key=lambda t: -t["harmonic"])
    by = {t["method"]: t for t in table}
    prompt = by.get("prompt", {}).get("harmonic", 0.0)
    steered = [t for t in table if t["method"] not in ("unsteered", "prompt")]
    alone = [t for t in steered if not t["method"].startswith("prompt+")]
    combined = [t for t in steered if t["method"].startswith("prompt+")]
    best_alone = max(alone, key=lambda t: t["harmonic"], default=None)
    best_combined = max(combined, key=lambda t: t["harmonic"], default=None)
    verdict = {
        "prompt": prompt,
        "best_steering": best_alone and {"method": best_alone["method"], "harmonic": best_alone["harmonic"]},
        "best_prompt_plus": best_combined and {"method": best_combined["method"], "harmonic": best_combined["harmonic"]},
        "steering_ge_prompt": bool(best_alone and best_alone["harmonic"] >= prompt),
        "prompt_plus_gt_prompt": bool(best_combined and best_combined["harmonic"] > prompt),
        "steering_gap": round(best_alone["harmonic"] - prompt, 4) if best_alone else None,
        "prompt_plus_gap": round(best_combined["harmonic"] - prompt, 4) if best_combined else None,
    }
    return table, verdict
