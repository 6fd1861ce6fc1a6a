"""A searchable index of a user's texts: a faiss index (exact, or HNSW for large corpora) plus ids and texts.

Layout of an index directory:

    DIR/CURRENT              the name of the live generation, replaced atomically
    DIR/gen-000001/          meta.json, vectors.faiss (fp32, int8 or binary), vectors.npy (the exact vectors
                             of int8 and binary indexes, for rescoring), records.jsonl + records.offsets.npy
    DIR/.partial/            an interrupted build: work.json and encoded chunks (chunks/000000.npy, ...)
    DIR/.lock                held by the one writer at a time (build or add); others wait for it

A build encodes the input in fixed chunks, each written atomically, so a killed build resumes at the first
missing chunk and produces the same vectors. Only when every chunk exists is a new generation written,
fsynced, and CURRENT switched to it, so a reader never sees a half-written index. The generation before the
live one is kept, so a reader that read CURRENT just before a switch still finds its files; older ones go.
Writers take DIR/.lock, so two `add`s run one after the other and neither loses texts.
"""

from __future__ import annotations

import fcntl
import json
import re
import shutil
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..atomic import write_text_atomic
from ..errors import ZhembedError
from ..runtime import Encoder
from ..runtime.chunked import encode_resumable, fingerprint
from ..runtime.pooling import truncate
from ..textio import Records
from . import ann as ann_lib
from . import records as record_store
from .ann import Ann
from .records import Column, RecordFile

CHUNK = 4096
PASSAGES_PER_HIT = 8  # in an index of passages, candidates per document hit (several may share a document)


GENERATION = re.compile(r"gen-\d{6}")
KEEP_GENERATIONS = 2  # the live one and the one before it


@dataclass
class Hit:
    """A text of the index; for an index of passages (--chunk), the best passage of a document, with its
    character offsets in the document."""

    id: str | int
    text: str
    score: float
    start: int | None = None
    end: int | None = None


class Index:
    """Vectors, ids and texts of a corpus, searchable by query text.

    >>> index = Index.load("my-index")
    >>> index.search(["花呗怎么还款"], k=3)[0][0].text
    """

    def __init__(self, path: Path, meta: dict, ann: Ann, records: RecordFile, encoder=None):
        self.path, self.meta, self.ann, self.records = path, meta, ann, records
        self._encoder, self._reranker = encoder, None

    @classmethod
    def load(cls, path: str | Path, encoder=None) -> Index:
        """Open the live generation of an index directory; `encoder` must be the model it was built with."""
        for attempt in range(3):  # a writer may switch generations between reading CURRENT and the files
            gen, meta = _live(Path(path))
            try:
                records = RecordFile(gen)
                index = ann_lib.read(gen, meta.get("precision", "fp32"))
                break
            except FileNotFoundError:
                if attempt == 2 or live_generation(Path(path)) == gen:
                    raise ZhembedError(f"{gen} is incomplete (a file is missing); rebuild the index") from None
        if not len(records) == index.ntotal == meta.get("count", index.ntotal):
            raise ZhembedError(f"{gen} is inconsistent: {index.ntotal} vectors, {len(records)} records, meta count "
                               f"{meta.get('count')}; rebuild the index")
        if encoder is not None:
            check_encoder(meta, encoder)
        return cls(Path(path), meta, index, records, encoder)

    def __len__(self) -> int:
        return self.ann.ntotal

    @property
    def ids(self) -> Column:
        return Column(self.records, 0)

    @property
    def texts(self) -> Column:
        return Column(self.records, 1)

    @property
    def dimensions(self) -> int:
        """The size of the stored vectors: the model's, or the prefix chosen with --dimensions."""
        return self.meta.get("dimensions", self.meta["dim"])

    @property
    def encoder(self):
        if self._encoder is None:
            self._encoder = check_encoder(self.meta, load_encoder(self.meta["model"], self.meta["backend"]))
        return self._encoder

    def vectors(self) -> np.ndarray:
        return self.ann.vectors()

    @property
    def reranker(self):
        """A cascade index's second-stage model (built with --first-stage): the transformer that re-scores."""
        rerank = self.meta["rerank"]
        if self._reranker is None:
            self._reranker = check_encoder(rerank, load_encoder(rerank["model"], rerank["backend"]))
        return self._reranker

    def search(self, queries: str | list[str], k: int = 10, rerank: int = 100) -> list[list[Hit]]:
        """The k nearest texts of each query, best first (cosine similarity). In a cascade index (built with a
        first-stage model), the first stage finds `rerank` candidates and the second-stage model re-scores
        them (0: no re-scoring)."""
        texts = [queries] if isinstance(queries, str) else list(queries)
        vectors = self.encoder.encode(texts, max_length=self.meta["max_length"])
        if not self.meta.get("rerank") or rerank == 0:
            return self.search_vectors(vectors, k)
        return self._rescored(texts, self.search_vectors(vectors, max(k, rerank)), k)

    def _rescored(self, queries: list[str], candidates: list[list[Hit]], k: int) -> list[list[Hit]]:
        """The best k of each query's candidates by the second-stage model's cosine."""
        model, max_length = self.reranker, self.meta["max_length"]
        query_vectors = model.encode(queries, max_length=max_length)
        vectors = model.encode([h.text for hits in candidates for h in hits], max_length=max_length)
        out, start = [], 0
        for query, hits in zip(query_vectors, candidates):
            scores = vectors[start:start + len(hits)] @ query
            start += len(hits)
            out.append([replace(hits[i], score=float(scores[i])) for i in np.argsort(-scores, kind="stable")[:k]])
        return out

    def search_vectors(self, vectors: np.ndarray, k: int = 10) -> list[list[Hit]]:
        """Hits for query vectors of the model's full size (cut to the index's size here). In an index of
        passages, each document appears once, with its best passage."""
        if k < 1:
            raise ZhembedError(f"k must be at least 1, got {k}")
        queries = truncate(np.atleast_2d(vectors), self.dimensions)
        wide = k * PASSAGES_PER_HIT if self.meta.get("chunk") else k
        scores, rows = self.ann.search(queries, wide)
        return [self._hits(srow, rrow, k) for srow, rrow in zip(scores, rows)]

    def _hits(self, scores: np.ndarray, rows: np.ndarray, k: int) -> list[Hit]:
        hits, seen = [], set()
        for score, row in zip(scores, rows):
            if row < 0:
                continue
            id_, text, start, end = self.records.record(int(row))
            key = (type(id_), id_)
            if key not in seen:
                seen.add(key)
                hits.append(Hit(id_, text, float(score), start, end))
            if len(hits) == k:
                break
        return hits


def load_encoder(model: str | None, backend: str = "auto") -> Encoder:
    """The encoder an index was built with (None: the default model)."""
    return Encoder.load(model, backend="torch" if backend == "torch" else "auto")


def check_encoder(meta: dict, encoder: Encoder) -> Encoder:
    """The encoder itself, if it is the model the index was built with; else one clear error."""
    if encoder.dim != meta["dim"]:
        raise ZhembedError(f"the model's dimension {encoder.dim} differs from the index's {meta['dim']}")
    if meta.get("model_id") and encoder.model_id != meta["model_id"]:
        raise ZhembedError(f"the index was built with another model (id {meta['model_id']}, {meta.get('model')}); "
                           f"this one is {encoder.model_id} ({encoder.path}); use that model or rebuild the index")
    return encoder


def read_meta(path: str | Path) -> dict:
    """The live generation's meta.json: model, backend, dimension, count... (without loading vectors)."""
    return _live(Path(path))[1]


def _live(path: Path) -> tuple[Path, dict]:
    gen = live_generation(path)
    if gen is None:
        raise ZhembedError(f"{path} is not a zhembed index (no CURRENT file); build one with `zhembed index build`")
    try:
        meta = json.loads((gen / "meta.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ZhembedError(f"{gen / 'meta.json'} is unreadable ({e}); rebuild the index") from None
    if not isinstance(meta, dict) or not {"dim", "model", "backend", "max_length"} <= meta.keys():
        raise ZhembedError(f"{gen / 'meta.json'} lacks the fields an index needs; rebuild the index")
    for key, kinds in META_TYPES.items():
        value = meta.get(key)
        if key in meta and (isinstance(value, bool) or not isinstance(value, kinds)
                            or (kinds is int and value <= 0)):
            raise ZhembedError(f"{gen / 'meta.json'}: {key} is {value!r:.60}, which an index cannot have; rebuild the index")
    return gen, meta


# The types of the meta fields an index reads (positive where an integer); None marks an optional model path.
META_TYPES: dict[str, type | tuple] = {"dim": int, "dimensions": int, "max_length": int, "count": int,
                                       "model": (str, type(None)), "backend": str, "model_id": (str, type(None)),
                                       "precision": str, "sources": list, "inputs": list, "rerank": dict}


def live_generation(path: Path) -> Path | None:
    """The generation CURRENT names: only a gen-NNNNNN folder inside the index, never a path elsewhere."""
    current = path / "CURRENT"
    if not current.exists():
        return None
    if not current.is_file():
        raise ZhembedError(f"{current} is not a file; rebuild the index")
    name = current.read_text(encoding="utf-8", errors="replace").strip()
    if not GENERATION.fullmatch(name) or not (path / name).is_dir():
        raise ZhembedError(f"{current} names {name[:80]!r}, not a generation of this index; rebuild the index")
    return path / name


def input_key(records: Records, model: str | None, backend: str, max_length: int) -> str:
    """The identity of one `index build`/`add` input, recorded in the index so a rerun adds nothing twice."""
    return fingerprint(records.texts, json.dumps([model, backend, max_length, CHUNK]))


def write_index(path: Path, meta: dict, vectors: np.ndarray, ids: Sequence, texts: Sequence[str], ann_kind: str,
                encoder=None, spans: Sequence[tuple[int, int]] | None = None) -> Index:
    """Write a new generation (fsynced) and switch CURRENT to it atomically; generations older than the one
    before it are then removed. The caller holds the index's writer lock."""
    path.mkdir(parents=True, exist_ok=True)
    old = live_generation(path)
    number = int(old.name.split("-")[1]) + 1 if old else 1
    gen = path / f"gen-{number:06d}"
    shutil.rmtree(gen, ignore_errors=True)
    gen.mkdir()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = ann_lib.build(vectors, meta["precision"], ann_kind)
    ann_lib.write(gen, index, meta["precision"], vectors)
    record_store.write(gen, ids, texts, spans)
    meta = {**meta, "count": len(vectors), "ann": ann_kind, "faiss_index": type(index).__name__}
    write_text_atomic(gen / "meta.json", json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    write_text_atomic(path / "CURRENT", gen.name)
    for stale in sorted(path.glob("gen-*"))[:-KEEP_GENERATIONS]:
        shutil.rmtree(stale, ignore_errors=True)
    exact = None if meta["precision"] == "fp32" else np.load(gen / "vectors.npy", mmap_mode="r")
    return Index(path, meta, Ann(index, meta["precision"], exact), RecordFile(gen), encoder)  # no re-read of the index


@contextmanager
def writer_lock(path: Path):
    """The index's one-writer lock (DIR/.lock, released by the OS if the writer dies)."""
    path.mkdir(parents=True, exist_ok=True)
    with open(path / ".lock", "a+b") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"zhembed: {path} is being written by another process; waiting for it", file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def build_index(records: Records, out: Path, encoder, model: str | None, source: str, ann: str = "auto",
                batch_size: int = 64, max_length: int = 128, append: bool = False, show_progress: bool = True,
                precision: str = "fp32", dimensions: int | None = None, chunk: bool = False,
                rerank: dict | None = None) -> Index:
    """Encode `records` and write (or, with `append`, extend) the index at `out`; resumable after a kill.
    `precision` fp32, int8 or binary; `dimensions` a prefix size of the model's vectors (Matryoshka);
    `chunk` indexes overlapping passages of long texts, and search returns each document's best passage with
    its character offsets. `rerank` ({"model", "backend", "model_id", "dim"} of a second-stage model) makes a cascade
    index: `encoder` is then the fast first stage, and search re-scores its candidates with that model.
    An `add` keeps the index's own settings. Writers of one index run one at a time."""
    out = Path(out)
    ann_lib.check_precision(precision, dimensions or encoder.dim)
    if dimensions is not None and not 8 <= dimensions <= encoder.dim:
        raise ZhembedError(f"--dimensions must be between 8 and the model's {encoder.dim}, got {dimensions}")
    with writer_lock(out):
        return _build_locked(records, out, encoder, model, source, ann, batch_size, max_length, append, show_progress,
                             precision, dimensions or encoder.dim, chunk, rerank)


def _build_locked(records: Records, out: Path, encoder, model: str | None, source: str, ann: str, batch_size: int,
                  max_length: int, append: bool, show_progress: bool, precision: str, dimensions: int,
                  chunk: bool, rerank: dict | None) -> Index:
    existing = Index.load(out, encoder) if live_generation(out) is not None else None
    if append and existing is None:
        raise ZhembedError(f"{out} is not a zhembed index (no CURRENT file); build one with `zhembed index build`")
    if existing is not None:
        model, max_length = existing.meta["model"], existing.meta["max_length"]
        precision, dimensions = existing.meta.get("precision", "fp32"), existing.dimensions
        chunk, rerank = bool(existing.meta.get("chunk")), existing.meta.get("rerank")
    work = out / ".partial"
    key = input_key(records, model, encoder.backend.name, max_length) + ("+chunk" if chunk else "")
    if existing is not None:  # a rerun of a command that completed (perhaps killed just after): nothing to do
        done = key in existing.meta.get("inputs", []) if append else existing.meta.get("inputs") == [key]
        if not done and not append:
            raise ZhembedError(f"{out} already holds an index; use `zhembed index add` to extend it, or another --out")
        if done:  # the caller sees the same generation come back
            shutil.rmtree(work, ignore_errors=True)
            return existing
    previous = existing
    documents = previous.meta.get("documents", len(previous)) if previous else 0
    given = records.ids or [None] * len(records.texts)
    ids = [i if i is not None else str(documents + n) for n, i in enumerate(given)]
    texts, spans = records.texts, None
    if chunk:  # each document becomes its passages, each passage a vector
        passages = encoder.split_long(records.texts, max_length)
        ids = [ids[n] for n, count in enumerate(passages.counts) for _ in range(count)]
        texts, spans = passages.pieces, passages.flat_spans()
    settings = json.dumps([model, encoder.backend.name, encoder.model_id, max_length])
    vectors = truncate(encode_resumable(texts, lambda part: encoder.encode(part, batch_size=batch_size, max_length=max_length,
                                                                          show_progress=False),
                                        work / "chunks", settings, CHUNK, desc="index", show_progress=show_progress),
                       dimensions)
    sources = [source]
    if previous is not None:
        vectors = np.concatenate([previous.vectors(), vectors])
        ids, sources = list(previous.ids) + ids, previous.meta["sources"] + sources
        texts = list(previous.texts) + texts
        if chunk:
            spans = list(zip(Column(previous.records, 2), Column(previous.records, 3))) + spans
    inputs = (previous.meta.get("inputs", []) if previous else []) + [key]
    meta = {"format": 2, "model": model, "backend": encoder.backend.name, "model_id": encoder.model_id,
            "dim": encoder.dim, "dimensions": dimensions, "precision": precision, "max_length": max_length,
            "chunk": chunk, "documents": documents + len(records.texts), "sources": sources, "inputs": inputs,
            **({"rerank": rerank} if rerank else {})}
    index = write_index(out, meta, vectors, ids, texts, previous.meta["ann"] if previous else ann, encoder, spans)
    shutil.rmtree(work, ignore_errors=True)
    return index
