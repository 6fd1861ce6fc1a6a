"""Chaos checks of the index writers and the server, on the shipped model; loopback only, bounded.

    python benchmarks/chaos.py [--corpus ../shared/data/corpus/sentences.txt] [--kills 20] [--fuzz 600]

1. kill -9 at random moments of `zhembed index build` and `zhembed index add` (half each), then the same
   command again until it completes: after every kill the index must load (once it exists), and at the end
   every text is in it exactly once. Then 8 small adds, each killed once at a random moment (in encoding, a
   segment write, a merge or the commit) and rerun: every text exactly once.
2. 2 and 4 concurrent `zhembed index add` of different files: every text exactly once.
3. A fuzz of hostile and malformed requests against `zhembed serve` (the issue's list plus random JSON):
   5xx responses, dropped connections, and /health checked every 10 requests.
4. A mixed load: p99 of one-sentence requests alone, then beside two clients sending 64-sentence requests
   back to back; the ratio.
5. SIGINT and SIGTERM in the middle of every long command (encode, index build, cluster): the exit status
   (never 0) and whether an output that looks complete was left.
6. Slow clients (heads trickled a byte at a time) and 1 MB headers against the server: /health polled
   throughout, and the server's memory (RSS) sampled during the fuzz and these attacks.
7. One 5M-character line through `encode` and `index build`: wall time and peak memory.
Writes benchmarks/results/chaos.{json,md}. `--index-only` runs 1 and 2 and prints them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from zhembed.eval.speed import cpu_name, write_report
from zhembed.search import Index

RESULTS = Path(__file__).parent / "results"
ZHEMBED = [sys.executable, "-m", "zhembed"]


def corpus(path: Path, n: int, seed: int = 0) -> list[str]:
    lines = list(dict.fromkeys(s.strip() for s in path.read_text(encoding="utf-8").splitlines() if s.strip()))
    random.Random(seed).shuffle(lines)
    return lines[:n]


def write_lines(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    return path


def exactly_once(index_dir: Path, expected: list[str]) -> tuple[int, int]:
    """(texts lost, texts duplicated) of the index against the texts that should be in it."""
    texts = Index.load(index_dir).texts
    lost = len(set(expected) - set(texts))
    return lost, len(texts) - len(set(texts))


def kill_and_resume(work: Path, texts: list[str], kills: int, rng: random.Random) -> dict:
    """kill -9 `index build`, then `index add`, at random moments until `kills` runs were killed mid-work
    (half in each phase, the rest in add); each next run resumes. After every kill the index must load
    (once one exists); at the end every text is in it exactly once."""
    half = len(texts) // 2
    base, extra = write_lines(work / "base.txt", texts[:half]), write_lines(work / "extra.txt", texts[half:])
    out = work / "index"
    phases = [[*ZHEMBED, "index", "build", "--input", str(base), "--out", str(out)],
              [*ZHEMBED, "index", "add", str(out), "--input", str(extra)]]
    killed, unloadable, runs = 0, 0, 0
    for phase, command in enumerate(phases):
        quota = kills // 2 if phase == 0 else kills - killed
        for _ in range(quota * 3):  # a run that finished before its moment counts as done, not as a kill
            if killed >= (kills // 2 if phase == 0 else kills):
                break
            proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.2, 2.5))
            runs += 1
            if proc.poll() is not None:
                break
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed += 1
            if (out / "CURRENT").exists():
                try:
                    Index.load(out)
                except Exception:
                    unloadable += 1
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        runs += 1
    lost, duplicated = exactly_once(out, texts)
    return {"runs": runs, "killed": killed, "unloadable_after_kill": unloadable, "lost": lost,
            "duplicated": duplicated}


def kill_many_adds(work: Path, texts: list[str], adds: int, rng: random.Random) -> dict:
    """`adds` small `index add`s, each killed once at a random moment and then rerun: the newest segments
    merge as they go, so kills land in encoding, segment writes, merges and commits. Every text once at the end."""
    parts = [texts[i::adds + 1] for i in range(adds + 1)]
    out = work / "many-adds"
    subprocess.run([*ZHEMBED, "index", "build", "--input", str(write_lines(work / "m0.txt", parts[0])), "--out", str(out)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed, unloadable = 0, 0
    for i, part in enumerate(parts[1:], 1):
        command = [*ZHEMBED, "index", "add", str(out), "--input", str(write_lines(work / f"m{i}.txt", part))]
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 3.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
        try:
            Index.load(out)
        except Exception:
            unloadable += 1
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lost, duplicated = exactly_once(out, texts)
    return {"adds": adds, "killed": killed, "unloadable_after_kill": unloadable, "lost": lost, "duplicated": duplicated,
            "segments": len(Index.load(out).meta.segments)}


def concurrent_adds(work: Path, texts: list[str], writers: int) -> dict:
    out = work / f"concurrent-{writers}"
    parts = [texts[i::writers + 1] for i in range(writers + 1)]
    subprocess.run([*ZHEMBED, "index", "build", "--input", str(write_lines(work / f"c{writers}-0.txt", parts[0])),
                    "--out", str(out)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [subprocess.Popen([*ZHEMBED, "index", "add", str(out), "--input",
                               str(write_lines(work / f"c{writers}-{i}.txt", parts[i]))],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(1, writers + 1)]
    codes = [p.wait() for p in procs]
    lost, duplicated = exactly_once(out, texts)
    return {"writers": writers, "exit_codes": codes, "lost": lost, "duplicated": duplicated}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([*ZHEMBED, "serve", "--port", str(self.port), *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def __enter__(self) -> str:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.url}/health").status_code == 200:
                    return self.url
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start")

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class MemoryWatch:
    """The peak RSS of a process, sampled every 0.2 s while the block runs."""

    def __init__(self, pid: int):
        import threading

        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def interrupted(work: Path, texts: list[str]) -> list[dict]:
    """Each long command, signalled after 3 s: its exit status and whether it left complete-looking output."""
    big = write_lines(work / "signal-input.txt", (texts * (200_000 // len(texts) + 1))[:200_000])
    commands = {"encode": (["encode", "-i", str(big), "-o"], "v.jsonl", lambda out: out.exists()),
                "index build": (["index", "build", "-i", str(big), "--out"], "idx", lambda out: (out / "CURRENT").exists()),
                "cluster": (["cluster", "-i", str(big), "-k", "8", "--out"], "labels.txt", lambda out: out.exists())}
    results = []
    for name, (args, target, looks_complete) in commands.items():
        for sig in (signal.SIGINT, signal.SIGTERM):
            out = work / f"signal-{sig.name}-{target}"
            proc = subprocess.Popen([*ZHEMBED, *args, str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True)
            time.sleep(3)
            finished_early = proc.poll() is not None
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=60)
            results.append({"command": name, "signal": sig.name, "exit": proc.returncode, "finished_early": finished_early,
                            "complete_looking_output": bool(looks_complete(out)) and not finished_early,
                            "one_line": len(err.strip().splitlines()) == 1})
    return results


def slow_clients(url: str, port: int, clients: int, seconds: float) -> dict:
    """`clients` connections trickling a request head a byte every 0.5 s, and 20 requests with a 1 MB header;
    /health polled every 0.25 s meanwhile."""
    import threading

    def trickle(results):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            start = time.time()
            try:
                for byte in (b"POST /v1/embeddings HTTP/1.1\r\nHost: localhost\r\n" * 100):
                    sock.sendall(bytes([byte]))
                    time.sleep(0.5)
                    if time.time() - start > seconds:
                        break
            except OSError:
                pass
            results.append(time.time() - start)
    held: list[float] = []
    threads = [threading.Thread(target=trickle, args=(held,), daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    health, deadline = [], time.time() + min(seconds, 15)
    while time.time() < deadline:
        try:
            health.append(httpx.get(f"{url}/health", timeout=5).status_code)
        except httpx.TransportError:
            health.append(0)
        time.sleep(0.25)
    big = []
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.settimeout(10)
            try:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 2**20 + b"\r\n\r\n")
            except OSError:
                pass
            try:
                big.append(sock.recv(64)[:12].decode(errors="replace"))
            except OSError:
                big.append("closed")
    for t in threads:
        t.join(seconds + 5)
    return {"slow_clients": clients, "longest_held_s": round(max(held, default=0), 1),
            "health_polls": len(health), "health_not_200": sum(h != 200 for h in health),
            "big_header_answers": sorted(set(big))}


def huge_line(work: Path) -> dict:
    path = work / "huge.txt"
    path.write_text("今天天气很好，我们去公园散步。" * 340_000 + "\n你好\n", encoding="utf-8")
    out = {}
    for name, args in {"encode": ["encode", "-i", str(path), "-o", str(work / "huge.npy")],
                       "index build": ["index", "build", "-i", str(path), "--out", str(work / "huge-idx")]}.items():
        timed = subprocess.run(["/usr/bin/time", "-f", "%e %M", *ZHEMBED, *args], capture_output=True, text=True)
        seconds, kb = timed.stderr.strip().splitlines()[-1].split()
        out[name] = {"exit": timed.returncode, "seconds": float(seconds), "peak_mb": round(int(kb) / 1024, 1)}
    return out


def random_json(rng: random.Random, depth: int = 0):
    kinds = ["str", "int", "float", "bool", "null", "list", "dict"] if depth < 4 else ["str", "int", "null"]
    kind = rng.choice(kinds)
    if kind == "str":
        return "".join(rng.choice("好中文 a\x00\n\t\"\\\u2028\U0001F600") for _ in range(rng.randint(0, 30)))
    if kind == "int":
        return rng.choice([0, -1, 1, 2**31, -2**63, 10**30])
    if kind == "float":
        return rng.choice([0.5, -1e308, 1e308, 3.14])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    keys = ["input", "model", "encoding_format", "dimensions", "source", "targets", "query", "k", "user", "x"]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def hostile_requests(rng: random.Random, n: int) -> list[tuple[str, str, dict]]:
    """(method, path, httpx keyword arguments) for the issue's cases, then random JSON up to n."""
    j = {"content-type": "application/json"}
    fixed = [
        ("POST", "/v1/embeddings", {"content": b"x" * (3 * 2**20), "headers": j}),          # 3 MB body
        ("POST", "/v1/embeddings", {"json": {"input": ["好" * 20_000] * 30}}),                # total characters
        ("POST", "/v1/embeddings", {"content": b'{"input": "\\ud800"}', "headers": j}),      # lone surrogate
        ("POST", "/v1/embeddings", {"content": b'{"input": ["\\udc00x", "ok"]}', "headers": j}),
        ("POST", "/v1/embeddings", {"json": {"input": [1, 2, 3]}}),                          # token ids
        ("POST", "/v1/embeddings", {"json": {"input": [[1, 2], [3]]}}),
        ("POST", "/v1/embeddings", {"json": {"input": "好", "dimensions": 7}}),
        ("POST", "/v1/embeddings", {"json": {"input": "好", "dimensions": -1}}),
        ("POST", "/v1/embeddings", {"json": {"input": "好", "encoding_format": "hex"}}),
        ("POST", "/v1/embeddings", {"content": b"[" * 100_000 + b"]" * 100_000, "headers": j}),  # deep nesting
        ("POST", "/v1/embeddings", {"content": b"\xff\xfe\xfd", "headers": j}),               # not UTF-8
        ("POST", "/v1/embeddings", {"content": b"", "headers": j}),
        ("POST", "/v1/embeddings", {"content": b'{"input": "x"}', "headers": {"content-type": "text/plain"}}),
        ("POST", "/v1/embeddings", {"json": {"input": ["好"] * 5000}}),                       # too many inputs
        ("POST", "/search", {"json": {"query": ["好"] * 100, "k": 1000}}),
        ("POST", "/search", {"json": {"query": "好", "k": 10**12}}),
        ("POST", "/similarity", {"content": b'{"source": "\\ud800", "targets": ["x"]}', "headers": j}),
        ("POST", "/similarity", {"json": {"source": "好", "targets": []}}),
        ("GET", "/v1/embeddings", {}),
        ("POST", "/health", {}),
        ("DELETE", "/metrics", {}),
        ("POST", "/v1/embeddings", {"json": {"input": "好"}, "headers": {"host": "attacker.example"}}),
        ("POST", "/v1/embeddings", {"json": {"input": "\x00\x01\x02" * 100}}),
        ("GET", "/" + "a" * 5000, {}),
    ]
    paths = ["/v1/embeddings", "/similarity", "/search", "/embeddings"]
    rest = [("POST", rng.choice(paths), {"content": json.dumps(random_json(rng)).encode(), "headers": j})
            for _ in range(max(0, n - len(fixed)))]
    return fixed + rest


def fuzz(url: str, n: int, rng: random.Random) -> dict:
    statuses: dict[int, int] = {}
    dropped = unhealthy = 0
    with httpx.Client(timeout=60) as client:
        for i, (method, path, kw) in enumerate(hostile_requests(rng, n)):
            try:
                r = client.request(method, f"{url}{path}", **kw)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            except httpx.TransportError:
                dropped += 1
            if i % 10 == 0 and httpx.get(f"{url}/health").status_code != 200:
                unhealthy += 1
    return {"requests": n, "statuses": dict(sorted(statuses.items())), "5xx": sum(v for k, v in statuses.items()
                                                                                  if k >= 500),
            "dropped_connections": dropped, "health_not_200": unhealthy}


def p99_short(url: str, sentences: list[str], n: int) -> float:
    times = []
    with httpx.Client(timeout=60) as client:
        for i in range(n):
            start = time.perf_counter()
            client.post(f"{url}/v1/embeddings", json={"input": sentences[i % len(sentences)]}).raise_for_status()
            times.append(time.perf_counter() - start)
    return statistics.quantiles(times, n=100)[98]


def long_client(url: str, sentences: list[str], seed: int, stop, done) -> None:
    """64-sentence requests back to back until `stop` is set (in its own process, so that its JSON decoding
    never holds the measuring client's interpreter lock)."""
    rng = random.Random(seed)
    with httpx.Client(timeout=60) as client:
        while not stop.is_set():
            client.post(f"{url}/v1/embeddings", json={"input": rng.sample(sentences, 64)}).raise_for_status()
            with done.get_lock():
                done.value += 1


def mixed_load(url: str, sentences: list[str], n: int) -> dict:
    alone = p99_short(url, sentences, n)
    stop, done = multiprocessing.Event(), multiprocessing.Value("i", 0)
    clients = [multiprocessing.Process(target=long_client, args=(url, sentences, seed, stop, done)) for seed in range(2)]
    for c in clients:
        c.start()
    time.sleep(1.0)
    loaded = p99_short(url, sentences, n)
    stop.set()
    for c in clients:
        c.join(60)
    return {"short_p99_alone_ms": round(alone * 1000, 2), "short_p99_under_load_ms": round(loaded * 1000, 2),
            "ratio": round(loaded / alone, 2), "long_requests_during": done.value}


def print_mixed_load(short: int) -> None:
    from zhembed.eval.speed import bench_sentences

    sentences = bench_sentences(2000)
    for _ in range(2):
        with Server() as url:
            print(f"mixed load: {mixed_load(url, sentences, short)}; {cpu_name()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/corpus/sentences.txt")
    parser.add_argument("--texts", type=int, default=40_000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--fuzz", type=int, default=1000)
    parser.add_argument("--slow-clients", type=int, default=20)
    parser.add_argument("--short", type=int, default=300, help="one-sentence requests per p99 measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--mixed-only", action="store_true", help="Only the mixed load (4.), twice, printed.")
    parser.add_argument("--index-only", action="store_true", help="Only the index writers (1., 2.), printed.")
    args = parser.parse_args()
    if args.mixed_only:
        return print_mixed_load(args.short)
    rng = random.Random(args.seed)
    texts = corpus(args.corpus, args.texts, args.seed)
    doc = {"command": "python " + " ".join(sys.argv), "cpu": cpu_name(), "date": time.strftime("%Y-%m-%d"),
           "texts": len(texts)}
    with tempfile.TemporaryDirectory(prefix="zhembed-chaos-") as tmp:
        work = Path(tmp)
        os.environ.setdefault("ZHEMBED_HOME", str(work / "home"))
        doc["kill_and_resume"] = kill_and_resume(work, texts, args.kills, rng)
        print("kill -9 and resume:", doc["kill_and_resume"], flush=True)
        doc["kill_many_adds"] = kill_many_adds(work, texts[:8000], 8, rng)
        print("kill -9 in each of many adds:", doc["kill_many_adds"], flush=True)
        doc["concurrent_adds"] = [concurrent_adds(work, texts[:4000], w) for w in (2, 4)]
        print("concurrent adds:", doc["concurrent_adds"], flush=True)
        if args.index_only:
            return
        index = work / "concurrent-2"
        doc["signals"] = interrupted(work, texts)
        print("signals:", doc["signals"], flush=True)
        doc["huge_line"] = huge_line(work)
        print("huge line:", doc["huge_line"], flush=True)
        server = Server("--index", str(index), "--max-concurrent", "8")
        with server as url, MemoryWatch(server.proc.pid) as memory:
            doc["fuzz"] = fuzz(url, args.fuzz, rng)
            print("fuzz:", doc["fuzz"], flush=True)
            doc["slow"] = slow_clients(url, server.port, args.slow_clients, 20)
            print("slow clients and big headers:", doc["slow"], flush=True)
        doc["server_peak_rss_mb"] = round(memory.peak, 1)
        with Server("--index", str(index)) as url:
            doc["mixed_load"] = mixed_load(url, texts[:2000], args.short)
            print("mixed load:", doc["mixed_load"], flush=True)
    k, f, m = doc["kill_and_resume"], doc["fuzz"], doc["mixed_load"]
    md = "\n".join([
        "| check | result |", "|---|---|",
        f"| kill -9 during index build/add, then resume | {k['killed']} kills in {k['runs']} runs; unloadable after a kill: "
        f"{k['unloadable_after_kill']}; texts lost {k['lost']}, duplicated {k['duplicated']} of {len(texts)} |",
        f"| kill -9 once in each of {doc['kill_many_adds']['adds']} small adds, then rerun | "
        f"{doc['kill_many_adds']['killed']} kills; unloadable after a kill: {doc['kill_many_adds']['unloadable_after_kill']}; "
        f"lost {doc['kill_many_adds']['lost']}, duplicated {doc['kill_many_adds']['duplicated']}; "
        f"{doc['kill_many_adds']['segments']} segments at the end |",
        *[f"| {c['writers']} concurrent `index add` | exit codes {c['exit_codes']}; lost {c['lost']}, duplicated "
          f"{c['duplicated']} |" for c in doc["concurrent_adds"]],
        f"| server fuzz, {f['requests']} hostile requests | statuses {f['statuses']}; 5xx {f['5xx']}; dropped connections "
        f"{f['dropped_connections']}; /health not 200: {f['health_not_200']} |",
        f"| SIGINT / SIGTERM during encode, index build, cluster | exit codes "
        f"{[(x['command'], x['signal'], x['exit']) for x in doc['signals']]}; exit 0 after a signal: "
        f"{sum(x['exit'] == 0 for x in doc['signals'])}; complete-looking outputs: "
        f"{sum(x['complete_looking_output'] for x in doc['signals'])}; one line each: {all(x['one_line'] for x in doc['signals'])} |",
        f"| {doc['slow']['slow_clients']} slow clients, then 20 requests with a 1 MB header | longest held "
        f"{doc['slow']['longest_held_s']} s; /health not 200 in {doc['slow']['health_not_200']} of "
        f"{doc['slow']['health_polls']} polls; big headers answered {doc['slow']['big_header_answers']} |",
        f"| server memory during the fuzz and the attacks | peak RSS {doc['server_peak_rss_mb']} MB |",
        f"| one 5M-character line | encode {doc['huge_line']['encode']['seconds']} s, "
        f"{doc['huge_line']['encode']['peak_mb']} MB; index build {doc['huge_line']['index build']['seconds']} s, "
        f"{doc['huge_line']['index build']['peak_mb']} MB |",
        f"| mixed load: one-sentence requests beside two clients of 64-sentence requests | p99 alone "
        f"{m['short_p99_alone_ms']} ms, under load {m['short_p99_under_load_ms']} ms: {m['ratio']}x |",
        "", f"{doc['cpu']}, {doc['date']}. Command: `{doc['command']}`", ""])
    write_report(args.out / "chaos", doc, md)


if __name__ == "__main__":
    main()
