"""Steering vectors a writer makes from examples, over REST; built by a worker, not the hub.

    POST   /api/vectors               {name, pairs: [[positive, negative], ...] or voice: {doc_ids, author_id?}
                                       or instruction: "write about winter", layers?} → 202 {status: building}
    GET    /api/vectors               every vector: shipped, built here, building or failed
    GET    /api/vectors/{name}        {status, progress, layers, default_strength, recommended, provenance, ...}
    DELETE /api/vectors/{name}
    GET    /api/vectors/{name}/gguf   a llama.cpp control vector (``--control-vector``)

A build is a job row (``VectorJobRow``) and a Celery task (``tinymorph.vectors.build``): the
worker loads the reference (torch) engine, runs each pair through the model (CAA, the inference
layer's ``VectorLibrary.build``), reports progress per pair and stores the vector in the
library, where ``{"source": "caa:NAME"}`` finds it on ``/v1``, in runs and personas. "In my voice"
(``voice``) makes the pairs from the writer's own paragraphs, found through the log's attribution,
each against the model's rewrite of it (``tasks._voice_pairs``). An ``instruction`` trains a PSR
vector instead (``inference.steering.psr``: a direction and a coefficient per token that imitate
what the instruction does inside the model), kind ``psr``, steering as ``{"source": "psr:NAME"}``;
on llama.cpp its coefficient is a constant (its mean), and the vector's answer says so.
Strength guidance comes from the one place the API, personas and panel share
(``inference.steering.guide_for``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collab.api import bearer, read_json
from collab.exceptions import UnknownDocument

from .exceptions import UnknownVectorName, VectorBusy
from .routes import account, service_of
from .vector_jobs import VECTOR_TASK, JobStatus, VectorJobs, VectorRequest, vector_json

__all__ = ["routes"]


def _library(request: Request):
    """The inference layer's vector library over the hub's database (rows only: no model)."""
    from inference.steering import VectorLibrary

    library = getattr(request.app.state, "vector_library", None)
    if library is None:
        library = request.app.state.vector_library = VectorLibrary(request.app.state.hub.settings.database_url)
    return library


def _jobs(service) -> VectorJobs:
    return VectorJobs(service.hub.store.engine)


def _shipped() -> set[str]:
    from inference.steering.vectors import shipped_vectors

    return set(shipped_vectors())


#: What a PSR vector's answer says about llama.cpp (issue 16: "said so in the API's answer").
PSR_APPROXIMATION = {"llama.cpp": "approximation: constant coefficient (the per-token coefficient's mean over the "
                                  "training text: a control vector is one constant per layer)",
                     "torch": "per-token coefficient (a forward hook)", "vllm": "per-token coefficient (a forward hook)"}


def _described(name: str, job: dict[str, Any] | None, stored: list[Any], shipped: bool) -> dict[str, Any]:
    """``vector_json``, plus what a PSR vector's answer needs: its kind, source, default strength
    (stored with it) and how each backend serves its per-token coefficient; never a gate's weights."""
    from inference.steering.vectors import psr_default_strength, public_provenance

    out = vector_json(name, job, stored, shipped)
    psr = (stored and stored[0].kind == "psr") or (not stored and job is not None and job.get("instruction"))
    out["kind"] = "psr" if psr else out.get("kind", "caa")
    if psr:
        out["source"], out["approximation"] = f"psr:{name}", PSR_APPROXIMATION
        if stored:
            out["provenance"] = public_provenance(stored[0].provenance)
            out["default_strength"] = round(psr_default_strength(stored[0].provenance), 4)
            out.update((stored[0].provenance.get("strength") or {}))
        else:
            out["provenance"] = {"method": "psr", "instruction": job["instruction"], "requested_by": job["requested_by"]}
    return out


async def _one(request: Request, name: str) -> dict[str, Any]:
    service = service_of(request)
    job = (await asyncio.to_thread(_jobs(service).latest)).get(name)
    stored = await asyncio.to_thread(_library(request).list)
    mine = [s for s in stored if s.name == name]
    if job is None and not mine and name not in _shipped():
        raise UnknownVectorName(f"no vector named {name!r}")
    return _described(name, job, mine, name in _shipped())


async def create_vector(request: Request) -> Response:
    service = service_of(request)
    ident = await account(request, write=True)
    req = VectorRequest.from_json(await read_json(request))
    if req.name in _shipped():
        raise VectorBusy(f"{req.name!r} is a shipped vector; choose another name")
    if req.voice is not None:  # only writing the caller may read, by default the caller's own
        hub, token = request.app.state.hub, bearer(request)
        for doc_id in req.voice.doc_ids:
            await asyncio.to_thread(hub.auth.for_document, token, doc_id)
            if await asyncio.to_thread(hub.store.get_document, doc_id) is None:
                raise UnknownDocument(f"unknown document {doc_id!r}")
        req = dataclasses.replace(req, voice=dataclasses.replace(req.voice, author_id=req.voice.author_id or ident.user_id))
    job = await asyncio.to_thread(_jobs(service).create, req, ident.user_id)
    await asyncio.to_thread(service.celery.send_task, VECTOR_TASK, args=[job["id"]])
    return JSONResponse(_described(req.name, job, [], False), status_code=202)


async def list_vectors(request: Request) -> Response:
    service = service_of(request)
    await account(request)
    jobs = await asyncio.to_thread(_jobs(service).latest)
    stored = await asyncio.to_thread(_library(request).list)
    names = sorted(set(jobs) | {s.name for s in stored} | _shipped())
    return JSONResponse({"vectors": [_described(n, jobs.get(n), [s for s in stored if s.name == n], n in _shipped())
                                     for n in names]})


async def get_vector(request: Request) -> Response:
    await account(request)
    return JSONResponse(await _one(request, request.path_params["name"]))


async def delete_vector(request: Request) -> Response:
    service = service_of(request)
    await account(request, write=True)
    name = request.path_params["name"]
    if name in _shipped():
        raise VectorBusy(f"{name!r} is a shipped vector")
    current = await _one(request, name)
    if current["status"] == JobStatus.BUILDING:
        raise VectorBusy(f"vector {name!r} is being built; delete it when the build ends")
    library = _library(request)
    removed = sum([await asyncio.to_thread(library.delete, name, model) for model in current["models"]])
    await asyncio.to_thread(_jobs(service).delete, name)
    return JSONResponse({"deleted": name, "layers_removed": removed})


async def export_gguf(request: Request) -> Response:
    await account(request)
    name = request.path_params["name"]
    current = await _one(request, name)
    if current["status"] != JobStatus.READY or not current["models"]:
        raise UnknownVectorName(f"vector {name!r} is not built yet (shipped ones are built on first use)")
    model = request.query_params.get("model") or current["models"][0]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.gguf"
        await asyncio.to_thread(_library(request).export_gguf, name, model, path)
        data = path.read_bytes()
    return Response(data, media_type="application/octet-stream",
                    headers={"content-disposition": f'attachment; filename="{name}.gguf"'})


routes = [
    Route("/api/vectors", create_vector, methods=["POST"]),
    Route("/api/vectors", list_vectors, methods=["GET"]),
    Route("/api/vectors/{name}", get_vector, methods=["GET"]),
    Route("/api/vectors/{name}", delete_vector, methods=["DELETE"]),
    Route("/api/vectors/{name}/gguf", export_gguf, methods=["GET"]),
]
