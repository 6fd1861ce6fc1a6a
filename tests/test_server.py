"""The real HTTP server on a free loopback port, called with httpx and with the openai client."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from zhembed import Encoder
from zhembed.serve.app import Limits, create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def encoder(tiny_bert):
    return Encoder.load(tiny_bert)


@pytest.fixture(scope="module")
def url(encoder):
    with RunningServer(create_app(encoder, Limits(max_inputs=64, max_chars=500, max_queue=1000))) as base:
        yield base


def test_embeddings_happy_paths(url, encoder):
    one = httpx.post(f"{url}/v1/embeddings", json={"input": "你好", "model": "m"}).json()
    assert one["object"] == "list" and one["model"] == "m" and one["data"][0]["index"] == 0
    np.testing.assert_allclose(one["data"][0]["embedding"], encoder.encode("你好"), atol=1e-5)
    assert one["usage"]["prompt_tokens"] == len(encoder.tokenize(["你好"], 256)[0])
    many = httpx.post(f"{url}/v1/embeddings", json={"input": ["你好", "再见", "谢谢"], "encoding_format": "base64"}).json()
    vectors = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in many["data"]])
    np.testing.assert_allclose(vectors, encoder.encode(["你好", "再见", "谢谢"]), atol=1e-5)
    assert [d["index"] for d in many["data"]] == [0, 1, 2]


def test_openai_client(url, encoder):
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key="unused")
    result = client.embeddings.create(model="zhembed", input=["我们在学习中文", "今天天气很好"])
    got = np.array([d.embedding for d in result.data], dtype=np.float32)
    np.testing.assert_allclose(got, encoder.encode(["我们在学习中文", "今天天气很好"]), atol=1e-5)
    assert result.usage.prompt_tokens > 0


def test_similarity_health_metrics(url, encoder):
    scores = httpx.post(f"{url}/similarity", json={"source": "你好", "targets": ["你好", "再见"]}).json()["scores"]
    assert scores[0] == pytest.approx(1, abs=1e-4) and len(scores) == 2
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    text = httpx.get(f"{url}/metrics").text
    for name in ("zhembed_requests_total", "zhembed_errors_total", "zhembed_batch_size_bucket",
                 "zhembed_queue_depth", "zhembed_request_seconds_bucket"):
        assert name in text


@pytest.mark.parametrize("body, status, words", [
    ({"input": ["好"] * 65}, 413, "limit of 64"),
    ({"input": ["好" * 501]}, 413, "limit is 500"),
    ({"input": 5}, 422, "input"),
    ({"input": ["好", 3]}, 422, "input"),
    ({"inputs": "好"}, 422, "input"),
    ({"input": "好", "encoding_format": "hex"}, 422, "encoding_format"),
    ({"input": []}, 400, "must not be empty"),
    ({"source": "好", "targets": []}, 400, "must not be empty"),
])
def test_bad_requests(url, body, status, words):
    path = "/similarity" if "source" in body else "/v1/embeddings"
    r = httpx.post(f"{url}{path}", json=body)
    assert r.status_code == status and words in r.json()["error"]["message"], r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_not_json_and_truncation(url, encoder):
    r = httpx.post(f"{url}/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()
    long = httpx.post(f"{url}/v1/embeddings", json={"input": "好" * 400}).json()  # the tiny model has 128 positions
    assert long["usage"]["truncated_inputs"] == 1 and long["usage"]["prompt_tokens"] == 128
    assert httpx.get(f"{url}/health").status_code == 200  # still alive


def test_full_queue_is_503_with_retry_after(encoder):
    with RunningServer(create_app(encoder, Limits(max_queue=2))) as base:
        r = httpx.post(f"{base}/v1/embeddings", json={"input": ["一", "二", "三"]})
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and "limit is 2" in r.json()["error"]["message"]


def test_concurrent_burst_every_answer_matches_its_input(url, encoder):
    texts = [f"第{i}个句子，内容是{'好' * (i % 13)}" for i in range(32 * 20)]
    expected = encoder.encode(texts)

    async def client(c: int, http: httpx.AsyncClient) -> list[tuple[int, list[float]]]:
        out = []
        for r in range(20):
            i = c * 20 + r
            resp = await http.post(f"{url}/v1/embeddings", json={"input": texts[i]})
            out.append((i, resp.json()["data"][0]["embedding"]))
        return out

    async def burst():
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=32)) as http:
            return await asyncio.gather(*(client(c, http) for c in range(32)))

    results = [pair for chunk in asyncio.run(burst()) for pair in chunk]
    assert len(results) == 640
    for i, vec in results:
        np.testing.assert_allclose(vec, expected[i], atol=1e-5, err_msg=texts[i])
    sizes = httpx.get(f"{url}/metrics").text
    assert "zhembed_batch_size_count" in sizes


def test_search_endpoint(encoder, tmp_path):
    from conftest import SENTENCES
    from zhembed.search.build import BuildSpec, build_index
    from zhembed.textio import Records

    index = build_index(Records(texts=SENTENCES[:20], ids=[f"s{i}" for i in range(20)]), tmp_path / "idx", encoder, BuildSpec(), "test")
    with RunningServer(create_app(encoder, index=index)) as base:
        body = httpx.post(f"{base}/search", json={"query": [SENTENCES[3], SENTENCES[7]], "k": 2}).json()
        assert [row[0]["id"] for row in body["results"]] == ["s3", "s7"] and len(body["results"][0]) == 2
        bad = httpx.post(f"{base}/search", json={"query": "x", "k": 0})
        assert bad.status_code == 400 and "k must be between" in bad.json()["error"]["message"]
    with RunningServer(create_app(encoder)) as base:
        missing = httpx.post(f"{base}/search", json={"query": "x"})
        assert missing.status_code == 404 and "--index" in missing.json()["error"]["message"]


def test_sigterm_finishes_in_flight_requests(tiny_bert):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "zhembed", "serve", "--model", str(tiny_bert), "--port", str(port),
                             "--max-wait-ms", "1500", "--backend", "torch"], stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health")
                break
            except httpx.TransportError:
                assert time.time() < deadline and proc.poll() is None, "the server did not start"
                time.sleep(0.2)
        result = {}
        sender = threading.Thread(target=lambda: result.update(
            r=httpx.post(f"http://127.0.0.1:{port}/v1/embeddings", json={"input": "你好"}, timeout=30)))
        sender.start()
        while "zhembed_queue_depth 1.0" not in httpx.get(f"http://127.0.0.1:{port}/metrics").text:
            time.sleep(0.01)  # until the request waits in the batching queue (max wait 1.5 s)
        os.kill(proc.pid, signal.SIGTERM)
        sender.join(30)
        assert result["r"].status_code == 200
        assert proc.wait(30) in (0, 143, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after its graceful shutdown
    finally:
        proc.kill()


def test_search_encodes_queries_at_the_index_max_length(encoder, tmp_path):
    from conftest import SENTENCES
    from zhembed.search.build import BuildSpec, build_index
    from zhembed.textio import Records

    index = build_index(Records(texts=SENTENCES[:20]), tmp_path / "idx", encoder, BuildSpec(max_length=8), "test")
    query = "北京到上海的高铁票多少钱，" * 6  # far over 8 tokens
    expected = index.search(query, k=3)[0]
    with RunningServer(create_app(encoder, index=index)) as base:
        hits = httpx.post(f"{base}/search", json={"query": query, "k": 3}).json()["results"][0]
    assert [h["id"] for h in hits] == [h.id for h in expected]
    assert [h["score"] for h in hits] == pytest.approx([h.score for h in expected], abs=1e-5)


def test_openapi_documents_the_request_bodies(url):
    """The handlers parse their bodies themselves (serve/schemas.py `parse`); /openapi.json still shows them."""
    paths = httpx.get(f"{url}/openapi.json", timeout=30).json()["paths"]
    for path, field in (("/v1/embeddings", "input"), ("/similarity", "targets"), ("/search", "query")):
        schema = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert field in schema["properties"] and field in schema["required"]


def test_the_post_endpoints_answer_other_methods_and_paths_as_before(url):
    """serve/app.py's Endpoints serves the POST endpoints ahead of FastAPI's router; everything else still
    reaches the router: another method is a 405, a trailing slash redirects, an unknown path is a JSON 404."""
    assert httpx.get(f"{url}/v1/embeddings").status_code == 405
    moved = httpx.post(f"{url}/v1/embeddings/", json={"input": "你好"})
    assert moved.status_code == 307 and moved.headers["location"].endswith("/v1/embeddings")
    missing = httpx.post(f"{url}/v2/embeddings", json={"input": "你好"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == 404


def test_an_unexpected_failure_is_a_json_500_and_still_reaches_the_server_log(encoder, monkeypatch):
    """A bug in a handler answers OpenAI's error shape, and the exception still goes up to the server, which logs
    its traceback (Endpoints had answered it and kept it to itself)."""
    from fastapi.testclient import TestClient

    from zhembed.serve.infer import Infer

    async def broken(*_, **__):
        raise RuntimeError("a bug")

    monkeypatch.setattr(Infer, "embed", broken)
    with TestClient(create_app(encoder), raise_server_exceptions=False) as client:
        r = client.post("/v1/embeddings", json={"input": "你好"})
    assert r.status_code == 500 and r.json()["error"]["message"] == "internal error (RuntimeError)"
    with TestClient(create_app(encoder)) as client, pytest.raises(RuntimeError, match="a bug"):
        client.post("/v1/embeddings", json={"input": "你好"})


def test_the_shipped_int8_model_on_two_lanes_gives_each_request_its_encode_vectors():
    """Concurrent requests of mixed sizes, so that the worker hands the model groups side by side."""
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    texts = [s.strip() for s in (Path(__file__).parent / "data" / "sentences_zh.txt").read_text(encoding="utf-8")
             .splitlines() if s.strip()]
    encoder = Encoder.load(num_threads=2)
    calls, embed_group = [], encoder.embed_group
    encoder.embed_group = lambda group, beside: calls.append(beside) or embed_group(group, beside)
    requests = [[texts[(start + k) % len(texts)] for k in range(size)]
                for start, size in enumerate([1, 33, 5, 64, 2, 40] * 4)]
    with RunningServer(create_app(encoder)) as base:
        assert encoder.lanes == 2
        with ThreadPoolExecutor(6) as pool:
            replies = list(pool.map(lambda r: httpx.post(f"{base}/v1/embeddings", json={"input": r}, timeout=60),
                                    requests))
    assert any(calls)  # groups ran side by side, one core each
    for request, reply in zip(requests, replies):
        got = np.array([d["embedding"] for d in reply.json()["data"]], dtype=np.float32)
        np.testing.assert_allclose(got, encoder.encode(request), atol=1e-6)
