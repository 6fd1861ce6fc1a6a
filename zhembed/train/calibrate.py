"""Fit the calibration of a model: isotonic regression of match labels on cosine, over the validation pairs
carved from the training files (the same seeded share fine-tuning held out), written as calibration.json.

The Brier score and the expected calibration error are reported before (the raw cosine read as a
probability, clipped to [0, 1]) and after, each by two-fold cross-fitting: fitted on one half of the pairs,
measured on the other, and the other way round. The stored map is then fitted on all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ZhembedError, require
from ..modeldir import write_calibration
from ..progress import Log
from ..runtime import Encoder
from ..runtime.calibration import Calibration
from .finetune import load_dataset, split_validation

MAX_KNOTS = 200


@dataclass
class CalibrateConfig:
    model: str
    train: list[str]              # the fine-tuning files; their binary (0/1) held-out pairs are used
    val_fraction: float = 0.03    # as fine-tuning's
    seed: int = 42                # as fine-tuning's
    max_length: int = 256         # as `similarity` encodes


def validation_pairs(cfg: CalibrateConfig) -> tuple[list[str], list[str], np.ndarray, list[str]]:
    """(first, second, labels, names of the files used) of the held-out pairs of every 0/1 file."""
    first, second, labels, names = [], [], [], []
    for path in cfg.train:
        ds = load_dataset(Path(path))
        if ds.kind != "cosent" or not set(np.unique(ds.labels)) <= {0.0, 1.0}:
            continue
        held = split_validation(ds, cfg.val_fraction, cfg.seed)[1]
        first += [a for a, _ in held.rows]
        second += [b for _, b in held.rows]
        labels.append(held.labels)
        names.append(ds.name)
    if not names:
        raise ZhembedError("no file of --train has 0/1 labels: calibration needs matching and non-matching pairs")
    return first, second, np.concatenate(labels), names


def fit(cosine: np.ndarray, labels: np.ndarray) -> Calibration:
    """Isotonic regression of the labels on the cosine, thinned to at most MAX_KNOTS knots."""
    require("train", "zhembed calibrate", ("sklearn",))
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(cosine, labels)
    x, y = iso.X_thresholds_, iso.y_thresholds_
    keep = np.unique(np.linspace(0, len(x) - 1, min(len(x), MAX_KNOTS)).round().astype(int))
    return Calibration(np.asarray(x[keep], np.float64), np.maximum.accumulate(np.asarray(y[keep], np.float64)))


def brier(p: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean((p - labels) ** 2))


def expected_calibration_error(p: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """The bin-size-weighted mean |accuracy - confidence| over equal-width probability bins."""
    which = np.minimum((p * bins).astype(int), bins - 1)
    return float(sum(abs(labels[which == b].mean() - p[which == b].mean()) * (which == b).mean()
                     for b in range(bins) if (which == b).any()))


def cross_fitted(cosine: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """Each pair's calibrated probability from the map fitted on the other half."""
    half = np.random.default_rng(seed).permutation(len(cosine)) % 2 == 0
    p = np.empty(len(cosine), np.float64)
    for part in (half, ~half):
        p[part] = fit(cosine[~part], labels[~part])(cosine[part])
    return p


def calibrate(cfg: CalibrateConfig, log: Log = print) -> dict:
    """Fit, report and write calibration.json into the model directory; returns what it wrote."""
    first, second, labels, names = validation_pairs(cfg)
    if len(np.unique(labels)) < 2:
        raise ZhembedError("the validation pairs are all of one label: calibration needs both")
    encoder = Encoder.load(cfg.model)
    log(f"calibrating on {len(labels)} validation pairs of {', '.join(names)} ({encoder.backend.name})")
    a = encoder.encode(first, batch_size=64, max_length=cfg.max_length)
    b = encoder.encode(second, batch_size=64, max_length=cfg.max_length)
    cosine = (a * b).sum(1).astype(np.float64)
    raw, calibrated = np.clip(cosine, 0, 1), cross_fitted(cosine, labels, cfg.seed)
    report = {"brier_before": brier(raw, labels), "brier_after": brier(calibrated, labels),
              "ece_before": expected_calibration_error(raw, labels),
              "ece_after": expected_calibration_error(calibrated, labels)}
    final = fit(cosine, labels)
    data = {"method": "isotonic", "cosine": final.cosine.tolist(), "probability": final.probability.tolist(),
            "fitted_on": {"files": names, "pairs": int(len(labels)), "val_fraction": cfg.val_fraction,
                          "seed": cfg.seed, "max_length": cfg.max_length},
            "validation": {k: round(v, 6) for k, v in report.items()}}
    write_calibration(Path(cfg.model), data)
    log("Brier {brier_before:.4f} -> {brier_after:.4f}, ECE {ece_before:.4f} -> {ece_after:.4f} "
        "(cross-fitted on the validation pairs)".format(**report))
    return data
