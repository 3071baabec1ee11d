"""``/api/sae/...`` for the frontend: list SAEs, search features by text, feature cards, plots.

    GET /api/sae                              SAEs in the catalog (with their eval metrics)
    GET /api/sae/features?q=&sae=&limit=      {features: [{id, label, recommended: [lo, hi], default_strength}]}
    GET /api/sae/{sae_id}/features/{n}        a feature card (label, examples, range, scores)
    GET /api/sae/{sae_id}/eval                eval.json and steering_eval.json, as written
    GET /api/sae/{sae_id}/plots/{name}.png    density.png, steering_eval.png

``id`` is ``SAE_ID#FEATURE``, usable as the steering source ``sae:SAE_ID#FEATURE``. The app
that mounts ``routes`` puts its ``Inference`` at ``app.state.inference``; without one, the first
request builds one from the environment (``InferenceConfig.from_env()``).
"""

from __future__ import annotations

import json

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

from ..config import InferenceConfig
from ..exceptions import InferenceError, InvalidRequest, UnknownSAE
from ..registry import Inference
from ..server import error_response
from .catalog import SAECatalog

__all__ = ["routes"]

PLOTS = {"density": ("eval", "density.png"), "steering_eval": ("eval", "steering_eval.png")}


def _inference(request: Request) -> Inference:
    state = request.app.state
    if getattr(state, "inference", None) is None:
        state.inference = Inference(InferenceConfig.from_env())
    return state.inference


def _errors(fn):
    async def wrapper(request: Request):
        try:
            return await fn(request)
        except InferenceError as exc:
            return error_response(exc, request)
    return wrapper


def _catalog(inf: Inference) -> SAECatalog:
    return SAECatalog(inf.config.database_url)


@_errors
async def list_saes(request: Request) -> JSONResponse:
    inf = _inference(request)
    rows = {r["id"]: r for r in await run_in_threadpool(_catalog(inf).list)}
    out = [rows.get(sid, {"id": sid, "status": "ready", "metrics": {}}) for sid in inf.saes.ids()]
    return JSONResponse({"saes": out})


def _search(inf, q: str, sae: str | None, limit: int) -> list[dict]:
    from .explain import FeatureIndex  # torch: imported on first use

    ids = [sae] if sae else inf.saes.ids()
    info = inf.torch_engine().info
    hits = []
    for sid in ids:
        index = FeatureIndex(inf, sid)
        for j, score in (index.search(q, limit) if q else [(f["feature"], 0.0) for f in index.data["features"]
                                                            if f["max_activation"] > 0][:limit]):
            guide = inf.saes.feature_guide(sid, j, info)
            hits.append({"id": f"{sid}#{j}", "label": index.feature(j)["label"], "score": round(score, 4),
                         **guide.to_json()})
    return sorted(hits, key=lambda h: -h["score"])[:limit]


@_errors
async def search_features(request: Request) -> JSONResponse:
    inf = _inference(request)
    q = request.query_params.get("q", "").strip()
    try:
        limit = max(1, min(100, int(request.query_params.get("limit", 20))))
    except ValueError:
        raise InvalidRequest("limit must be an integer", param="limit") from None
    sae = request.query_params.get("sae") or None
    if sae and sae not in inf.saes.ids():
        raise UnknownSAE(f"no SAE {sae!r}", param="sae")
    return JSONResponse({"features": await run_in_threadpool(_search, inf, q, sae, limit)})


@_errors
async def feature_card(request: Request) -> JSONResponse:
    from .explain import feature_card as card

    inf = _inference(request)
    sid, n = request.path_params["sae_id"], request.path_params["feature"]
    inf.saes.get(sid)
    explain = request.query_params.get("explain", "1") not in ("0", "false")
    return JSONResponse(await run_in_threadpool(card, inf, sid, n, explain, await _readable(request)))


async def _readable(request: Request) -> set[str] | None:
    """The documents the caller may read, as the app that mounts these routes says
    (``state.readable_documents``, an async function of the request; the hub sets it); None —
    all of them — when nobody says (the standalone inference server is its operator's)."""
    readable = getattr(request.app.state, "readable_documents", None)
    return None if readable is None else await readable(request)


@_errors
async def eval_data(request: Request) -> JSONResponse:
    inf = _inference(request)
    folder = inf.saes.folder(request.path_params["sae_id"]) / "eval"
    out = {}
    for name in ("eval", "steering_eval"):
        p = folder / f"{name}.json"
        out[name] = json.loads(p.read_text()) if p.exists() else None
    return JSONResponse(out)


@_errors
async def plot(request: Request):
    inf = _inference(request)
    name = request.path_params["name"]
    if name not in PLOTS:
        return JSONResponse({"error": {"message": f"no plot {name!r}; have {sorted(PLOTS)}"}}, status_code=404)
    path = inf.saes.folder(request.path_params["sae_id"]).joinpath(*PLOTS[name])
    if not path.exists():
        return JSONResponse({"error": {"message": f"{name}.png not written yet (run the eval)"}}, status_code=404)
    return FileResponse(path, media_type="image/png")


routes = [
    Route("/api/sae", list_saes),
    Route("/api/sae/features", search_features),
    Route("/api/sae/{sae_id:path}/features/{feature:int}", feature_card),
    Route("/api/sae/{sae_id:path}/eval", eval_data),
    Route("/api/sae/{sae_id:path}/plots/{name}.png", plot),
]
