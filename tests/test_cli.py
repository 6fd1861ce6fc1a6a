"""The zhembed command line: outputs, and one readable line with status 2 for user mistakes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from zhembed.cli import main


def run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["zhembed", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_encode_arguments_and_files(monkeypatch, capsys, tiny_bert, tmp_path):
    code, out, _ = run(monkeypatch, capsys, "encode", "你好", "再见", "-m", tiny_bert)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["text"] for r in rows] == ["你好", "再见"] and len(rows[0]["embedding"]) == 32

    lines = tmp_path / "in.txt"
    lines.write_text("你好\n\n再见\n", encoding="utf-8")
    code, _, err = run(monkeypatch, capsys, "encode", "-i", lines, "-o", tmp_path / "v.npy", "-m", tiny_bert)
    assert code == 0 and np.load(tmp_path / "v.npy").shape == (2, 32) and "wrote 2 vectors" in err  # blank lines skipped
    spaces = tmp_path / "in.jsonl"
    spaces.write_text('{"text": "你好"}\n{"text": "  "}\n', encoding="utf-8")
    code, _, err = run(monkeypatch, capsys, "encode", "-i", spaces, "-o", tmp_path / "v.npy", "-m", tiny_bert)
    assert code == 2 and "in.jsonl:2: empty text" in err
    code, _, err = run(monkeypatch, capsys, "encode", "-i", spaces, "-o", tmp_path / "v.npy", "-m", tiny_bert, "--skip-bad")
    assert code == 0 and np.load(tmp_path / "v.npy").shape == (1, 32) and "wrote 1 vectors" in err

    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"q": "你好"}\n{"q": "再见"}\n', encoding="utf-8")
    code, _, _ = run(monkeypatch, capsys, "encode", "-i", jsonl, "--text-field", "q", "-o", tmp_path / "v.jsonl",
                     "-m", tiny_bert)
    written = [json.loads(line) for line in (tmp_path / "v.jsonl").read_text(encoding="utf-8").splitlines()]
    assert code == 0 and [w["text"] for w in written] == ["你好", "再见"]


def test_similarity_and_info(monkeypatch, capsys, tiny_bert):
    code, out, _ = run(monkeypatch, capsys, "similarity", "你好", "你好", "再见", "-m", tiny_bert)
    scores = [float(line.split("\t")[0]) for line in out.splitlines()]
    assert code == 0 and len(scores) == 2 and scores[0] == pytest.approx(1, abs=1e-4)
    code, out, _ = run(monkeypatch, capsys, "info", tiny_bert)
    assert code == 0 and f"path: {tiny_bert.resolve()}" in out and "layers: 2" in out and "parameters:" in out


@pytest.mark.parametrize("args, message", [
    (["encode", "-m", "{tiny}"], "exactly one of them"),
    (["encode", "x", "-m", "/no/such/model"], "model directory not found: /no/such/model"),
    (["encode", "-i", "/no/such/file.txt", "-m", "{tiny}"], "input file not found"),
    (["encode", "-i", "{bad_utf8}", "-m", "{tiny}"], ":2: not UTF-8"),
    (["encode", "-i", "{bad_jsonl}", "-m", "{tiny}"], ":2: no string field 'text'"),
    (["encode", "-i", "{empty}", "-m", "{tiny}"], "is empty"),
    (["encode", "x", "-o", "out.csv", "-m", "{tiny}"], "must end in .npy or .jsonl"),
    (["info", "/no/such/model"], "model directory not found"),
])
def test_user_mistakes_are_one_line(monkeypatch, capsys, tiny_bert, tmp_path, args, message):
    files = {"tiny": tiny_bert, "bad_utf8": tmp_path / "bad.txt", "bad_jsonl": tmp_path / "bad.jsonl",
             "empty": tmp_path / "empty.txt"}
    files["bad_utf8"].write_bytes("好\n".encode() + b"\xff\xfe\n")
    files["bad_jsonl"].write_text('{"text": "好"}\n{"other": 1}\n', encoding="utf-8")
    files["empty"].write_text("")
    monkeypatch.chdir(tmp_path)
    code, _, err = run(monkeypatch, capsys, *[a.format(**files) for a in args])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("args, extra", [
    (["serve"], "serve"),
    (["distill", "--corpus", "corpus.txt"], "train"),
    (["index", "build", "--input", "texts.txt", "--out", "idx"], "search"),
    (["index", "build"], "search"),
    (["search", "idx", "query"], "search"),
    (["export", "--quantize", "int8"], "train"),
    (["embed-dataset", "-i", "texts.txt", "-o", "out"], "scale"),
    (["eval", "some-model"], "eval"),
    (["distill-static", "--out", "static", "--corpus", "corpus.txt"], "train"),
])
def test_a_missing_extra_is_one_line_naming_it(monkeypatch, capsys, tmp_path, args, extra):
    """As in a core install (`pip install zhembed`): none of the optional layers' libraries are there."""
    import importlib.util

    from zhembed import errors

    hidden = {m for modules in errors.EXTRAS.values() for m in modules}
    monkeypatch.setattr(errors, "find_spec", lambda name: None if name in hidden else importlib.util.find_spec(name))
    monkeypatch.chdir(tmp_path)
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("zhembed: error: ") and f"pip install 'zhembed[{extra}]'" in err, err


def test_encoding_commands_need_no_extra(monkeypatch, capsys, tmp_path):
    import importlib.util

    from zhembed import errors

    hidden = {m for modules in errors.EXTRAS.values() for m in modules}
    monkeypatch.setattr(errors, "find_spec", lambda name: None if name in hidden else importlib.util.find_spec(name))
    code, out, _ = run(monkeypatch, capsys, "similarity", "花呗怎么还款", "花呗如何还钱", "今天天气很好")
    scores = [float(line.split("\t")[0]) for line in out.splitlines()]
    assert code == 0 and scores[0] > scores[1]
    code, out, _ = run(monkeypatch, capsys, "info")
    assert code == 0 and "model_qint8.onnx" in out


def test_training_options_take_their_defaults_from_the_recipes_configs():
    from dataclasses import MISSING, fields

    import typer

    from zhembed.cli import app
    from zhembed.train.distill import DistillConfig
    from zhembed.train.finetune import FinetuneConfig
    from zhembed.train.static import StaticConfig

    commands = typer.main.get_command(app).commands
    for name, config in (("distill", DistillConfig), ("finetune", FinetuneConfig), ("distill-static", StaticConfig)):
        options = {p.name: p.default for p in commands[name].params}
        for f in fields(config):
            if f.name in options and f.default not in (MISSING, "") and options[f.name] is not None:
                assert str(options[f.name]) == str(f.default), (name, f.name, options[f.name], f.default)


def test_config_from_keeps_none_where_the_field_means_unset():
    from zhembed.cli.common import config_from
    from zhembed.scale.embed_dataset import EmbedConfig
    from zhembed.train.finetune import FinetuneConfig

    assert config_from(EmbedConfig, {"model": None, "threads": None, "batch_size": 8}) == EmbedConfig(batch_size=8)
    cfg = config_from(FinetuneConfig, {"model": "m", "out": Path("o"), "teacher": None}, train=["a.tsv"])
    assert (cfg.out, cfg.teacher, cfg.train) == ("o", "", ["a.tsv"])


def test_the_cli_loads_without_the_extras():
    """The core install has no torch, transformers, pyarrow, sklearn or fastapi: `zhembed --help` must still run."""
    blocked = ["torch", "transformers", "pyarrow", "sklearn", "fastapi", "uvicorn", "faiss", "ray", "model2vec"]
    code = ("import sys\nclass Block:\n    def find_spec(self, name, path=None, target=None):\n"
            f"        if name.split('.')[0] in {blocked!r}: raise ImportError('blocked: ' + name)\n"
            "sys.meta_path.insert(0, Block())\nfrom zhembed.cli import app\nimport typer\n"
            "typer.main.get_command(app)\nprint('ok')")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]
