"""Reading a user's texts (plain lines or JSONL) and writing vectors (.npy or .jsonl), with line-numbered errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import ZhembedError


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 file, or an error naming the file (and the line of a bad byte)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ZhembedError(f"input file not found: {path}") from None
    except IsADirectoryError:
        raise ZhembedError(f"input is a directory, not a file: {path}") from None
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ZhembedError(f"{path}:{line}: not UTF-8 text") from None


def read_texts(path: Path, text_field: str | None = None) -> list[str]:
    """One text per line of a text file, or the `text_field` of each line of a .jsonl file."""
    lines = read_lines(path)
    if not lines:
        raise ZhembedError(f"{path} is empty")
    if Path(path).suffix.lower() != ".jsonl" and text_field is None:
        return lines
    field = text_field or "text"
    texts = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ZhembedError(f"{path}:{number}: not a JSON line ({e.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get(field), str):
            raise ZhembedError(f"{path}:{number}: no string field {field!r}")
        texts.append(record[field])
    return texts


def write_vectors(path: Path, texts: list[str], vectors: np.ndarray) -> None:
    """.npy (float32 matrix) or .jsonl ({"text", "embedding"} per line)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        np.save(path, vectors.astype(np.float32))
    elif suffix == ".jsonl":
        with path.open("w", encoding="utf-8") as f:
            for text, vec in zip(texts, vectors):
                f.write(json.dumps({"text": text, "embedding": [round(float(x), 6) for x in vec]}, ensure_ascii=False) + "\n")
    else:
        raise ZhembedError(f"--output must end in .npy or .jsonl, got {path.name}")
