"""Resumable chunked encoding, the one owner of it: `index build` and the teacher's corpus targets both use it.

Texts are encoded `chunk` at a time, and each chunk's vectors go to a file named by a hash of the settings and of
that chunk's texts, written atomically. So an interrupted run loses at most one chunk, a rerun with the same
settings reuses every finished chunk, and a list that shares chunk-aligned texts with an earlier one (the first
N sentences of the same shuffled corpus, say) reuses those chunks too. Changed settings or texts never reuse a
stale file: they hash to other names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..atomic import write_atomic
from ..progress import progress


def fingerprint(texts: Sequence[str], settings: str) -> str:
    """A short hash of the settings and the texts, in order: the identity of an input."""
    h = hashlib.sha256(settings.encode("utf-8"))
    for text in texts:
        h.update(text.encode("utf-8") + b"\0")
    return h.hexdigest()[:16]


def file_digest(path: Path, prefix: bytes = b"") -> str:
    """A short hash of `prefix` and the file's bytes, read a megabyte at a time."""
    h = hashlib.sha256(prefix)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()[:16]


def chunk_names(texts: Sequence[str], settings: str, chunk: int) -> list[str]:
    """The file name of each chunk: a hash of the settings and of the chunk's texts."""
    return [fingerprint(texts[lo:lo + chunk], f"{settings}\0{chunk}") + ".npy" for lo in range(0, len(texts), chunk)]


def encode_resumable(texts: Sequence[str], encode: Callable[[list[str]], np.ndarray], work: Path, settings: str,
                     chunk: int = 4096, dtype: type = np.float32, desc: str = "encode",
                     show_progress: bool = True) -> np.ndarray:
    """[len(texts), dim] vectors of `encode`, computed chunk by chunk into `work` and reused from there.
    `settings` names everything besides the texts that decides the vectors (model, backend, length, ...)."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    paths = [work / name for name in chunk_names(texts, f"{settings}|{np.dtype(dtype).name}", chunk)]
    done = sum(min(chunk, len(texts) - i * chunk) for i, p in enumerate(paths) if p.exists())
    out = np.zeros((0, 0), dtype=dtype)
    with progress(None, show_progress, total=len(texts), initial=done, desc=desc, unit="text") as bar:
        for i, path in enumerate(paths):
            if path.exists():
                part = np.load(path)
            else:
                part = np.asarray(encode(list(texts[i * chunk:(i + 1) * chunk])), dtype=dtype)
                write_atomic(path, lambda f, part=part: np.save(f, part))
                bar.update(len(part))
            if i == 0:  # one array filled chunk by chunk: no second copy of the whole corpus
                out = np.empty((len(texts), part.shape[1]), dtype=dtype)
            out[i * chunk:i * chunk + len(part)] = part
    return out
