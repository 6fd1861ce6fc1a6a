"""The shipped default model: size budget, load time, and the card's three ways to load it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from zhembed import Encoder
from zhembed.runtime import SHIPPED_MODEL, default_model_dir
from zhembed.modeldir import model_info, size_on_disk

pytestmark = pytest.mark.skipif(not (SHIPPED_MODEL / "model.safetensors").exists(), reason="no shipped model")
PAIR = ["我的儿子！他猛然间喊道，我的儿子在哪儿？", "我的儿子呢！他突然喊道，我的儿子在哪里？"]


def test_it_is_the_default_ships_its_int8_onnx_and_fits_the_budget():
    assert default_model_dir() == SHIPPED_MODEL
    assert (SHIPPED_MODEL / "onnx" / "model_qint8.onnx").exists() and not (SHIPPED_MODEL / "onnx" / "model.onnx").exists()
    assert size_on_disk(SHIPPED_MODEL) <= 50 * 2**20
    info = model_info(SHIPPED_MODEL)
    assert info["layers"] == 4 and info["hidden_size"] == 384 and info["prompt"] == "query: "


def test_default_load_is_the_shipped_int8_onnx_and_builds_nothing(tmp_path):
    torch_vectors = Encoder.load(backend="torch").encode(PAIR)
    home = tmp_path / "home"
    code = ("import json, time, sys; t = time.perf_counter(); from zhembed import Encoder; e = Encoder.load(); "
            "v = e.encode(%r); print(json.dumps([time.perf_counter() - t, 'torch' in sys.modules, "
            "'transformers' in sys.modules, e.backend.name, v.tolist()]))" % PAIR)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "ZHEMBED_HOME": str(home)})
    seconds, has_torch, has_transformers, backend, vectors = json.loads(run.stdout)
    assert (backend, has_torch, has_transformers) == ("onnx-int8", False, False)
    assert seconds < 10  # generous here; the 1 s budget is measured in docs/RESULTS.md
    assert (np.asarray(vectors) * torch_vectors).sum(1).min() > 0.99
    assert run.stderr == "" and not home.exists()  # nothing exported, converted or cached on first use


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


def test_fastembed_runs_the_shipped_onnx_and_agrees():
    """The shipped int8 ONNX in the runtime users already have: fastembed, mean pooling, prompt by hand."""
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    name = "zhembed/zhembed-small-zh"
    if name not in {m["model"] for m in TextEmbedding.list_supported_models()}:
        TextEmbedding.add_custom_model(model=name, pooling=PoolingType.MEAN, normalization=True,
                                       sources=ModelSource(hf=name), dim=384, model_file="onnx/model_qint8.onnx")
    texts = [*PAIR, "花呗如何还款", "hello 世界", "今天天气很好" * 30]
    model = TextEmbedding(name, specific_model_path=str(SHIPPED_MODEL), threads=1)
    theirs = np.stack(list(model.embed(["query: " + t for t in texts])))
    ours = Encoder.load().encode(texts)
    assert theirs.shape == ours.shape and (theirs * ours).sum(1).min() >= 0.999


def test_the_shipped_int8_vectors_do_not_depend_on_the_batch():
    from pathlib import Path

    texts = [s.strip() for s in (Path(__file__).parent / "data" / "sentences_zh.txt").read_text(encoding="utf-8").splitlines()
             if s.strip()]
    enc = Encoder.load()
    alone = np.stack([enc.encode(t) for t in texts])
    for size in (2, 16, 64):
        together = enc.encode((texts * 2)[:max(size, len(texts))], batch_size=size)[:len(texts)]
        assert (alone * together).sum(1).min() >= 0.99999
    long_text = "我们在学习中文，今天天气很好。" * 40  # over 256 tokens
    assert float(alone[0] @ enc.encode([texts[0], long_text], batch_size=2)[0]) >= 0.99999
    fp32 = Encoder.load(backend="torch").encode(texts)
    assert (alone * fp32).sum(1).mean() >= 0.995


def test_the_shipped_model_gives_calibrated_scores():
    scores = Encoder.load().similarity(PAIR[0], [PAIR[1], "今天天气很好"], calibrated=True)
    assert 0 <= scores[1] < scores[0] <= 1 and scores[0] > 0.5
