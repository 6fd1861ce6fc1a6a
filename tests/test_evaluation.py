"""The evaluation suite: Spearman and the four similarities against scipy and sentence-transformers,
strict data loading, and the eval/bench commands end to end on a tiny model."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from scipy.stats import spearmanr

from zhembed import ZhembedError
from zhembed.eval.suite import PairTask, load_tasks, markdown_table, pair_scores, spearman, task_metrics

rng = np.random.default_rng(0)


@pytest.mark.parametrize("x, y", [
    (np.array([1, 2, 2, 3, 3, 3, 0]), np.array([0, 0, 1, 1, 1, 0, 0])),       # ties on both sides
    (rng.integers(0, 6, 300).astype(float), rng.normal(size=300)),              # STS-like 0..5 labels
    (rng.integers(0, 2, 500).astype(float), rng.integers(0, 50, 500) / 7),     # binary labels, tied scores
])
def test_spearman_matches_scipy(x, y):
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)


def test_seed_protocol_is_the_max_of_four_direct_computations():
    a, b = rng.normal(size=(200, 16)), rng.normal(size=(200, 16))
    labels = rng.integers(0, 6, 200).astype(float)
    direct = {
        "cosine": [x @ y / np.linalg.norm(x) / np.linalg.norm(y) for x, y in zip(a, b)],
        "manhattan": [-np.abs(x - y).sum() for x, y in zip(a, b)],
        "euclidean": [-np.linalg.norm(x - y) for x, y in zip(a, b)],
        "dot": [x @ y for x, y in zip(a, b)],
    }
    expected = {k: 100 * spearmanr(v, labels).statistic for k, v in direct.items()}
    got = task_metrics(a, b, labels)
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, abs=1e-9)
    assert got["seed"] == pytest.approx(max(expected.values()), abs=1e-9)
    assert set(pair_scores(a, b)) == {"cosine", "manhattan", "euclidean", "dot"}


def test_same_numbers_as_sentence_transformers_evaluator(tiny_bert):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator

    first, second = ["我爱你", "今天下雨", "他在跑步", "猫在睡觉", "一个男人"] * 4, ["我喜欢你", "天气很好", "他在走路", "狗在叫", "一个女人"] * 4
    labels = rng.integers(0, 6, 20) / 5
    vectors = {s: rng.normal(size=8).astype(np.float32) for s in first + second}
    evaluator = EmbeddingSimilarityEvaluator(first, second, labels.tolist(),
                                             similarity_fn_names=["cosine", "manhattan", "euclidean", "dot"])
    evaluator.embed_inputs = lambda model, sentences, **kw: np.stack([vectors[s] for s in sentences])
    theirs = evaluator(SentenceTransformer(str(tiny_bert), device="cpu"))
    ours = task_metrics(np.stack([vectors[s] for s in first]), np.stack([vectors[s] for s in second]), labels)
    for fn in ("cosine", "manhattan", "euclidean", "dot"):
        assert ours[fn] == pytest.approx(100 * theirs[f"{evaluator.name}spearman_{fn}" if evaluator.name else f"spearman_{fn}"], abs=1e-6)
    assert ours["seed"] == pytest.approx(100 * theirs["spearman_max"], abs=1e-6)


@pytest.mark.parametrize("content, message", [
    (b"a\tb\t1\nc\td\n", ":2: expected 3 tab-separated columns, found 2"),
    (b"a\tb\t1\nc\td\thigh\n", ":2: label 'high' is not a number"),
    (b"", "no sentence pairs"),
    (b"a\tb\t1\n\xff\xfe\tc\t0\n", ":2: not UTF-8"),
    (b"a\tb\tnan\n", ":1: label 'nan' is not finite"),
])
def test_malformed_data_names_file_and_line(tmp_path, content, message):
    path = tmp_path / "task.tsv"
    path.write_bytes(content)
    with pytest.raises(ZhembedError, match=f"{path}{message}" if message.startswith(":") else message):
        PairTask.load(path)


def test_missing_data_says_how_to_pass_it(tmp_path, monkeypatch):
    monkeypatch.setattr("zhembed.eval.suite.default_data_dir", lambda: None)
    with pytest.raises(ZhembedError, match="--data"):
        load_tasks(None, None, {})
    with pytest.raises(ZhembedError, match="not found"):
        load_tasks(tmp_path, ["csts_dev"], {})


def test_markdown_gap_row():
    models = [{"model": "a", "tasks": {"t": {"cosine": 80.0, "seed": 81.0}}, "avg": {"cosine": 80.0, "seed": 81.0}},
              {"model": "b", "tasks": {"t": {"cosine": 78.5, "seed": 80.0}}, "avg": {"cosine": 78.5, "seed": 80.0}}]
    table = markdown_table(models, "cosine")
    assert "| t | avg |" in table and "| Gap | -1.50 | -1.50 |" in table


def _cli(monkeypatch, capsys, *args):
    from zhembed.cli import main

    monkeypatch.setattr(sys, "argv", ["zhembed", *map(str, args)])
    try:
        main()
    except SystemExit as e:
        assert not e.code, capsys.readouterr().err
    return capsys.readouterr().out


def test_eval_and_bench_commands(monkeypatch, capsys, tiny_bert, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    pairs = "\n".join(f"{a}\t{b}\t{i % 6}" for i, (a, b) in enumerate(zip("我你他她它们的是了不在有人这中大来上国个到说为子和地" * 2,
                                                                        "好坏高低多少快慢远近新旧长短冷热明暗大小上下左右前后" * 2)))
    (data / "csts_dev.tsv").write_text(pairs + "\n", encoding="utf-8")
    extra = tmp_path / "extra.tsv"
    extra.write_text("一个\t两个\t1\n三个\t四个\t0\n", encoding="utf-8")
    out = _cli(monkeypatch, capsys, "eval", tiny_bert, tiny_bert, "--data", data, "--tasks", "csts_dev",
               "--task", f"mine={extra}", "--json", tmp_path / "e.json", "--markdown", tmp_path / "e.md",
               "--plot", tmp_path / "e.png")
    doc = json.loads((tmp_path / "e.json").read_text())
    assert set(doc["models"][0]["tasks"]) == {"csts_dev", "mine"} and "versions" in doc and "date" in doc
    assert doc["models"][0]["tasks"]["csts_dev"]["pairs"] == 52 and "| Gap |" in out
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
    _cli(monkeypatch, capsys, "eval", tiny_bert, "--data", data, "--tasks", "csts_dev", "--dimensions", "32,16,8",
         "--json", tmp_path / "d.json")
    rows = json.loads((tmp_path / "d.json").read_text())["models"]
    assert [r["model"] for r in rows] == [f"{tiny_bert} @{d}" for d in (32, 16, 8)]
    assert rows[0]["tasks"]["csts_dev"] == doc["models"][0]["tasks"]["csts_dev"]  # full size: the plain evaluation

    for name in ("csts_test", "afqmc_dev", "lcqmc_dev", "bqcorpus_dev", "pawsx_dev", "xiaobu_dev"):
        (data / f"{name}.tsv").write_text(pairs + "\n", encoding="utf-8")
    out = _cli(monkeypatch, capsys, "bench", tiny_bert, tiny_bert, "--data", data, "--sentences", 40,
               "--repeats", 1, "--json", tmp_path / "b.json")
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["models"][1]["throughput_ratio"] > 0 and doc["models"][0]["latency_ms"] > 0 and "cost (s)" in out


def test_write_report_writes_json_and_markdown_beside_each_other(tmp_path, capsys):
    from zhembed.eval.speed import write_report

    write_report(tmp_path / "new" / "bench", {"模型": "zhembed", "ratio": 1.5}, "| 模型 | ratio |\n")
    assert json.loads((tmp_path / "new" / "bench.json").read_text(encoding="utf-8")) == {"模型": "zhembed", "ratio": 1.5}
    assert (tmp_path / "new" / "bench.md").read_text(encoding="utf-8") == "| 模型 | ratio |\n"
    assert "| 模型 | ratio |" in capsys.readouterr().out
