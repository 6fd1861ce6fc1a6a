"""The static model against the int8 transformer: sentences/s on the same corpus sentences, in one process.

    python benchmarks/static_speed.py [--static zhembed-static-zh] [--transformer zhembed-small-zh] [--rounds 5]

20,000 sentences of ../shared/data/corpus/sentences.txt (a seeded sample). Each system first runs a full pass
at every candidate batch size (the warm-up), keeps its best, then both run interleaved rounds at that size.
For the static model it also splits the time: tokenization (one sentencepiece call over all texts) against
the rest, the table lookup and mean. Writes benchmarks/results/static_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from zhembed import Encoder
from zhembed.eval.speed import cpu_name, write_report

RESULTS = Path(__file__).parent / "results"
CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "corpus" / "sentences.txt"
BATCHES = {"transformer": (16, 32, 64, 128), "static": (1024, 4096, 20000)}


def sample(n: int, seed: int = 0) -> list[str]:
    lines = [s.strip() for s in CORPUS.read_text(encoding="utf-8").splitlines() if s.strip()]
    return [lines[i] for i in np.random.default_rng(seed).choice(len(lines), n, replace=False)]


def rate(enc: Encoder, texts: list[str], batch_size: int) -> float:
    start = time.perf_counter()
    enc.encode(texts, batch_size=batch_size, show_progress=False)
    return len(texts) / (time.perf_counter() - start)


def split_static(enc: Encoder, texts: list[str], batch_size: int, repeats: int = 5) -> dict:
    """Median seconds of tokenization (one call over all texts) and of the rest of `encode` (the lookup and
    mean over its length-sorted batches, on every core): a whole encode less its tokenization."""
    tokenize, whole = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        ids = enc.tokenize(texts, 256)
        middle = time.perf_counter()
        enc.encode(texts, batch_size=batch_size, show_progress=False)
        tokenize.append(middle - start)
        whole.append(time.perf_counter() - middle)
    t, w = statistics.median(tokenize), statistics.median(whole)
    return {"tokenize_s": t, "lookup_mean_s": w - t, "tokens": int(sum(map(len, ids)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--static", default="zhembed-static-zh")
    parser.add_argument("--transformer", default="zhembed-small-zh")
    parser.add_argument("--sentences", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    texts = sample(args.sentences)
    systems = {"transformer": Encoder.load(args.transformer), "static": Encoder.load(args.static)}
    best = {}
    for name, enc in systems.items():  # warm-up: a full pass at each candidate size
        best[name] = max(BATCHES[name], key=lambda size: rate(enc, texts, size))
    rates: dict[str, list[float]] = {name: [] for name in systems}
    for _ in range(args.rounds):
        for name, enc in systems.items():
            rates[name].append(rate(enc, texts, best[name]))
    report = {"cpu": cpu_name(), "sentences": len(texts), "rounds": args.rounds,
              "command": "python benchmarks/static_speed.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items() if k != "out"),
              "systems": {name: {"model": str(enc.path), "backend": enc.backend.name, "batch_size": best[name],
                                 "sent_per_s": rates[name], "sent_per_s_median": statistics.median(rates[name])}
                          for name, enc in systems.items()},
              "static_time_split": split_static(systems["static"], texts, best["static"])}
    report["static_to_transformer_speed_ratio"] = (report["systems"]["static"]["sent_per_s_median"]
                                                   / report["systems"]["transformer"]["sent_per_s_median"])
    write_report(args.out / "static_speed", report, markdown(report))


def markdown(r: dict) -> str:
    rows = [f"| {name} ({s['backend']}) | {s['batch_size']} | {s['sent_per_s_median']:,.0f} "
            f"[{min(s['sent_per_s']):,.0f}-{max(s['sent_per_s']):,.0f}] |" for name, s in r["systems"].items()]
    split = r["static_time_split"]
    total = split["tokenize_s"] + split["lookup_mean_s"]
    return (f"# Static model against the int8 transformer\n\n`{r['command']}`\n\nCPU: {r['cpu']} "
            f"; {r['sentences']:,} corpus sentences, one process; "
            f"{r['rounds']} interleaved rounds after a warm-up pass at every batch size.\n\n"
            "| system | best batch | sentences/s, median [min-max] |\n|---|---|---|\n" + "\n".join(rows)
            + f"\n\nstatic / transformer: **{r['static_to_transformer_speed_ratio']:.0f}x**\n\n"
            f"Static time over all {r['sentences']:,} texts ({split['tokens']:,} tokens): tokenization "
            f"{1000 * split['tokenize_s']:.0f} ms ({100 * split['tokenize_s'] / total:.0f}%), lookup and mean "
            f"{1000 * split['lookup_mean_s']:.0f} ms ({100 * split['lookup_mean_s'] / total:.0f}%).\n")


if __name__ == "__main__":
    main()
