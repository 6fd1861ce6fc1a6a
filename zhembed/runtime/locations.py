"""Where models live: the default model shipped inside the package, and zhembed's home folder.

The runtime only finds models; it never builds one. The shipped directory carries its int8 ONNX export,
made by scripts/build_default_model.sh, so the first `Encoder.load()` runs at once.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ZhembedError
from ..modeldir import INT8_FILE, ONNX_DIR, WEIGHTS_FILE, resolve_model_dir

SHIPPED_MODELS = Path(__file__).resolve().parents[1] / "models"
SHIPPED_MODEL = SHIPPED_MODELS / "zhembed-small-zh"
SHIPPED_STATIC = SHIPPED_MODELS / "zhembed-static-zh"


def zhembed_home() -> Path:
    """$ZHEMBED_HOME, or ~/.cache/zhembed: where zhembed writes what it converts (e.g. the imported teacher)."""
    return Path(os.environ.get("ZHEMBED_HOME") or Path.home() / ".cache" / "zhembed").expanduser()


def default_model_dir() -> Path:
    """The shipped 4-layer model, or a clear error when this installation lacks it."""
    if (SHIPPED_MODEL / ONNX_DIR / INT8_FILE).exists() or (SHIPPED_MODEL / WEIGHTS_FILE).exists():
        return SHIPPED_MODEL
    raise ZhembedError(f"this zhembed installation has no default model at {SHIPPED_MODEL}; "
                       "pass a model directory (--model DIR, or Encoder.load(DIR))")


def model_dir(path: str | Path | None) -> Path:
    """The model directory a user names: None for the default model, a shipped model's name (zhembed-small-zh,
    zhembed-static-zh) unless a directory of that name is here, or any path."""
    if path is None:
        return default_model_dir()
    shipped = SHIPPED_MODELS / str(path)
    if not Path(path).expanduser().exists() and "/" not in str(path) and (shipped / WEIGHTS_FILE).exists():
        return shipped
    return resolve_model_dir(path)
