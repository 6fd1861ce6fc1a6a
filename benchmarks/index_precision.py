"""Search speed and recall of the three index precisions on the corpus, in one run, interleaved.

    python benchmarks/index_precision.py [--data ../shared/data] [--rounds 3] [--work runs/index-precision]

The shipped model's vectors of ../shared/data/corpus/sentences.txt (346,868 sentences, max_length 128) and of
1,000 lcqmc_dev questions are encoded once and cached in WORK (a rerun reuses them). Three indexes are built
from the same vectors as `index build --precision P` builds them at this size: fp32 HNSW, int8 HNSW over
8-bit codes, binary RaBitQ IVF; int8 and binary rescore their candidates with the exact vectors on disk.
Each query is timed alone through Index.search_vectors (search and the hits' records, no encoding), after a
full warm-up pass of every index; the rounds interleave the indexes. recall@10 is against exact fp32 search.
Writes benchmarks/results/index_precision.{json,md}; pause background work first (the CPU flags are printed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from zhembed import Encoder
from zhembed.eval.speed import cpu_name, write_report
from zhembed.search import ann as ann_lib
from zhembed.search import store
from zhembed.search.build import BuildSpec, new_meta
from zhembed.search.index import Index
from zhembed.textio import read_lines

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
K = 10


def cached_vectors(data: Path, work: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    texts = list(dict.fromkeys(s for s in read_lines(data / "corpus" / "sentences.txt") if s.strip()))
    queries = list(dict.fromkeys(line.split("\t")[0] for line in read_lines(data / "eval" / "lcqmc_dev.tsv")))[:1000]
    corpus_file, query_file = work / "corpus-vectors.npy", work / "query-vectors.npy"
    if not corpus_file.exists() or np.load(corpus_file, mmap_mode="r").shape[0] != len(texts):
        encoder = Encoder.load(None)
        np.save(query_file, encoder.encode(queries))
        np.save(corpus_file, encoder.encode(texts, max_length=128))
    return texts, np.load(corpus_file).astype(np.float32), np.load(query_file).astype(np.float32)


def build(path: Path, meta: store.IndexMeta, vectors: np.ndarray, texts: list[str]) -> tuple[Index, float]:
    shutil.rmtree(path, ignore_errors=True)
    start = time.perf_counter()
    with store.writer_lock(path):
        segment = store.write_segment(path, vectors, [str(i) for i in range(len(texts))], texts, None,
                                      meta.precision, "auto")
        store.commit(path, replace(meta, segments=(segment,), documents=len(texts)))
    return Index.load(path), time.perf_counter() - start


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found, exact)]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=ROOT / "runs/index-precision")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    texts, vectors, queries = cached_vectors(args.data, args.work)
    exact = ann_lib.build(vectors, "fp32", "exact").search(queries, K)[1]
    indexes, rows, encoder = {}, {}, Encoder.load(None)
    for precision in ann_lib.PRECISIONS:
        meta = new_meta(encoder, BuildSpec(precision=precision))
        indexes[precision], seconds = build(args.work / precision, meta, vectors, texts)
        size = sum(p.stat().st_size for p in (args.work / precision).rglob("vectors.faiss"))  # read into memory
        rows[precision] = {"faiss_index": indexes[precision].meta.faiss_index, "build_s": round(seconds, 1),
                           "in_memory_mb": round(size / 2**20, 1), "times": [],
                           "recall_at_10": round(recall(indexes[precision].nearest(queries, K)[1], exact), 4)}
        print(precision, rows[precision], file=sys.stderr)
    for round_ in range(args.rounds + 1):  # round 0: the warm-up pass of every index
        for precision, index in indexes.items():
            for v in queries:
                start = time.perf_counter()
                index.search_vectors(v[None], K)
                if round_:
                    rows[precision]["times"].append(time.perf_counter() - start)
    for row in rows.values():
        times = row.pop("times")
        row["p50_ms"] = round(1000 * statistics.median(times), 3)
        row["p99_ms"] = round(1000 * float(np.percentile(times, 99)), 3)
    for row in rows.values():
        row["p50_vs_fp32_hnsw"] = round(row["p50_ms"] / rows["fp32"]["p50_ms"], 3)
    doc = {"command": "python " + " ".join(sys.argv), "cpu": cpu_name(), "date": time.strftime("%Y-%m-%d"),
           "sentences": len(texts), "queries": len(queries), "rounds": args.rounds, "precisions": rows}
    print(json.dumps(doc, indent=1))
    lines = [f"`{doc['command']}` on {doc['cpu']}, {doc['date']}; {len(texts)} sentences, {len(queries)} queries",
             "", "| precision | faiss | p50 ms | p99 ms | p50 / fp32 HNSW | recall@10 | in memory MB |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {p} | {r['faiss_index']} | {r['p50_ms']} | {r['p99_ms']} | {r['p50_vs_fp32_hnsw']} | "
              f"{r['recall_at_10']} | {r['in_memory_mb']} |" for p, r in rows.items()]
    write_report(args.out / "index_precision", doc, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
