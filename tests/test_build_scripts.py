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
