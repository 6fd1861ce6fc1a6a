"""Export a model directory to ONNX (fp32, optionally static int8), written into DIR/onnx/ or --out.

The graph takes input_ids and attention_mask and returns last_hidden_state; pooling stays in the
Encoder, as for every backend. Fusion of attention, LayerNorm and GELU is onnxruntime's own transformer
optimizer; int8 is static quantization calibrated on sentences the caller gives (make/quantize.py), so a
text's vector does not depend on its batch.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import ZhembedError, require
from ..modeldir import (FP32_FILE, INT8_FILE, ONNX_DIR, copy_model_files, read_model_config, tokenizer_files,
                        write_tokenizer)
from ..runtime.tokenizer import load_tokenizer
from .quantize import CALIBRATION_BATCH, quantize_static


def _export_fp32(model_dir: Path, path: Path) -> None:
    import torch
    from transformers import AutoModel

    class HiddenStates(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    from transformers.utils import logging

    logging.disable_progress_bar()
    model = HiddenStates(AutoModel.from_pretrained(str(model_dir), dtype=torch.float32).eval())
    ids = torch.ones((2, 8), dtype=torch.long)
    # The tracer's warnings concern shapes that the dynamic axes cover; tests compare the graph with torch.
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (ids, torch.ones_like(ids)), str(path), input_names=["input_ids", "attention_mask"],
                          output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                        "attention_mask": {0: "batch", 1: "sequence"},
                                        "last_hidden_state": {0: "batch", 1: "sequence"}})


def _fuse(path: Path, config: dict) -> None:
    """onnxruntime's BERT optimizer: fused attention, SkipLayerNorm, FastGelu."""
    from onnxruntime.transformers import optimizer

    fused = optimizer.optimize_model(str(path), model_type="bert", num_heads=config["num_attention_heads"],
                                     hidden_size=config["hidden_size"], opt_level=1)
    fused.save_model_to_file(str(path))


CALIBRATION_SENTENCES = 512


def calibration_batches(model_dir: Path, fp32: Path, sentences: list[str]) -> list:
    """Padded id batches of up to CALIBRATION_SENTENCES sentences (a seeded sample), as the Encoder forms them."""
    from ..runtime import Encoder
    from ..runtime.encoder import length_batches

    chosen = [sentences[i] for i in sorted(np.random.default_rng(0).permutation(len(sentences))[:CALIBRATION_SENTENCES])]
    encoder = Encoder.load(model_dir, onnx_file=str(fp32))
    ids = encoder.tokenize(chosen, encoder.config.max_seq_length)
    return [encoder.pad([ids[i] for i in rows]) for rows in length_batches(ids, CALIBRATION_BATCH)]


def export_onnx(model_dir: Path, out: Path | None = None, quantize: str | None = None, fuse: bool = True,
                calibration: list[str] | None = None) -> Path:
    """Write onnx/model.onnx (and onnx/model_qint8.onnx with quantize='int8', calibrated on the
    `calibration` sentences); returns the file to use."""
    model_dir = Path(model_dir)
    if quantize not in (None, "int8"):
        raise ZhembedError(f"--quantize must be int8 (or omitted), got {quantize!r}")
    if quantize and not calibration:
        raise ZhembedError("--quantize int8 needs --calibration FILE: sentences like the ones the model will "
                           "encode (one per line; 512 of them are sampled) to set the activation ranges")
    require("train", "zhembed export", ("torch", "transformers", "onnx"))
    out = Path(out) if out else model_dir
    if out != model_dir:
        copy_model_files(model_dir, out)
    if tokenizer_files(out)[0] is None:  # the ONNX runtime reads tokenizer.json only (no transformers)
        write_tokenizer(out, load_tokenizer(model_dir))
    onnx_dir = out / ONNX_DIR
    onnx_dir.mkdir(parents=True, exist_ok=True)
    fp32_tmp, int8_tmp = onnx_dir / (FP32_FILE + ".tmp"), onnx_dir / (INT8_FILE + ".tmp")
    _export_fp32(model_dir, fp32_tmp)
    if fuse:
        _fuse(fp32_tmp, read_model_config(model_dir))
    if quantize:  # both files appear only when complete: a killed export never leaves a half file to load
        quantize_static(fp32_tmp, int8_tmp, calibration_batches(out, fp32_tmp, calibration))
        os.replace(int8_tmp, onnx_dir / INT8_FILE)
    os.replace(fp32_tmp, onnx_dir / FP32_FILE)
    return onnx_dir / (INT8_FILE if quantize else FP32_FILE)
