"""Calibrated similarity: the probability that two texts match, as a monotone map of their cosine.

Raw cosines of e5-derived models are compressed (unrelated texts often score 0.7-0.8), so no threshold
carries over between models. A model directory may carry calibration.json, fitted on validation pairs
(`zhembed calibrate`): knots of an increasing piecewise-linear map from cosine to probability, which this
module applies with numpy alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..modeldir import read_calibration


@dataclass(frozen=True)
class Calibration:
    cosine: np.ndarray       # increasing knots
    probability: np.ndarray  # non-decreasing, in [0, 1]

    @classmethod
    def read(cls, model_dir: Path) -> Calibration:
        data = read_calibration(model_dir)
        return cls(np.asarray(data["cosine"], np.float64), np.asarray(data["probability"], np.float64))

    def __call__(self, cosine: np.ndarray | float) -> np.ndarray:
        """Probabilities of the same shape; outside the knots, the end values."""
        return np.interp(np.asarray(cosine, np.float64), self.cosine, self.probability).astype(np.float32)
