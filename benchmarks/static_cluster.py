"""Near-duplicate clustering of the whole corpus with the static model, end to end, and how far the transformer
agrees with the pairs it groups.

    python benchmarks/static_cluster.py [--static zhembed-static-zh] [--threshold 0.9] [--pairs 1000]

1. Times `zhembed cluster --threshold T -m STATIC` on ../shared/data/corpus/sentences.txt in a fresh process
   (start-up, reading, encoding, the neighbour search, writing labels and summary).
2. Samples (seeded) pairs of texts that share a cluster of two or more, and as many random pairs, and scores both
   with the int8 transformer: the share of each at cosine >= T says how many of the static model's duplicate
   pairs the transformer also calls duplicates, against chance.
Writes benchmarks/results/static_cluster.{json,md}.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from zhembed import Encoder
from zhembed.eval.speed import cpu_name, write_report
from zhembed.search.cluster import segments

RESULTS = Path(__file__).parent / "results"
CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "corpus" / "sentences.txt"


def cluster_pairs(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n pairs (i, j), i != j, each from one cluster of two or more texts, clusters drawn by their pair counts."""
    order, starts, sizes = segments(labels)
    big = np.flatnonzero(sizes >= 2)
    weights = sizes[big] * (sizes[big] - 1.0)
    picks = rng.choice(big, n, p=weights / weights.sum())
    pairs = [rng.choice(sizes[c], 2, replace=False) + starts[c] for c in picks]
    return order[np.array(pairs)]


def agreement(encoder: Encoder, texts: list[str], pairs: np.ndarray, threshold: float) -> dict:
    a = encoder.encode([texts[i] for i in pairs[:, 0]])
    b = encoder.encode([texts[j] for j in pairs[:, 1]])
    cos = (a * b).sum(axis=1)
    return {"share_at_threshold": float((cos >= threshold).mean()),
            "cosine_quartiles": [round(float(q), 4) for q in np.quantile(cos, [0.25, 0.5, 0.75])]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--static", default="zhembed-static-zh")
    parser.add_argument("--transformer", default="zhembed-small-zh")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        labels_file = Path(tmp) / "labels.txt"
        command = [sys.executable, "-m", "zhembed", "cluster", "--input", str(CORPUS), "--threshold",
                   str(args.threshold), "--out", str(labels_file), "-m", args.static]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode:
            sys.exit(f"zhembed cluster failed: {done.stderr.strip()}")
        labels = np.loadtxt(labels_file, dtype=np.int64)
    texts = CORPUS.read_text(encoding="utf-8").splitlines()
    keep = labels >= 0                                        # blank lines have no label
    rows = np.flatnonzero(keep)
    rng = np.random.default_rng(0)
    same = rows[cluster_pairs(labels[keep], args.pairs, rng)]
    chance = rng.choice(rows, (args.pairs, 2))
    transformer = Encoder.load(args.transformer)
    report = {
        "cpu": cpu_name(), "command": " ".join(["zhembed"] + command[3:]), "texts": int(keep.sum()),
        "wall_s": round(wall, 2), "clusters": int(len(np.unique(labels[keep]))),
        "texts_in_clusters_of_2_or_more": int(np.isin(labels[keep], np.flatnonzero(np.bincount(labels[keep]) >= 2)).sum()),
        "threshold": args.threshold, "pairs": args.pairs,
        "transformer_on_static_duplicate_pairs": agreement(transformer, texts, same, args.threshold),
        "transformer_on_random_pairs": agreement(transformer, texts, chance, args.threshold),
    }
    dup, rnd = report["transformer_on_static_duplicate_pairs"], report["transformer_on_random_pairs"]
    md = (f"CPU: {report['cpu']}\n\n`{report['command']}`: {report['texts']:,} texts in **{wall:.1f} s** end to end, "
          f"{report['clusters']:,} clusters, {report['texts_in_clusters_of_2_or_more']:,} texts in clusters of 2 or more.\n\n"
          f"| {args.pairs} pairs | transformer cosine >= {args.threshold} | transformer cosine quartiles |\n|---|---|---|\n"
          f"| two texts of one static cluster | {dup['share_at_threshold']:.1%} | {dup['cosine_quartiles']} |\n"
          f"| two random texts | {rnd['share_at_threshold']:.1%} | {rnd['cosine_quartiles']} |\n")
    write_report(args.out / "static_cluster", report, md)


if __name__ == "__main__":
    main()
