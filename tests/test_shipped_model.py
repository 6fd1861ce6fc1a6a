"""The shipped default model: size budget, load time, and the card's three ways to load it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from zhembed import Encoder
from zhembed.default_model import SHIPPED_MODEL, default_model_dir
from zhembed.info import model_info, size_on_disk

pytestmark = pytest.mark.skipif(not (SHIPPED_MODEL / "model.safetensors").exists(), reason="no shipped model")
PAIR = ["我的儿子！他猛然间喊道，我的儿子在哪儿？", "我的儿子呢！他突然喊道，我的儿子在哪里？"]


def test_it_is_the_default_and_fits_the_budget():
    assert default_model_dir() == SHIPPED_MODEL
    assert size_on_disk(SHIPPED_MODEL) <= 40 * 2**20
    info = model_info(SHIPPED_MODEL)
    assert info["layers"] == 4 and info["hidden_size"] == 384 and info["prompt"] == "query: "


def test_default_load_is_the_int8_onnx_and_fast_in_a_new_process():
    torch_vectors = Encoder.load(backend="torch").encode(PAIR)
    default = Encoder.load()  # exports the int8 ONNX into $ZHEMBED_HOME on first use
    assert default.backend.name == "onnx-int8" and (default.encode(PAIR) * torch_vectors).sum(1).min() > 0.99
    code = ("import time, sys; t = time.perf_counter(); from zhembed import Encoder; e = Encoder.load(); "
            "e.encode('你好'); print(time.perf_counter() - t, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert float(out[0]) < 10 and out[1] == "False"  # generous here; the 2 s budget is measured in docs/RESULTS.md


def test_three_ways_agree_and_the_pair_is_similar():
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    ours = Encoder.load(backend="torch").encode(PAIR)
    st = SentenceTransformer(str(SHIPPED_MODEL), device="cpu").encode(PAIR)
    tok, model = AutoTokenizer.from_pretrained(str(SHIPPED_MODEL)), AutoModel.from_pretrained(str(SHIPPED_MODEL))
    batch = tok(["query: " + s for s in PAIR], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    assert hidden.dtype == torch.float32
    mask = batch["attention_mask"].unsqueeze(-1).float()
    auto = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    assert (ours * st).sum(1).min() > 0.9999 and (ours * auto).sum(1).min() > 0.9999
    assert float(ours[0] @ ours[1]) > 0.9
    assert json.loads((SHIPPED_MODEL / "config.json").read_text())["num_hidden_layers"] == 4
    assert np.isfinite(ours).all()
