"""``tinymorph inference ...``: serve the OpenAI-compatible API alone, manage steering vectors;
also registers ``tinymorph sae ...`` and ``tinymorph eval ...`` (``sae.cli``).

Commands run with ``InferenceConfig.from_env()`` (``$TINYMORPH_DATA_DIR``, ``$TINYMORPH_DB``)
unless the program that registers them passes its own ``config``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path

from .config import InferenceConfig
from .registry import Inference
from .sae.cli import register as register_sae
from .steering.gguf import GGUFLayers
from .steering.vectors import shipped_vectors

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction,
             config: Callable[[], InferenceConfig] = InferenceConfig.from_env) -> None:
    """Add ``inference``, ``sae`` and ``eval`` to ``subparsers``; ``config`` is called when a
    command runs, for the ``InferenceConfig`` it uses."""
    p = subparsers.add_parser("inference", help="steered inference: serve, vectors, models")
    p.set_defaults(inference_config=config)
    sub = p.add_subparsers(dest="inference_command", required=True)

    serve = sub.add_parser("serve", help="run the OpenAI-compatible API alone, at /v1")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--gguf", type=Path, default=None, help="serve this GGUF instead of SmolLM2")
    serve.set_defaults(func=_serve)

    models = sub.add_parser("models", help="list the models served")
    models.set_defaults(func=_models)

    vec = sub.add_parser("vectors", help="the CAA steering-vector library")
    vsub = vec.add_subparsers(dest="vectors_command", required=True)
    ls = vsub.add_parser("list")
    ls.set_defaults(func=_vectors_list)
    build = vsub.add_parser("build", help="build a CAA vector from a JSON file of [positive, negative] "
                                          "pairs, or a shipped one by name (formal, joyful, concise), "
                                          "or train a PSR vector from an instruction")
    build.add_argument("name")
    build.add_argument("--pairs", type=Path, help="JSON: {'pairs': [[pos, neg], ...]} or a list")
    build.add_argument("--instruction", help="PSR: learn what this instruction does (e.g. 'write about winter'); "
                                             "steer with psr:NAME")
    build.add_argument("--layer", type=int, action="append", help="layer(s); default: the file's")
    build.set_defaults(func=_vectors_build)
    export = vsub.add_parser("export", help="write a vector as a llama.cpp control-vector GGUF")
    export.add_argument("name")
    export.add_argument("path", type=Path)
    export.add_argument("--convention", choices=["applied", "generator"], default="applied")
    export.set_defaults(func=_vectors_export)
    imp = vsub.add_parser("import", help="read a llama.cpp control-vector GGUF into the library")
    imp.add_argument("name")
    imp.add_argument("path", type=Path)
    imp.add_argument("--convention", choices=["applied", "generator"], default="applied",
                     help="'generator': the file came from llama.cpp's cvector-generator, whose "
                          "direction.N was measured at block N-1")
    imp.set_defaults(func=_vectors_import)

    register_sae(subparsers, config)  # tinymorph sae ..., tinymorph eval steering


def _inference(args: argparse.Namespace) -> Inference:
    return Inference(args.inference_config(), gguf=getattr(args, "gguf", None))


def _serve(args: argparse.Namespace) -> int:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from .server import create_app

    app = Starlette(routes=[Mount("/v1", app=create_app(_inference(args)))])
    uvicorn.run(app, host=args.host, port=args.port)
    return 0


def _models(args) -> int:
    for m in _inference(args).models():
        print(f"{m.name}\t{m.backend}\t{m.path}")
    return 0


def _vectors_list(args) -> int:
    inf = _inference(args)
    for v in inf.library.list():
        d = v.to_dict()
        print(f"{d['name']}\tlayer {d['layer']}\tnorm {d['norm']}\t{d['kind']}\t{d['model_key']}")
    return 0


def _vectors_build(args) -> int:
    inf = _inference(args)
    info = inf.torch_engine().info
    if args.instruction:
        from .steering.psr import PSRConfig, train

        config = PSRConfig.from_env()
        if args.layer:
            config = dataclasses.replace(config, layer=args.layer[0])
        psr = train(inf.torch_engine(), args.instruction, config, writer=inf.engine())
        for v in inf.library.put_psr(args.name, info, psr, source="cli"):
            print(f"{v.name}	psr layer {v.layer}	strength {psr.strength:.3f}	" +
                  " ".join(f"{k} {x:.3f}" for k, x in psr.losses.items()))
        return 0
    if args.pairs:
        data = json.loads(args.pairs.read_text())
        pairs = data["pairs"] if isinstance(data, dict) else data
        layers = args.layer or [data.get("layer", info.n_layers // 3) if isinstance(data, dict) else info.n_layers // 3]
        source = str(args.pairs)
    elif args.name in shipped_vectors():
        spec = shipped_vectors()[args.name]
        pairs, layers, source = spec["pairs"], args.layer or [spec["layer"]], f"shipped:{args.name}"
    else:
        print(f"no --pairs given and no shipped vector named {args.name!r}", file=sys.stderr)
        return 2
    for v in inf.library.build(args.name, info, [tuple(p) for p in pairs], layers, source=source):
        print(f"{v.name}\tlayer {v.layer}\tnorm {v.norm:.3f}")
    return 0


def _vectors_export(args) -> int:
    inf = _inference(args)
    info = inf.model_info()
    if not inf.library.get(args.name, info.key):
        inf.library.caa_vectors(args.name, info)  # builds a shipped vector on first use
    inf.library.export_gguf(args.name, info.key, args.path, GGUFLayers(args.convention))
    print(args.path)
    return 0


def _vectors_import(args) -> int:
    inf = _inference(args)
    for v in inf.library.import_gguf(args.path, args.name, inf.model_info().key, GGUFLayers(args.convention)):
        print(f"{v.name}\tlayer {v.layer}\tnorm {v.norm:.3f}")
    return 0
