"""The server bounds every byte and second of a connection, and answers odd HTTP the way clients expect."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from zhembed import Encoder
from zhembed.serve.app import Limits, create_app
from zhembed.serve.protocol import bounded_protocol


class Server:
    def __init__(self, app, limits: Limits):
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", http=bounded_protocol(limits))
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def raw(self, data: bytes, wait: float = 5.0) -> bytes:
        """Send raw bytes; what the server answers before it closes (or `wait` passes)."""
        with socket.create_connection(("127.0.0.1", self.port)) as sock:
            sock.settimeout(wait)
            try:
                sock.sendall(data)
            except OSError:
                pass
            return _read_all(sock)


def _read_all(sock) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, OSError):
        pass
    return b"".join(chunks)


LIMITS = Limits(max_concurrent=2, max_header_bytes=8192, max_headers=20, header_timeout=1.0, body_timeout=1.5,
                max_request_tokens=2000)


@pytest.fixture(scope="module")
def server(tiny_bert):
    with Server(create_app(Encoder.load(tiny_bert), LIMITS, api_key="clé-ü"), LIMITS) as running:
        yield running


def test_a_huge_header_is_refused_and_the_connection_closed(server):
    start = time.perf_counter()
    answer = server.raw(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 2_000_000 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431") and time.perf_counter() - start < 3


def test_too_many_header_lines_are_refused(server):
    lines = b"".join(b"X-%d: 1\r\n" % i for i in range(40))
    assert server.raw(b"GET /health HTTP/1.1\r\nHost: localhost\r\n" + lines + b"\r\n").startswith(b"HTTP/1.1 431")


def test_a_slow_head_is_cut_off_and_health_answers_throughout(server):
    def slowloris(results):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.settimeout(5)
            start = time.perf_counter()
            try:
                for byte in b"POST /v1/embeddings HTTP/1.1\r\nHost: localhost\r\n":
                    sock.sendall(bytes([byte]))
                    time.sleep(0.3)
            except OSError:
                pass
            results.append((_read_all(sock), time.perf_counter() - start))
    results = []
    attackers = [threading.Thread(target=slowloris, args=(results,)) for _ in range(4)]
    for a in attackers:
        a.start()
    time.sleep(0.5)
    assert httpx.get(f"{server.base}/health").status_code == 200
    for a in attackers:
        a.join(10)
    assert len(results) == 4 and all(answer.startswith(b"HTTP/1.1 408") and took < 4 for answer, took in results)


def test_slow_bodies_hold_no_slot_from_health_and_time_out(server):
    head = (b"POST /v1/embeddings HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer " + "clé-ü".encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
    try:
        for s in socks:
            s.sendall(head)
        time.sleep(0.3)
        assert httpx.get(f"{server.base}/health").status_code == 200
        for s in socks:
            s.settimeout(4)
        assert all(_read_all(s) for s in socks)  # each is answered (408) and closed by the body timeout
    finally:
        for s in socks:
            s.close()


def test_http_details(server):
    utf8_key = {"Authorization": b"Bearer " + "clé-ü".encode()}
    body = {"input": "你好"}
    assert httpx.post(f"{server.base}/v1/embeddings", json=body, headers=utf8_key).status_code == 200
    lower = {"Authorization": b"bearer " + "clé-ü".encode()}
    assert httpx.post(f"{server.base}/v1/embeddings", json=body, headers=lower).status_code == 200
    assert httpx.head(f"{server.base}/health").status_code == 200
    assert httpx.get(f"{server.base}/health/").status_code == 200
    two_hosts = server.raw(b"GET /health HTTP/1.1\r\nHost: evil.example\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert two_hosts.startswith(b"HTTP/1.1 400")
    r = httpx.post(f"{server.base}/v1/embeddings", content=b'{"input": "x"}', headers=utf8_key)
    assert r.status_code == 415 and "Content-Type" in r.json()["error"]["message"]
    r = httpx.post(f"{server.base}/v1/embeddings", content=b'{"input": "x", "model": "\\ud800"}',
                   headers={**utf8_key, "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"


def test_a_request_over_the_token_budget_is_refused_at_once(server):
    start = time.perf_counter()
    r = httpx.post(f"{server.base}/v1/embeddings", json={"input": ["好" * 2000] * 12, "long": "chunk"},
                   headers={"Authorization": b"Bearer " + "clé-ü".encode()})
    assert r.status_code == 413 and "--max-request-tokens" in r.json()["error"]["message"]
    assert time.perf_counter() - start < 5


def test_a_client_that_leaves_is_counted_and_never_stops_the_worker(tiny_bert):
    """With a batching wait, a caller leaving while its job waited emptied the queue under the worker, whose
    thread then died (max() of nothing); and the drop was counted as a 400."""
    limits = Limits(max_wait_ms=2000)
    with Server(create_app(Encoder.load(tiny_bert), limits), limits) as running:
        with pytest.raises(httpx.TimeoutException):
            httpx.post(f"{running.base}/v1/embeddings", json={"input": "你好"}, timeout=0.5)
        time.sleep(3)
        assert httpx.get(f"{running.base}/health").status_code == 200
        metrics = httpx.get(f"{running.base}/metrics").text
        assert 'zhembed_errors_total{path="/v1/embeddings",status="499"} 1.0' in metrics
        assert httpx.post(f"{running.base}/v1/embeddings", json={"input": "你好"}, timeout=10).status_code == 200
