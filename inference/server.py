"""OpenAI-compatible HTTP API (Starlette), mounted at ``/v1``.

Routes: ``GET /models``, ``POST /completions``, ``POST /chat/completions`` (plain or SSE),
``POST /embeddings``, ``POST /steer/compare``. Bodies take an extra ``steering`` field (a
steering spec); ``usage`` carries ``timings``; ``steering_notes`` (when present) says what the
backend did differently from the spec (llama.cpp: a PSR coefficient per token at its mean).
Every failure is a 4xx/5xx JSON body in OpenAI's error shape, raised before the first streamed
byte where it can be, so clients see normal API errors and the server keeps serving.

The app serves the ``Inference`` it is given; ``gguf:NAME`` sources name files in
``<config.data_dir>/control_vectors``.
"""

from __future__ import annotations

import json
import logging
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

from ._openai_logprobs import chat_logprobs, completion_logprobs
from .embeddings import EMBEDDING_MODEL, Embedder
from .engines.base import (MAX_TOP_LOGPROBS, Completion, Engine, FinishReason, GenerationRequest, SamplingParams,
                           Usage)
from .exceptions import BodyTooLarge, InferenceError, InvalidRequest, InvalidSteering, UnknownModel
from .registry import Inference
from .steering.spec import SourceKind, SteeringSpec

__all__ = ["create_app", "error_response"]

log = logging.getLogger("tinymorph.inference.server")


def error_response(exc: InferenceError, request: Request | None = None) -> JSONResponse:
    """The OpenAI-shaped error body; a 5xx keeps its message to the log (it may name paths)."""
    if exc.status_code < 500:
        return JSONResponse(exc.to_dict(), status_code=exc.status_code)
    # A 5xx message may name paths or internals: it goes to the log, the client gets a request id.
    request_id = uuid.uuid4().hex[:16]
    where = f"{request.method} {request.url.path}" if request is not None else ""
    log.error("request %s %s failed: %s", request_id, where, exc.message)
    return JSONResponse({"error": {"message": f"{exc.public_message} (request id {request_id})",
                                   "type": exc.error_type, "param": exc.param, "code": exc.code}},
                        status_code=exc.status_code, headers={"x-request-id": request_id})


async def _body(request: Request, limit: int) -> dict:
    """The JSON object body, read no further than ``limit`` bytes (413 past it)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the request body of {declared} bytes is over the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the request body is over the {limit}-byte limit")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks) or b"null")
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
            # vLLM's and llama.cpp's extensions: loop-avoiding samplers
            **{k: body[k] for k in ("min_p", "repetition_penalty", "dry_multiplier", "dry_base",
                                    "dry_allowed_length", "penalty_last_n") if body.get(k) is not None},
        )
    except TypeError as exc:
        raise InvalidRequest(f"bad sampling parameters: {exc}") from None


def _logprob_options(body: dict, chat: bool) -> tuple[int | None, bool]:
    """(how many alternatives per token, or None for no logprobs; echo the prompt?) as OpenAI
    defines them: chat takes ``logprobs`` (a boolean) and ``top_logprobs`` (0..20), completions
    take ``logprobs`` (0..5 alternatives) and ``echo``."""
    def integer(name: str, hi: int) -> int | None:
        v = body.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi):
            raise InvalidRequest(f"{name} must be an integer in 0..{hi}", param=name)
        return v

    def boolean(name: str) -> bool:
        v = body.get(name)
        if v is not None and not isinstance(v, bool):
            raise InvalidRequest(f"{name} must be a boolean", param=name)
        return bool(v)

    if chat:
        if body.get("echo") is not None:
            raise InvalidRequest("echo is a completions parameter", param="echo")
        wanted, top = boolean("logprobs"), integer("top_logprobs", MAX_TOP_LOGPROBS)
        if top is not None and not wanted:
            raise InvalidRequest("top_logprobs needs logprobs: true", param="top_logprobs")
        return ((top or 0) if wanted else None), False
    return integer("logprobs", 5), boolean("echo")


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
    max_body = inference.config.max_body_bytes
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
        body = await _body(request, max_body)
        engine = engine_for(body)
        top, echo = _logprob_options(body, chat)
        score_only = echo and body.get("max_tokens") == 0  # OpenAI's way to score a prompt
        params = replace(_params({**body, "max_tokens": 1} if score_only else body), logprobs=top)
        req = _request(body, chat, params, vectors_dir=vectors_dir)
        prepared = await run_in_threadpool(engine.prepare, req)  # errors become 4xx here
        echoed = ""
        echo_lp = None
        if echo:
            echoed = req.prompt or ""
            if top is not None:
                ids, lps = await run_in_threadpool(engine.prompt_logprobs, req, top)
                if ids and not engine.token_bytes(ids[0]):  # a BOS the text does not show
                    ids, lps = ids[1:], lps[1:]
                echo_lp = completion_logprobs(lps, ids, engine.token_bytes, top)
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

            def chunk_of(choice: dict, usage=None, notes=None) -> str:
                chunk = {"id": rid, "object": obj + (".chunk" if chat else ""), "created": created,
                         "model": engine.name, "choices": [choice]}
                if usage is not None:
                    chunk["usage"] = usage.to_dict()
                if notes:
                    chunk["steering_notes"] = notes
                return f"data: {json.dumps(chunk)}\n\n"

            async def _sse(stream):
                first, offset = True, len(echoed)
                if echoed:
                    yield chunk_of({"index": 0, "text": echoed, "logprobs": echo_lp, "finish_reason": None})
                if score_only:
                    yield chunk_of({"index": 0, "text": "", "logprobs": None, "finish_reason": "length"})
                    yield "data: [DONE]\n\n"
                    return
                async for ev in iterate_in_threadpool(stream):
                    if chat:
                        delta = {"role": "assistant", "content": ev.text} if first else {"content": ev.text}
                        choice = {"index": 0, "delta": delta, "finish_reason": ev.finish_reason,
                                  "logprobs": None if top is None else chat_logprobs(ev.logprobs, engine.token_bytes)}
                    else:
                        choice = {"index": 0, "text": ev.text, "finish_reason": ev.finish_reason,
                                  "logprobs": None if top is None else completion_logprobs(
                                      ev.logprobs, ev.token_ids, engine.token_bytes, top, offset)}
                        offset += len(ev.text)
                    first = False
                    yield chunk_of(choice, ev.usage, ev.steering_notes)
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        if score_only:
            result = Completion("", [], FinishReason.LENGTH, Usage(prompt_tokens=len(prepared[0])))
        else:
            result = await run_in_threadpool(lambda: engine.generate(req, prepared))
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": result.text},
                      "finish_reason": result.finish_reason,
                      "logprobs": None if top is None else chat_logprobs(result.logprobs, engine.token_bytes)}
        else:
            logprobs = None
            if top is not None:
                logprobs = completion_logprobs(result.logprobs, result.token_ids, engine.token_bytes, top,
                                               len(echoed))
                if echo_lp is not None:
                    logprobs = {k: echo_lp[k] + logprobs[k] for k in logprobs}
            choice = {"index": 0, "text": echoed + result.text, "finish_reason": result.finish_reason,
                      "logprobs": logprobs}
        out = {"id": rid, "object": obj, "created": created, "model": engine.name,
               "choices": [choice], "usage": result.usage.to_dict()}
        if result.steering_notes:  # what this backend did differently from the spec (llama.cpp and PSR)
            out["steering_notes"] = result.steering_notes
        return JSONResponse(out)

    async def completions(request: Request):
        return await generate(request, chat=False)

    async def chat_completions(request: Request):
        return await generate(request, chat=True)

    async def embeddings(request: Request) -> JSONResponse:
        body = await _body(request, max_body)
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
        body = await _body(request, max_body)
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
            r = await run_in_threadpool(lambda req=req, prep=prep: engine.generate(req, prep))
            out[key] = {"text": r.text, "finish_reason": r.finish_reason, "usage": r.usage.to_dict()}
        return JSONResponse({"object": "steer.compare", "model": engine.name, "seed": params.seed,
                             "steering": steered.steering.to_json(), **out})

    async def on_inference_error(request: Request, exc: InferenceError) -> JSONResponse:
        return error_response(exc, request)

    async def on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": {"message": exc.detail, "type": "invalid_request_error",
                                       "param": None, "code": None}}, status_code=exc.status_code)

    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        # The exception text stays in the log: it can hold paths, document text or internals.
        request_id = uuid.uuid4().hex[:16]
        log.error("request %s %s %s crashed", request_id, request.method, request.url.path,
                  exc_info=(type(exc), exc, exc.__traceback__))
        return JSONResponse({"error": {"message": f"internal server error (request id {request_id})",
                                       "type": "server_error", "param": None, "code": "internal_error"}},
                            status_code=500, headers={"x-request-id": request_id})

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
