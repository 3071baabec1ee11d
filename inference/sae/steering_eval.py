"""Does SAE steering beat prompting? An honest comparison (AxBench; Arad et al. 2025).

For each concept and writing prompt, generate (greedy, the llama.cpp engine) under:

* ``unsteered``   the plain writing prompt;
* ``prompt``      the prompt plus "Make it about <concept>.";
* ``steer``       the plain prompt, steered with one SAE feature at each strength;
* ``prompt+steer`` both.

The feature for a concept is chosen two ways:

* ``input``  the feature most active on the concept's description (what reads the concept);
* ``output`` among the 8 most input-active features, the one whose steering makes the model's
  next-token predictions (top 20 tokens at a neutral prompt) closest to the concept in embedding
  space (what *writes* the concept; Arad et al.'s output-centric choice, simplified).

Scores per output: concept score = cosine(MiniLM(output), MiniLM(concept description));
fluency = per-token NLL of the output under the unsteered model (given the prompt it was written
for) minus the unsteered output's, and the repeated-trigram rate.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ..embeddings import Embedder
from ..engines.base import GenerationRequest, SamplingParams
from ..steering.spec import SteeringSpec
from .explain import text_features

if TYPE_CHECKING:
    from ..registry import Inference

__all__ = ["CONCEPTS", "PROMPTS", "Choice", "Condition", "EvalConfig", "Row", "plot", "run", "summarize"]


class Condition(StrEnum):
    UNSTEERED = "unsteered"
    PROMPT = "prompt"
    STEER = "steer"
    PROMPT_STEER = "prompt+steer"


class Choice(StrEnum):
    NONE = "-"
    INPUT = "input"
    OUTPUT = "output"


CONCEPTS = {"ocean": "the ocean, the sea, waves, ships and sailing",
            "anger": "anger, rage, fury and shouting",
            "food": "food, cooking, delicious meals and recipes"}
PROMPTS = ("Write a short paragraph about your morning.", "Describe a city street.",
           "Write the opening of a story.")


@dataclass
class EvalConfig:
    sae_id: str
    concepts: dict[str, str] = field(default_factory=lambda: dict(CONCEPTS))
    prompts: Sequence[str] = PROMPTS
    strengths: Sequence[float] = (0.0, 0.25, 0.5, 1.0)
    max_tokens: int = 48
    candidates: int = 8


@dataclass
class Row:
    concept: str
    prompt: int
    condition: str
    choice: str
    feature: int | None
    strength: float | None
    text: str
    concept_score: float
    nll: float
    nll_delta: float
    repetition: float


def _repetition(ids: Sequence[int]) -> float:
    grams = [tuple(ids[i:i + 3]) for i in range(len(ids) - 2)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def _messages(prompt: str, concept: str | None) -> list[dict]:
    return [{"role": "user", "content": prompt + (f" Make it about {concept}." if concept else "")}]


def _nll(inf: Inference, messages: list[dict], text: str) -> tuple[float, list[int]]:
    engine = inf.torch_engine().load()
    prompt_ids = engine.tokenize(engine.render_prompt(GenerationRequest(messages=messages)))
    out_ids = engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not out_ids:
        return 0.0, []
    with engine.lock, torch.inference_mode():
        logits = engine.model(input_ids=torch.tensor([prompt_ids + out_ids]), use_cache=False).logits[0]
    n = len(prompt_ids)
    return float(F.cross_entropy(logits[n - 1:-1].float(), torch.tensor(out_ids))), out_ids


def choose_features(inf: Inference, sae_id: str, description: str, candidates: int,
                    embedder: Embedder) -> dict[Choice, int]:
    """The input-chosen and the output-chosen feature for one concept."""
    top = text_features(inf, sae_id, description, top=candidates).top
    if not top:
        raise ValueError(f"no feature of {sae_id} fires on {description!r}")
    by_input = max(top, key=lambda t: t["mean"])["feature"]
    engine = inf.torch_engine().load()
    info = engine.info
    concept = np.asarray(embedder.embed([description])[0][0])
    ids = engine.tokenize(engine.render_prompt(GenerationRequest(messages=_messages("Write something.", None))))
    scores = {}
    for t in top:
        fid = t["feature"]
        strength = max(0.25, inf.saes.feature_info(sae_id, fid, info).typical_strength)
        steering = engine.resolve(SteeringSpec.from_json([{"source": f"sae:{sae_id}#{fid}",
                                                           "strength": min(strength, 2.0)}]))
        with engine.lock, torch.inference_mode(), engine.hooks(steering, [False]):
            logits = engine.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1]
        words = engine.tokenizer.decode(torch.topk(logits, 20).indices.tolist())
        scores[fid] = float(np.asarray(embedder.embed([words])[0][0]) @ concept)
    return {Choice.INPUT: by_input, Choice.OUTPUT: max(scores, key=scores.get)}


def run(inf: Inference, cfg: EvalConfig, progress: bool = True) -> list[Row]:
    from tqdm.auto import tqdm

    embedder = Embedder()
    gen = inf.engine()
    params = SamplingParams(max_tokens=cfg.max_tokens, temperature=0.0)
    rows: list[Row] = []
    jobs = []
    for concept, desc in cfg.concepts.items():
        feats = choose_features(inf, cfg.sae_id, desc, cfg.candidates, embedder)
        for p in range(len(cfg.prompts)):
            jobs.append((concept, desc, p, Condition.UNSTEERED, Choice.NONE, None, None))
            jobs.append((concept, desc, p, Condition.PROMPT, Choice.NONE, None, None))
            for choice in (Choice.INPUT, Choice.OUTPUT):
                for s in cfg.strengths:
                    for cond in (Condition.STEER, Condition.PROMPT_STEER):
                        jobs.append((concept, desc, p, cond, choice, feats[choice], float(s)))
    base_nll: dict[tuple[str, int], float] = {}
    for concept, desc, p, cond, choice, fid, s in tqdm(jobs, desc="steering eval", disable=not progress):
        messages = _messages(cfg.prompts[p], concept if cond in (Condition.PROMPT, Condition.PROMPT_STEER) else None)
        spec = SteeringSpec.from_json([{"source": f"sae:{cfg.sae_id}#{fid}", "strength": s}] if fid is not None else None)
        text = gen.generate(GenerationRequest(messages=messages, params=params, steering=spec)).text
        nll, ids = _nll(inf, messages, text)
        if cond is Condition.UNSTEERED:
            base_nll[(concept, p)] = nll
        score = float(np.asarray(embedder.embed([text or " "])[0][0]) @ np.asarray(embedder.embed([desc])[0][0]))
        rows.append(Row(concept, p, str(cond), str(choice), fid, s, text, score, nll,
                        nll - base_nll[(concept, p)], _repetition(ids)))
    return rows


def summarize(rows: Sequence[Row]) -> tuple[list[dict], str]:
    """Means over concepts and prompts per (condition, choice, strength), and the verdict."""
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        groups.setdefault((r.condition, r.choice, r.strength), []).append(r)
    table = [{"condition": c, "choice": ch, "strength": s, "n": len(g),
              "concept_score": float(np.mean([r.concept_score for r in g])),
              "nll_delta": float(np.mean([r.nll_delta for r in g])),
              "repetition": float(np.mean([r.repetition for r in g]))}
             for (c, ch, s), g in groups.items()]
    base = next(t for t in table if t["condition"] == Condition.UNSTEERED)
    fluent = [t for t in table if t["nll_delta"] <= 1.0 and t["repetition"] <= base["repetition"] + 0.2]
    best = max(fluent, key=lambda t: t["concept_score"])
    prompt = next(t for t in table if t["condition"] == Condition.PROMPT)
    steer = [t for t in fluent if t["condition"] == Condition.STEER and t["strength"]]
    best_steer = max(steer, key=lambda t: t["concept_score"]) if steer else None
    by_choice = {ch: max((t for t in table if t["choice"] == ch and t["strength"]),
                         key=lambda t: t["concept_score"]) for ch in (Choice.INPUT, Choice.OUTPUT)}
    how = "" if best["strength"] is None else f" ({best['choice']}-chosen feature, strength {best['strength']:g})"
    alone = (f"steering alone at best: {best_steer['concept_score']:.3f}" if best_steer
             else "no fluent steering-only setting")
    note = (f"Best fluent setting (NLL delta <= 1 nat/token): {best['condition']}{how}, concept score "
            f"{best['concept_score']:.3f} vs unsteered {base['concept_score']:.3f}. Prompting alone: "
            f"{prompt['concept_score']:.3f}; {alone}")
    note += ". Feature choice, best steered setting of each (fluent or not): " + ", ".join(
        f"{ch}-chosen {t['concept_score']:.3f} (NLL delta {t['nll_delta']:+.2f}, repetition "
        f"{t['repetition']:.2f})" for ch, t in by_choice.items()) + "."
    return table, note


def plot(table: Sequence[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    for key, ax, ylabel in (("concept_score", axes[0], "concept score (MiniLM cosine)"),
                            ("nll_delta", axes[1], "NLL delta vs unsteered (nats/token)")):
        for cond in (Condition.STEER, Condition.PROMPT_STEER):
            for ch, ls in ((Choice.INPUT, "--"), (Choice.OUTPUT, "-")):
                pts = sorted((t["strength"], t[key]) for t in table if t["condition"] == cond and t["choice"] == ch)
                if pts:
                    ax.plot(*zip(*pts), ls, marker="o", label=f"{cond} ({ch}-chosen)")
        for cond, color in ((Condition.UNSTEERED, "grey"), (Condition.PROMPT, "black")):
            v = next((t[key] for t in table if t["condition"] == cond), None)
            if v is not None:
                ax.axhline(v, color=color, ls=":", label=str(cond))
        ax.set_xlabel("steering strength (residual norms)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    fig.suptitle("Steering eval: prompting vs SAE steering", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def save(rows: Sequence[Row], table: Sequence[dict], note: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "steering_eval.json").write_text(json.dumps(
        {"rows": [asdict(r) for r in rows], "table": list(table), "note": note}, indent=1))
    return plot(table, folder / "steering_eval.png")
