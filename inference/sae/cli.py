"""``tinymorph sae train|eval|features|explain|decompose`` and ``tinymorph eval steering``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from ..config import InferenceConfig
from ..evalcli import eval_subcommands
from ..registry import Inference

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction,
             config: Callable[[], InferenceConfig] = InferenceConfig.from_env) -> None:
    """``config`` makes the ``InferenceConfig`` a command runs with (read when it runs)."""
    p = subparsers.add_parser("sae", help="SAEs on the residual stream: train, evaluate, explain")
    p.set_defaults(inference_config=config)
    sub = p.add_subparsers(dest="sae_command", required=True)

    t = sub.add_parser("train", help="train a TopK SAE (sae-lens) on your documents + self-written text")
    t.add_argument("--layer", type=int, required=True)
    t.add_argument("--d-sae", type=int, default=4096)
    t.add_argument("--k", type=int, default=32)
    t.add_argument("--tokens", type=int, default=200_000)
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine")
    t.add_argument("--corpus-samples", type=int, default=2, help="self-written answers per writing prompt")
    t.add_argument("--id", default=None, help="SAE id (default: MODEL-L<layer>-<d_sae>-k<k>)")
    t.add_argument("--no-resume", action="store_true", help="start over instead of resuming")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="L0, FVU, CE loss recovered, dead/dense latents; density plot")
    e.add_argument("sae_id")
    e.set_defaults(func=_eval)

    f = sub.add_parser("features", help="top features on a text, or search features by text")
    f.add_argument("sae_id")
    f.add_argument("--text", help="show the features most active on this text, per token")
    f.add_argument("--search", help="features whose label/examples match this query")
    f.add_argument("--top", type=int, default=10)
    f.set_defaults(func=_features)

    x = sub.add_parser("explain", help="a feature's card: label, examples, self-explanation scores")
    x.add_argument("sae_id")
    x.add_argument("feature", type=int)
    x.set_defaults(func=_explain)

    d = sub.add_parser("decompose", help="a CAA vector as SAE features; its effect on later layers")
    d.add_argument("vector")
    d.add_argument("sae_id")
    d.add_argument("--prompt", default="Tell me about your weekend.")
    d.add_argument("--strength", type=float, default=0.5)
    d.set_defaults(func=_decompose)

    esub = eval_subcommands(subparsers)
    subparsers.choices["eval"].set_defaults(inference_config=config)
    s = esub.add_parser("steering", help="prompting vs SAE steering: concept score and fluency")
    s.add_argument("sae_id")
    s.add_argument("--concept", action="append", help="NAME=description (repeatable)")
    s.add_argument("--prompts", type=int, default=3, help="how many of the built-in writing prompts")
    s.add_argument("--strengths", default="0,0.25,0.5,1")
    s.add_argument("--max-tokens", type=int, default=48)
    s.set_defaults(func=_eval_steering)


def _inf(args: argparse.Namespace) -> Inference:
    return Inference(args.inference_config())


def _table(rows, headers) -> None:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    print("  ".join(str(h).ljust(w) for h, w in zip(headers, widths)))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


def _train(args) -> int:
    from .train import TrainConfig, train

    cfg = TrainConfig(layer=args.layer, d_sae=args.d_sae, k=args.k, tokens=args.tokens,
                      batch_size=args.batch_size, lr=args.lr, device=args.device,
                      corpus_samples=args.corpus_samples)
    r = train(_inf(args), cfg, resume=not args.no_resume, sae_id=args.id)
    state = "already trained" if r.skipped else (f"resumed from {r.resumed_from}" if r.resumed_from else "trained")
    print(f"{r.sae_id}\t{state}\t{r.tokens} tokens\t{r.folder}")
    return 0


def _eval(args) -> int:
    from .eval import evaluate

    inf = _inf(args)
    r = evaluate(inf, args.sae_id)
    _table(r.rows(), ["metric", "value"])
    print(f"plot: {inf.saes.folder(args.sae_id) / 'eval' / 'density.png'}")
    return 0


def _features(args) -> int:
    from .explain import FeatureIndex, text_features

    inf = _inf(args)
    if args.text:
        r = text_features(inf, args.sae_id, args.text, args.top)
        index = FeatureIndex(inf, args.sae_id)
        for f in r.top:
            marked = "".join(f"[{t}]" if a > 0 else t for t, a in zip(r.tokens, f["acts"]))
            print(f"#{f['feature']:<5} max {f['max']:<8.3f} {index.feature(f['feature'])['label']!r:30} {marked}")
    elif args.search:
        index = FeatureIndex(inf, args.sae_id)
        _table([(f"{args.sae_id}#{j}", f"{s:.3f}", index.feature(j)["label"])
                for j, s in index.search(args.search, args.top)], ["id", "score", "label"])
    else:
        print("give --text or --search", file=sys.stderr)
        return 2
    return 0


def _explain(args) -> int:
    from .explain import feature_card

    card = feature_card(_inf(args), args.sae_id, args.feature)
    print(f"{card['id']}  layer {card['layer']}  label {card['label']!r}  density {card['density']:.4f}")
    print(f"recommended strength {card['recommended']}  (typical {card['typical_strength']})")
    for e in card["examples"][:5]:
        print("   ", "".join(f"[{t}]" if a > 0 else t for t, a in zip(e["tokens"], e["acts"])).replace("\n", " "))
    s = card["scores"]
    _table([(sc, f"{a:.3f}", f"{h:.3f}", f"{c:.3f}") for sc, a, h, c in
            zip(s["scales"], s["similarity"], s["entropy"], s["composite"])],
           ["scale", "self-similarity", "entropy", "composite"])
    print(f"self-explanation at scale {s['best_scale']}: {s['explanation']!r}")
    return 0


def _decompose(args) -> int:
    from .decompose import decompose, downstream

    inf = _inf(args)
    print(json.dumps(decompose(inf, args.vector, args.sae_id), indent=1))
    print(json.dumps(downstream(inf, args.vector, args.prompt, args.strength), indent=1))
    return 0


def _eval_steering(args) -> int:
    from . import steering_eval as se

    inf = _inf(args)
    concepts = dict(c.split("=", 1) for c in args.concept) if args.concept else dict(se.CONCEPTS)
    cfg = se.EvalConfig(args.sae_id, concepts, se.PROMPTS[:args.prompts],
                        tuple(float(s) for s in args.strengths.split(",")), args.max_tokens)
    rows = se.run(inf, cfg)
    table, note = se.summarize(rows)
    _table([(t["condition"], t["choice"], "-" if t["strength"] is None else t["strength"], t["n"],
             f"{t['concept_score']:.3f}", f"{t['nll_delta']:+.3f}", f"{t['repetition']:.2f}") for t in table],
           ["condition", "feature", "strength", "n", "concept", "NLL delta", "repetition"])
    path = se.save(rows, table, note, inf.saes.folder(args.sae_id) / "eval")
    print(f"plot: {path}")
    print(note)
    return 0
