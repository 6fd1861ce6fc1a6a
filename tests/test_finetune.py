"""Fine-tuning: losses, NLI triples, the contamination guard, and a tiny run that resumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zhembed import Encoder, ZhembedError
from zhembed.eval.suite import PairTask
from zhembed.train.finetune import FinetuneConfig, cosent_loss, finetune, nli_triples, ranking_loss


def _write(path, rows):
    path.write_text("".join(f"{a}\t{b}\t{c}\n" for a, b, c in rows), encoding="utf-8")
    return path


def test_cosent_rewards_the_right_order():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    good, bad = torch.tensor([[1.0, 0.1], [0.0, 1.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.1]])
    labels = torch.tensor([1.0, 0.0])
    assert cosent_loss(a, good, labels, 20) < cosent_loss(a, bad, labels, 20)
    assert ranking_loss(a, good, bad, 20).item() >= 0


def test_nli_triples(tmp_path):
    task = PairTask.load(_write(tmp_path / "x_nli.tsv", [("p", "e", 2), ("p", "c", 0), ("p", "n", 1), ("q", "e2", 2)]))
    assert nli_triples(task) == [("p", "e", "c")]


def _files(tmp_path):
    train = tmp_path / "train"
    train.mkdir()
    evals = tmp_path / "eval"
    evals.mkdir()
    _write(evals / "lcqmc_dev.tsv", [("我想吃饭", "我要吃饭", 1)])
    sts = _write(train / "sts_train.tsv", [(f"句子{i}", f"句子{i}号", i % 6) for i in range(40)])
    nli = _write(train / "toy_nli.tsv", [r for i in range(20) for r in ((f"前提{i}", f"蕴含{i}", 2), (f"前提{i}", f"矛盾{i}", 0))])
    dirty = _write(train / "dirty.tsv", [("我想吃饭", "吃饭了吗", 1), ("你好", "您好", 1), ("我要吃饭", "走吧", 0)])
    return train, evals, sts, nli, dirty


def test_contamination_guard_names_files_and_counts(tmp_path, tiny_bert):
    _, evals, sts, nli, dirty = _files(tmp_path)
    cfg = FinetuneConfig(model=str(tiny_bert), train=[str(sts), str(dirty)], out=str(tmp_path / "out"),
                         eval_data=str(evals), work_dir=str(tmp_path / "work"))
    with pytest.raises(ZhembedError, match=r"dirty: 2 of 3 rows share a sentence with lcqmc_dev.tsv.*--allow-overlap"):
        finetune(cfg, log=lambda m: None)
    assert not (tmp_path / "out").exists()


def test_tiny_run_trains_resumes_and_allows_overlap_when_asked(tmp_path, tiny_bert):
    _, evals, sts, nli, dirty = _files(tmp_path)
    cfg = FinetuneConfig(model=str(tiny_bert), train=[str(sts), str(nli), str(dirty)], out=str(tmp_path / "out"),
                         eval_data=str(evals), allow_overlap=True, batch_size=4, lr=1e-3, epochs=1,
                         work_dir=str(tmp_path / "work"), checkpoint_every=3, eval_every=1000, log_every=1)
    messages = []

    def killer(m):
        messages.append(m)
        if m.startswith("step 5/"):
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        finetune(cfg, log=killer)
    out = finetune(cfg, resume=True, log=messages.append)
    assert "resumed at step 3/" in " ".join(messages) and any("toy_nli: 20 triples" in m for m in messages)
    before, after = Encoder.load(tiny_bert).encode(["句子1"]), Encoder.load(out).encode(["句子1"])
    assert not np.allclose(before, after)


def test_swapped_spans_keep_the_characters_and_change_the_order():
    from zhembed.train.finetune import swap_spans

    rng = np.random.default_rng(0)
    for text in ("我借给他一本书", "北京到上海的高铁票多少钱", "花呗怎么还款"):
        swapped = swap_spans(text, rng)
        assert swapped is not None and swapped != text and sorted(swapped) == sorted(text)
    assert swap_spans("好", rng) is None


def test_validation_matryoshka_word_order_and_corpus_distillation(tmp_path, tiny_bert):
    import json

    from conftest import SENTENCES, make_tiny_bert

    _, evals, sts, nli, _ = _files(tmp_path)
    pairs = _write(tmp_path / "train" / "qm_train.tsv", [(f"问题{i}是什么", f"问题{i}是啥", 1) for i in range(30)])
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    teacher = make_tiny_bert(tmp_path / "teacher", layers=2, seed=3)
    cfg = FinetuneConfig(model=str(tiny_bert), train=[str(sts), str(nli), str(pairs)], out=str(tmp_path / "out"),
                         eval_data=str(evals), batch_size=4, lr=1e-3, epochs=1, work_dir=str(tmp_path / "work"),
                         eval_every=10, log_every=100, val_fraction=0.2, matryoshka="32,16,8",
                         word_order_negatives=10, teacher=str(teacher), distill_weight=1.0, distill_corpus=str(corpus))
    messages = []
    out = finetune(cfg, log=messages.append)
    evals_logged = [m for m in messages if m.startswith("eval step")]
    assert evals_logged and all("validation" in m and "word_order" in m and "agreement" in m for m in evals_logged)
    assert any("(best, saved)" in m for m in evals_logged)
    run = json.loads((out / "zhembed_run.json").read_text())
    assert run["validation"] is not None and run["matryoshka"] == "32,16,8"
    assert Encoder.load(out).dimensions == [32, 16, 8]
    assert Encoder.load(out).encode("你好", dimensions=8).shape == (8,)


@pytest.mark.parametrize("mode", ["mean", "cls", "max", "lasttoken"])
def test_training_pools_as_the_model_directory_says(tiny_bert, mode):
    from zhembed.train.common import pooled

    encoder = Encoder.load(tiny_bert, backend="torch")
    encoder.config.pooling = mode
    ids = encoder.tokenize(["你好", "今天天气很好，我们去公园吧"], 64)
    trained = pooled(encoder.backend.model, encoder, ids).detach().numpy()
    np.testing.assert_allclose(trained, encoder.embed_ids(ids, normalize=False), atol=1e-5)


def test_training_refuses_a_backend_without_a_torch_module(tiny_bert):
    from types import SimpleNamespace

    from zhembed.train.common import trainable_module

    encoder = Encoder.load(tiny_bert, backend="torch")
    assert trainable_module(encoder) is encoder.backend.model
    encoder.backend = SimpleNamespace(name="onnx")
    with pytest.raises(ZhembedError, match="training needs the torch backend, not onnx"):
        trainable_module(encoder)


def test_size_exponent_draws_small_files_more_often_and_keeps_the_epoch():
    from zhembed.train.finetune import Dataset, Sampler

    big, small = (Dataset(n, "cosent", rows=[("a", "b", 1.0)] * k) for n, k in (("big", 9000), ("small", 1000)))
    by_size, even = Sampler([big, small], 10, 0), Sampler([big, small], 10, 0, size_exponent=0.0)
    assert by_size.steps_per_epoch == even.steps_per_epoch == 1000
    assert (by_size.choice == 1).mean() == pytest.approx(0.1, abs=0.01)
    assert (even.choice == 1).mean() == pytest.approx(0.5, abs=0.01)
    ds, rows = even.batch(7)
    assert len(rows) == 10 and ds in (big, small)


def test_validation_mean_weighs_files_by_their_held_out_size():
    """A 4-triple file that the model gets all wrong moves the mean far less than a 400-triple file it gets right
    (an unweighted mean put them level, 50)."""
    from zhembed.train.finetune import Dataset, validation

    class Lookup:
        def encode(self, texts, **_):
            return np.array([[1.0, 0.0] if t.startswith("same") else [0.0, 1.0] for t in texts])

    right = Dataset("big", "triples", [("same a", "same b", "other c")] * 400)
    wrong = Dataset("tiny", "triples", [("same a", "other b", "same c")] * 4)
    scores = validation(Lookup(), [right, wrong])
    assert (scores["big"], scores["tiny"]) == (100.0, 0.0)
    assert scores["mean"] == pytest.approx(100 * 20 / 22)


def test_data_offset_continues_an_earlier_runs_batch_stream(tmp_path, tiny_bert):
    _, _, sts, nli, _ = _files(tmp_path)

    def files_drawn(offset: int, epochs: float) -> list[str]:
        messages = []
        finetune(FinetuneConfig(model=str(tiny_bert), train=[str(sts), str(nli)], out=str(tmp_path / f"out{offset}"),
                                batch_size=4, epochs=epochs, data_offset=offset, work_dir=str(tmp_path / f"w{offset}"),
                                eval_every=1000, log_every=1, size_exponent=0.0), log=messages.append)
        return [m.split()[2] for m in messages if m.startswith("step ")]

    whole = files_drawn(0, 1.0)
    assert len(whole) == 15 and files_drawn(7, 8 / 15) == whole[7:]


def test_word_order_look_alikes_skip_evaluation_sentences():
    """A swapped look-alike can equal an evaluation sentence by chance (1 in 155,200 rows with 80,000
    negatives): it is skipped, where it used to stop the run at the contamination guard."""
    from zhembed.train.finetune import Dataset, word_order_dataset
    pairs = Dataset("qm", "cosent", [("今天天气很好啊", "今天天气不错"), ("我想去北京玩", "我要去北京旅游")],
                    np.asarray([1.0, 1.0]))
    made = word_order_dataset([pairs], 2, seed=0)
    look_alikes = {b for (a, b), label in zip(made.rows, made.labels) if label == 0}
    assert look_alikes
    guarded = word_order_dataset([pairs], 2, seed=0, exclude=frozenset(look_alikes))
    assert not look_alikes & {s for row in guarded.rows for s in row}
