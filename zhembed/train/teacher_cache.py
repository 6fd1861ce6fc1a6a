"""The teacher's embeddings of a corpus, computed once and cached as fp16 on disk, through the runtime's one
resumable chunked encoder (runtime/chunked.py): a rerun, or a run on the first N sentences of the same shuffled
corpus, reuses every chunk already computed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..progress import Log
from ..runtime import Encoder
from ..runtime.chunked import encode_resumable

CHUNK = 2048
TEACHER_MAX_LENGTH = 256  # the length distillation caches its targets at; fine-tuning reuses that cache


def teacher_embeddings(teacher: Path, sentences: list[str], cache_dir: Path, max_length: int = 256,
                       batch_size: int = 32, log: Log = print, threads: int | None = None) -> np.ndarray:
    """[len(sentences), dim] fp16 mean-pooled (unnormalized) teacher vectors; resumes a partial cache."""
    encoder = Encoder.load(teacher, num_threads=threads)  # its ONNX export when it has one
    settings = json.dumps(["teacher", encoder.model_id, encoder.backend.name, max_length, "unnormalized"])
    log(f"teacher embeddings of {len(sentences)} sentences ({encoder.backend.name}), cached in {cache_dir}")
    return encode_resumable(sentences, lambda part: encoder.encode(part, batch_size=batch_size, max_length=max_length,
                                                                   normalize=False, show_progress=False),
                            Path(cache_dir) / "teacher", settings, CHUNK, np.float16, desc="teacher embeddings")
