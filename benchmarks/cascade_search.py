"""Cascade search (static first stage, transformer re-scoring) against a transformer index, on lcqmc_dev.

    python benchmarks/cascade_search.py [--static zhembed-static-zh] [--transformer zhembed-small-zh] [--rerank 100]

Queries: the first sentences of 300 positive pairs of ../shared/data/eval/lcqmc_dev.tsv (seed 0). Corpus: their
partners plus 3,000 distractors, the sentences of lcqmc_dev's negative pairs (label 0: texts written to look
alike without meaning the same), none of which belongs to a query's pair. Top-1: the share of queries whose
partner comes first. Build: wall time of `build_index` over the 3,300 texts, in interleaved rounds after a
warm-up build of each. Writes benchmarks/results/cascade_search.{json,md}.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from zhembed import Encoder
from zhembed.eval.speed import cpu_name, write_report
from zhembed.search.build import BuildSpec, build_index
from zhembed.search.index import Index
from zhembed.textio import Records

RESULTS = Path(__file__).parent / "results"
LCQMC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval" / "lcqmc_dev.tsv"


def task(queries: int = 300, distractors: int = 3000, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """(queries, their partners, corpus = partners + distractors)."""
    rows = [line.split("\t") for line in LCQMC.read_text(encoding="utf-8").splitlines() if line.count("\t") == 2]
    positives = [(a, b) for a, b, label in rows if label.strip() == "1"]
    picked = [positives[i] for i in np.random.default_rng(seed).choice(len(positives), queries, replace=False)]
    taken = {s for pair in picked for s in pair}
    negatives = list(dict.fromkeys(s for a, b, label in rows if label.strip() == "0" for s in (a, b) if s not in taken))
    chosen = [negatives[i] for i in np.random.default_rng(seed + 1).choice(len(negatives), distractors, replace=False)]
    return [a for a, _ in picked], [b for _, b in picked], [b for _, b in picked] + chosen


def build(corpus: list[str], encoder: Encoder, work: Path, rerank: dict | None = None) -> tuple[Index, float]:
    shutil.rmtree(work, ignore_errors=True)
    start = time.perf_counter()
    index = build_index(Records(texts=corpus), work, encoder, BuildSpec(model=str(encoder.path), ann="exact", rerank=rerank), "lcqmc")
    return index, time.perf_counter() - start


def top1(index: Index, queries: list[str], partners: list[str], rerank: int) -> tuple[float, float]:
    """(share of queries whose partner is the first hit, ms per query)."""
    start = time.perf_counter()
    hits = index.search(queries, k=1, rerank=rerank)
    ms = 1000 * (time.perf_counter() - start) / len(queries)
    return 100 * float(np.mean([h[0].text == p for h, p in zip(hits, partners)])), ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--static", default="zhembed-static-zh")
    parser.add_argument("--transformer", default="zhembed-small-zh")
    parser.add_argument("--rerank", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    queries, partners, corpus = task()
    transformer, static = Encoder.load(args.transformer), Encoder.load(args.static)
    rerank = {"model": str(transformer.path), "backend": transformer.backend.name, "model_id": transformer.model_id,
              "dim": transformer.dim}
    work = Path(tempfile.mkdtemp(prefix="zhembed-cascade-"))
    try:
        builds = {"transformer": [], "static": []}
        for round_ in range(args.rounds + 1):  # round 0 is the warm-up
            for name, enc in (("transformer", transformer), ("static", static)):
                index, seconds = build(corpus, enc, work / name, rerank if name == "static" else None)
                if round_:
                    builds[name].append(seconds)
        plain, cascade = Index.load(work / "transformer"), Index.load(work / "static")
        results = {"transformer index": top1(plain, queries, partners, 0),
                   "static index alone": top1(cascade, queries, partners, 0),
                   f"cascade (static, rerank {args.rerank})": top1(cascade, queries, partners, args.rerank)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    build_s = {name: statistics.median(v) for name, v in builds.items()}
    report = {"cpu": cpu_name(), "command": f"python benchmarks/cascade_search.py --static {args.static} --transformer {args.transformer} "
                         f"--rerank {args.rerank} --rounds {args.rounds}",
              "queries": len(queries), "corpus": len(corpus),
              "top1": {name: r[0] for name, r in results.items()}, "ms_per_query": {name: r[1] for name, r in results.items()},
              "build_s": builds, "build_s_median": build_s,
              "build_speed_ratio_static_to_transformer": build_s["transformer"] / build_s["static"]}
    write_report(args.out / "cascade_search", report, markdown(report))


def markdown(r: dict) -> str:
    rows = [f"| {name} | {r['top1'][name]:.1f} | {r['ms_per_query'][name]:.2f} |" for name in r["top1"]]
    return (f"# Cascade search on lcqmc_dev\n\n`{r['command']}`\n\nCPU: {r['cpu']}; "
            f"{r['queries']} queries against {r['corpus']:,} texts (their partners and lcqmc_dev's negative-pair "
            "sentences), exact search.\n\n| system | top-1 % | ms per query (batch of all queries) |\n|---|---|---|\n"
            + "\n".join(rows)
            + f"\n\nIndex build over {r['corpus']:,} texts, median of interleaved rounds: transformer "
            f"{r['build_s_median']['transformer']:.2f} s, static {r['build_s_median']['static']:.3f} s: "
            f"**{r['build_speed_ratio_static_to_transformer']:.0f}x** faster.\n")


if __name__ == "__main__":
    main()
