"""The OpenVINO peer: sentence-transformers with its OpenVINO backend, static int8, on the shipped model.
Runs in its own venv (benchmarks/openvino_venv.sh), never imports zhembed.

    PY=benchmarks/.openvino-venv/bin/python
    $PY benchmarks/openvino_peer.py build MODEL_DIR OUT_DIR --calibration CORPUS.txt [--samples 300]
    $PY benchmarks/openvino_peer.py time OUT_DIR WARMUP SENTENCES PAIRS.tsv     # prints sentences/s

`build` copies the model directory, exports it to OpenVINO IR through sentence-transformers (backend="openvino")
and quantizes it statically with `OVQuantizer` (nncf post-training quantization, optimum-intel's default
OVQuantizationConfig), calibrated on the first --samples corpus sentences, as
`sentence_transformers.backend.export_static_quantized_openvino_model` does with a hub dataset (there is no hub
here). It writes OUT_DIR/openvino/openvino_model_qint8_quantized.xml and prints the int8 vectors' cosine to the
fp32 (torch) vectors of 500 corpus sentences. `time` is the child of `benchmarks/first_pass.py --peer openvino`:
it loads that file, encodes WARMUP sentences, then times one pass over SENTENCES at batch 16, the model's
default `query: ` prompt applied as zhembed applies it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path


INT8_FILE = "openvino/openvino_model_qint8_quantized.xml"


def build(model_dir: Path, out: Path, calibration: Path, samples: int) -> None:
    from datasets import Dataset
    from optimum.intel.openvino import OVConfig, OVQuantizationConfig, OVQuantizer
    from sentence_transformers import SentenceTransformer

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(model_dir, out, ignore=shutil.ignore_patterns("onnx"))
    model = SentenceTransformer(str(out), backend="openvino", device="cpu")
    model.save_pretrained(str(out))               # writes openvino/openvino_model.xml (fp32)
    lines = calibration.read_text(encoding="utf-8").splitlines()
    texts = ["query: " + t for t in lines[:samples]]
    encoded = model.tokenizer(texts, truncation=True, max_length=256)
    ov_config = OVConfig(quantization_config=OVQuantizationConfig(num_samples=samples))
    quantizer = OVQuantizer.from_pretrained(model.transformers_model)
    tmp = out / "openvino-int8-tmp"
    quantizer.quantize(Dataset.from_dict(dict(encoded)), save_directory=str(tmp), ov_config=ov_config)
    for suffix in (".xml", ".bin"):
        shutil.move(tmp / "openvino" / f"openvino_model{suffix}", (out / INT8_FILE).with_suffix(suffix))
    shutil.rmtree(tmp)

    check = lines[samples:samples + 500]
    fp32 = SentenceTransformer(str(model_dir), device="cpu").encode(check, normalize_embeddings=True)
    int8 = load(out).encode(check, normalize_embeddings=True)
    cos = (fp32 * int8).sum(1)
    print(f"{out / INT8_FILE}: cosine to torch fp32 on {len(check)} corpus sentences mean {cos.mean():.5f} "
          f"min {cos.min():.5f}")


def load(out: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(out), backend="openvino", device="cpu", model_kwargs={"file_name": INT8_FILE})


def timed_pass(out: Path, warmup: int, n: int, pairs: Path) -> float:
    rows = [line.split("\t") for line in pairs.read_text(encoding="utf-8").splitlines()]
    texts = list(dict.fromkeys(t for row in rows for t in row[:2]))[:n]
    model = load(out)
    model.encode(texts[:warmup], batch_size=16)
    start = time.perf_counter()
    model.encode(texts, batch_size=16)
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("model_dir", type=Path)
    b.add_argument("out", type=Path)
    b.add_argument("--calibration", type=Path, required=True)
    b.add_argument("--samples", type=int, default=300)
    t = sub.add_parser("time")
    t.add_argument("out", type=Path)
    t.add_argument("warmup", type=int)
    t.add_argument("sentences", type=int)
    t.add_argument("pairs", type=Path)
    args = parser.parse_args()
    if args.command == "build":
        build(args.model_dir, args.out, args.calibration, args.samples)
    else:
        print(timed_pass(args.out, args.warmup, args.sentences, args.pairs))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
