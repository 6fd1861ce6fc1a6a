"""Load test of `zhembed serve` on loopback, optionally against Infinity on the same ONNX model, in one run.

    python benchmarks/serve_load.py [--model DIR] [--peer infinity] [--rounds 3] [--seconds 10] [--variant NAME=FLAGS]

1. Starts `zhembed serve` (and, with `--peer infinity`, Infinity's optimum engine on a copy of the model
   directory with its int8 ONNX at the root, `--pooling-method mean`; benchmarks/infinity_venv.sh builds its
   venv) on free 127.0.0.1 ports, and checks that both return the Encoder's vectors. Each `--variant` adds one
   more zhembed server with other serve flags, measured in the same rotation.
2. Three loads, each system in turn, in `--rounds` rounds whose order rotates, after one warm-up pass of
   every load on every system; each round first measures the Encoder offline, in this process (same model and
   backend as the server): its throughput at batch 32 and its one-sentence latency (p50), so that the
   server's ratios to it are taken in the same minutes of a host whose speed drifts:
   - `16x1`: 16 clients, one sentence per request (requests/s);
   - `4x32`: 4 clients, 32 sentences per request (sentences/s);
   - `1x1`: one client, one sentence per request, sequential (p50 latency). Each request alternates with
     `Encoder.encode` of the same sentence in this process (the server's spinning mode, within-runs), so the
     server's cost over the model is taken pair by pair, in the same seconds of the host.
   Clients are lean (one keep-alive connection each: asyncio streams for the concurrent loads, a blocking
   socket for the sequential one), since they share the CPU; a reply is checked after its time is taken.
   Server and client CPU seconds and the server's memory are recorded with every measurement.
3. Stops the servers and writes benchmarks/results/serve_load.{json,md}: medians with min/max, and the ratios
   to Infinity under keys containing `infinity` and `ratio`.
Infinity does not add the model's `query: ` prompt, so its clients send the prompt in the text.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from zhembed import Encoder
from zhembed.eval.speed import bench_sentences, cpu_name, write_report

RESULTS = Path(__file__).parent / "results"
INFINITY = Path(__file__).parent / ".infinity-venv" / "bin" / "infinity_emb"
HOST = "127.0.0.1"
LOADS = {"16x1": (16, 1), "4x32": (4, 32), "1x1": (1, 1)}  # clients, sentences per request


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def post_request(host: str, path: str, body: bytes) -> bytes:
    """The bytes of one keep-alive JSON POST."""
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body)


def status_and_length(head: bytes) -> tuple[int, int]:
    """The status code and Content-Length of a response head (its closing blank line included)."""
    return int(head.split(b" ", 2)[1]), int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))


class LeanClient:
    """One keep-alive HTTP/1.1 connection on asyncio streams. The load generator shares the CPU with the
    server, so it should cost as little as wrk would; a full client library spends more per request than
    the server's model does on one short sentence."""

    def __init__(self, host: str, port: int):
        self.host, self.port, self.reader, self.writer = host, port, None, None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(post_request(self.host, path, body))
        status, length = status_and_length(await self.reader.readuntil(b"\r\n\r\n"))
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class BlockingClient:
    """One keep-alive HTTP/1.1 connection on a plain socket, for the sequential load: no event loop between
    the reply's arrival and its timestamp."""

    def __init__(self, host: str, port: int):
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.host, self.buffer = host, b""

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.sock.sendall(post_request(self.host, path, body))
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status, length = status_and_length(head + b"\r\n\r\n")
        while len(self.buffer) < length:
            self.buffer += self._recv()
        reply, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, reply

    def _recv(self) -> bytes:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        return chunk

    def close(self) -> None:
        self.sock.close()


class System:
    """One running server: its process, port, path and the prompt its clients send in the text."""

    def __init__(self, name: str, cmd: list[str], path: str, prompt: str, cwd: str | None = None):
        self.name, self.path, self.prompt, self.port = name, path, prompt, free_port()
        cmd = [c.replace("{port}", str(self.port)) for c in cmd]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1"}  # nothing leaves the machine
        self.process = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)

    def wait_ready(self, seconds: float = 180) -> None:
        import httpx

        stop = time.time() + seconds
        while time.time() < stop:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited with {self.process.returncode} before it served")
            try:
                if httpx.post(f"http://{HOST}:{self.port}{self.path}", json={"input": ["好"]}, timeout=30).status_code == 200:
                    return
            except Exception:  # not listening yet
                pass
            time.sleep(0.5)
        raise SystemExit(f"{self.name} did not serve within {seconds:g} s")

    def cpu_seconds(self) -> float:
        """User + system CPU of the server and its children so far."""
        total = 0.0
        for pid in [self.process.pid, *_children(self.process.pid)]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, IndexError):
                pass
        return total

    def rss_mb(self) -> float:
        total = 0
        for pid in [self.process.pid, *_children(self.process.pid)]:
            try:
                total += int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))
            except (OSError, AttributeError):
                pass
        return total / 1024

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    try:
        kids = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return kids + [g for k in kids for g in _children(k)]


async def _client(system: System, batches: list[list[str]], stop_at: float, latencies: list, errors: list,
                  offset: int) -> None:
    conn, i = LeanClient(HOST, system.port), offset
    while time.perf_counter() < stop_at:
        texts = batches[i % len(batches)]
        body = json.dumps({"input": [system.prompt + t for t in texts]}, ensure_ascii=False).encode()
        start = time.perf_counter()
        try:
            status, reply = await conn.post(system.path, body)
            elapsed = time.perf_counter() - start
            ok = status == 200 and len(json.loads(reply)["data"]) == len(texts)
        except Exception as e:  # counted, never raised: the report shows them
            status, ok = repr(e), False
            conn.close()
        (latencies if ok else errors).append(elapsed if ok else str(status))
        i += 1
    conn.close()


def _sequential(system: System, texts: list[str], stop_at: float, latencies: list, errors: list,
                encoder: Encoder) -> list[float]:
    """One client, one sentence per request, each request followed by `encoder` on the same sentence in this
    process; returns those offline times."""
    conn, offline_times, i = BlockingClient(HOST, system.port), [], 0
    while time.perf_counter() < stop_at:
        text = texts[i % len(texts)]
        body = json.dumps({"input": [system.prompt + text]}, ensure_ascii=False).encode()
        start = time.perf_counter()
        try:
            status, reply = conn.post(system.path, body)
            elapsed = time.perf_counter() - start
            ok = status == 200 and len(json.loads(reply)["data"]) == 1
        except Exception as e:  # counted, never raised: the report shows them
            status, ok = repr(e), False
            conn.close()
            conn = BlockingClient(HOST, system.port)
        (latencies if ok else errors).append(elapsed if ok else str(status))
        start = time.perf_counter()
        encoder.encode([text], batch_size=1)
        offline_times.append(time.perf_counter() - start)
        i += 1
    conn.close()
    return offline_times


def measure(system: System, load: str, texts: list[str], seconds: float, paired: Encoder) -> dict:
    """One load for `seconds`. The sequential load (1x1) also gives the p50 of `paired` on the same sentences,
    each run right after its request."""
    clients, per_request = LOADS[load]
    batches = [texts[i:i + per_request] for i in range(0, len(texts) - per_request + 1, per_request)]
    latencies, errors, offline_times = [], [], []
    cpu0, client0, start = system.cpu_seconds(), time.process_time(), time.perf_counter()
    stop_at = start + seconds
    if clients == 1 and per_request == 1:
        offline_times = _sequential(system, texts, stop_at, latencies, errors, paired)
    else:
        async def run():
            await asyncio.gather(*(_client(system, batches, stop_at, latencies, errors, c * 97) for c in range(clients)))
        asyncio.run(run())
    elapsed = time.perf_counter() - start
    lat = np.array(latencies or [np.nan]) * 1000
    result = {"requests_per_s": len(latencies) / elapsed, "sentences_per_s": len(latencies) * per_request / elapsed,
              "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
              "errors": len(errors), "server_cpu_s": system.cpu_seconds() - cpu0,
              "client_cpu_s": time.process_time() - client0, "server_rss_mb": system.rss_mb(), "seconds": elapsed}
    if offline_times:
        result["paired_offline_p50_ms"] = float(np.median(offline_times) * 1000)
    return result


def offline(enc: Encoder, texts: list[str]) -> dict:
    """One pass of `texts` at batch 32, and one sentence at a time over the first 500."""
    start = time.perf_counter()
    enc.encode(texts, batch_size=32)
    batch32 = len(texts) / (time.perf_counter() - start)
    single = []
    for text in texts[:500]:
        t0 = time.perf_counter()
        enc.encode([text], batch_size=1)
        single.append(time.perf_counter() - t0)
    return {"batch32_sentences_per_s": batch32, "one_sentence_p50_ms": float(np.median(single) * 1000)}


def check_vectors(system: System, encoder: Encoder, texts: list[str]) -> dict:
    """Max abs difference of the server's float and base64 vectors to Encoder.encode of the same texts."""
    import base64

    import httpx

    url, want = f"http://{HOST}:{system.port}{system.path}", encoder.encode(texts)
    result = {}
    for fmt in ("float", "base64"):
        data = httpx.post(url, json={"input": [system.prompt + t for t in texts], "encoding_format": fmt},
                          timeout=60).json()["data"]
        got = np.array([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") if fmt == "base64" else d["embedding"]
                        for d in sorted(data, key=lambda d: d["index"])], dtype=np.float32)
        got /= np.linalg.norm(got, axis=1, keepdims=True)
        result[fmt] = float(np.abs(got - want).max())
    return result


def infinity(model_dir: Path, work: Path) -> System:
    """Infinity's optimum engine on a copy of the model directory whose int8 ONNX sits at the root."""
    if not INFINITY.exists():
        raise SystemExit(f"{INFINITY} is missing: run benchmarks/infinity_venv.sh first")
    copy = work / "model"
    shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns("onnx"))
    shutil.copy(model_dir / "onnx" / "model_qint8.onnx", copy / "model.onnx")
    cmd = [str(INFINITY), "v2", "--model-id", ".", "--engine", "optimum", "--pooling-method", "mean",
           "--host", HOST, "--port", "{port}", "--no-bettertransformer", "--batch-size", "32"]
    return System("infinity", cmd, "/embeddings", "query: ", cwd=str(copy))


def summarize(runs: list[dict]) -> dict:
    keys = runs[0].keys()
    return {k: {"median": float(np.median([r[k] for r in runs])), "min": float(min(r[k] for r in runs)),
                "max": float(max(r[k] for r in runs))} for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--peer", choices=["infinity"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=FLAGS",
                        help="one more zhembed server with these serve flags, e.g. nospin='--onnx-spinning never'")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    texts = bench_sentences(4000)
    encoder = Encoder.load(args.model, backend=args.backend)
    paired = Encoder.load(args.model, backend=args.backend, onnx_spinning="within-runs")  # as the server runs it
    offline(encoder, texts)  # the warm-up pass (`paired` warms up in the loads' warm-up pass)
    bases = []
    cmd = [sys.executable, "-m", "zhembed", "serve", "--host", HOST, "--port", "{port}", "--backend", args.backend]
    cmd += ["--model", args.model] if args.model else []
    systems = [System("zhembed", cmd, "/v1/embeddings", "")]
    for variant in args.variant:
        name, _, flags = variant.partition("=")
        systems.append(System(f"zhembed-{name}", cmd + flags.split(), "/v1/embeddings", ""))
    with tempfile.TemporaryDirectory() as work:
        try:
            if args.peer == "infinity":
                systems.append(infinity(encoder.path, Path(work)))
            for s in systems:
                s.wait_ready()
            vectors = {s.name: check_vectors(s, encoder, texts[:64]) for s in systems}
            results = {s.name: {load: [] for load in LOADS} for s in systems}
            for s in systems:  # the warm-up pass
                for load in LOADS:
                    measure(s, load, texts, min(args.seconds, 5), paired)
            for r in range(args.rounds):
                bases.append(offline(encoder, texts))
                print(f"round {r + 1} offline: {bases[-1]}", file=sys.stderr)
                loads = list(LOADS)[r % len(LOADS):] + list(LOADS)[:r % len(LOADS)]
                for load in loads:
                    for s in systems[r % len(systems):] + systems[:r % len(systems)]:
                        results[s.name][load].append(measure(s, load, texts, args.seconds, paired))
                        print(f"round {r + 1} {load} {s.name}: {results[s.name][load][-1]}", file=sys.stderr)
        finally:
            for s in systems:
                s.stop()
    write(args, bases, results, vectors)


def write(args, bases: list[dict], results: dict, vectors: dict) -> None:
    summary = {name: {load: summarize(runs) for load, runs in by.items()} for name, by in results.items()}
    z, base = summary["zhembed"], summarize(bases)
    per_round = {"4x32_vs_offline_batch32": [m["sentences_per_s"] / b["batch32_sentences_per_s"]
                                             for m, b in zip(results["zhembed"]["4x32"], bases)],
                 "1x1_p50_minus_paired_offline_ms": [m["p50_ms"] - m["paired_offline_p50_ms"]
                                                     for m in results["zhembed"]["1x1"]]}
    doc = {"command": "python " + " ".join(sys.argv), "cpu": cpu_name(), "date": time.strftime("%Y-%m-%d"),
           "model": args.model or "default", "backend": args.backend, "rounds": args.rounds, "seconds": args.seconds,
           "offline": base, "max_abs_difference_to_encode": vectors, "loads": summary,
           "zhembed_vs_offline_per_round": per_round,
           "zhembed_4x32_vs_offline_batch32": z["4x32"]["sentences_per_s"]["median"] / base["batch32_sentences_per_s"]["median"],
           "zhembed_1x1_p50_minus_offline_ms": float(np.median(per_round["1x1_p50_minus_paired_offline_ms"]))}
    if "infinity" in summary:
        i = summary["infinity"]
        doc["infinity_ratio_16x1_requests"] = z["16x1"]["requests_per_s"]["median"] / i["16x1"]["requests_per_s"]["median"]
        doc["infinity_ratio_4x32_sentences"] = z["4x32"]["sentences_per_s"]["median"] / i["4x32"]["sentences_per_s"]["median"]
        doc["infinity_ratio_1x1_p50"] = z["1x1"]["p50_ms"]["median"] / i["1x1"]["p50_ms"]["median"]
    write_report(args.out / "serve_load", doc, markdown(doc))


def markdown(doc: dict) -> str:
    def cell(stat: dict, digits: int = 0) -> str:
        return f"{stat['median']:,.{digits}f} [{stat['min']:,.{digits}f}-{stat['max']:,.{digits}f}]"
    names = list(doc["loads"])
    rows = [("16 clients x 1 sentence: requests/s", "16x1", "requests_per_s", 0),
            ("4 clients x 32 sentences: sentences/s", "4x32", "sentences_per_s", 0),
            ("1 client, sequential: p50 ms", "1x1", "p50_ms", 2),
            ("4x32: server CPU s / client CPU s", "4x32", None, 1),
            ("server memory after the loads, MB", "4x32", "server_rss_mb", 0),
            ("errors (all loads)", None, "errors", 0)]
    lines = ["| measurement | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, load, key, digits in rows:
        cells = []
        for n in names:
            by = doc["loads"][n]
            if load is None:
                cells.append(str(int(sum(by[x][key]["median"] for x in by))))
            elif key is None:
                cells.append(f"{by[load]['server_cpu_s']['median']:.1f} / {by[load]['client_cpu_s']['median']:.1f}")
            else:
                cells.append(cell(by[load][key], digits))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    off, rounds = doc["offline"], doc["zhembed_vs_offline_per_round"]
    lines += ["", f"Offline Encoder, once per round: {cell(off['batch32_sentences_per_s'])} sentences/s at batch 32, "
              f"one sentence p50 {cell(off['one_sentence_p50_ms'], 2)} ms; zhembed 4x32 / offline = "
              f"{doc['zhembed_4x32_vs_offline_batch32']:.2f} (per round: "
              f"{', '.join(f'{x:.2f}' for x in rounds['4x32_vs_offline_batch32'])}); 1x1 p50 - the p50 of "
              f"Encoder.encode on the same sentences, each right after its request (within-runs spinning) = "
              f"{doc['zhembed_1x1_p50_minus_offline_ms']:+.2f} ms (per round: "
              f"{', '.join(f'{x:+.2f}' for x in rounds['1x1_p50_minus_paired_offline_ms'])}; paired offline p50 "
              f"{cell(doc['loads']['zhembed']['1x1']['paired_offline_p50_ms'], 2)} ms)."]
    ratios = {k: v for k, v in doc.items() if "infinity_ratio" in k}
    if ratios:
        lines.append("Ratios zhembed / Infinity: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()) + ".")
    lines.append(f"Max abs difference to Encoder.encode: {doc['max_abs_difference_to_encode']}.")
    lines.append(f"{doc['cpu']}, {doc['date']}; medians [min-max] of {doc['rounds']} rotated rounds of "
                 f"{doc['seconds']:g} s after a warm-up pass. Command: `{doc['command']}`")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
