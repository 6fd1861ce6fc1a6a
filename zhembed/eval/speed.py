"""The seed card's speed table on this CPU: parameters, size, cost, latency and throughput.

Like the card, each `encode` call gets one batch of sentences in corpus order; latency is the mean time of
a call, cost the total time, throughput sentences / cost. Models take turns in every repeat, so load on
a noisy machine falls on all of them alike; the median repeat is reported.
"""

from __future__ import annotations

import datetime
import json
import platform
import time
from pathlib import Path

import numpy as np

from ..errors import ZhembedError
from ..modeldir import count_parameters, num_layers, size_on_disk
from ..progress import Log
from ..runtime import Encoder
from .suite import default_data_dir, load_tasks


def bench_sentences(n: int, data: Path | None = None, seed: int = 0) -> list[str]:
    """`n` distinct sentences drawn (seeded) from the evaluation splits."""
    data_dir = Path(data) if data else default_data_dir()
    if data_dir is None:
        raise ZhembedError("no evaluation data to draw sentences from; pass --data DIR")
    sentences = [text for task in load_tasks(data_dir, None, {}) for pair in zip(task.first, task.second)
                 for text in pair]
    sentences = list(dict.fromkeys(sentences))
    np.random.default_rng(seed).shuffle(sentences)
    if len(sentences) < n:
        raise ZhembedError(f"only {len(sentences)} distinct sentences in {data_dir}, asked for {n}")
    return sentences[:n]


def time_pass(encoder: Encoder, sentences: list[str], batch_size: int, max_length: int) -> list[float]:
    """Seconds of each `encode` call over consecutive batches."""
    times = []
    for lo in range(0, len(sentences), batch_size):
        batch = sentences[lo:lo + batch_size]
        start = time.perf_counter()
        encoder.encode(batch, batch_size=batch_size, max_length=max_length)
        times.append(time.perf_counter() - start)
    return times


SIMD_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def cpu_flags() -> list[str]:
    """The SIMD flags that decide int8, bf16 and fp32 speed (AVX2, AVX-512, VNNI, BF16, AMX), as /proc/cpuinfo lists
    them."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                return [f for f in SIMD_FLAGS if f in present]
    except OSError:
        pass
    return []


def cpu_name() -> str:
    """The processor's model name and its SIMD flags, e.g. 'AMD EPYC (avx2, avx512f, avx512_vnni)'."""
    name = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({', '.join(cpu_flags()) or 'no AVX2'})"


def write_report(stem: Path, doc: dict | list, markdown: str) -> None:
    """Write a benchmark's or a script's report as STEM.json and STEM.md (UTF-8; folders made as needed) and print the Markdown."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    stem.with_suffix(".md").write_text(markdown, encoding="utf-8")
    print(markdown)


def run_bench(encoders: list[Encoder], sentences: list[str], batch_size: int = 16, max_length: int = 256,
              repeats: int = 3, log: Log = print) -> dict:
    """Warm up, then `repeats` interleaved timed passes per model; the median pass of each."""
    for enc in encoders:
        enc.encode(sentences[:4 * batch_size], batch_size=batch_size, max_length=max_length)
    passes = {i: [] for i in range(len(encoders))}
    for r in range(repeats):
        for i, enc in enumerate(encoders):
            times = time_pass(enc, sentences, batch_size, max_length)
            passes[i].append(times)
            log(f"repeat {r + 1}/{repeats} {enc.path.name}: {len(sentences) / sum(times):.1f} sentences/s")
    rows = [_row(enc, passes[i], len(sentences)) for i, enc in enumerate(encoders)]
    for row in rows:
        row["throughput_ratio"] = round(row["throughput"] / rows[0]["throughput"], 2)
        row["latency_ratio"] = round(row["latency_ms"] / rows[0]["latency_ms"], 2)
    return {"models": rows, "sentences": len(sentences), "batch_size": batch_size, "max_length": max_length,
            "repeats": repeats, "cpu": cpu_name(), "date": datetime.date.today().isoformat()}


def _row(enc, passes: list[list[float]], n: int) -> dict:
    median = sorted(passes, key=sum)[len(passes) // 2]
    layers = num_layers(enc.path)
    return {"model": str(enc.path), "backend": enc.backend.name, "threads": enc.backend.threads, "layers": layers,
            "parameters": count_parameters(enc.path), "size_mb": round(size_on_disk(enc.path) / 2**20, 1),
            "cost_s": round(sum(median), 2), "latency_ms": round(1000 * float(np.mean(median)), 2),
            "throughput": round(n / sum(median), 1)}


def markdown(doc: dict) -> str:
    head = ("| model | backend | threads | layers | params | size (MB) | cost (s) | latency (ms/batch) | throughput (sent/s) "
            "| throughput ratio |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["models"]:
        lines.append(f"| {r['model']} | {r['backend']} | {r['threads']} | {r['layers']} | {r['parameters'] / 1e6:.1f}M | {r['size_mb']} "
                     f"| {r['cost_s']} | {r['latency_ms']} | {r['throughput']} | {r['throughput_ratio']:.2f}x |")
    lines.append(f"\n{doc['sentences']} sentences, batch {doc['batch_size']}, max_length {doc['max_length']}, "
                 f"median of {doc['repeats']} repeats, {doc['cpu']}, {doc['date']}.")
    return "\n".join(lines) + "\n"
