"""Load test of `zhembed serve` on loopback: bounded in clients, time and requests; stops by itself.

    python benchmarks/serve_load.py [--model DIR] [--backend auto] [--clients 16] [--seconds 20]

0. The clients are lean (asyncio streams, one keep-alive connection each), since they share the CPU.
1. Offline: the Encoder's batch throughput (batch 16) on the same sentences, same backend, same process
   settings as the server.
2. Starts the server on a free 127.0.0.1 port (a subprocess), then:
   - single-request latency: one client, one short sentence a request, sequential (p50);
   - N concurrent single-sentence clients for T seconds: throughput, p50/p95/p99 latency, errors, lost requests.
3. Stops the server with SIGTERM and writes benchmarks/results/serve_load.{json,md}.
Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from zhembed import Encoder
from zhembed.eval.speed import bench_sentences, cpu_name

RESULTS = Path(__file__).parent / "results"
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def offline_throughput(model: str | None, backend: str, texts: list[str]) -> float:
    enc = Encoder.load(model, backend=backend)
    enc.encode(texts[:64], batch_size=16)
    start = time.perf_counter()
    enc.encode(texts, batch_size=16)
    return len(texts) / (time.perf_counter() - start)


class LeanClient:
    """One keep-alive HTTP/1.1 connection on asyncio streams. The load generator shares the CPU with the
    server, so it should cost as little as wrk would; a full client library spends more per request than
    the server's model does on one short sentence."""

    def __init__(self, host: str, port: int):
        self.host, self.port, self.reader, self.writer = host, port, None, None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))
        return int(head.split(b" ", 2)[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _client(port: int, path: str, texts: list[str], stop_at: float, latencies: list, errors: list, offset: int):
    conn, i = LeanClient(HOST, port), offset
    while time.perf_counter() < stop_at:
        text = texts[i % len(texts)]
        start = time.perf_counter()
        try:
            status, body = await conn.post(path, json.dumps({"input": text}).encode())
            ok = status == 200 and len(json.loads(body)["data"]) == 1
        except Exception as e:  # counted, never raised: the report shows them
            status, ok = repr(e), False
            conn.close()
        (latencies if ok else errors).append(time.perf_counter() - start if ok else str(status))
        i += 1
    conn.close()


async def drive(port: int, path: str, texts: list[str], clients: int, seconds: float) -> dict:
    latencies, errors = [], []
    stop_at = time.perf_counter() + seconds
    start = time.perf_counter()
    await asyncio.gather(*(_client(port, path, texts, stop_at, latencies, errors, c * 997) for c in range(clients)))
    elapsed = time.perf_counter() - start
    lat = np.array(latencies) * 1000
    return {"clients": clients, "seconds": round(elapsed, 1), "requests": len(latencies) + len(errors),
            "ok": len(latencies), "errors": len(errors), "server_errors_5xx": sum(e.startswith("5") for e in errors),
            "throughput": round(len(latencies) / elapsed, 1),
            **{f"p{q}_ms": round(float(np.percentile(lat, q)), 2) for q in (50, 95, 99)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--max-wait-ms", type=float, default=2.0, help="The server's batching wait.")
    parser.add_argument("--threads", type=int, help="The server's model threads (default: all cores).")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    texts = bench_sentences(4000)
    offline = offline_throughput(args.model, args.backend, texts)
    port = free_port()
    cmd = [sys.executable, "-m", "zhembed", "serve", "--host", HOST, "--port", str(port), "--backend", args.backend,
           "--max-wait-ms", str(args.max_wait_ms)] + (["--threads", str(args.threads)] if args.threads else [])
    server = subprocess.Popen(cmd + (["--model", args.model] if args.model else []), stderr=subprocess.DEVNULL)
    try:
        import httpx

        url = f"http://{HOST}:{port}"
        for _ in range(600):
            try:
                httpx.get(f"{url}/health")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        single = asyncio.run(drive(port, "/v1/embeddings", ["花呗如何还款"], 1, 5))
        load = asyncio.run(drive(port, "/v1/embeddings", texts, args.clients, args.seconds))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    doc = {"model": args.model or "default", "backend": args.backend, "max_wait_ms": args.max_wait_ms,
           "server_threads": args.threads,
           "client": "asyncio streams, one keep-alive connection per client", "command": "python " + " ".join(sys.argv), "cpu": cpu_name(), "date": time.strftime("%Y-%m-%d"),
           "offline_batch16_throughput": round(offline, 1), "single_request": single, "load": load,
           "load_vs_offline": round(load["throughput"] / offline, 2)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve_load.json").write_text(json.dumps(doc, indent=2) + "\n")
    md = (f"| measurement | value |\n|---|---|\n"
          f"| offline Encoder throughput (batch 16) | {doc['offline_batch16_throughput']} sent/s |\n"
          f"| {args.clients} concurrent clients: throughput | {load['throughput']} req/s ({doc['load_vs_offline']:.2f}x offline) |\n"
          f"| {args.clients} clients: p50 / p95 / p99 | {load['p50_ms']} / {load['p95_ms']} / {load['p99_ms']} ms |\n"
          f"| {args.clients} clients: requests, errors, 5xx | {load['requests']}, {load['errors']}, {load['server_errors_5xx']} |\n"
          f"| single request, one short sentence: p50 | {single['p50_ms']} ms |\n\n"
          f"{cpu_name()}, {doc['date']}, backend {args.backend}, server --max-wait-ms {args.max_wait_ms}; "
          f"clients: {doc['client']}. Command: `{doc['command']}`\n")
    (args.out / "serve_load.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
