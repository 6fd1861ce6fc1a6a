"""The shipped static int8 ONNX against onnxruntime's dynamic int8 of the same weights, in one process.

    python benchmarks/int8_static.py [--model zhembed/models/zhembed-small-zh] [--rounds 5]

Builds the fp32 and the dynamic int8 export of the model's weights in a temporary folder, then measures on
corpus sentences (../shared/data/corpus/sentences.txt, the first 6,000; the shipped file was calibrated on a
seeded sample of 512 of the whole corpus):
- cosine to the torch fp32 vectors (2,000 sentences);
- batch invariance: each of 1,000 sentences alone against in batches of 2, 16 and 64, and beside a
  300-token text;
- sentences/s at batch 16 over 4,000 sentences, interleaved rounds after a full warm-up pass.
Writes benchmarks/results/int8_static.{json,md}.
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
from zhembed.modeldir import INT8_FILE, ONNX_DIR

RESULTS = Path(__file__).parent / "results"
CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "corpus" / "sentences.txt"


def dynamic_export(model: Path, work: Path) -> Path:
    """The fp32 export and onnxruntime's dynamic int8 of it (the previous scheme), in `work`."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from zhembed.make.onnx_export import export_onnx

    fp32 = export_onnx(model, work)
    dst = work / ONNX_DIR / "model_dynamic.onnx"
    quantize_dynamic(str(fp32), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gather"],
                     per_channel=True, extra_options={"MatMulConstBOnly": True, "DefaultTensorType": TensorProto.FLOAT})
    return dst


def invariance(enc: Encoder, texts: list[str]) -> dict:
    alone = np.stack([enc.encode(t) for t in texts])
    out = {}
    for size in (2, 16, 64):
        out[f"batch_{size}"] = float((alone * enc.encode(texts, batch_size=size)).sum(1).min())
    long_text = "我们在学习中文，今天天气很好。" * 45
    beside = np.stack([enc.encode([t, long_text], batch_size=2)[0] for t in texts[:200]])
    out["beside_long"] = float((alone[:200] * beside).sum(1).min())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("zhembed/models/zhembed-small-zh"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    sentences = [s.strip() for s in CORPUS.read_text(encoding="utf-8").splitlines()[:6000] if s.strip()]
    work = Path(tempfile.mkdtemp(prefix="zhembed-int8-"))
    try:
        systems = {"static int8 (shipped)": Encoder.load(args.model, onnx_file=f"{ONNX_DIR}/{INT8_FILE}"),
                   "dynamic int8": Encoder.load(work, onnx_file=str(dynamic_export(args.model, work)))}
        reference = Encoder.load(args.model, backend="torch").encode(sentences[:2000])
        report = {"cpu": cpu_name(), "model": str(args.model), "rounds": args.rounds, "systems": {}}
        for name, enc in systems.items():
            cos = (enc.encode(sentences[:2000]) * reference).sum(1)
            report["systems"][name] = {"cosine_to_fp32_mean": float(cos.mean()), "cosine_to_fp32_min": float(cos.min()),
                                       "invariance_min": invariance(enc, sentences[:1000]), "sent_per_s": []}
        speed = sentences[2000:6000]
        for enc in systems.values():
            enc.encode(speed, batch_size=16)  # warm-up: one full pass each
        for _ in range(args.rounds):
            for name, enc in systems.items():
                start = time.perf_counter()
                enc.encode(speed, batch_size=16)
                report["systems"][name]["sent_per_s"].append(len(speed) / (time.perf_counter() - start))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for s in report["systems"].values():
        s["sent_per_s_median"] = statistics.median(s["sent_per_s"])
    names = list(report["systems"])
    report["static_to_dynamic_speed_ratio"] = (report["systems"][names[0]]["sent_per_s_median"]
                                               / report["systems"][names[1]]["sent_per_s_median"])
    write_report(args.out / "int8_static", report, markdown(report))


def markdown(r: dict) -> str:
    rows = [f"| {name} | {s['cosine_to_fp32_mean']:.5f} ({s['cosine_to_fp32_min']:.4f}) | "
            + " / ".join(f"{v:.6f}" for v in s["invariance_min"].values())
            + f" | {s['sent_per_s_median']:.0f} [{min(s['sent_per_s']):.0f}-{max(s['sent_per_s']):.0f}] |"
            for name, s in r["systems"].items()]
    return (f"# Static against dynamic int8\n\nCPU: {r['cpu']}; {r['rounds']} interleaved rounds after a warm-up pass.\n\n"
            "| ONNX | cosine to fp32, mean (min) | alone vs batch 2 / 16 / 64 / beside a long text, min cosine "
            "| sentences/s, batch 16 |\n|---|---|---|---|\n" + "\n".join(rows)
            + f"\n\nstatic / dynamic speed: {r['static_to_dynamic_speed_ratio']:.2f}x\n")


if __name__ == "__main__":
    main()
