"""This checkout's runtime against another source tree of zhembed (e.g. the previous commit), in one process.

    git worktree add /tmp/base HEAD~1
    python benchmarks/runtime_ab.py --baseline-src /tmp/base [--sentences 10000] [--rounds 3]

Both load the default model the way a user does (`Encoder.load()`); the baseline's copy of the package is
imported under another name. After a full warm-up pass of each, the two take turns for `--rounds` timed
passes over the same sentences (batch 16, max_length 256); the ratio of medians is reported. Both are
then scored on the seven seed splits (cosine Spearman, average), and their vectors compared.
Writes benchmarks/results/runtime_ab.{json,md}.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from zhembed import Encoder
from zhembed.eval.speed import bench_sentences, cpu_name, write_report
from zhembed.eval.suite import evaluate_encoder, load_tasks

RESULTS = Path(__file__).parent / "results"


def import_baseline(src: Path):
    """The `zhembed` package of another source tree, imported as `zhembed_baseline`."""
    root = Path(tempfile.mkdtemp(prefix="zhembed-ab-"))
    shutil.copytree(src / "zhembed", root / "zhembed_baseline", symlinks=True)
    sys.path.insert(0, str(root))
    return importlib.import_module("zhembed_baseline")


def timed_pass(encoder, texts: list[str]) -> float:
    start = time.perf_counter()
    encoder.encode(texts, batch_size=16, max_length=256)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-src", type=Path, required=True, help="A source tree (checkout) of zhembed.")
    parser.add_argument("--sentences", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    texts = bench_sentences(args.sentences)
    systems = {"baseline": import_baseline(args.baseline_src).Encoder.load(), "this checkout": Encoder.load()}
    for enc in systems.values():
        timed_pass(enc, texts)  # warm-up: one full pass each
    seconds = {name: [] for name in systems}
    for r in range(args.rounds):
        for name, enc in systems.items():
            seconds[name].append(timed_pass(enc, texts))
            print(f"round {r + 1}: {name} {len(texts) / seconds[name][-1]:.1f} sentences/s", flush=True)
    speed = {name: len(texts) / statistics.median(s) for name, s in seconds.items()}
    tasks = load_tasks(None, None, {})
    accuracy = {}
    for name, enc in systems.items():
        scores = evaluate_encoder(enc, tasks, show_progress=False)
        accuracy[name] = round(float(np.mean([s["cosine"] for s in scores.values()])), 2)
    a, b = (enc.encode(texts[:2000]) for enc in systems.values())
    doc = {"command": "python " + " ".join(sys.argv), "cpu": cpu_name(), "date": time.strftime("%Y-%m-%d"),
           "sentences": len(texts), "rounds": args.rounds, "batch_size": 16, "max_length": 256,
           "backends": {name: enc.backend.name for name, enc in systems.items()},
           "throughput": {k: round(v, 1) for k, v in speed.items()},
           "ratio_this_vs_baseline": round(speed["this checkout"] / speed["baseline"], 3),
           "accuracy_cosine_avg": accuracy, "vector_cosine_min": round(float((a * b).sum(1).min()), 6)}
    md = "\n".join([
        "| | baseline | this checkout | ratio |", "|---|---|---|---|",
        f"| throughput (sentences/s, median of {args.rounds}) | {doc['throughput']['baseline']} | "
        f"{doc['throughput']['this checkout']} | {doc['ratio_this_vs_baseline']:.3f}x |",
        f"| cosine Spearman, avg of 7 splits | {accuracy['baseline']:.2f} | {accuracy['this checkout']:.2f} | |",
        "", f"Backends: {doc['backends']}; lowest cosine between their vectors of 2,000 sentences: "
            f"{doc['vector_cosine_min']}. {len(texts)} sentences, batch 16, max_length 256, {doc['cpu']}, {doc['date']}.",
        f"Command: `{doc['command']}`", ""])
    write_report(args.out / "runtime_ab", doc, md)


if __name__ == "__main__":
    main()
