"""Facts about a model directory, read from its files without loading the model."""

from __future__ import annotations

import json
from pathlib import Path

from .st_format import read_sentence_config


def size_on_disk(path: Path) -> int:
    """Bytes of every file under `path`."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def count_parameters(model_dir: Path) -> int:
    """Parameters stored in model.safetensors (the unused pooler excluded)."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(Path(model_dir) / "model.safetensors"), framework="numpy") as f:
        for name in f.keys():
            if not name.startswith("pooler."):
                n = 1
                for d in f.get_slice(name).get_shape():
                    n *= d
                total += n
    return total


def model_info(model_dir: Path) -> dict:
    """path, layers, hidden size, vocabulary, parameters, size on disk and prompt."""
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    return {
        "path": str(Path(model_dir).resolve()),
        "layers": config.get("num_hidden_layers"),
        "hidden_size": config.get("hidden_size"),
        "vocab_size": config.get("vocab_size"),
        "parameters": count_parameters(model_dir),
        "size_on_disk_mb": round(size_on_disk(model_dir) / 2**20, 1),
        "prompt": read_sentence_config(model_dir).prompt,
    }
