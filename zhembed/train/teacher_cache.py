"""The teacher's embeddings of a corpus, computed once, cached as fp16 on disk, resumable chunk by chunk."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from ..atomic import write_text_atomic
from ..runtime import Encoder

CHUNK = 2048
TEACHER_MAX_LENGTH = 256  # the length distillation caches its targets at; fine-tuning reuses that cache


def _key(teacher: Path, sentences: list[str], max_length: int) -> str:
    h = hashlib.sha256(f"{Path(teacher).resolve()}|{max_length}|{len(sentences)}".encode())
    for s in sentences:
        h.update(s.encode("utf-8") + b"\n")
    return h.hexdigest()[:16]


def teacher_embeddings(teacher: Path, sentences: list[str], cache_dir: Path, max_length: int = 256,
                       batch_size: int = 32, log=print, threads: int | None = None) -> np.ndarray:
    """[len(sentences), dim] fp16 mean-pooled (unnormalized) teacher vectors; resumes a partial cache."""
    cache = Path(cache_dir) / f"teacher-{_key(teacher, sentences, max_length)}"
    cache.mkdir(parents=True, exist_ok=True)
    state_file, data_file = cache / "state.json", cache / "embeddings.f16"
    done = json.loads(state_file.read_text())["done"] if state_file.exists() else 0
    if done >= len(sentences):
        return _open(data_file, state_file, "r")
    encoder = Encoder.load(teacher, num_threads=threads)  # its ONNX export when it has one
    if not state_file.exists():
        write_text_atomic(state_file, json.dumps({"done": 0, "n": len(sentences), "dim": encoder.dim, "teacher": str(teacher)}))
    emb = _open(data_file, state_file, "r+" if data_file.exists() else "w+")
    start_time, start = time.time(), done
    for lo in range(done, len(sentences), CHUNK):
        hi = min(lo + CHUNK, len(sentences))
        emb[lo:hi] = encoder.encode(sentences[lo:hi], batch_size=batch_size, max_length=max_length, normalize=False)
        emb.flush()
        write_text_atomic(state_file, json.dumps({**json.loads(state_file.read_text()), "done": hi}))
        rate = (hi - start) / (time.time() - start_time)
        log(f"teacher embeddings {hi}/{len(sentences)} ({rate:.0f} sentences/s, "
            f"{(len(sentences) - hi) / rate / 60:.1f} min left)")
    emb.flush()
    return _open(data_file, state_file, "r")


def _open(data_file: Path, state_file: Path, mode: str) -> np.ndarray:
    state = json.loads(state_file.read_text())
    return np.memmap(data_file, dtype=np.float16, mode=mode, shape=(state["n"], state["dim"]))
