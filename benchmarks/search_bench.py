"""Semantic search at corpus scale, and paraphrase retrieval through the CLI.

    python benchmarks/search_bench.py [--data ../shared/data] [--max-sentences 0] [--work runs/search-bench]

1. Corpus: builds an index of ../shared/data/corpus/sentences.txt (347k sentences) with the default model
   through zhembed.search.index.build_index (HNSW, as `zhembed index build` picks for this size): build throughput,
   size on disk, single-query latency p50/p99 at k=10 (encode + search, and search alone), and recall@10 of the
   ANN index against exact search on 1,000 lcqmc_dev questions.
2. Precision: the same vectors as fp32 (HNSW), int8 (HNSW over 8-bit codes) and binary (RaBitQ IVF; both
   rescored with the exact vectors on disk): memory added by loading the index (RSS of a new process), recall@10 against exact fp32 search,
   query latency.
3. The ANN library, chosen by measurement: faiss HNSW and hnswlib (`pip install -e ".[bench]"`) on the
   same vectors, same M / efConstruction / ef: build time, search latency, recall@10.
4. Paraphrase retrieval through the CLI: 300 positive pairs of lcqmc_dev; the index holds their second
   sentences and those of 3,000 negative pairs (hard distractors). `zhembed search` with the first sentences:
   how often the partner is the top hit, and in the top 3.
Writes benchmarks/results/search_bench.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from zhembed import Encoder
from zhembed.eval.speed import cpu_name, write_report
from zhembed.search import ann as ann_lib
from zhembed.search import store
from zhembed.search.build import BuildSpec, build_index
from zhembed.search.index import Index
from zhembed.textio import Records, read_lines

RESULTS = Path(__file__).parent / "results"
K = 10


def lcqmc_pairs(data: Path) -> list[tuple[str, str, int]]:
    return [(a, b, int(y)) for a, b, y in (line.split("\t") for line in read_lines(data / "eval" / "lcqmc_dev.tsv"))]


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def corpus_section(data: Path, work: Path, max_sentences: int, queries: list[str]) -> tuple[dict, np.ndarray, np.ndarray]:
    texts = list(dict.fromkeys(s for s in read_lines(data / "corpus" / "sentences.txt") if s.strip()))
    texts = texts[:max_sentences] if max_sentences else texts
    encoder = Encoder.load(None)
    shutil.rmtree(work / "corpus-index", ignore_errors=True)
    start = time.perf_counter()
    index = build_index(Records(texts=texts), work / "corpus-index", encoder, BuildSpec(ann="hnsw", show_progress=True), "sentences.txt")
    build_s = time.perf_counter() - start
    size = sum(p.stat().st_size for p in (work / "corpus-index").rglob("*") if p.is_file())
    index.search(queries[:10], K)
    full, alone = [], []
    query_vectors = encoder.encode(queries)
    for q, v in zip(queries, query_vectors):
        t0 = time.perf_counter()
        index.search(q, K)
        t1 = time.perf_counter()
        index.search_vectors(v[None], K)
        full.append(t1 - t0)
        alone.append(time.perf_counter() - t1)
    vectors = index.vectors()
    exact = ann_lib.build(vectors, "fp32", "exact").search(query_vectors, K)[1]
    ann = index.nearest(query_vectors, K)[1]
    doc = {"sentences": len(texts), "backend": encoder.backend.name, "faiss_index": index.meta.faiss_index,
           "build_seconds": round(build_s, 1), "build_sentences_per_s": round(len(texts) / build_s, 1),
           "index_mb": round(size / 2**20, 1), "query_latency": percentiles(full), "search_only_latency": percentiles(alone),
           "recall_at_10": round(recall_at_k(ann, exact), 4), "queries": len(queries)}
    print(json.dumps(doc), file=sys.stderr)
    return doc, vectors, query_vectors


RSS_AFTER_LOAD = """
import sys
from zhembed.search import Index
def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
before = rss()
index = Index.load(sys.argv[1])
print(rss() - before, len(index))
"""


def precision_section(work: Path, queries: list[str], query_vectors: np.ndarray, vectors: np.ndarray) -> dict:
    """The corpus index at fp32 (HNSW), int8 (HNSW-SQ) and binary (RaBitQ IVF), rescored: memory added by loading it (RSS,
    in a new process), recall@10 against exact fp32 search, and query latency (encode + search)."""
    exact = ann_lib.build(vectors, "fp32", "exact").search(query_vectors, K)[1]
    base = Index.load(work / "corpus-index")
    rows = {}
    for precision in ann_lib.PRECISIONS:
        path = work / "corpus-index" if precision == "fp32" else work / f"corpus-{precision}"
        if precision != "fp32":
            shutil.rmtree(path, ignore_errors=True)
            with store.writer_lock(path):
                segment = store.write_segment(path, vectors, list(base.ids), list(base.texts), None, precision, "hnsw")
                store.commit(path, replace(base.meta, precision=precision, ann="hnsw", segments=(segment,)))
        index = Index.load(path, base.encoder)
        rss = [float(subprocess.run([sys.executable, "-c", RSS_AFTER_LOAD, str(path)], check=True,
                                    capture_output=True, text=True).stdout.split()[0]) for _ in range(3)]
        index.search(queries[:10], K)
        times = []
        for q in queries:
            t0 = time.perf_counter()
            index.search(q, K)
            times.append(time.perf_counter() - t0)
        found = index.nearest(query_vectors, K)[1]
        rows[precision] = {"faiss_index": index.meta.faiss_index, "rss_after_load_mb": round(statistics.median(rss), 1),
                           "recall_at_10": round(recall_at_k(found, exact), 4), **percentiles(times)}
        print(precision, json.dumps(rows[precision]), file=sys.stderr)
    for row in rows.values():
        row["memory_vs_fp32"] = round(row["rss_after_load_mb"] / rows["fp32"]["rss_after_load_mb"], 3)
    return rows


def libraries_section(vectors: np.ndarray, queries: np.ndarray) -> dict:
    import faiss

    exact = ann_lib.build(vectors, "fp32", "exact").search(queries, K)[1]
    out = {}
    start = time.perf_counter()
    fidx = ann_lib.build(vectors, "fp32", "hnsw")
    out["faiss"] = _library_row(time.perf_counter() - start, lambda q: fidx.search(q, K)[1], queries, exact)
    try:
        import hnswlib
    except ImportError:
        out["hnswlib"] = "not installed (pip install hnswlib)"
        return out
    start = time.perf_counter()
    hidx = hnswlib.Index(space="ip", dim=vectors.shape[1])
    hidx.init_index(max_elements=len(vectors), M=ann_lib.HNSW_M, ef_construction=ann_lib.HNSW_EF_CONSTRUCTION, random_seed=42)
    hidx.add_items(vectors, num_threads=faiss.omp_get_max_threads())
    hidx.set_ef(ann_lib.HNSW_EF_SEARCH)
    out["hnswlib"] = _library_row(time.perf_counter() - start, lambda q: hidx.knn_query(q, K)[0], queries, exact)
    return out


def _library_row(build_s: float, search, queries: np.ndarray, exact: np.ndarray) -> dict:
    found, times = [], []
    for q in queries:
        t0 = time.perf_counter()
        found.append(search(q[None])[0])
        times.append(time.perf_counter() - t0)
    return {"build_seconds": round(build_s, 1), "recall_at_10": round(recall_at_k(np.array(found), exact), 4),
            **percentiles(times)}


def paraphrase_section(data: Path, work: Path) -> dict:
    pairs = lcqmc_pairs(data)
    positives = [p for p in pairs if p[2] == 1][:300]
    negatives = [p for p in pairs if p[2] == 0][:3000]
    corpus = work / "paraphrase.txt"
    corpus.write_text("".join(f"{b}\n" for _, b, _ in positives + negatives), encoding="utf-8")
    shutil.rmtree(work / "paraphrase-index", ignore_errors=True)
    zhembed = [sys.executable, "-m", "zhembed"]
    subprocess.run([*zhembed, "index", "build", "-i", str(corpus), "--out", str(work / "paraphrase-index")], check=True)
    out = subprocess.run([*zhembed, "search", str(work / "paraphrase-index"), *[a for a, _, _ in positives],
                          "-k", "3", "--json"], check=True, capture_output=True, text=True).stdout
    top1 = top3 = 0
    for (_, partner, _), line in zip(positives, out.splitlines()):
        texts = [h["text"] for h in json.loads(line)["hits"]]
        top1 += texts[0] == partner
        top3 += partner in texts
    return {"queries": len(positives), "indexed": len(positives) + len(negatives), "top1": top1, "top3": top3,
            "top1_rate": round(top1 / len(positives), 4), "top3_rate": round(top3 / len(positives), 4)}


def markdown(doc: dict) -> str:
    c, p, libs = doc["corpus"], doc["paraphrase"], doc["libraries"]
    rows = [f"# Semantic search benchmark\n\n{doc['cpu']}, {doc['date']}. Command: `{doc['command']}`\n",
            f"## Corpus: {c['sentences']:,} sentences, default model ({c['backend']}), {c['faiss_index']}\n",
            "| build (sentences/s) | build time | index on disk | query p50 / p99 (encode + search) | "
            "search only p50 / p99 | recall@10 vs exact |", "|---|---|---|---|---|---|",
            f"| {c['build_sentences_per_s']} | {c['build_seconds']} s | {c['index_mb']} MB | "
            f"{c['query_latency']['p50_ms']} / {c['query_latency']['p99_ms']} ms | "
            f"{c['search_only_latency']['p50_ms']} / {c['search_only_latency']['p99_ms']} ms | {c['recall_at_10']} |",
            f"\n## ANN library (same vectors; M={ann_lib.HNSW_M}, efConstruction={ann_lib.HNSW_EF_CONSTRUCTION}, "
            f"ef={ann_lib.HNSW_EF_SEARCH}; {c['queries']} queries)\n",
            "| library | build | search p50 / p99 | recall@10 |", "|---|---|---|---|"]
    for name, row in libs.items():
        rows.append(f"| {name} | {row['build_seconds']} s | {row['p50_ms']} / {row['p99_ms']} ms | {row['recall_at_10']} |"
                    if isinstance(row, dict) else f"| {name} | {row} | | |")
    rows += [f"\n## Precision of the corpus index ({c['queries']} lcqmc_dev queries, k={K})\n",
             "| precision | faiss index | memory after load (RSS) | vs fp32 | recall@10 vs exact fp32 | "
             "query p50 / p99 (encode + search) |", "|---|---|---|---|---|---|"]
    rows += [f"| {name} | {r['faiss_index']} | {r['rss_after_load_mb']} MB | {r['memory_vs_fp32']:.3f} | "
             f"{r['recall_at_10']} | {r['p50_ms']} / {r['p99_ms']} ms |" for name, r in doc["precisions"].items()]
    rows += ["\n## Paraphrase retrieval through the CLI (lcqmc_dev)\n",
             f"{p['queries']} queries against {p['indexed']:,} indexed sentences (partners + hard distractors): "
             f"top-1 {p['top1']}/{p['queries']} ({100 * p['top1_rate']:.1f}%), "
             f"top-3 {p['top3']}/{p['queries']} ({100 * p['top3_rate']:.1f}%).\n"]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--max-sentences", type=int, default=0, help="Use only the first N corpus sentences (0: all).")
    parser.add_argument("--work", type=Path, default=Path("runs/search-bench"))
    parser.add_argument("--out", type=Path, default=RESULTS / "search_bench")
    parser.add_argument("--skip-libraries", action="store_true", help="Leave out the faiss / hnswlib comparison.")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    queries = list(dict.fromkeys(a for a, _, _ in lcqmc_pairs(args.data)))[:1000]
    paraphrase = paraphrase_section(args.data, args.work)
    print(json.dumps(paraphrase), file=sys.stderr)
    corpus, vectors, query_vectors = corpus_section(args.data, args.work, args.max_sentences, queries)
    doc = {"cpu": cpu_name(), "date": time.strftime("%Y-%m-%d"), "command": "python " + " ".join(sys.argv),
           "corpus": corpus, "precisions": precision_section(args.work, queries, query_vectors, vectors),
           "libraries": {} if args.skip_libraries else libraries_section(vectors, query_vectors),
           "paraphrase": paraphrase}
    write_report(args.out, doc, markdown(doc))


if __name__ == "__main__":
    main()
