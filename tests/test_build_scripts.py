"""The build's last steps outside the package: averaging two models (scripts/interpolate.py) and choosing among
candidates by one validation report (scripts/choose_candidate.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _run(*args: str) -> None:
    subprocess.run([sys.executable, *args], check=True, capture_output=True)


def test_an_average_has_the_mean_weights_and_its_own_run_record(tmp_path):
    from conftest import make_tiny_bert

    first, other = make_tiny_bert(tmp_path / "first"), make_tiny_bert(tmp_path / "other", seed=5)
    (first / "zhembed_run.json").write_text(json.dumps({"validation": 99.0}))  # A's own score
    _run(str(SCRIPTS / "interpolate.py"), str(first), str(other), "--alpha", "0.5", "--out", str(tmp_path / "avg"))
    a, b, avg = (load_file(str(d / "model.safetensors")) for d in (first, other, tmp_path / "avg"))
    key = next(iter(a))
    assert np.allclose(avg[key], (a[key] + b[key]) / 2, atol=1e-6)
    run = json.loads((tmp_path / "avg" / "zhembed_run.json").read_text())
    assert "validation" not in run and run["interpolated"]["alpha"] == 0.5  # not A's score passed off as its own


def _unigram_dir(path: Path, pieces: list[str], rows: np.ndarray) -> Path:
    """A model directory as far as interpolate.py reads one: config, Unigram vocabulary, two tensors."""
    from safetensors.numpy import save_file

    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    vocab = [[piece, 0.0] for piece in pieces]
    (path / "tokenizer.json").write_text(json.dumps({"model": {"type": "Unigram", "vocab": vocab}}))
    save_file({"embeddings.word_embeddings.weight": rows, "encoder.bias": np.full(2, rows.mean(), "float32")},
              str(path / "model.safetensors"))
    return path


def test_two_students_pruned_from_one_vocabulary_average_by_piece(tmp_path):
    large = _unigram_dir(tmp_path / "large", ["<s>", "的", "我", "你"], np.arange(8, dtype="float32").reshape(4, 2))
    small = _unigram_dir(tmp_path / "small", ["<s>", "你", "的"], np.array([[10, 10], [16, 16], [12, 12]], "float32"))
    _run(str(SCRIPTS / "interpolate.py"), str(large), str(small), "--alpha", "0.5", "--out", str(tmp_path / "avg"))
    rows = load_file(str(tmp_path / "avg" / "model.safetensors"))["embeddings.word_embeddings.weight"]
    assert rows.tolist() == [[5, 5.5], [7, 7.5], [4, 5], [11, 11.5]]  # 我 is only in A: its own row
    reordered = np.arange(8, 16, dtype="float32").reshape(4, 2)
    same_size = _unigram_dir(tmp_path / "same", ["<s>", "我", "的", "你"], reordered)
    _run(str(SCRIPTS / "interpolate.py"), str(large), str(same_size), "--out", str(tmp_path / "avg2"))
    rows = load_file(str(tmp_path / "avg2" / "model.safetensors"))["embeddings.word_embeddings.weight"]
    assert rows[1].tolist() == [(2 + 12) / 2, (3 + 13) / 2]  # 的: row 1 of A, row 2 of B, though the sizes agree
    backwards = subprocess.run([sys.executable, str(SCRIPTS / "interpolate.py"), str(small), str(large), "--out",
                                str(tmp_path / "x")], capture_output=True, text=True)
    assert backwards.returncode != 0 and "give the model with the larger vocabulary as A" in backwards.stderr


def test_the_validation_report_chooses_and_a_candidate_missing_from_it_stops_the_choice(tmp_path, tiny_bert):
    from conftest import make_tiny_bert

    other = make_tiny_bert(tmp_path / "other", seed=5)
    report = tmp_path / "v.json"
    report.write_text(json.dumps({str(tiny_bert): {"mean": 61.0}, str(other): {"mean": 62.5}}))
    _run(str(SCRIPTS / "choose_candidate.py"), str(tiny_bert), str(other), "--validation", str(report),
         "--out", str(tmp_path / "chosen"))
    assert json.loads((tmp_path / "chosen" / "choice.json").read_text())["chosen"] == str(other)
    missing = subprocess.run([sys.executable, str(SCRIPTS / "choose_candidate.py"), str(tiny_bert), str(tmp_path / "x"),
                              "--validation", str(report), "--out", str(tmp_path / "c2")], capture_output=True, text=True)
    assert missing.returncode != 0 and "not in the validation report" in missing.stderr


def test_a_candidate_below_the_shipped_models_agreement_is_passed_over_unless_all_are(tmp_path):
    from conftest import make_tiny_bert

    low, high, shipped = (make_tiny_bert(tmp_path / n, seed=i) for i, n in enumerate(("low", "high", "shipped")))
    validation, agreement = tmp_path / "v.json", tmp_path / "g.json"
    validation.write_text(json.dumps({str(low): {"mean": 63.0}, str(high): {"mean": 62.0}}))

    def choose(agreements: dict[Path, float], out: str) -> str:
        agreement.write_text(json.dumps({str(m): a for m, a in agreements.items()}))
        _run(str(SCRIPTS / "choose_candidate.py"), str(low), str(high), "--validation", str(validation),
             "--agreement", str(agreement), "--floor", str(shipped), "--out", str(tmp_path / out))
        return json.loads((tmp_path / out / "choice.json").read_text())["chosen"]

    assert choose({low: 70.0, high: 73.0, shipped: 72.0}, "c1") == str(high)  # the better validation, passed over
    assert choose({low: 70.0, high: 71.0, shipped: 72.0}, "c2") == str(low)   # none reaches it: validation alone


def _eval_report(model: str, splits: dict[str, float], shares: dict[int, float]) -> list[dict]:
    """`zhembed eval --dimensions` rows of one model: the 384-d splits, and the 64/32-d averages as shares."""
    avg = sum(splits.values()) / len(splits)
    return [{"model": f"{model} @{d}", "tasks": {t: {"seed": s, "cosine": s} for t, s in splits.items()},
             "avg": {"seed": avg * share, "cosine": avg * share}} for d, share in shares.items()]


def _ship_rule(tmp_path, new_splits: dict[str, float], new_agreement: float):
    old_splits = {"csts_dev": 80.0, "pawsx_dev": 5.0, "lcqmc_dev": 64.0}
    files = {"validation": {"new": {"mean": 66.0}, "old": {"mean": 65.0}},
             "seed": {"models": _eval_report("new", new_splits, {384: 1.0, 64: 0.995, 32: 0.97})
                      + _eval_report("old", old_splits, {384: 1.0, 64: 0.98, 32: 0.94})},
             "int8": {"models": [{"model": "new", "avg": {"seed": sum(new_splits.values()) / 3 - 0.1}}]},
             "agreement": {"new": new_agreement, "old": 72.0}}
    args = []
    for name, content in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(content))
        args += [f"--{name}", str(tmp_path / f"{name}.json")]
    done = subprocess.run([sys.executable, str(SCRIPTS / "ship_rule.py"), "new", "old", *args,
                           "--out", str(tmp_path / "verdict")], capture_output=True, text=True)
    return done, (json.loads((tmp_path / "verdict.json").read_text()) if done.returncode == 0 else None)


def test_the_ship_rule_ships_a_candidate_ahead_everywhere_and_holds_one_that_loses_a_split(tmp_path):
    done, report = _ship_rule(tmp_path, {"csts_dev": 81.0, "pawsx_dev": 11.0, "lcqmc_dev": 75.0}, 73.0)
    assert done.returncode == 0 and report["ship"] and "Verdict: ship" in done.stdout
    assert report["targets met"] == {"seed average": True, "pawsx_dev": True, "64-d share %": True,
                                     "32-d share %": True}
    done, report = _ship_rule(tmp_path, {"csts_dev": 76.0, "pawsx_dev": 14.0, "lcqmc_dev": 70.0}, 73.0)
    assert not report["ship"] and report["rule"]["no split 3.0 below"] is False  # csts_dev fell 4.0
    assert report["rule"]["seed average +0.5"] is True
    done, report = _ship_rule(tmp_path, {"csts_dev": 81.0, "pawsx_dev": 11.0, "lcqmc_dev": 66.0}, 71.0)
    assert not report["ship"] and report["rule"]["agreement no lower"] is False


def test_the_ship_rule_names_a_model_missing_from_a_report(tmp_path):
    done, _ = _ship_rule(tmp_path, {"csts_dev": 81.0, "lcqmc_dev": 66.0}, 73.0)  # no pawsx_dev for the candidate
    assert done.returncode == 1 and "pawsx_dev" in done.stderr
