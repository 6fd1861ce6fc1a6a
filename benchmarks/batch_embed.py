"""Batch embedding of 100k corpus sentences with the default model: one local process against Ray Data.

    python benchmarks/batch_embed.py [--data ../shared/data] [--sentences 100000] [--actors 2]

Local: `zhembed embed-dataset --engine local` semantics, one process with all cores as model threads.
Ray:   a local Ray instance, `--actors` actors x 1 thread each (Ray's own start-up timed apart).
Both write Parquet shards of 10,000 rows; the script checks that both wrote the same rows in the same order.
Writes benchmarks/results/batch_embed.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from zhembed.eval.speed import cpu_name, write_report
from zhembed.scale.embed_dataset import EmbedConfig, embed_dataset
from zhembed.textio import read_lines

RESULTS = Path(__file__).parent / "results"


def run(engine: str, source: Path, out: Path, actors: int, threads: int | None) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    report = embed_dataset(source, out, EmbedConfig(threads=threads), engine, actors=actors,
                           log=lambda msg: print(f"{engine}: {msg}", file=sys.stderr))
    return {"rows": report["rows"], "seconds": round(report["seconds"], 1),
            "sentences_per_s": round(report["rows"] / report["seconds"], 1)}


def same_rows(a: Path, b: Path) -> dict:
    names = sorted(p.name for p in a.glob("*.parquet"))
    assert names == sorted(p.name for p in b.glob("*.parquet"))
    worst, texts_equal = 0.0, True
    for name in names:
        x, y = pq.read_table(a / name), pq.read_table(b / name)
        texts_equal &= x.column("text").to_pylist() == y.column("text").to_pylist()
        ex, ey = (np.array(t.column("embedding").to_pylist(), dtype=np.float32) for t in (x, y))
        worst = max(worst, float(np.abs(ex - ey).max()))
    return {"shards": len(names), "same_texts_in_order": texts_equal, "max_abs_embedding_difference": worst}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--sentences", type=int, default=100_000)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("runs/batch-embed"))
    parser.add_argument("--out", type=Path, default=RESULTS / "batch_embed")
    args = parser.parse_args()
    import ray

    args.work.mkdir(parents=True, exist_ok=True)
    source = args.work / "sentences.txt"
    lines = [s for s in read_lines(args.data / "corpus" / "sentences.txt") if s.strip()][:args.sentences]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    local = run("local", source, args.work / "local", args.actors, None)
    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray_init = time.perf_counter() - start
    on_ray = run("ray", source, args.work / "ray", args.actors, 1)
    ray.shutdown()
    doc = {"cpu": cpu_name(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
           "command": "python " + " ".join(sys.argv), "sentences": len(lines), "local": local,
           "ray": {**on_ray, "actors": args.actors, "threads_per_actor": 1, "ray_init_seconds": round(ray_init, 1)},
           "ray_overhead": round(1 - on_ray["sentences_per_s"] / local["sentences_per_s"], 3),
           "agreement": same_rows(args.work / "local", args.work / "ray")}
    table = "\n".join([
        f"# Batch embedding: local against Ray\n\n{doc['cpu']}, {doc['cores']} cores, {doc['date']}. "
        f"Command: `{doc['command']}`\n",
        f"{doc['sentences']:,} corpus sentences, default model, Parquet shards of 10,000 rows.\n",
        "| engine | setup | seconds | sentences/s |", "|---|---|---|---|",
        f"| local | 1 process, {doc['cores']} threads | {local['seconds']} | {local['sentences_per_s']} |",
        f"| ray | {args.actors} actors x 1 thread (+{doc['ray']['ray_init_seconds']} s ray.init) | "
        f"{on_ray['seconds']} | {on_ray['sentences_per_s']} |",
        f"\nRay overhead against local: {100 * doc['ray_overhead']:.1f}% (seconds include actor start-up and model "
        f"loading). Same texts in the same order: {doc['agreement']['same_texts_in_order']}; largest embedding "
        f"difference {doc['agreement']['max_abs_embedding_difference']:.2e} (threads differ: 1 per actor, "
        f"{doc['cores']} locally).\n"])
    write_report(args.out, doc, table)


if __name__ == "__main__":
    main()
