"""Admission, before any request reaches the model: the Host check (against DNS rebinding), the API key,
the body size and the number of requests in flight, as one plain ASGI middleware; and the Prometheus metrics
with the middleware that counts requests, errors and latency per path."""

from __future__ import annotations

import hmac
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .limits import Limits
from .schemas import error_response

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def default_allowed_hosts(host: str) -> list[str]:
    """Loopback names when the server listens on loopback (against DNS rebinding), else any."""
    return list(LOOPBACK_HOSTS) if host in LOOPBACK_HOSTS else ["*"]


class Guard:
    """Admission before anything else runs (a plain ASGI middleware): the Host header (against DNS
    rebinding), the API key, the number of requests in flight and the body size. Each refusal is a JSON
    error; the body is read here, up to the limit, and handed on to the app."""

    def __init__(self, app: ASGIApp, limits: Limits, api_key: str | None, allowed_hosts: list[str] | None) -> None:
        self.app, self.limits, self.api_key = app, limits, api_key
        self.hosts = None if not allowed_hosts or "*" in allowed_hosts else {h.lower() for h in allowed_hosts}
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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
                    return await error_response(413, f"the request body exceeds {self.limits.max_body_bytes} bytes "
                                             "(--max-body-bytes)")(scope, receive, send)
                receive = _replay(body, receive)
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    def _refuse(self, scope, headers: dict):
        if sum(k.lower() == b"host" for k, _ in scope["headers"]) > 1:
            return error_response(400, "the request has more than one Host header")
        host = _host_name(headers.get("host", ""))
        if self.hosts is not None and host not in self.hosts:
            return error_response(400, f"Host {host[:100]!r} is not allowed (--allowed-hosts)")
        if self.api_key and scope["path"].rstrip("/") != "/health" and not self._authorized(headers):
            return error_response(401, "a valid API key is required: send 'Authorization: Bearer <key>'",
                          {"WWW-Authenticate": "Bearer"})
        if scope["method"] == "POST" and not headers.get("content-type", "").lower().startswith("application/json"):
            return error_response(415, "send the request body as JSON with 'Content-Type: application/json'")
        if scope["path"].rstrip("/") == "/health":
            return None
        if self.in_flight >= self.limits.max_concurrent:
            return error_response(429, f"{self.in_flight} requests are in flight; the limit is {self.limits.max_concurrent} "
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


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replay


class Metrics:
    """The server's Prometheus metrics, in a registry of its own (GET /metrics)."""

    def __init__(self) -> None:
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

    def __init__(self, app: ASGIApp, metrics: Metrics, paths: set[str]) -> None:
        self.app, self.metrics = app, metrics
        # each path's counter and histogram looked up once, not per request (labels() takes a lock)
        self.counted = {p: (metrics.requests.labels(p), metrics.latency.labels(p)) for p in {*paths, "other"}}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = scope["path"] if scope["path"] in self.counted else "other"
            requests, latency = self.counted[path]
            requests.inc()
            latency.observe(time.perf_counter() - start)
            if status[0] >= 400:
                self.metrics.errors.labels(path, str(status[0])).inc()
