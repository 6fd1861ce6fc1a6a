"""ONNX export and the torch-free runtime, on a tiny model built in the test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from zhembed import Encoder, ZhembedError
from zhembed.runtime import length_batches
from zhembed.make.onnx_export import export_onnx


CALIBRATION = [line.strip() for line in (Path(__file__).parent / "data" / "sentences_zh.txt").read_text(encoding="utf-8").splitlines()
               if line.strip()]


@pytest.fixture(scope="module")
def exported(tiny_bert, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "model"
    export_onnx(tiny_bert, out, quantize="int8", calibration=CALIBRATION)
    return out


def test_onnx_matches_torch(exported, tiny_bert):
    texts = ["我们在学习中文", "今天天气很好！", "hello 你好", "", "好" * 300]
    torch_out = Encoder.load(tiny_bert, backend="torch").encode(texts)
    fp32 = Encoder.load(exported, backend="onnx", onnx_file="onnx/model.onnx")
    assert fp32.backend.name == "onnx"
    np.testing.assert_allclose(fp32.encode(texts), torch_out, atol=1e-4)
    int8 = Encoder.load(exported)  # auto: ONNX when exported, int8 first
    assert int8.backend.name == "onnx-int8"
    assert (int8.encode(texts) * torch_out).sum(1).min() > 0.95


def test_backend_errors(tiny_bert, exported):
    with pytest.raises(ZhembedError, match="no ONNX export"):
        Encoder.load(tiny_bert, backend="onnx")
    with pytest.raises(ZhembedError, match="unknown backend"):
        Encoder.load(tiny_bert, backend="tensorrt")
    with pytest.raises(ZhembedError, match="ONNX file not found"):
        Encoder.load(exported, backend="onnx", onnx_file="onnx/nope.onnx")
    with pytest.raises(ZhembedError, match="graph optimization"):
        Encoder.load(exported, backend="onnx", graph_optimization="max")


def test_onnx_path_imports_neither_torch_nor_transformers(exported):
    code = (f"import sys; from zhembed import Encoder; e = Encoder.load({str(exported)!r}, backend='onnx', num_threads=1); "
            "v = e.encode(['你好']); print(json.dumps([v.shape[1], 'torch' in sys.modules, 'transformers' in sys.modules, "
            "e.backend.threads]))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [32, False, False, 1]


def test_token_budget_batches():
    ids = [[0] * n for n in (5, 50, 7, 30, 2, 2, 2)]
    batches = list(length_batches(ids, batch_size=4, max_batch_tokens=100))
    assert sorted(i for b in batches for i in b) == list(range(7))
    for b in batches:
        assert len(b) <= 4 and len(b) * max(len(ids[i]) for i in b) <= 100 or len(b) == 1
    assert [len(b) for b in length_batches(ids, batch_size=3)] == [1, 1, 3, 2]  # 50 and 30 pad nothing short
    same = [[0] * 10] * 7
    assert [len(b) for b in length_batches(same, batch_size=3)] == [3, 3, 1]


def test_token_budget_encode_is_the_same(tiny_bert):
    enc = Encoder.load(tiny_bert, backend="torch")
    texts = [f"句子{'好' * i}" for i in range(20)]
    np.testing.assert_allclose(enc.encode(texts, max_batch_tokens=64, max_length=32), enc.encode(texts, max_length=32),
                               atol=1e-5)
    with pytest.raises(ZhembedError, match="max_batch_tokens"):
        enc.encode(texts, max_batch_tokens=8, max_length=32)


def test_a_killed_export_leaves_no_half_file_to_load(tiny_bert, tmp_path, monkeypatch):
    from zhembed.make import onnx_export

    def dies_half_way(src, dst, batches):
        dst.write_bytes(b"half an int8 model")
        raise KeyboardInterrupt
    monkeypatch.setattr(onnx_export, "quantize_static", dies_half_way)
    import shutil

    model = shutil.copytree(tiny_bert, tmp_path / "m")
    with pytest.raises(KeyboardInterrupt):
        export_onnx(model, quantize="int8", calibration=CALIBRATION)
    assert not (tmp_path / "m" / "onnx" / "model_qint8.onnx").exists()
    assert not (tmp_path / "m" / "onnx" / "model.onnx").exists()
    assert Encoder.load(tmp_path / "m", backend="auto").backend.name == "torch"  # nothing half-written is picked


def test_int8_vectors_do_not_depend_on_the_batch(exported):
    enc = Encoder.load(exported)
    texts = CALIBRATION[:20]
    alone = np.stack([enc.encode(t) for t in texts])
    for size in (2, 16, 64):
        batch = (texts * 4)[:max(size, len(texts))]
        together = enc.encode(batch, batch_size=size)[:len(texts)]
        assert (alone * together).sum(1).min() > 0.99999
    beside_long = enc.encode([texts[0], "好" * 120], batch_size=2)[0]
    assert float(alone[0] @ beside_long) > 0.99999


def test_int8_needs_calibration_sentences(tiny_bert, tmp_path):
    with pytest.raises(ZhembedError, match="--calibration"):
        export_onnx(tiny_bert, tmp_path / "m", quantize="int8")


def test_spinning_modes_reach_the_onnx_session(exported):
    from zhembed.runtime.backends import OnnxBackend

    onnx = next(Path(exported).glob("onnx/*.onnx"))
    config = OnnxBackend(onnx, spinning="within-runs").session.get_session_options().get_session_config_entry
    assert (config("session.intra_op.allow_spinning"), config("session.force_spinning_stop")) == ("1", "1")
    assert OnnxBackend(onnx, spinning="never").session.get_session_options() \
        .get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(ZhembedError, match="onnx spinning must be one of always, within-runs, never, got 'yes'"):
        OnnxBackend(onnx, spinning="yes")


def test_several_batches_run_side_by_side_on_the_one_thread_lane(exported, monkeypatch):
    from zhembed.runtime.backends import OnnxBackend

    enc = Encoder.load(exported, num_threads=2)
    lane = enc.backend.lane()
    assert lane.threads == 1 and lane is enc.backend.lane()
    assert Encoder.load(exported, num_threads=1).backend.lane() is None
    calls = []
    real = OnnxBackend.__call__
    monkeypatch.setattr(OnnxBackend, "__call__",
                        lambda self, ids, mask: calls.append(self.threads) or real(self, ids, mask))
    enc.encode(CALIBRATION[:1])
    enc.encode(CALIBRATION[:40], batch_size=8)
    assert calls[0] == 2 and calls[1:] == [1] * 5  # one batch: every thread; five batches: one thread each
    assert 1 <= lane.sessions <= 2


def test_batches_running_side_by_side_never_share_a_session(exported, monkeypatch):
    """Two threads running one session at once made some processes 20% slower: each call gets its own."""
    import threading

    from zhembed.runtime.backends import OnnxBackend

    enc = Encoder.load(exported, num_threads=2)
    lane, both_in, used = enc.backend.lane(), threading.Barrier(2, timeout=10), []
    real = OnnxBackend.__call__

    def call(self, ids, mask):
        used.append(id(self))
        both_in.wait()  # the two calls overlap
        return real(self, ids, mask)
    monkeypatch.setattr(OnnxBackend, "__call__", call)
    ids, mask = enc.pad(enc.tokenize(CALIBRATION[:4], 32))
    threads = [threading.Thread(target=lane, args=(ids, mask)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(used) == 2 and len(set(used)) == 2 and lane.sessions == 2
    monkeypatch.undo()
    np.testing.assert_allclose(lane(ids, mask), real(enc.backend, ids, mask), atol=1e-5)
