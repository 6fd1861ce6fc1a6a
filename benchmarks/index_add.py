"""`zhembed index add` of a few texts to a corpus-sized index, against `zhembed index build` of the same texts
into a fresh index: an add writes a new segment, so its cost should follow the texts added, not the index.

    python benchmarks/index_add.py [--corpus ../shared/data/corpus/sentences.txt] [--added 1000] [--rounds 3]

The base index holds every corpus sentence (346,868) in one fp32 HNSW segment, with the shipped model's
identity. Its vectors are random unit vectors, written through search.store rather than encoded: an add never
reads them (nor re-encodes the corpus), so this changes nothing the add does, and it saves the corpus encoding.
Then, after one warm-up run of each, interleaved rounds time (wall, as a user sees it, model load included):
- `zhembed index build` of ADDED new sentences (lcqmc_dev questions) into a new folder;
- `zhembed index add` of another ADDED into the base (each round's add lands on the index the last one left,
  so later rounds also pay the merges of the small segments).
Writes benchmarks/results/index_add.{json,md}; pause background work first (the CPU flags are printed).
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
from zhembed.search import store
from zhembed.search.build import BuildSpec, new_meta
from zhembed.search.index import Index
from zhembed.textio import read_lines

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]


def base_index(path: Path, corpus: Path) -> int:
    texts = [t for t in read_lines(corpus) if t.strip()]
    encoder = Encoder.load(None)
    vectors = np.random.default_rng(0).standard_normal((len(texts), encoder.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    shutil.rmtree(path, ignore_errors=True)
    with store.writer_lock(path):
        segment = store.write_segment(path, vectors, [str(i) for i in range(len(texts))], texts, None, "fp32", "auto")
        meta = new_meta(encoder, BuildSpec())
        store.commit(path, replace(meta, segments=(segment,), documents=len(texts), sources=[str(corpus)]))
    return len(texts)


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared/data/corpus/sentences.txt")
    parser.add_argument("--queries", type=Path, default=ROOT.parent / "shared/data/eval/lcqmc_dev.tsv")
    parser.add_argument("--added", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=ROOT / "runs/index-add-bench")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    size = base_index(work / "base", args.corpus)
    print(f"base index: {size} texts in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    new = list(dict.fromkeys(line.split("\t")[0] for line in read_lines(args.queries)))
    files = []
    for i in range(2 * (args.rounds + 1)):
        files.append(work / f"added-{i}.txt")
        files[-1].write_text("".join(f"{t}\n" for t in new[i * args.added:(i + 1) * args.added]), encoding="utf-8")
    zhembed = [sys.executable, "-m", "zhembed"]
    builds, adds = [], []
    for round_ in range(args.rounds + 1):  # round 0 is the warm-up of both
        fresh = work / f"fresh-{round_}"
        shutil.rmtree(fresh, ignore_errors=True)
        build = timed([*zhembed, "index", "build", "--input", str(files[2 * round_]), "--out", str(fresh)])
        add = timed([*zhembed, "index", "add", str(work / "base"), "--input", str(files[2 * round_ + 1])])
        print(f"round {round_}: build {build:.2f} s, add {add:.2f} s", file=sys.stderr)
        if round_:
            builds.append(build)
            adds.append(add)
    segments = [s.count for s in Index.load(work / "base").meta.segments]
    doc = {"command": "python " + " ".join(sys.argv), "cpu": cpu_name(), "date": time.strftime("%Y-%m-%d"),
           "base_texts": size, "added": args.added, "fresh_build_s": builds, "add_s": adds,
           "ratio_median": round(statistics.median(adds) / statistics.median(builds), 3), "segments_after": segments}
    print(json.dumps(doc, indent=1))
    write_report(args.out / "index_add", doc,
        f"`{doc['command']}` on {doc['cpu']}, {doc['date']}\n\n| | median s | runs |\n|---|---|---|\n"
        f"| `index build` of {args.added} texts, fresh | {statistics.median(builds):.2f} | {builds} |\n"
        f"| `index add` of {args.added} texts to {size} | {statistics.median(adds):.2f} | {adds} |\n\n"
        f"add / build: **{doc['ratio_median']}×**; segments after: {segments}\n")


if __name__ == "__main__":
    main()
