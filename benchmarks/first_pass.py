"""The first pass of fresh processes: how fast each one encodes its first sentences after a short warm-up.

    python benchmarks/first_pass.py [--processes 20] [--warmup 64] [--sentences 4000] [--busy] [--peer openvino]

Each of --processes fresh Python processes loads the shipped model (`Encoder.load()`, its int8 ONNX), encodes
--warmup sentences, then times one pass over --sentences lcqmc_dev sentences at batch 16. The processes run one
after another; with --busy a spinning process holds the other core throughout; --no-spinning loads with
onnxruntime's intra-op threads sleeping between ops (`Encoder.load(onnx_spinning="never")`). Prints and writes the rates,
their spread (max/min) and a histogram (benchmarks/results/first_pass[_busy].{json,md}). With --peer openvino,
each zhembed process alternates with one of sentence-transformers + OpenVINO static int8 on the same model and
sentences (benchmarks/openvino_venv.sh builds its venv; `openvino_peer.py build` its model), and the ratio of
the medians is reported.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

from zhembed.eval.speed import cpu_name, write_report

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval" / "lcqmc_dev.tsv"
CHILD = """
import sys, time
from zhembed import Encoder
warmup, n, path, spinning = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
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


def zhembed_command(args) -> list[str]:
    return [sys.executable, "-c", CHILD, str(args.warmup), str(args.sentences), str(DATA),
            "never" if args.no_spinning else "always"]


def peer_command(args) -> list[str]:
    return [str(args.peer_python), str(Path(__file__).parent / "openvino_peer.py"), "time", str(args.peer_model),
            str(args.warmup), str(args.sentences), str(DATA)]


def rate(command: list[str]) -> float:
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{command[0]} failed: {out.stderr.strip().splitlines()[-1]}")
    return float(out.stdout.strip().splitlines()[-1])


def summary(rates: list[float]) -> dict:
    return {"rates": rates, "median": statistics.median(rates), "min": min(rates), "max": max(rates),
            "max_over_min": max(rates) / min(rates)}


def line(label: str, s: dict) -> str:
    return (f"{label}: median {s['median']:,.0f} sentences/s, min {s['min']:,.0f}, max {s['max']:,.0f}, "
            f"max/min {s['max_over_min']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=64)
    parser.add_argument("--sentences", type=int, default=4000)
    parser.add_argument("--busy", action="store_true", help="a spinning process on the other core")
    parser.add_argument("--no-spinning", action="store_true", help="onnxruntime's threads sleep between ops")
    parser.add_argument("--peer", choices=["openvino"], help="alternate each process with one of this peer")
    parser.add_argument("--peer-python", type=Path, default=Path("benchmarks/.openvino-venv/bin/python"))
    parser.add_argument("--peer-model", type=Path, default=Path("runs/openvino-int8"),
                        help="the directory `openvino_peer.py build` wrote")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if args.busy else None
    ours, peer = [], []
    try:
        for i in range(args.processes):   # with a peer, the two take turns, and each goes first every other time
            turn = [(ours, zhembed_command(args))] + ([(peer, peer_command(args))] if args.peer else [])
            for rates, command in (turn if i % 2 == 0 else turn[::-1]):
                rates.append(rate(command))
    finally:
        if spinner:
            spinner.kill()
    name = "first_pass" + ("_busy" if args.busy else "") + ("_nospin" if args.no_spinning else "") + \
        (f"_{args.peer}" if args.peer else "")
    report = {"cpu": cpu_name(), "command": "python benchmarks/first_pass.py " + " ".join(sys.argv[1:]),
              **summary(ours)}
    md = (f"CPU: {report['cpu']}\n\n`{report['command']}`: {args.processes} fresh processes, {args.warmup}-sentence "
          f"warm-up, then {args.sentences:,} sentences at batch 16{', the other core busy' if args.busy else ''}"
          f"{', no spinning' if args.no_spinning else ''}.\n\n- {line('zhembed int8', report)}\n")
    if args.peer:
        report[args.peer] = summary(peer)
        report[f"ratio_to_{args.peer}"] = report["median"] / report[args.peer]["median"]
        md += (f"- {line('sentence-transformers + OpenVINO static int8', report[args.peer])}\n"
               f"- ratio of the medians: {report[f'ratio_to_{args.peer}']:.2f}x\n")
    md += f"\n| zhembed sentences/s | processes |\n|---|---|\n{histogram(ours)}\n"
    write_report(args.out / name, report, md)


if __name__ == "__main__":
    main()
