"""Calibrated similarity: a monotone map into [0, 1], fitted on held-out pairs; the API, the CLI and the
server agree; a directory without calibration.json says so in one line."""

from __future__ import annotations

import shutil

import httpx
import numpy as np
import pytest

from zhembed import Encoder, ZhembedError
from zhembed.train.calibrate import CalibrateConfig, calibrate, expected_calibration_error, fit

PAIRS = [("花呗怎么还款", "花呗如何还钱", 1), ("今天天气很好", "今天天气不错", 1), ("我想吃饭", "我要吃饭", 1),
         ("借呗额度", "借呗的额度", 1), ("花呗怎么还款", "今天天气很好", 0), ("我想吃饭", "借呗额度", 0),
         ("北京在哪里", "上海的天气", 0), ("信用卡逾期", "周末去爬山", 0)]


@pytest.fixture(scope="module")
def calibrated_model(tiny_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("calibration")
    model = shutil.copytree(tiny_bert, root / "model")
    train = root / "qm_train.tsv"
    train.write_text("".join(f"{a}\t{b}\t{c}\n" for a, b, c in PAIRS * 25), encoding="utf-8")
    data = calibrate(CalibrateConfig(model=str(model), train=[str(train)], val_fraction=0.5), log=lambda m: None)
    assert set(data["validation"]) == {"brier_before", "brier_after", "ece_before", "ece_after"}
    return model


def test_the_fitted_map_is_monotone_and_within_0_1():
    rng = np.random.default_rng(0)
    cosine = rng.uniform(0.5, 1.0, 2000)
    labels = (rng.uniform(size=2000) < (cosine - 0.5) * 2).astype(float)
    cal = fit(cosine, labels)
    grid = np.linspace(-1, 1.5, 1001)
    p = cal(grid)
    assert np.all(np.diff(p) >= 0) and p.min() >= 0 and p.max() <= 1
    assert expected_calibration_error(cal(cosine), labels) < expected_calibration_error(np.clip(cosine, 0, 1), labels)


def test_api_cli_and_server_agree(calibrated_model, monkeypatch, capsys):
    from test_cli import run
    from test_server import RunningServer

    from zhembed.serve.app import create_app

    enc = Encoder.load(calibrated_model)
    targets = ["花呗如何还钱", "今天天气很好", "借呗额度"]
    api = enc.similarity("花呗怎么还款", targets, calibrated=True)
    raw = enc.similarity("花呗怎么还款", targets)
    assert api.shape == (3,) and np.all((api >= 0) & (api <= 1))
    assert not np.allclose(api, raw) and np.all(np.diff(api[np.argsort(raw)]) >= 0)  # order kept
    code, out, _ = run(monkeypatch, capsys, "similarity", "花呗怎么还款", *targets, "-m", calibrated_model, "--calibrated")
    assert code == 0 and [float(line.split("\t")[0]) for line in out.splitlines()] == pytest.approx(api, abs=1e-4)
    with RunningServer(create_app(enc)) as base:
        body = httpx.post(f"{base}/similarity", json={"source": "花呗怎么还款", "targets": targets, "calibrated": True}).json()
        plain = httpx.post(f"{base}/similarity", json={"source": "花呗怎么还款", "targets": targets}).json()
    assert body["scores"] == pytest.approx(api, abs=1e-5) and plain["scores"] == pytest.approx(raw, abs=1e-5)


def test_a_model_without_calibration_says_so(tiny_bert, monkeypatch, capsys):
    from test_cli import run
    from test_server import RunningServer

    from zhembed.serve.app import create_app

    enc = Encoder.load(tiny_bert)
    with pytest.raises(ZhembedError, match="has no calibration.json"):
        enc.similarity("你好", "您好", calibrated=True)
    code, _, err = run(monkeypatch, capsys, "similarity", "你好", "您好", "-m", tiny_bert, "--calibrated")
    assert code == 2 and "has no calibration.json" in err and len(err.strip().splitlines()) == 1
    with RunningServer(create_app(enc)) as base:
        r = httpx.post(f"{base}/similarity", json={"source": "你好", "targets": ["您好"], "calibrated": True})
    assert r.status_code == 400 and "calibration.json" in r.json()["error"]["message"]
