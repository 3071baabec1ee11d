"""What ``tinymorph eval steering`` writes: a markdown table, the full JSON (every output and its
scores, the tuning grid, the judge's calibration) and a plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .axbench import Result

__all__ = ["markdown", "plot", "save"]

_COLUMNS = (("concept", "concept_score"), ("instruction", "instruction_score"), ("fluency", "fluency"),
            ("harmonic", "harmonic"), ("dNLL", "nll_delta"), ("repetition", "repetition"))


def _strength(s: float | None) -> str:
    return "-" if s is None else f"{s:g}"


def markdown(data: dict) -> str:
    """The results table and the verdict on issue 16's targets, from ``Result.to_json()``."""
    cfg, v = data["config"], data["verdict"]
    n_concepts = len({r["concept"] for r in data["rows"]})
    n_prompts = len({(r["concept"], r["instruction"]) for r in data["rows"]})
    lines = [
        "# tinymorph eval steering",
        "",
        f"{n_concepts} held-out concepts, {n_prompts} (concept, instruction) cells, one sample each per method "
        f"(seed shared across methods), {cfg['max_tokens']} tokens. Scores on [0, 1] (judge: "
        "`inference/steering/axbench_judge.py`); harmonic = AxBench's harmonic mean of concept, instruction and "
        "fluency per output, averaged. Strengths: one per method, picked on "
        f"{len({r['concept'] for r in data['tuning_rows']})} tuning concepts (never on these).",
        "",
        "| method | strength | n | " + " | ".join(c for c, _ in _COLUMNS) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in _COLUMNS) + " |",
    ]
    for t in data["table"]:
        cells = [f"{t[k]:+.3f}" if k == "nll_delta" else f"{t[k]:.3f}" for _, k in _COLUMNS]
        lines.append(f"| {t['method']} | {_strength(t['strength'])} | {t['n']} | " + " | ".join(cells) + " |")
    lines += ["", "## Targets (issue 16, requirement 6)", ""]
    if v["best_steering"]:
        lines.append(f"* some steering method >= prompting on the harmonic mean: "
                     f"**{'met' if v['steering_ge_prompt'] else 'not met'}**: best steering alone "
                     f"{v['best_steering']['method']} {v['best_steering']['harmonic']:.3f} vs prompt "
                     f"{v['prompt']:.3f} ({v['steering_gap']:+.3f})")
    if v["best_prompt_plus"]:
        lines.append(f"* prompt+steering > prompting alone: **{'met' if v['prompt_plus_gt_prompt'] else 'not met'}**: "
                     f"best {v['best_prompt_plus']['method']} {v['best_prompt_plus']['harmonic']:.3f} vs prompt "
                     f"{v['prompt']:.3f} ({v['prompt_plus_gap']:+.3f})")
    if data["skipped"]:
        lines.append(f"* not run: {', '.join(data['skipped'])}")
    lines += ["", "## Strength calibration (tuning concepts, mean harmonic per grid point)", "",
              "| method | " + " | ".join(_strength(s) for s in _grid(data)) + " | chosen |",
              "| --- | " + " | ".join("---" for _ in _grid(data)) + " | --- |"]
    for m, chosen in data["strengths"].items():
        by_s = {t["strength"]: t["harmonic"] for t in data["tuning"] if t["method"] == m}
        lines.append(f"| {m} | " + " | ".join(f"{by_s[s]:.3f}" if s in by_s else "" for s in _grid(data))
                     + f" | {chosen:g} |")
    return "\n".join(lines) + "\n"


def _grid(data: dict) -> list[float]:
    return sorted({t["strength"] for t in data["tuning"] if t["strength"] is not None})


def plot(data: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    table = data["table"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.6), dpi=110, gridspec_kw={"width_ratios": [3, 2]})
    x = np.arange(len(table))
    for i, (label, key) in enumerate(_COLUMNS[:4]):
        ax.bar(x + (i - 1.5) * 0.2, [t[key] for t in table], 0.2, label=label)
    ax.axhline(data["verdict"]["prompt"], color="black", ls=":", lw=1, label="prompt (harmonic)")
    ax.set_xticks(x, [f"{t['method']}\n{_strength(t['strength'])}" for t in table], fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score (0-1)")
    ax.set_title("held-out concepts, at calibrated strengths", fontsize=9)
    ax.legend(fontsize=7, ncol=5, loc="upper right")
    for m in data["strengths"]:
        pts = sorted((t["strength"], t["harmonic"]) for t in data["tuning"] if t["method"] == m)
        bx.plot(*zip(*pts), "--" if m.startswith("prompt+") else "-", marker="o", ms=3, label=m)
    prompt = next((t["harmonic"] for t in data["tuning"] if t["method"] == "prompt"), None)
    if prompt is not None:
        bx.axhline(prompt, color="black", ls=":", lw=1, label="prompt")
    bx.set_xlabel("strength (residual norms at the layer)")
    bx.set_ylabel("mean harmonic")
    bx.set_title("calibration on the tuning concepts", fontsize=9)
    bx.legend(fontsize=6)
    fig.suptitle("tinymorph eval steering (AxBench-style), SmolLM2-135M", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def save(result: "Result", folder: Path) -> dict[str, Path]:
    """``steering_eval.{json,md,png}`` in ``folder`` (the png only where matplotlib is installed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = result.to_json()
    out = {"json": folder / "steering_eval.json", "md": folder / "steering_eval.md"}
    out["json"].write_text(json.dumps(data, indent=1))
    out["md"].write_text(markdown(data))
    try:
        out["png"] = plot(data, folder / "steering_eval.png")
    except ImportError:  # matplotlib is an optional extra: the table and JSON stand alone
        pass
    return out
