"""HTTP handling: an OpenAI-compatible embeddings API, /similarity, /health and Prometheus /metrics.

This module validates requests and shapes responses; batching lives in zhembed.batching and the model in
the Encoder, as text-embeddings-inference keeps router, queue and backend apart.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from .batching import BatchQueue, QueueFull


INLINE_TOKENIZE_CHARS = 2000


def json_response(body: dict) -> Response:
    """Serialized by the json module directly: FastAPI's generic encoder is slow on long float lists."""
    return Response(json.dumps(body, ensure_ascii=False, separators=(",", ":")), media_type="application/json")


@dataclass
class Limits:
    max_inputs: int = 2048
    max_chars: int = 20_000
    max_batch_tokens: int = 8192
    max_wait_ms: float = 2.0
    max_queue: int = 4096


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    input: str | list[str]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"


class SimilarityRequest(BaseModel):
    source: str
    targets: list[str]


class SearchRequest(BaseModel):
    query: str | list[str]
    k: int = 10


def _error_body(status: int, message: str, param: str | None = None) -> dict:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("zhembed_requests", "HTTP requests", ["path"], registry=self.registry)
        self.errors = Counter("zhembed_errors", "Error responses", ["path", "status"], registry=self.registry)
        self.batch_size = Histogram("zhembed_batch_size", "Texts per forward pass", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.batch_tokens = Histogram("zhembed_batch_tokens", "Tokens per forward pass", registry=self.registry,
                                      buckets=(16, 64, 256, 1024, 4096, 16384))
        self.queue_depth = Gauge("zhembed_queue_depth", "Texts waiting for the model", registry=self.registry)
        self.latency = Histogram("zhembed_request_seconds", "Request latency", ["path"], registry=self.registry,
                                 buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

    def on_batch(self, texts: int, tokens: int) -> None:
        self.batch_size.observe(texts)
        self.batch_tokens.observe(tokens)


class Observe:
    """Counts requests, errors and latency per path, as a plain ASGI middleware (Starlette's
    @app.middleware("http") costs more per request than the model does on one short sentence)."""

    def __init__(self, app, metrics: Metrics, queue_depth, paths: set[str]):
        self.app, self.metrics, self.queue_depth, self.paths = app, metrics, queue_depth, paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        self.metrics.queue_depth.set(self.queue_depth())
        try:
            await self.app(scope, receive, send_status)
        finally:
            path = scope["path"] if scope["path"] in self.paths else "other"
            self.metrics.requests.labels(path).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)
            if status[0] >= 400:
                self.metrics.errors.labels(path, str(status[0])).inc()


def create_app(encoder, limits: Limits | None = None, model_name: str | None = None, max_length: int | None = None,
               index=None) -> FastAPI:
    """The FastAPI app around an Encoder (and optionally a zhembed.Index for /search); the batching worker
    starts and stops with the app."""
    limits = limits or Limits()
    max_length = min(max_length or encoder.config.max_seq_length, encoder.max_positions)
    name = model_name or encoder.path.name
    metrics = Metrics()
    state: dict = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["queue"] = BatchQueue(encoder.embed_ids, limits.max_batch_tokens, limits.max_wait_ms,
                                    limits.max_queue, metrics.on_batch)
        yield
        await asyncio.to_thread(state["queue"].close)

    app = FastAPI(title="zhembed", lifespan=lifespan)

    def check(texts: list[str], param: str) -> None:
        if not texts:
            raise ApiError(400, f"'{param}' must not be empty", param)
        if len(texts) > limits.max_inputs:
            raise ApiError(413, f"{len(texts)} inputs exceed the limit of {limits.max_inputs} (--max-inputs)", param)
        for i, text in enumerate(texts):
            if len(text) > limits.max_chars:
                raise ApiError(413, f"{param}[{i}] has {len(text)} characters; the limit is {limits.max_chars} "
                                    "(--max-chars)", param)

    async def embed(texts: list[str]) -> tuple[np.ndarray, int, int]:
        if sum(map(len, texts)) <= INLINE_TOKENIZE_CHARS:  # cheaper than a hop to a thread
            ids = encoder.tokenize(texts, max_length)
        else:
            ids = await asyncio.to_thread(encoder.tokenize, texts, max_length)
        try:
            vectors = await state["queue"].submit(ids)
        except QueueFull as e:
            raise ApiError(503, f"server busy: {e}", headers={"Retry-After": "1"}) from None
        truncated = sum(len(x) >= max_length for x in ids)
        return vectors, sum(map(len, ids)), truncated

    @app.exception_handler(ApiError)
    async def api_error(_: Request, e: ApiError):
        return JSONResponse(_error_body(e.status, e.message, e.param), e.status, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        status = 400 if first.get("type") == "json_invalid" else 422
        message = f"invalid request: {where}: {first.get('msg', 'malformed')}"
        return JSONResponse(_error_body(status, message, where), status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, e: StarletteHTTPException):
        return JSONResponse(_error_body(e.status_code, str(e.detail)), e.status_code)

    @app.post("/v1/embeddings")
    async def embeddings(req: EmbeddingsRequest):
        texts = [req.input] if isinstance(req.input, str) else req.input
        check(texts, "input")
        vectors, tokens, truncated = await embed(texts)
        data = [{"object": "embedding", "index": i,
                 "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if req.encoding_format == "base64"
                 else v.tolist()} for i, v in enumerate(vectors)]
        return json_response({"object": "list", "data": data, "model": req.model or name,
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "truncated_inputs": truncated}})

    @app.post("/similarity")
    async def similarity(req: SimilarityRequest):
        check(req.targets, "targets")
        check([req.source], "source")
        vectors, tokens, _ = await embed([req.source, *req.targets])
        scores = vectors[1:] @ vectors[0]
        return {"scores": [round(float(s), 6) for s in scores], "usage": {"prompt_tokens": tokens}}

    @app.post("/search")
    async def search(req: SearchRequest):
        if index is None:
            raise ApiError(404, "this server has no index; start it with --index DIR")
        queries = [req.query] if isinstance(req.query, str) else req.query
        check(queries, "query")
        if not 1 <= req.k <= 1000:
            raise ApiError(400, f"k must be between 1 and 1000, got {req.k}", "k")
        vectors, tokens, _ = await embed(queries)
        hits = await asyncio.to_thread(index.search_vectors, vectors, req.k)
        return {"results": [[{"id": h.id, "text": h.text, "score": round(h.score, 6)} for h in row] for row in hits],
                "usage": {"prompt_tokens": tokens}}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": name, "dim": encoder.dim, "backend": encoder.backend.name}

    @app.get("/metrics")
    async def metrics_endpoint():
        metrics.queue_depth.set(state["queue"].depth)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(Observe, metrics=metrics, queue_depth=lambda: state["queue"].depth if "queue" in state else 0,
                       paths={r.path for r in app.routes})
    app.state.zhembed = state
    return app


def serve(encoder, host: str = "127.0.0.1", port: int = 8080, limits: Limits | None = None, **kw) -> None:
    """Run the server until SIGINT/SIGTERM; in-flight requests finish before it exits."""
    import uvicorn

    uvicorn.run(create_app(encoder, limits, **kw), host=host, port=port, log_level="info",
                timeout_graceful_shutdown=30, access_log=False)
