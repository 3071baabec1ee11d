"""OpenAI-compatible HTTP API (Starlette), mounted at ``/v1``.

Routes: ``GET /models``, ``POST /completions``, ``POST /chat/completions`` (plain or SSE),
``POST /embeddings``, ``POST /steer/compare``. Bodies take an extra ``steering`` field (a
steering spec); ``usage`` carries ``timings``. Every failure is a 4xx/5xx JSON body in OpenAI's
error shape, raised before the first streamed byte where it can be, so clients see normal API
errors and the server keeps serving.

The app serves the ``Inference`` it is given; ``gguf:NAME`` sources name files in
``<config.data_dir>/control_vectors``.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from .embeddings import EMBEDDING_MODEL, Embedder
from .engines.base import Completion, Engine, GenerationRequest, SamplingParams
from .exceptions import InferenceError, InvalidRequest, InvalidSteering, UnknownModel
from .registry import Inference
from .steering.spec import SourceKind, SteeringSpec

__all__ = ["create_app"]


def _error(exc: InferenceError) -> JSONResponse:
    return JSONResponse(exc.to_dict(), status_code=exc.status_code)


async def _body(request: Request) -> dict:
    try:
        body = json.loads(await request.body() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    return body


def _params(body: dict) -> SamplingParams:
    if body.get("n", 1) != 1:
        raise InvalidRequest("only n=1 is supported", param="n")
    stop = body.get("stop") or ()
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    try:
        return SamplingParams(
            max_tokens=16 if max_tokens is None else max_tokens,
            min_tokens=body.get("min_tokens") or 0,  # vLLM's extension of the OpenAI API
            temperature=body.get("temperature", 1.0) if body.get("temperature") is not None else 1.0,
            top_p=body.get("top_p") if body.get("top_p") is not None else 1.0,
            top_k=body.get("top_k") or 0,
            seed=body.get("seed"),
            stop=(stop,) if isinstance(stop, str) else tuple(stop),
            presence_penalty=body.get("presence_penalty") or 0.0,
            frequency_penalty=body.get("frequency_penalty") or 0.0,
        )
    except TypeError as exc:
        raise InvalidRequest(f"bad sampling parameters: {exc}") from None


def _request(body: dict, chat: bool, params: SamplingParams | None = None,
             vectors_dir: Path | None = None) -> GenerationRequest:
    steering = SteeringSpec.from_json(body.get("steering"))
    steering = _confine_gguf(steering, vectors_dir)
    params = params or _params(body)
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequest("messages must be a non-empty list", param="messages")
        return GenerationRequest(messages=messages, params=params, steering=steering)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidRequest("prompt must be a string", param="prompt")
    return GenerationRequest(prompt=prompt, params=params, steering=steering)


def _confine_gguf(spec: SteeringSpec, vectors_dir: Path | None) -> SteeringSpec:
    """Over HTTP, ``gguf:NAME`` names a file in ``<data_dir>/control_vectors``: a client must not
    make the server open arbitrary paths."""
    if vectors_dir is None or not any(t.source.kind is SourceKind.GGUF for t in spec.terms):
        return spec
    terms = []
    for t in spec.terms:
        if t.source.kind is SourceKind.GGUF:
            path = (vectors_dir / t.source.name).resolve()
            if not path.is_relative_to(vectors_dir.resolve()):
                raise InvalidSteering(f"gguf sources are file names in {vectors_dir}", param="source")
            t = replace(t, source=replace(t.source, name=str(path)))
        terms.append(t)
    return SteeringSpec(tuple(terms))


def create_app(inference: Inference) -> Starlette:
    """The API app for ``inference``; models load lazily on first request."""
    embedder = Embedder()
    vectors_dir = inference.config.data_dir / "control_vectors"

    def engine_for(body: dict) -> Engine:
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise InvalidRequest("model must be a string", param="model")
        return inference.engine(model)

    async def models(request: Request) -> JSONResponse:
        data = [{"id": m.name, "object": "model", "created": 0, "owned_by": "tinymorph",
                 "backend": str(m.backend)} for m in inference.models()]
        data.append({"id": EMBEDDING_MODEL, "object": "model", "created": 0, "owned_by": "tinymorph",
                     "backend": "sentence-transformers"})
        return JSONResponse({"object": "list", "data": data})

    async def generate(request: Request, chat: bool):
        body = await _body(request)
        engine = engine_for(body)
        req = _request(body, chat, vectors_dir=vectors_dir)
        prepared = await run_in_threadpool(engine.prepare, req)  # errors become 4xx here
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        obj = "chat.completion" if chat else "text_completion"
        if body.get("stream"):
            async def events():
                stream = engine.stream(req, prepared)
                try:
                    async for chunk in _sse(stream):
                        yield chunk
                finally:  # client gone or done: free the context now, not at garbage collection
                    await run_in_threadpool(stream.close)

            async def _sse(stream):
                first = True
                async for ev in iterate_in_threadpool(stream):
                    if chat:
                        delta = {"role": "assistant", "content": ev.text} if first else {"content": ev.text}
                        choice = {"index": 0, "delta": delta, "finish_reason": ev.finish_reason}
                    else:
                        choice = {"index": 0, "text": ev.text, "logprobs": None,
                                  "finish_reason": ev.finish_reason}
                    first = False
                    chunk = {"id": rid, "object": obj + (".chunk" if chat else ""), "created": created,
                             "model": engine.name, "choices": [choice]}
                    if ev.usage is not None:
                        chunk["usage"] = ev.usage.to_dict()
                    yield f"data: {json.dumps(chunk)}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        result = await run_in_threadpool(lambda: _collect(engine, req, prepared))
        choice = ({"index": 0, "message": {"role": "assistant", "content": result.text},
                   "finish_reason": result.finish_reason, "logprobs": None} if chat else
                  {"index": 0, "text": result.text, "finish_reason": result.finish_reason, "logprobs": None})
        return JSONResponse({"id": rid, "object": obj, "created": created, "model": engine.name,
                             "choices": [choice], "usage": result.usage.to_dict()})

    async def completions(request: Request):
        return await generate(request, chat=False)

    async def chat_completions(request: Request):
        return await generate(request, chat=True)

    async def embeddings(request: Request) -> JSONResponse:
        body = await _body(request)
        model = body.get("model") or EMBEDDING_MODEL
        if not isinstance(model, str) or model.lower().split("/")[-1] not in (EMBEDDING_MODEL,):
            raise UnknownModel(f"embedding model {model!r} does not exist; use {EMBEDDING_MODEL!r}",
                               param="model")
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        vecs, n_tokens = await run_in_threadpool(embedder.embed, texts)
        return JSONResponse({"object": "list", "model": EMBEDDING_MODEL,
                             "data": [{"object": "embedding", "index": i, "embedding": v}
                                      for i, v in enumerate(vecs)],
                             "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}})

    async def steer_compare(request: Request) -> JSONResponse:
        """The same prompt and seed with and without the steering, side by side."""
        body = await _body(request)
        engine = engine_for(body)
        if not body.get("steering"):
            raise InvalidRequest("steer/compare needs a 'steering' spec", param="steering")
        chat = "messages" in body
        params = _params({**body, "seed": body.get("seed", 0)})
        steered = _request(body, chat, params, vectors_dir)
        default = _request({**body, "steering": None}, chat, params)
        prepared = [await run_in_threadpool(engine.prepare, r) for r in (steered, default)]
        out = {}
        for key, req, prep in (("steered", steered, prepared[0]), ("default", default, prepared[1])):
            r = await run_in_threadpool(lambda req=req, prep=prep: _collect(engine, req, prep))
            out[key] = {"text": r.text, "finish_reason": r.finish_reason, "usage": r.usage.to_dict()}
        return JSONResponse({"object": "steer.compare", "model": engine.name, "seed": params.seed,
                             "steering": steered.steering.to_json(), **out})

    async def on_inference_error(request: Request, exc: InferenceError) -> JSONResponse:
        return _error(exc)

    async def on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": {"message": exc.detail, "type": "invalid_request_error",
                                       "param": None, "code": None}}, status_code=exc.status_code)

    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": {"message": f"internal error: {type(exc).__name__}: {exc}",
                                       "type": "server_error", "param": None, "code": None}},
                            status_code=500)

    app = Starlette(
        routes=[Route("/models", models, methods=["GET"]),
                Route("/completions", completions, methods=["POST"]),
                Route("/chat/completions", chat_completions, methods=["POST"]),
                Route("/embeddings", embeddings, methods=["POST"]),
                Route("/steer/compare", steer_compare, methods=["POST"])],
        exception_handlers={InferenceError: on_inference_error, HTTPException: on_http_error,
                            Exception: on_crash},
    )
    app.state.inference = inference  # where routes added to this app (``sae.api.routes``) look
    return app


def _collect(engine: Engine, req: GenerationRequest, prepared: tuple) -> Completion:
    """Run a whole generation (in a worker thread)."""
    text, last = [], None
    for ev in engine.stream(req, prepared):
        text.append(ev.text)
        last = ev
    return Completion("".join(text), [], last.finish_reason, last.usage)
