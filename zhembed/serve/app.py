"""The HTTP API: an OpenAI-compatible /v1/embeddings, /similarity, /search, /health and Prometheus /metrics.

Handlers sit at module level over one shared `Infer` (serve/infer.py: validation, tokenization, the queue),
as text-embeddings-inference's router/src/http/server.rs sits over its `Infer`. Admission (serve/admission.py)
runs before any of them; request types and the error shape live in serve/schemas.py. Every error is a JSON body
in OpenAI's shape, never a plain-text 500.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from ..runtime import Encoder
from ..runtime.pooling import truncate
from .admission import Guard, Metrics, Observe, default_allowed_hosts
from .batching import BatchQueue
from .infer import Infer
from .limits import Limits
from .schemas import (SURROGATE, ApiError, EmbeddingsRequest, SearchRequest, SimilarityRequest, error_body,
                      error_response, hit_body, json_response, parse, request_schema)

if TYPE_CHECKING:  # the [search] extra is needed only with an index
    from ..search import Index

__all__ = ["Limits", "create_app", "default_allowed_hosts", "serve"]


class Endpoints:
    """The API's POST endpoints as a plain ASGI layer under admission (Guard), so that their requests skip
    Starlette's router, its exception middleware and FastAPI's per-request wrappers (from admission to the
    handler, 126 -> 45 us of a one-sentence request on an AVX2 host: docs/RESULTS.md). Refusals go through
    the app's handlers (REFUSALS); any other exception goes on up to Starlette's ServerErrorMiddleware, which
    answers a JSON 500 (`unexpected`) and lets the server log it. FastAPI routes every other request, documents
    these endpoints (/docs) and answers their other methods (405)."""

    def __init__(self, app: ASGIApp, handlers: dict[str, Callable[[Request], Awaitable[Response]]]) -> None:
        self.app, self.handlers = app, handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.handlers.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if handler is None:
            return await self.app(scope, receive, send)
        request = Request(scope, receive)
        try:
            response = await handler(request)
        except REFUSED as e:
            response = await next(answer for kind, answer in REFUSALS if isinstance(e, kind))(request, e)
        await response(scope, receive, send)


async def embeddings(request: Request) -> Response:
    req, infer = await parse(request, EmbeddingsRequest), request.app.state.infer
    texts = [req.input] if isinstance(req.input, str) else req.input
    if req.model is not None and SURROGATE.search(req.model):  # it is echoed back: refuse it before any work
        raise ApiError(400, "model contains a lone UTF-16 surrogate, which is not text; send valid Unicode", "model")
    if any(not isinstance(t, str) for t in texts):
        raise ApiError(400, "input as token ids is not supported: this model has its own tokenizer; send the "
                            "text itself (a string or a list of strings)", "input")
    infer.check(texts, "input")
    size = infer.dimensions(req.dimensions)
    chunked = req.long == "chunk"
    vectors, ids = await (infer.embed_chunked if chunked else infer.embed)(texts, request.is_disconnected)
    if size < infer.encoder.dim:
        vectors = truncate(vectors, size)
    if req.encoding_format == "base64":
        data = [{"object": "embedding", "index": i, "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode()}
                for i, v in enumerate(vectors)]
    else:
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    return json_response({"object": "list", "data": data, "model": req.model or request.app.state.model_name,
                          "usage": infer.usage(ids, truncated=not chunked)})


async def similarity(request: Request) -> Response:
    req, infer = await parse(request, SimilarityRequest), request.app.state.infer
    scores, ids = await infer.similarity(req.source, req.targets, req.calibrated, request.is_disconnected)
    return json_response({"scores": [round(float(s), 6) for s in scores], "usage": infer.usage(ids)})


async def search(request: Request) -> Response:
    req, infer = await parse(request, SearchRequest), request.app.state.infer
    index, limits = request.app.state.index, infer.limits
    if index is None:
        raise ApiError(404, "this server has no index; start it with --index DIR")
    queries = [req.query] if isinstance(req.query, str) else req.query
    infer.check(queries, "query")
    if len(queries) > limits.max_search_queries:
        raise ApiError(413, f"{len(queries)} queries exceed the limit of {limits.max_search_queries} "
                            "(--max-search-queries)", "query")
    if not 1 <= req.k <= limits.max_k:
        raise ApiError(400, f"k must be between 1 and {limits.max_k} (--max-k), got {req.k}", "k")
    # encoded as Index.search encodes them: at the index's own max_length
    vectors, ids = await infer.embed(queries, request.is_disconnected, index.meta.max_length)
    hits = await asyncio.to_thread(index.search_vectors, vectors, req.k)
    return json_response({"results": [[hit_body(h) for h in row] for row in hits], "usage": infer.usage(ids)})


async def health(request: Request):  # no return annotation: FastAPI would make it a response model
    infer: Infer | None = getattr(request.app.state, "infer", None)
    if infer is None or not infer.queue.alive:
        return JSONResponse({"status": "unhealthy", "reason": "the model worker has stopped"}, 503)
    return {"status": "ok", "model": request.app.state.model_name, "dim": infer.encoder.dim,
            "backend": infer.encoder.backend.name, "queue_depth": infer.queue.depth}


async def metrics(request: Request) -> Response:
    state = request.app.state
    state.metrics.queue_depth.set(state.infer.queue.depth)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def api_error(_: Request, e: ApiError) -> Response:
    return error_response(e.status, e.message, e.headers, e.param)


async def validation_error(_: Request, e: RequestValidationError) -> Response:
    first = e.errors()[0] if e.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    status = 400 if first.get("type") == "json_invalid" else 422
    return error_response(status, f"invalid request: {where}: {first.get('msg', 'malformed')}", param=where)


async def http_error(_: Request, e: StarletteHTTPException) -> Response:
    return error_response(e.status_code, str(e.detail))


async def unexpected(_: Request, e: Exception) -> Response:  # a JSON error rather than a plain-text 500
    return JSONResponse(error_body(500, f"internal error ({type(e).__name__})"), 500)


REFUSALS = ((ApiError, api_error), (RequestValidationError, validation_error), (StarletteHTTPException, http_error))
REFUSED = tuple(kind for kind, _ in REFUSALS)


def create_app(encoder: Encoder, limits: Limits | None = None, model_name: str | None = None,
               max_length: int | None = None, index: Index | None = None, api_key: str | None = None,
               allowed_hosts: list[str] | None = None) -> FastAPI:
    """The FastAPI app around an Encoder (and optionally a zhembed.Index for /search); its one batching worker
    starts and stops with the app. `allowed_hosts` None or ['*'] accepts any Host header."""
    limits = limits or Limits()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        queue = BatchQueue(encoder.embed_group, limits.max_batch_tokens, limits.max_wait_ms, limits.max_queue,
                           app.state.metrics.on_batch, lanes=encoder.lanes)
        app.state.infer = Infer(encoder, limits, queue, max_length)
        yield
        await asyncio.to_thread(queue.close)

    app = FastAPI(title="zhembed", lifespan=lifespan)
    app.state.metrics, app.state.index = Metrics(), index
    app.state.model_name = model_name or encoder.path.name
    posts = {"/v1/embeddings": (embeddings, EmbeddingsRequest), "/similarity": (similarity, SimilarityRequest),
             "/search": (search, SearchRequest)}
    for path, (handler, body) in posts.items():  # served by Endpoints; here for /docs and 405 on other methods
        app.router.add_api_route(path, handler, methods=["POST"], openapi_extra=request_schema(body))
    app.get("/health")(health)
    app.api_route("/health", methods=["HEAD"], include_in_schema=False)(health)
    app.api_route("/health/", methods=["GET", "HEAD"], include_in_schema=False)(health)
    app.get("/metrics")(metrics)
    for error, handler in (*REFUSALS, (Exception, unexpected)):
        app.add_exception_handler(error, handler)
    app.add_middleware(Endpoints, handlers={path: handler for path, (handler, _) in posts.items()})
    app.add_middleware(Guard, limits=limits, api_key=api_key, allowed_hosts=allowed_hosts)
    app.add_middleware(Observe, metrics=app.state.metrics, paths={r.path for r in app.routes})
    return app


def serve(encoder: Encoder, host: str = "127.0.0.1", port: int = 8080, limits: Limits | None = None,
          allowed_hosts: list[str] | None = None, **kw) -> None:
    """Run the server until SIGINT/SIGTERM; in-flight requests finish before it exits."""
    import uvicorn

    from .protocol import bounded_protocol

    limits = limits or Limits()
    hosts = allowed_hosts or default_allowed_hosts(host)
    uvicorn.run(create_app(encoder, limits, allowed_hosts=hosts, **kw), host=host, port=port, log_level="info",
                timeout_graceful_shutdown=30, access_log=False, http=bounded_protocol(limits))
