"""A searchable index of a user's texts: a faiss index (exact, or HNSW for large corpora) plus ids and texts.

Layout of an index directory:

    DIR/CURRENT              the name of the live generation, replaced atomically
    DIR/gen-000001/          meta.json, vectors.faiss, records.jsonl (one {"id", "text"} per vector)
    DIR/.partial/            an interrupted build: work.json and encoded chunks (chunks/000000.npy, ...)

A build encodes the input in fixed chunks, each written atomically, so a killed build resumes at the first
missing chunk and produces the same vectors. Only when every chunk exists is a new generation written and
CURRENT switched to it, so a reader never sees a half-written index.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ZhembedError
from ..runtime import Encoder
from ..textio import Records

EXACT_LIMIT = 20_000  # below this many vectors, `ann="auto"` searches exactly
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128
CHUNK = 4096


@dataclass
class Hit:
    id: str
    text: str
    score: float


def _faiss():
    import faiss

    return faiss


def make_ann(vectors: np.ndarray, ann: str = "auto"):
    """A faiss inner-product index over normalized vectors: flat (exact) or HNSW."""
    faiss = _faiss()
    if ann not in ("auto", "exact", "hnsw"):
        raise ZhembedError(f"unknown --ann {ann!r}; choose auto, exact or hnsw")
    if ann == "exact" or (ann == "auto" and len(vectors) < EXACT_LIMIT):
        index = faiss.IndexFlatIP(vectors.shape[1])
    else:
        index = faiss.IndexHNSWFlat(vectors.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


class Index:
    """Vectors, ids and texts of a corpus, searchable by query text.

    >>> index = Index.load("my-index")
    >>> index.search(["花呗怎么还款"], k=3)[0][0].text
    """

    def __init__(self, path: Path, meta: dict, ann, ids: list[str], texts: list[str], encoder=None):
        self.path, self.meta, self.ann, self.ids, self.texts = path, meta, ann, ids, texts
        self._encoder = encoder

    @classmethod
    def load(cls, path: str | Path, encoder=None) -> Index:
        """Open the live generation of an index directory; `encoder` overrides the model it was built with."""
        gen, meta = _live(Path(path))
        ids, texts = _read_records(gen / "records.jsonl")
        ann = _faiss().read_index(str(gen / "vectors.faiss"))
        if encoder is not None and encoder.dim != meta["dim"]:
            raise ZhembedError(f"the model's dimension {encoder.dim} differs from the index's {meta['dim']}")
        return cls(Path(path), meta, ann, ids, texts, encoder)

    def __len__(self) -> int:
        return self.ann.ntotal

    @property
    def encoder(self):
        if self._encoder is None:
            self._encoder = load_encoder(self.meta["model"], self.meta["backend"])
        return self._encoder

    def vectors(self) -> np.ndarray:
        return self.ann.reconstruct_n(0, self.ann.ntotal)

    def search(self, queries: str | list[str], k: int = 10) -> list[list[Hit]]:
        """The k nearest texts of each query, best first (cosine similarity)."""
        single = isinstance(queries, str)
        vectors = self.encoder.encode([queries] if single else queries, max_length=self.meta["max_length"])
        return self.search_vectors(vectors, k)

    def search_vectors(self, vectors: np.ndarray, k: int = 10) -> list[list[Hit]]:
        if k < 1:
            raise ZhembedError(f"k must be at least 1, got {k}")
        scores, rows = self.ann.search(np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32), min(k, len(self)))
        return [[Hit(self.ids[r], self.texts[r], float(s)) for s, r in zip(srow, rrow) if r >= 0]
                for srow, rrow in zip(scores, rows)]


def load_encoder(model: str | None, backend: str = "auto") -> Encoder:
    """The encoder an index was built with (None: the default model)."""
    return Encoder.load(model, backend="torch" if backend == "torch" else "auto")


def read_meta(path: str | Path) -> dict:
    """The live generation's meta.json: model, backend, dimension, count... (without loading vectors)."""
    return _live(Path(path))[1]


def _live(path: Path) -> tuple[Path, dict]:
    gen = live_generation(path)
    if gen is None:
        raise ZhembedError(f"{path} is not a zhembed index (no CURRENT file); build one with `zhembed index build`")
    return gen, json.loads((gen / "meta.json").read_text(encoding="utf-8"))


def live_generation(path: Path) -> Path | None:
    current = path / "CURRENT"
    return path / current.read_text(encoding="utf-8").strip() if current.exists() else None


def _read_records(path: Path) -> tuple[list[str], list[str]]:
    ids, texts = [], []
    with path.open(encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            ids.append(record["id"])
            texts.append(record["text"])
    return ids, texts


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def encode_chunks(records: Records, encoder, work: Path, fingerprint: str, batch_size: int, max_length: int,
                  show_progress: bool = True) -> np.ndarray:
    """Vectors of all records, encoded CHUNK texts at a time into `work`; chunks already there are reused."""
    from tqdm.auto import tqdm

    manifest = work / "work.json"
    if manifest.exists() and json.loads(manifest.read_text(encoding="utf-8")).get("fingerprint") != fingerprint:
        print(f"zhembed: {work} belongs to another input or model; starting over", file=sys.stderr)
        shutil.rmtree(work)
    (work / "chunks").mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"fingerprint": fingerprint}), encoding="utf-8")
    n = len(records.texts)
    paths = [work / "chunks" / f"{i:06d}.npy" for i in range(-(-n // CHUNK))]
    done = sum(CHUNK if i < len(paths) - 1 else n - i * CHUNK for i, p in enumerate(paths) if p.exists())
    with tqdm(total=n, initial=done, desc="index", unit="text", disable=not show_progress) as bar:
        for i, path in enumerate(paths):
            if path.exists():
                continue
            texts = records.texts[i * CHUNK:(i + 1) * CHUNK]
            _atomic_save(path, encoder.encode(texts, batch_size=batch_size, max_length=max_length, show_progress=False))
            bar.update(len(texts))
    return np.concatenate([np.load(p) for p in paths])


def fingerprint(records: Records, model: str | None, backend: str, max_length: int) -> str:
    h = hashlib.sha256(json.dumps([model, backend, max_length, CHUNK]).encode())
    for text in records.texts:
        h.update(text.encode("utf-8") + b"\0")
    return h.hexdigest()[:16]


def write_index(path: Path, meta: dict, vectors: np.ndarray, ids: list[str], texts: list[str], ann: str,
                encoder=None) -> Index:
    """Write a new generation and switch CURRENT to it atomically; older generations are then removed."""
    path.mkdir(parents=True, exist_ok=True)
    old = live_generation(path)
    number = int(old.name.split("-")[1]) + 1 if old else 1
    gen = path / f"gen-{number:06d}"
    shutil.rmtree(gen, ignore_errors=True)
    gen.mkdir()
    index = make_ann(vectors, ann)
    _faiss().write_index(index, str(gen / "vectors.faiss"))
    with (gen / "records.jsonl").open("w", encoding="utf-8") as f:
        for id_, text in zip(ids, texts):
            f.write(json.dumps({"id": id_, "text": text}, ensure_ascii=False) + "\n")
    meta = {**meta, "count": len(vectors), "ann": ann, "faiss_index": type(index).__name__}
    (gen / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp = path / "CURRENT.tmp"
    tmp.write_text(gen.name, encoding="utf-8")
    os.replace(tmp, path / "CURRENT")
    for stale in path.glob("gen-*"):
        if stale != gen:
            shutil.rmtree(stale, ignore_errors=True)
    return Index(path, meta, index, ids, texts, encoder)


def build_index(records: Records, out: Path, encoder, model: str | None, source: str, ann: str = "auto",
                batch_size: int = 64, max_length: int = 128, append: bool = False, show_progress: bool = True) -> Index:
    """Encode `records` and write (or, with `append`, extend) the index at `out`; resumable after a kill."""
    out = Path(out)
    previous = Index.load(out, encoder) if append else None
    if not append and live_generation(out) is not None:
        raise ZhembedError(f"{out} already holds an index; use `zhembed index add` to extend it, or another --out")
    if previous is not None:
        model, max_length = previous.meta["model"], previous.meta["max_length"]
    work = out / ".partial"
    key = fingerprint(records, model, encoder.backend.name, max_length) + (f"+{len(previous)}" if previous else "")
    vectors = encode_chunks(records, encoder, work, key, batch_size, max_length, show_progress)
    start = len(previous) if previous else 0
    given = records.ids or [None] * len(records.texts)
    ids = [i if i is not None else str(start + n) for n, i in enumerate(given)]
    sources = [source]
    if previous is not None:
        vectors = np.concatenate([previous.vectors(), vectors])
        ids, sources = previous.ids + ids, previous.meta["sources"] + sources
        texts = previous.texts + records.texts
    else:
        texts = records.texts
    meta = {"format": 1, "model": model, "backend": encoder.backend.name, "dim": int(vectors.shape[1]),
            "max_length": max_length, "sources": sources}
    index = write_index(out, meta, vectors, ids, texts, previous.meta["ann"] if previous else ann, encoder)
    shutil.rmtree(work, ignore_errors=True)
    return index
