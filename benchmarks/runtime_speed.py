"""The fast CPU runtime against sentence-transformers, on the same sentences and the same shipped model.

    python benchmarks/runtime_speed.py [--sentences 10000] [--repeats 3] [--skip-accuracy]

Measures, in one run:
- throughput at batch 16, max_length 256: sentence-transformers (torch fp32), ONNX fp32, ONNX int8,
  taking turns in every repeat (median), with ratios against sentence-transformers;
- accuracy: cosine Spearman averaged over the seven seed splits, for torch fp32, ONNX fp32 and int8;
- cold start: a new process that imports zhembed, loads the default model (its shipped int8 ONNX) and
  encodes one sentence (wall time of the whole process), and its RSS after loading;
- the encode loop's achieved GFLOP/s against a matmul micro-benchmark of this CPU.
Writes benchmarks/results/runtime_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from zhembed import Encoder
from zhembed.eval.speed import bench_sentences, cpu_name, write_report
from zhembed.make.onnx_export import export_onnx
from zhembed.modeldir import FP32_FILE, ONNX_DIR
from zhembed.runtime import default_model_dir, length_batches

RESULTS = Path(__file__).parent / "results"
COLD_START = """
import resource, time
t0 = time.perf_counter()
from zhembed import Encoder
enc = Encoder.load()
rss = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024
enc.encode("我的儿子！他猛然间喊道，我的儿子在哪儿？")
import sys
print(round(time.perf_counter() - t0, 3), rss, "torch" in sys.modules, "transformers" in sys.modules)
"""


def matmul_peak(n: int = 1536, repeats: int = 10) -> float:
    """GFLOP/s of float32 matrix multiplication with numpy's BLAS, the best of `repeats`."""
    a, b = np.random.rand(n, n).astype(np.float32), np.random.rand(n, n).astype(np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def encode_flops(enc: Encoder, texts: list[str], batch_size: int, max_length: int) -> float:
    """Multiply-adds x 2 of the encoder layers over the padded batches the Encoder actually runs."""
    config = json.loads((enc.path / "config.json").read_text())
    h, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    ids = enc.tokenize(texts, max_length)
    total = 0.0
    for idx in length_batches(ids, batch_size):
        width = len(ids[idx[0]])
        tokens = len(idx) * width
        linear = 2 * tokens * (4 * h * h + 2 * h * inter)   # Q, K, V, output; FFN in and out
        attention = 2 * 2 * len(idx) * width * width * h     # scores and weighted sum
        total += layers * (linear + attention)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    texts = bench_sentences(args.sentences)
    model_dir = default_model_dir()
    st = SentenceTransformer(str(model_dir), device="cpu")
    st.max_seq_length = 256
    int8 = Encoder.load(model_dir, backend="onnx")  # the shipped int8 export
    onnx_dir = Path(tempfile.mkdtemp(prefix="zhembed-fp32-")) / "model"  # fp32 is not shipped: export it here
    export_onnx(model_dir, onnx_dir)
    fp32 = Encoder.load(onnx_dir, backend="onnx", onnx_file=f"{ONNX_DIR}/{FP32_FILE}")
    systems = {
        "sentence-transformers (torch fp32)": lambda items: st.encode(items, batch_size=16, normalize_embeddings=True),
        "zhembed ONNX fp32": lambda items: fp32.encode(items, batch_size=16, max_length=256),
        "zhembed ONNX int8": lambda items: int8.encode(items, batch_size=16, max_length=256),
    }
    times = {name: [] for name in systems}
    for run in systems.values():
        run(texts[:256])
    for r in range(args.repeats):
        for name, run in systems.items():
            times[name].append(_timed(lambda: run(texts)))
            print(f"repeat {r + 1}: {name} {len(texts) / times[name][-1]:.1f} sentences/s", flush=True)
    base = "sentence-transformers (torch fp32)"
    speed = {name: len(texts) / statistics.median(t) for name, t in times.items()}
    flops = encode_flops(int8, texts, 16, 256)
    peak = matmul_peak()
    rows = [{"system": name, "throughput": round(v, 1), "ratio": round(v / speed[base], 2),
             "gflops": round(flops / statistics.median(times[name]) / 1e9, 1)} for name, v in speed.items()]

    accuracy = {} if args.skip_accuracy else _accuracy(model_dir, fp32, int8)
    cold = [subprocess.run([sys.executable, "-c", COLD_START], capture_output=True, text=True, check=True).stdout.split()
            for _ in range(3)]
    cold_s = statistics.median(float(c[0]) for c in cold)
    doc = {"model": str(model_dir), "onnx": str(onnx_dir), "sentences": len(texts), "batch_size": 16, "max_length": 256,
           "repeats": args.repeats, "threads": int8.backend.threads, "cpu": cpu_name(), "date": time.strftime("%Y-%m-%d"),
           "rows": rows, "accuracy_cosine_avg": accuracy, "matmul_peak_gflops": round(peak, 1),
           "cold_start_s": cold_s, "cold_start_rss_mb": int(cold[0][1]),
           "cold_start_imports_torch": cold[0][2] == "True", "cold_start_imports_transformers": cold[0][3] == "True"}
    write_report(args.out / "runtime_speed", doc, _markdown(doc))


def _accuracy(model_dir: Path, fp32: Encoder, int8: Encoder) -> dict:
    from zhembed.eval.suite import evaluate_encoder, load_tasks

    tasks = load_tasks(None, None, {})
    out = {}
    for name, enc in (("torch fp32", Encoder.load(model_dir, backend="torch")), ("ONNX fp32", fp32), ("ONNX int8", int8)):
        scores = evaluate_encoder(enc, tasks, show_progress=False)
        out[name] = round(float(np.mean([s["cosine"] for s in scores.values()])), 2)
        print(f"accuracy {name}: {out[name]}", flush=True)
    return out


def _markdown(doc: dict) -> str:
    lines = ["| system | throughput (sent/s) | ratio vs sentence-transformers | achieved GFLOP/s |", "|---|---|---|---|"]
    lines += [f"| {r['system']} | {r['throughput']} | {r['ratio']:.2f}x | {r['gflops']} |" for r in doc["rows"]]
    if doc["accuracy_cosine_avg"]:
        lines += ["", "| backend | cosine Spearman, avg of 7 splits |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in doc["accuracy_cosine_avg"].items()]
    lines += ["", f"Cold start (new process: import, load the default model on ONNX, encode one sentence): "
              f"{doc['cold_start_s']} s, RSS after load {doc['cold_start_rss_mb']} MB, torch imported: "
              f"{doc['cold_start_imports_torch']}.",
              f"Matmul peak (numpy fp32): {doc['matmul_peak_gflops']} GFLOP/s.",
              f"{doc['sentences']} sentences, batch {doc['batch_size']}, max_length {doc['max_length']}, median of "
              f"{doc['repeats']} repeats, {doc['threads']} threads, {doc['cpu']}, {doc['date']}.",
              "Command: `python benchmarks/runtime_speed.py`"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
