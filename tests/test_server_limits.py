"""The server's admission and hardening: limits before tokenization, hostile input, keys, hosts, health."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest

from test_server import RunningServer
from zhembed import Encoder
from zhembed.serve.app import Limits, create_app


@pytest.fixture(scope="module")
def encoder(tiny_bert):
    return Encoder.load(tiny_bert)


@pytest.fixture(scope="module")
def url(encoder):
    limits = Limits(max_body_bytes=4000, max_total_chars=300, max_k=5, max_search_queries=2)
    with RunningServer(create_app(encoder, limits)) as base:
        yield base


def post(url: str, path: str, **kw) -> httpx.Response:
    return httpx.post(f"{url}{path}", timeout=30, **kw)


@pytest.mark.parametrize("kw, status, words", [
    ({"content": b'{"input": "' + "好".encode() * 2000 + b'"}'}, 413, "exceeds 4000 bytes"),
    ({"json": {"input": ["好" * 200, "好" * 200]}}, 413, "limit is 300 (--max-total-chars)"),
    ({"content": b'{"input": "\\ud800"}'}, 400, "lone UTF-16 surrogate"),
    ({"content": b'{"input": ["ok", "\\udfff\\ud800"]}'}, 400, "input[1] contains a lone"),
    ({"json": {"input": [101, 102]}}, 400, "token ids is not supported"),
    ({"json": {"input": [[101, 102]]}}, 400, "token ids is not supported"),
    ({"json": {"input": "好", "dimensions": 128}}, 400, "dimensions must be one of 32"),
    ({"content": b"\xff\xfe{]"}, 400, "invalid request"),
])
def test_hostile_requests_are_json_4xx_and_keep_the_connection(url, kw, status, words):
    with httpx.Client(timeout=30) as client:
        r = client.post(f"{url}/v1/embeddings", headers={"content-type": "application/json"}, **kw)
        assert r.status_code == status and words in r.json()["error"]["message"], r.text
        ok = client.post(f"{url}/v1/embeddings", json={"input": "你好"})  # same keep-alive connection
        assert ok.status_code == 200 and ok.headers.get("connection") != "close"


def test_dimensions_of_the_full_size_work(url, encoder):
    r = post(url, "/v1/embeddings", json={"input": "你好", "dimensions": encoder.dim})
    np.testing.assert_allclose(r.json()["data"][0]["embedding"], encoder.encode("你好"), atol=1e-5)


def test_search_limits(encoder, tmp_path):
    from conftest import SENTENCES
    from zhembed.search.build import BuildSpec, build_index
    from zhembed.textio import Records

    index = build_index(Records(texts=SENTENCES[:20]), tmp_path / "idx", encoder, BuildSpec(), "t")
    with RunningServer(create_app(encoder, Limits(max_k=5, max_search_queries=2), index=index)) as base:
        assert post(base, "/search", json={"query": "你好", "k": 5}).status_code == 200
        r = post(base, "/search", json={"query": "你好", "k": 1000})
        assert r.status_code == 400 and "between 1 and 5 (--max-k)" in r.json()["error"]["message"]
        r = post(base, "/search", json={"query": ["一", "二", "三"], "k": 1})
        assert r.status_code == 413 and "--max-search-queries" in r.json()["error"]["message"]


def test_overload_is_refused_before_tokenization(encoder, monkeypatch):
    calls = []
    real = encoder.tokenize
    monkeypatch.setattr(encoder, "tokenize", lambda *a: calls.append(1) or real(*a))
    with RunningServer(create_app(encoder, Limits(max_queue=2))) as base:
        r = post(base, "/v1/embeddings", json={"input": ["一", "二", "三"]})
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and calls == []


def test_too_many_requests_in_flight_is_429(encoder):
    with RunningServer(create_app(encoder, Limits(max_concurrent=1, max_wait_ms=1500))) as base:
        slow = threading.Thread(target=lambda: post(base, "/v1/embeddings", json={"input": "你好"}))
        slow.start()
        time.sleep(0.5)  # the first request waits 1.5 s for its batch to fill
        r = post(base, "/v1/embeddings", json={"input": "再见"})
        slow.join()
        assert r.status_code == 429 and r.headers["retry-after"] == "1" and "--max-concurrent" in r.text


def test_api_key_and_the_openai_client(encoder):
    from openai import AuthenticationError, OpenAI

    with RunningServer(create_app(encoder, api_key="s3cret")) as base:
        r = post(base, "/v1/embeddings", json={"input": "你好"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert post(base, "/v1/embeddings", json={"input": "你好"},
                    headers={"authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{base}/health").status_code == 200  # probes need no key
        result = OpenAI(base_url=f"{base}/v1", api_key="s3cret").embeddings.create(model="m", input=["你好"])
        np.testing.assert_allclose(result.data[0].embedding, encoder.encode("你好"), atol=1e-5)
        with pytest.raises(AuthenticationError):
            OpenAI(base_url=f"{base}/v1", api_key="nope").embeddings.create(model="m", input=["你好"])


def test_only_allowed_hosts_are_answered(encoder):
    from zhembed.serve.app import default_allowed_hosts

    with RunningServer(create_app(encoder, allowed_hosts=default_allowed_hosts("127.0.0.1"))) as base:
        assert httpx.get(f"{base}/health").status_code == 200
        assert httpx.get(f"{base}/health", headers={"host": "localhost:8080"}).status_code == 200
        r = post(base, "/v1/embeddings", json={"input": "你好"}, headers={"host": "attacker.example"})
        assert r.status_code == 400 and "not allowed (--allowed-hosts)" in r.json()["error"]["message"]
    assert default_allowed_hosts("0.0.0.0") == ["*"]


def test_health_reports_a_dead_worker(encoder):
    app = create_app(encoder)
    with RunningServer(app) as base:
        app.state.infer.queue.close()
        r = httpx.get(f"{base}/health")
        assert r.status_code == 503 and r.json()["status"] == "unhealthy"


def test_dimensions_round_trip_through_the_openai_client(tiny_bert, tmp_path):
    import json
    import shutil

    from openai import OpenAI

    model = shutil.copytree(tiny_bert, tmp_path / "matryoshka")
    st_file = model / "config_sentence_transformers.json"
    config = json.loads(st_file.read_text()) if st_file.exists() else {}
    st_file.write_text(json.dumps({**config, "matryoshka_dimensions": [32, 16, 8]}))
    encoder = Encoder.load(model)
    assert encoder.dimensions == [32, 16, 8]
    with RunningServer(create_app(encoder)) as base:
        client = OpenAI(base_url=f"{base}/v1", api_key="unused")
        for size in (16, 8):
            got = client.embeddings.create(model="m", input=["你好", "再见"], dimensions=size)
            vectors = np.array([d.embedding for d in got.data])
            np.testing.assert_allclose(vectors, encoder.encode(["你好", "再见"], dimensions=size), atol=1e-6)
            np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
        r = post(base, "/v1/embeddings", json={"input": "你好", "dimensions": 12})
        assert r.status_code == 400 and "one of 32, 16, 8" in r.json()["error"]["message"]


def test_long_inputs_chunked_by_the_server_match_the_encoder(url, encoder):
    text = "我们在学习中文，今天天气很好。" * 13  # 195 characters: longer than the tiny model's 128 positions
    r = post(url, "/v1/embeddings", json={"input": [text, "你好"], "long": "chunk"}).json()
    np.testing.assert_allclose([d["embedding"] for d in r["data"]], encoder.encode([text, "你好"], long="chunk"),
                               atol=1e-5)
    assert r["usage"]["truncated_inputs"] == 0
    assert post(url, "/v1/embeddings", json={"input": text}).json()["usage"]["truncated_inputs"] == 1


class GatedModel:
    """Wraps an encoder's embed_group: each call waits for `release`, and the most calls ever running at once
    is recorded (one worker thread must own the model)."""

    def __init__(self, embed_group):
        self.embed_group, self.release, self.lock = embed_group, threading.Event(), threading.Lock()
        self.running = self.most_running = self.passes = 0

    def __call__(self, group, beside):
        with self.lock:
            self.running += 1
            self.most_running, self.passes = max(self.most_running, self.running), self.passes + 1
        try:
            self.release.wait(10)
            time.sleep(0.02)
            return self.embed_group(group, beside)
        finally:
            with self.lock:
                self.running -= 1


def test_max_queue_admits_at_most_that_many_texts_and_one_thread_runs_the_model(tiny_bert):
    encoder = Encoder.load(tiny_bert)
    gate = encoder.embed_group = GatedModel(encoder.embed_group)
    app = create_app(encoder, Limits(max_queue=4, fast_lane_chars=20))
    results: dict[str, int] = {}

    def send(name: str, texts: list[str]) -> None:
        results[name] = post(base, "/v1/embeddings", json={"input": texts}).status_code

    with RunningServer(app) as base:
        first = threading.Thread(target=send, args=("first", ["你好"]))  # the model is busy with it
        first.start()
        while gate.passes < 1:
            time.sleep(0.01)
        queued = [threading.Thread(target=send, args=(f"big{i}", ["很长的一句话" * 10] * 2)) for i in range(2)]
        for thread in queued:  # 4 texts wait: the queue is full
            thread.start()
        while app.state.infer.queue.depth < 4:
            time.sleep(0.01)
        send("small", ["短"])  # a small request has no room of its own
        gate.release.set()
        for thread in [first, *queued]:
            thread.join(30)
    assert results == {"first": 200, "big0": 200, "big1": 200, "small": 503}
    assert gate.most_running == 1
