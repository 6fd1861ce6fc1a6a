"""The first pass of fresh processes: how fast each one encodes its first sentences after a short warm-up.

    python benchmarks/first_pass.py [--processes 20] [--warmup 64] [--sentences 4000] [--busy]

Each of --processes fresh Python processes loads the shipped model (`Encoder.load()`, its int8 ONNX), encodes
--warmup sentences, then times one pass over --sentences lcqmc_dev sentences at batch 16. The processes run one
after another; with --busy a spinning process holds the other core throughout; --no-spinning loads with
onnxruntime's intra-op threads sleeping between ops (`Encoder.load(onnx_spinning=False)`). Prints and writes the rates,
their spread (max/min) and a histogram (benchmarks/results/first_pass[_busy].{json,md}).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

from zhembed.eval.speed import cpu_name

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval" / "lcqmc_dev.tsv"
CHILD = """
import sys, time
from zhembed import Encoder
warmup, n, path, spinning = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
rows = [line.split("\\t") for line in open(path, encoding="utf-8").read().splitlines()]
texts = list(dict.fromkeys(t for row in rows for t in row[:2]))[:n]
enc = Encoder.load(onnx_spinning=spinning)
enc.encode(texts[:warmup], batch_size=16)
start = time.perf_counter()
enc.encode(texts, batch_size=16)
print(len(texts) / (time.perf_counter() - start))
"""
SPIN = "while True: pass"


def histogram(rates: list[float], bins: int = 8) -> str:
    counts, edges = np.histogram(rates, bins=bins)
    return "\n".join(f"| {lo:,.0f}-{hi:,.0f} | {'#' * c} {c} |" for lo, hi, c in zip(edges, edges[1:], counts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=64)
    parser.add_argument("--sentences", type=int, default=4000)
    parser.add_argument("--busy", action="store_true", help="a spinning process on the other core")
    parser.add_argument("--no-spinning", action="store_true", help="onnxruntime's threads sleep between ops")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if args.busy else None
    try:
        rates = [float(subprocess.run([sys.executable, "-c", CHILD, str(args.warmup), str(args.sentences), str(DATA),
                                       "0" if args.no_spinning else "1"],
                                      capture_output=True, text=True, check=True).stdout)
                 for _ in range(args.processes)]
    finally:
        if spinner:
            spinner.kill()
    name = "first_pass" + ("_busy" if args.busy else "") + ("_nospin" if args.no_spinning else "")
    report = {"cpu": cpu_name(), "command": "python benchmarks/first_pass.py " + " ".join(sys.argv[1:]),
              "rates": rates, "median": statistics.median(rates), "min": min(rates), "max": max(rates),
              "max_over_min": max(rates) / min(rates)}
    md = (f"CPU: {report['cpu']}\n\n`{report['command']}`: {args.processes} fresh processes, {args.warmup}-sentence "
          f"warm-up, then {args.sentences:,} sentences at batch 16{', the other core busy' if args.busy else ''}"
          f"{', no spinning' if args.no_spinning else ''}: "
          f"median {report['median']:,.0f} sentences/s, min {report['min']:,.0f}, max {report['max']:,.0f}, "
          f"max/min {report['max_over_min']:.2f}.\n\n| sentences/s | processes |\n|---|---|\n{histogram(rates)}\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / f"{name}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
