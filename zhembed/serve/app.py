"""HTTP handling: an OpenAI-compatible embeddings API, /similarity, /search, /health and Prometheus /metrics.

This module admits requests (host, API key, size and concurrency limits, all checked before any
tokenization), validates them and shapes responses; batching lives in serve/batching.py and the model in
the Encoder, as text-embeddings-inference keeps router, queue and backend apart. Every error is a JSON body
in OpenAI's shape, never a plain-text 500.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import re
import time
from contextlib import asynccontextmanager
from typing import Literal

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import ZhembedError
from ..runtime.chunking import combine
from ..runtime.pooling import truncate
from .batching import BatchQueue, Expired, QueueFull
from .limits import Limits

INLINE_TOKENIZE_CHARS = 2000
SURROGATE = re.compile("[\ud800-\udfff]")
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def json_response(body: dict, status: int = 200, headers: dict | None = None) -> Response:
    """Serialized by orjson, numpy arrays included (float32 vectors as their shortest exact decimals): about
    20 times faster than tolist() + json.dumps on a batch of vectors, which would hold up the event loop."""
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status, headers,
                    media_type="application/json")


class Guard:
    """Admission before anything else runs (a plain ASGI middleware): the Host header (against DNS
    rebinding), the API key, the number of requests in flight and the body size. Each refusal is a JSON
    error; the body is read here, up to the limit, and handed on to the app."""

    def __init__(self, app, limits: Limits, api_key: str | None, allowed_hosts: list[str] | None):
        self.app, self.limits, self.api_key = app, limits, api_key
        self.hosts = None if not allowed_hosts or "*" in allowed_hosts else {h.lower() for h in allowed_hosts}
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers: dict[str, str] = {}
        for k, v in scope["headers"]:
            headers.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))  # the first of repeated headers
        refusal = self._refuse(scope, headers)
        if refusal is not None:
            return await refusal(scope, receive, send)
        if scope["path"].rstrip("/") == "/health":  # never refused for load: monitors must see a busy server
            return await self.app(scope, receive, send)
        self.in_flight += 1
        try:
            if scope["method"] in ("POST", "PUT", "PATCH"):
                body = await self._read_body(receive, headers)
                if body is None:
                    return await _error(413, f"the request body exceeds {self.limits.max_body_bytes} bytes "
                                             "(--max-body-bytes)")(scope, receive, send)
                receive = _replay(body, receive)
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    def _refuse(self, scope, headers: dict):
        if sum(k.lower() == b"host" for k, _ in scope["headers"]) > 1:
            return _error(400, "the request has more than one Host header")
        host = _host_name(headers.get("host", ""))
        if self.hosts is not None and host not in self.hosts:
            return _error(400, f"Host {host[:100]!r} is not allowed (--allowed-hosts)")
        if self.api_key and scope["path"].rstrip("/") != "/health" and not self._authorized(headers):
            return _error(401, "a valid API key is required: send 'Authorization: Bearer <key>'",
                          {"WWW-Authenticate": "Bearer"})
        if scope["method"] == "POST" and not headers.get("content-type", "").lower().startswith("application/json"):
            return _error(415, "send the request body as JSON with 'Content-Type: application/json'")
        if scope["path"].rstrip("/") == "/health":
            return None
        if self.in_flight >= self.limits.max_concurrent:
            return _error(429, f"{self.in_flight} requests are in flight; the limit is {self.limits.max_concurrent} "
                               "(--max-concurrent)", {"Retry-After": "1"})
        return None

    def _authorized(self, headers: dict) -> bool:
        """'Bearer <key>', the scheme in any case; the key compared as UTF-8 bytes in constant time (headers
        arrive as latin-1, so a non-ASCII key sent as UTF-8 is decoded back to its bytes)."""
        scheme, _, given = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode("latin-1"),
                                                                  self.api_key.encode("utf-8"))

    async def _read_body(self, receive, headers: dict) -> bytes | None:
        """The whole body, or None as soon as it is longer than the limit."""
        limit = self.limits.max_body_bytes
        if headers.get("content-length", "").isdigit() and int(headers["content-length"]) > limit:
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                return None
            if not message.get("more_body"):
                break
        return b"".join(chunks)


def _host_name(host: str) -> str:
    """The Host header without its port: 'localhost:8080' -> 'localhost', '[::1]:8080' -> '::1'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replay


def _error(status: int, message: str, headers: dict | None = None, param: str | None = None):
    return JSONResponse(_error_body(status, message, param), status, headers=headers)


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    long: Literal["truncate", "chunk"] = "truncate"  # zhembed's extension: texts over the model's length


class SimilarityRequest(BaseModel):
    source: str
    targets: list[str]
    calibrated: bool = False  # the probability that the texts match (the model's calibration.json), not cosine


class SearchRequest(BaseModel):
    query: str | list[str]
    k: int = 10


def _error_body(status: int, message: str, param: str | None = None) -> dict:
    """OpenAI's error shape; lone surrogates from the request are escaped so the body always encodes."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    message, param = (SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", x) if x else x for x in (message, param))
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
               index=None, api_key: str | None = None, allowed_hosts: list[str] | None = None) -> FastAPI:
    """The FastAPI app around an Encoder (and optionally a zhembed.Index for /search); the batching workers
    start and stop with the app. `allowed_hosts` None or ['*'] accepts any Host header."""
    limits = limits or Limits()
    max_length = min(max_length or encoder.config.max_seq_length, encoder.max_positions)
    name = model_name or encoder.path.name
    metrics = Metrics()
    lanes: dict[str, BatchQueue] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for lane in ("fast", "bulk"):  # small requests never queue behind big ones
            lanes[lane] = BatchQueue(encoder.embed_ids, limits.max_batch_tokens, limits.max_wait_ms,
                                     limits.max_queue, metrics.on_batch)
        yield
        await asyncio.gather(*(asyncio.to_thread(q.close) for q in lanes.values()))

    def queue_depth() -> int:
        return sum(q.depth for q in lanes.values())

    app = FastAPI(title="zhembed", lifespan=lifespan)

    def check(texts: list, param: str) -> None:
        """Every limit that needs no tokenization, and well-formed text."""
        if not texts:
            raise ApiError(400, f"'{param}' must not be empty", param)
        if len(texts) > limits.max_inputs:
            raise ApiError(413, f"{len(texts)} inputs exceed the limit of {limits.max_inputs} (--max-inputs)", param)
        total = 0
        for i, text in enumerate(texts):
            if len(text) > limits.max_chars:
                raise ApiError(413, f"{param}[{i}] has {len(text)} characters; the limit is {limits.max_chars} "
                                    "(--max-chars)", param)
            if SURROGATE.search(text):
                raise ApiError(400, f"{param}[{i}] contains a lone UTF-16 surrogate, which is not text; "
                                    "send valid Unicode", param)
            total += len(text)
        if total > limits.max_total_chars:
            raise ApiError(413, f"the request's texts have {total} characters; the limit is {limits.max_total_chars} "
                                "(--max-total-chars)", param)

    async def embed(request: Request, texts: list[str], length: int = max_length) -> tuple[np.ndarray, list[list[int]]]:
        """Vectors of the texts cut at `length` tokens, through the batching queue, and their token ids."""
        chars = sum(map(len, texts))
        lane = lanes["fast" if chars <= limits.fast_lane_chars else "bulk"]
        if not lane.has_room(len(texts)):  # refused before any tokenization
            raise ApiError(503, f"server busy: {lane.depth} texts are queued; the limit is {limits.max_queue}",
                           headers={"Retry-After": "1"})
        if chars <= INLINE_TOKENIZE_CHARS:  # cheaper than a hop to a thread
            ids = encoder.tokenize(texts, length)
        else:
            ids = await asyncio.to_thread(encoder.tokenize, texts, length)
        tokens = sum(map(len, ids))
        if tokens > limits.max_request_tokens:  # it could not finish within the deadline: refused now, not in 30 s
            raise ApiError(413, f"the request needs {tokens} tokens (long texts count every window); the limit is "
                                f"{limits.max_request_tokens} (--max-request-tokens); send fewer or shorter texts")
        try:
            vectors = await until_disconnected(request, lane.submit(ids, limits.request_timeout))
        except QueueFull as e:
            raise ApiError(503, f"server busy: {e}", headers={"Retry-After": "1"}) from None
        except Expired:
            raise ApiError(503, f"the model did not reach this request within {limits.request_timeout:g} s "
                                "(--request-timeout); retry later", headers={"Retry-After": "1"}) from None
        except ApiError:  # 499: the client left
            raise
        except Exception as e:
            raise ApiError(400, f"the model could not encode this input ({type(e).__name__})") from None
        return vectors, ids

    def usage(ids: list[list[int]], truncated: bool = True) -> dict:
        tokens = sum(map(len, ids))
        cut = sum(len(x) >= max_length for x in ids) if truncated else 0
        return {"prompt_tokens": tokens, "total_tokens": tokens, "truncated_inputs": cut}

    async def embed_chunked(request: Request, texts: list[str]) -> tuple[np.ndarray, list[list[int]]]:
        """Each text as overlapping windows through the same queue, averaged by their tokens (as
        Encoder.encode(long="chunk"))."""
        windows = await asyncio.to_thread(lambda: [encoder.passages(t, max_length) for t in texts])
        vectors, ids = await embed(request, [t[a:b] for t, w in zip(texts, windows) for a, b in w])
        weights = np.array([len(x) for x in ids], dtype=np.float32)
        return combine(vectors, [len(w) for w in windows], weights), ids

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

    @app.exception_handler(Exception)
    async def unexpected(_: Request, e: Exception):  # a JSON error rather than a plain-text 500
        return JSONResponse(_error_body(500, f"internal error ({type(e).__name__})"), 500)

    @app.post("/v1/embeddings")
    async def embeddings(req: EmbeddingsRequest, request: Request):
        texts = [req.input] if isinstance(req.input, str) else req.input
        if req.model is not None and SURROGATE.search(req.model):  # it is echoed back: refuse it before any work
            raise ApiError(400, "model contains a lone UTF-16 surrogate, which is not text; send valid Unicode", "model")
        if any(not isinstance(t, str) for t in texts):
            raise ApiError(400, "input as token ids is not supported: this model has its own tokenizer; send the "
                                "text itself (a string or a list of strings)", "input")
        check(texts, "input")
        try:
            size = encoder.check_dimensions(req.dimensions)
        except ZhembedError as e:
            raise ApiError(400, str(e), "dimensions") from None
        chunked = req.long == "chunk"
        vectors, ids = await (embed_chunked if chunked else embed)(request, texts)
        if size < encoder.dim:
            vectors = truncate(vectors, size)
        data = [{"object": "embedding", "index": i,
                 "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if req.encoding_format == "base64"
                 else v} for i, v in enumerate(vectors)]
        return json_response({"object": "list", "data": data, "model": req.model or name,
                              "usage": usage(ids, truncated=not chunked)})

    @app.post("/similarity")
    async def similarity(req: SimilarityRequest, request: Request):
        check(req.targets, "targets")
        check([req.source], "source")
        try:
            calibration = encoder.calibration if req.calibrated else None
        except ZhembedError as e:
            raise ApiError(400, str(e), "calibrated") from None
        vectors, ids = await embed(request, [req.source, *req.targets])
        scores = vectors[1:] @ vectors[0]
        if calibration is not None:
            scores = calibration(scores)
        return {"scores": [round(float(s), 6) for s in scores], "usage": usage(ids)}

    @app.post("/search")
    async def search(req: SearchRequest, request: Request):
        if index is None:
            raise ApiError(404, "this server has no index; start it with --index DIR")
        queries = [req.query] if isinstance(req.query, str) else req.query
        check(queries, "query")
        if len(queries) > limits.max_search_queries:
            raise ApiError(413, f"{len(queries)} queries exceed the limit of {limits.max_search_queries} "
                                "(--max-search-queries)", "query")
        if not 1 <= req.k <= limits.max_k:
            raise ApiError(400, f"k must be between 1 and {limits.max_k} (--max-k), got {req.k}", "k")
        vectors, ids = await embed(request, queries, index.meta["max_length"])  # as Index.search encodes them
        hits = await asyncio.to_thread(index.search_vectors, vectors, req.k)
        return json_response({"results": [[_hit(h) for h in row] for row in hits], "usage": usage(ids)})

    @app.api_route("/health", methods=["GET", "HEAD"])
    @app.api_route("/health/", methods=["GET", "HEAD"], include_in_schema=False)
    async def health():
        if not lanes or not all(q.alive for q in lanes.values()):
            return JSONResponse({"status": "unhealthy", "reason": "the model worker has stopped"}, 503)
        return {"status": "ok", "model": name, "dim": encoder.dim, "backend": encoder.backend.name,
                "queue_depth": queue_depth()}

    @app.get("/metrics")
    async def metrics_endpoint():
        metrics.queue_depth.set(queue_depth())
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(Guard, limits=limits, api_key=api_key, allowed_hosts=allowed_hosts)
    app.add_middleware(Observe, metrics=metrics, queue_depth=queue_depth, paths={r.path for r in app.routes})
    app.state.zhembed = lanes
    return app


def _hit(hit) -> dict:
    """A search hit as JSON; passages of long documents carry their character offsets."""
    body = {"id": hit.id, "text": hit.text, "score": round(hit.score, 6)}
    if hit.start is not None:
        body.update(start=hit.start, end=hit.end)
    return body


async def until_disconnected(request: Request, work):
    """Await `work`; if the client goes away first, cancel it (its texts never reach the model)."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.25)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()
            raise ApiError(499, "the client closed the connection")


def default_allowed_hosts(host: str) -> list[str]:
    """Loopback names when the server listens on loopback (against DNS rebinding), else any."""
    return list(LOOPBACK_HOSTS) if host in LOOPBACK_HOSTS else ["*"]


def serve(encoder, host: str = "127.0.0.1", port: int = 8080, limits: Limits | None = None,
          allowed_hosts: list[str] | None = None, **kw) -> None:
    """Run the server until SIGINT/SIGTERM; in-flight requests finish before it exits."""
    import uvicorn

    from .protocol import bounded_protocol

    limits = limits or Limits()
    hosts = allowed_hosts or default_allowed_hosts(host)
    uvicorn.run(create_app(encoder, limits, allowed_hosts=hosts, **kw), host=host, port=port, log_level="info",
                timeout_graceful_shutdown=30, access_log=False, http=bounded_protocol(limits))
