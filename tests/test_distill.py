"""Student construction, vocabulary pruning and a kill-and-resume distillation on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import CHARS, SENTENCES, make_tiny_bert
from zhembed import Encoder, ZhembedError
from zhembed.train.distill import DistillConfig, choose_layers, distill, make_student
from zhembed.make.prune_vocab import prune_vocab


def test_choose_layers():
    assert choose_layers("auto", 12, 4) == [1, 4, 7, 10]  # the seed's rule
    assert choose_layers("auto", 12, 6) == [1, 3, 5, 7, 9, 11]
    assert choose_layers("0,11", 12, 4) == [0, 11]
    for bad in ("1,1", "3,2", "12", "a,b", ""):
        with pytest.raises(ZhembedError, match="--layers"):
            choose_layers(bad, 12, 4)


def test_make_student_keeps_the_chosen_layers(tiny_bert, tmp_path):
    teacher = make_tiny_bert(tmp_path / "t4", layers=4)
    student = make_student(teacher, [1, 3], tmp_path / "s")
    t, s = load_file(str(teacher / "model.safetensors")), load_file(str(student / "model.safetensors"))
    np.testing.assert_array_equal(s["encoder.layer.1.output.dense.weight"], t["encoder.layer.3.output.dense.weight"])
    assert not any(k.startswith("encoder.layer.2.") for k in s)
    assert json.loads((student / "config.json").read_text())["num_hidden_layers"] == 2
    assert Encoder.load(student).encode(["你好"]).shape == (1, 32)


def test_prune_vocab_keeps_tokenization_and_vectors(teacher_dir, teacher, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES[:40]) + "\n", encoding="utf-8")
    report = prune_vocab(teacher_dir, corpus, tmp_path / "pruned")
    assert report.pieces_before == 250002 and 8_000 < report.pieces_after < 10_000
    assert report.parameters_after < report.parameters_before / 4
    pruned = Encoder.load(tmp_path / "pruned")
    before_tokens = [[teacher.tokenizer.id_to_token(i) for i in ids] for ids in teacher.tokenize(SENTENCES, 256)]
    after_tokens = [[pruned.tokenizer.id_to_token(i) for i in ids] for ids in pruned.tokenize(SENTENCES, 256)]
    unk = teacher.tokenizer.token_to_id("<unk>")
    covered = [i for i, toks in enumerate(before_tokens) if all(pruned.tokenizer.token_to_id(t) is not None for t in toks)]
    assert set(range(40)) <= set(covered) and len(covered) > 40  # the corpus, and more
    for i in covered:
        assert after_tokens[i] == before_tokens[i], SENTENCES[i]
    cos = (pruned.encode([SENTENCES[i] for i in covered]) * teacher.encode([SENTENCES[i] for i in covered])).sum(1)
    assert cos.min() > 0.99999
    assert unk is not None


def test_prune_vocab_needs_a_unigram_tokenizer(tiny_bert, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("你好\n", encoding="utf-8")
    with pytest.raises(ZhembedError, match="Unigram"):
        prune_vocab(tiny_bert, corpus, tmp_path / "out")


def _config(tmp_path, teacher, **kw) -> DistillConfig:
    tmp_path.mkdir()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join("".join(CHARS[(i * 7 + j) % len(CHARS)] for j in range(3 + i % 9))
                                for i in range(60)) + "\n", encoding="utf-8")
    return DistillConfig(teacher=str(teacher), out=str(tmp_path / "student"), corpus=str(corpus), layers="1",
                         num_layers=1, prune_vocab=False, batch_size=8, lr=1e-3, dev_sentences=12,
                         work_dir=str(tmp_path / "work"), checkpoint_every=2, eval_every=3, log_every=1, epochs=2, **kw)


def _killed_at(cfg: DistillConfig, step: int) -> DistillConfig:
    """Run `cfg` until it logs `step`, then stop it as a kill would."""
    def killer(message: str) -> None:
        if message.startswith(f"step {step}/"):
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        distill(cfg, log=killer)
    return cfg


def test_kill_and_resume_gives_the_same_model(tmp_path):
    teacher = make_tiny_bert(tmp_path / "teacher", layers=2)
    full = distill(_config(tmp_path / "a", teacher), log=lambda m: None)
    cfg = _killed_at(_config(tmp_path / "b", teacher), 7)
    with pytest.raises(ZhembedError, match="--resume"):
        distill(cfg, log=lambda m: None)
    messages = []
    resumed = distill(cfg, resume=True, log=messages.append)
    assert "resumed at step 6/12" in messages
    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-3, err_msg=key)
    assert Encoder.load(resumed).encode(["你好"]).shape == (1, 32)


def test_resume_with_other_settings_is_refused(tmp_path):
    cfg = _killed_at(_config(tmp_path / "run", make_tiny_bert(tmp_path / "teacher", layers=2)), 3)
    cfg.epochs, cfg.lr = 5, 2e-3
    with pytest.raises(ZhembedError, match=r"other settings \(epochs: 2 -> 5, lr: 0.001 -> 0.002\)"):
        distill(cfg, resume=True, log=lambda m: None)


def test_a_stale_student_init_with_other_layers_is_rebuilt(tmp_path):
    teacher = make_tiny_bert(tmp_path / "teacher", layers=2)
    cfg = _config(tmp_path / "run", teacher)
    cfg.layers, cfg.epochs = "0,1", 1
    distill(cfg, log=lambda m: None)
    cfg.layers = "1"  # same work dir, other layers: the cached student-init must not be reused
    cfg.out = str(tmp_path / "run" / "student-1")
    (Path(cfg.work_dir) / "checkpoint.pt").unlink()
    messages = []
    student = distill(cfg, log=messages.append)
    assert json.loads((student / "config.json").read_text())["num_hidden_layers"] == 1
    assert any("keeps other teacher layers" in m for m in messages)


def test_out_folders_that_zhembed_did_not_write_are_never_replaced(tmp_path):
    teacher = make_tiny_bert(tmp_path / "teacher", layers=2)
    cfg = _config(tmp_path / "run", teacher)
    cfg.epochs = 1
    out = Path(cfg.out)
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ZhembedError, match="was not written by a zhembed run"):
        distill(cfg, log=lambda m: None)
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    distill(cfg, log=lambda m: None)  # empty: fine; and a rerun over its own output is fine too
    (Path(cfg.work_dir) / "checkpoint.pt").unlink()
    distill(cfg, log=lambda m: None)
    assert json.loads((out / "zhembed_run.json").read_text())["command"] == "distill"


def test_checkpoints_never_run_code_from_the_file(tmp_path):
    import torch

    from zhembed.train.common import load_checkpoint

    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    torch.save({"model": {}, "step": 1, "evil": Payload()}, tmp_path / "checkpoint.pt")
    with pytest.raises(ZhembedError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "checkpoint.pt", None, None, {})
    assert not (tmp_path / "pwned").exists()
