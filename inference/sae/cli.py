"""``tinymorph sae train|eval|features|explain|decompose`` and ``tinymorph eval steering`` (the eval
itself is ``steering/axbench.py``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path

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

    c = sub.add_parser("calibrate", help="measure features' default strength and range (the fluency ladder); "
                                         "stored with the SAE and served by the API")
    c.add_argument("sae_id")
    c.add_argument("features", type=int, nargs="+")
    c.set_defaults(func=_calibrate)

    d = sub.add_parser("decompose", help="a CAA vector as SAE features; its effect on later layers")
    d.add_argument("vector")
    d.add_argument("sae_id")
    d.add_argument("--prompt", default="Tell me about your weekend.")
    d.add_argument("--strength", type=float, default=0.5)
    d.set_defaults(func=_decompose)

    esub = eval_subcommands(subparsers)
    subparsers.choices["eval"].set_defaults(inference_config=config)
    s = esub.add_parser("steering", help="AxBench-style: prompting vs CAA, SAE features and PSR on held-out "
                                         "concepts, at strengths calibrated on tuning concepts")
    s.add_argument("--sae", default="auto",
                   help="SAE for the sae-input/sae-output methods: an SAE id, 'auto' (the default SAE at layer "
                        f"{_EVAL_LAYER}, trained first if missing) or 'none'")
    s.add_argument("--out", type=Path, default=None, help="folder for steering_eval.{md,json,png} "
                   "(default: <data dir>/eval/steering)")
    s.add_argument("--methods", default="caa,sae-input,sae-output,psr",
                   help="steered methods (each also with the prompt); prompt and unsteered always run")
    s.add_argument("--concepts", type=_positive, default=None, help="first N held-out concepts (default: all)")
    s.add_argument("--prompts", type=_positive, default=3, help="instructions per held-out concept")
    s.add_argument("--tuning-concepts", type=_positive, default=None, help="first N tuning concepts (default: all)")
    s.add_argument("--tuning-prompts", type=_positive, default=2, help="instructions per tuning concept")
    s.add_argument("--strengths", default=None, help="the grid strengths are calibrated on (comma-separated)")
    s.add_argument("--psr-strengths", default=None, help="the same for PSR (comma-separated)")
    s.add_argument("--max-tokens", type=_positive, default=64)
    s.add_argument("--concept-file", type=Path, default=None, help="another concept set (JSON, as the shipped one)")
    s.set_defaults(func=_eval_steering)


_EVAL_LAYER = 10


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
    return n


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


def _calibrate(args) -> int:
    from ..steering.calibration import CalibrationConfig
    from .calibrate import calibrate_feature

    inf = _inf(args)
    for feature in args.features:
        def progress(f: float, feature: int = feature) -> None:
            print(f"\r[tinymorph] feature {feature}: {100 * f:.0f}%", end="", file=sys.stderr, flush=True)

        guide, points = calibrate_feature(inf, args.sae_id, feature, CalibrationConfig.from_env(), progress)
        print(file=sys.stderr)
        _table([(p.strength, f"{p.delta_nll:+.3f}", f"{p.repeated_trigrams:.3f}",
                 f"± {p.trigram_se:.3f}" if p.strength else "", f"{p.concept:.3f}",
                 "yes" if p.fluent else "no", "yes" if p.rises else "no") for p in points],
               ["strength", "dNLL", "rep. trigrams", "rise's se", "feature act.", "fluent", "rises"])
        print(f"{args.sae_id}#{feature}: default {guide.default:g}, recommended {guide.low:g} to {guide.high:g} "
              f"({guide.basis})")
    return 0


def _decompose(args) -> int:
    from .decompose import decompose, downstream

    inf = _inf(args)
    print(json.dumps(decompose(inf, args.vector, args.sae_id), indent=1))
    print(json.dumps(downstream(inf, args.vector, args.prompt, args.strength), indent=1))
    return 0


def _eval_steering(args) -> int:
    """Errors in what was asked (methods, strengths, the concept file, an unknown SAE) print one line, exit 2."""
    from ..exceptions import InferenceError
    from ..steering import axbench as ab
    from ..steering.axbench_report import markdown, save

    try:
        steers = tuple(ab.Steer(m.strip()) for m in args.methods.split(",") if m.strip())
    except ValueError:
        known = ", ".join(str(s) for s in ab.Steer if s is not ab.Steer.NONE)
        print(f"tinymorph eval steering: --methods takes {known}, not {args.methods!r}", file=sys.stderr)
        return 2
    grids = {}
    for flag, given, default in (("--strengths", args.strengths, ab.EvalConfig.strengths),
                                 ("--psr-strengths", args.psr_strengths, ab.EvalConfig.psr_strengths)):
        try:
            grids[flag] = tuple(float(x) for x in given.split(",")) if given else default
        except ValueError:
            print(f"tinymorph eval steering: {flag} must be numbers separated by commas, not {given!r}",
                  file=sys.stderr)
            return 2
        if not grids[flag] or any(not 0 < g <= 8 for g in grids[flag]):
            print("tinymorph eval steering: every strength must be in (0, 8] residual norms", file=sys.stderr)
            return 2
    grid = grids["--strengths"]
    inf = _inf(args)
    try:
        cs = ab.ConceptSet.load(args.concept_file) if args.concept_file else ab.ConceptSet.load()
        sae_id = _eval_sae(inf, args.sae, steers)
        cfg = ab.EvalConfig(sae_id=sae_id, steers=steers, strengths=grid, psr_strengths=grids["--psr-strengths"],
                            concepts=args.concepts,
                            prompts_per_concept=args.prompts, tuning_concepts=args.tuning_concepts,
                            tuning_prompts=args.tuning_prompts, max_tokens=args.max_tokens)
        layer = inf.saes.get(sae_id).layer if sae_id else cfg.layer
        result = ab.run(inf, cfg, cs, psr=_psr_trainer(inf, layer))
    except (ab.ConceptSetError, InferenceError) as exc:
        print(f"tinymorph eval steering: {exc}", file=sys.stderr)
        return 2
    paths = save(result, args.out or inf.data_dir / "eval" / "steering")
    if sae_id:  # also where /api/sae/{id}/eval and its plot read it
        save(result, inf.saes.folder(sae_id) / "eval")
    print(markdown(result.to_json()))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _eval_sae(inf: Inference, choice: str, steers) -> str | None:
    """The SAE the eval uses: 'none', an existing id, or 'auto' (the default one, trained if missing)."""
    from ..steering.axbench import Steer

    if choice == "none" or not ({Steer.SAE_INPUT, Steer.SAE_OUTPUT} & set(steers)):
        return None
    if choice != "auto":
        inf.saes.get(choice)  # UnknownSAE says where it looked
        return choice
    from .train import TrainConfig, sae_id_for, train

    cfg = TrainConfig(layer=_EVAL_LAYER)
    sae_id = sae_id_for(inf.base_name, cfg)
    if sae_id not in inf.saes.ids():
        print(f"[tinymorph] training the default SAE {sae_id} for the SAE methods (once)", file=sys.stderr)
        train(inf, cfg, sae_id=sae_id)
    return sae_id


def _psr_trainer(inf: Inference, layer: int):
    """PSR for a concept (``steering/psr.py``): trained once on the prompting method's own
    instruction ("Make it about ..."), stored as ``eval-NAME`` in the library, reused by later runs."""
    from ..steering.axbench import Concept
    from ..steering.psr import PSRConfig, train

    def trainer(concept: Concept) -> str:
        name, engine = f"eval-{concept.name}", inf.torch_engine()
        if not inf.library.get(name, engine.info.key):
            print(f"[tinymorph] training PSR for {concept.name} (once)", file=sys.stderr)
            config = dataclasses.replace(PSRConfig.from_env(), layer=layer)
            psr = train(engine, f"Make it about {concept.description}.", config, writer=inf.engine())
            inf.library.put_psr(name, engine.info, psr, source="tinymorph eval steering")
        return f"psr:{name}"

    return trainer
