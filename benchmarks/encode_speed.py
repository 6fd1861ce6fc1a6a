"""Sentences/s of zhembed's Encoder and of sentence-transformers on the same model, in one run.

    python benchmarks/encode_speed.py [--model DIR] [--sentences 2000] [--repeats 3]

Both systems encode the same sentences (drawn from ../shared/data/eval) with max_length 256, at batch
16 and batch 1; they take turns in every repeat and the median repeat is reported, with the ratio
Encoder / sentence-transformers. Writes benchmarks/results/encode_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from zhembed import Encoder
from zhembed.eval.speed import bench_sentences, cpu_name, write_report
from zhembed.make.import_e5 import teacher_dir

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model directory (default: the imported e5 teacher)")
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    model_dir = Path(args.model) if args.model else teacher_dir()
    texts = bench_sentences(args.sentences)
    ours = Encoder.load(model_dir, backend="torch")
    st = SentenceTransformer(str(model_dir), device="cpu")
    st.max_seq_length = 256
    systems = {
        "zhembed Encoder": lambda items, batch: ours.encode(items, batch_size=batch, max_length=256),
        "sentence-transformers": lambda items, batch: st.encode(items, batch_size=batch, normalize_embeddings=True),
    }
    rows = []
    for batch in (16, 1):
        for run in systems.values():
            run(texts[:64], batch)  # warm-up
        times = {name: [] for name in systems}
        for r in range(args.repeats):
            for name, run in systems.items():
                start = time.perf_counter()
                run(texts, batch)
                times[name].append(time.perf_counter() - start)
                print(f"batch {batch} repeat {r + 1}: {name} {len(texts) / times[name][-1]:.1f} sentences/s", flush=True)
        speed = {name: len(texts) / statistics.median(t) for name, t in times.items()}
        rows.append({"batch_size": batch, **{k: round(v, 1) for k, v in speed.items()},
                     "ratio": round(speed["zhembed Encoder"] / speed["sentence-transformers"], 3)})
    doc = {"model": str(model_dir), "sentences": len(texts), "max_length": 256, "repeats": args.repeats,
           "threads": torch.get_num_threads(), "cpu": cpu_name(), "date": time.strftime("%Y-%m-%d"), "rows": rows}
    table = ["| batch | zhembed Encoder (sent/s) | sentence-transformers (sent/s) | ratio |", "|---|---|---|---|"]
    table += [f"| {r['batch_size']} | {r['zhembed Encoder']} | {r['sentence-transformers']} | {r['ratio']:.3f} |" for r in rows]
    md = "\n".join(table) + (f"\n\n{model_dir.name}, {len(texts)} sentences, max_length 256, median of {args.repeats} "
                             f"repeats, {doc['threads']} threads, {doc['cpu']}, {doc['date']}.\n"
                             "Command: `python benchmarks/encode_speed.py`\n")
    write_report(args.out / "encode_speed", doc, md)


if __name__ == "__main__":
    main()
