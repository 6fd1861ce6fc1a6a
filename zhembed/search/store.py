"""The life of an index on disk: segments, generations, CURRENT, the writer lock, and the typed meta.

    DIR/CURRENT               the name of the live generation, replaced atomically
    DIR/gen-000003/meta.json  the index's settings, and the segments the generation is made of
    DIR/seg-000001/           one segment: vectors.faiss (fp32, int8 or binary), vectors.npy (the exact vectors
                              of int8 and binary, for rescoring), records.jsonl + records.offsets.npy + crc32
    DIR/.partial/             an interrupted build: encoded chunks (runtime.chunked)
    DIR/.lock                 held by the one writer at a time (build or add); others wait for it

A segment is written once, fsynced, and never changed. A build writes one; an add writes one more for the texts
it adds, so its cost grows with those texts and not with the index. The newest segments are then merged while
the one before the newest is no larger than it (a binary counter: over an index's life each text is rewritten
about log2(total / added) times, and there are about that many segments). A new generation names the segments,
and CURRENT switches to it, so a reader never sees a half-written index. The generation before the live one is
kept with its segments, so a reader that read CURRENT just before a switch still finds its files; older
generations and segments no kept generation names are removed.

An index of format 2 (before segments) kept its files in its generation folder; that folder is its one segment.
"""

from __future__ import annotations

import fcntl
import json
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..atomic import replace_dir, write_text_atomic
from ..errors import ZhembedError
from . import ann as ann_lib
from . import records as record_store
from .ann import Ann
from .records import RecordFile

FORMAT = 3
GENERATION, SEGMENT = re.compile(r"gen-\d{6}"), re.compile(r"(gen|seg)-\d{6}")
KEEP_GENERATIONS = 2  # the live one and the one before it


@dataclass(frozen=True)
class Segment:
    name: str          # a seg-NNNNNN folder of the index (or, in a format-2 index, its gen-NNNNNN folder)
    count: int         # its vectors
    faiss_index: str   # the faiss type, e.g. IndexHNSWFlat


@dataclass(frozen=True)
class IndexMeta:
    """What gen-NNNNNN/meta.json says: the model and settings the index was built with, and its segments."""

    model: str | None          # the model's path (None: the default model, whichever backend runs it)
    backend: str
    dim: int                   # the model's vector size
    max_length: int
    model_id: str | None = None
    dimensions: int = 0        # the stored vectors' size: dim, or the Matryoshka prefix chosen at build
    precision: str = "fp32"
    ann: str = "auto"          # --ann at build: each segment is exact or approximate by its own size
    chunk: bool = False        # an index of passages of long documents
    documents: int = 0
    sources: list = field(default_factory=list)
    inputs: list = field(default_factory=list)  # the identities of the inputs built and added (reruns add nothing)
    rerank: dict | None = None  # a cascade index's second-stage model
    segments: tuple[Segment, ...] = ()
    format: int = FORMAT

    @property
    def count(self) -> int:
        return sum(s.count for s in self.segments)

    @property
    def faiss_index(self) -> str:
        """The faiss type of the largest segment."""
        return max(self.segments, key=lambda s: s.count).faiss_index if self.segments else ""

    def to_json(self) -> str:
        doc = asdict(self)
        doc["segments"] = [asdict(s) for s in self.segments]
        return json.dumps({**doc, "count": self.count}, indent=2, ensure_ascii=False) + "\n"


# The types of the meta fields (positive where an integer); None marks an optional model path.
TYPES: dict[str, type | tuple] = {"dim": int, "dimensions": int, "max_length": int, "count": int, "documents": int,
                                  "model": (str, type(None)), "backend": str, "model_id": (str, type(None)),
                                  "precision": str, "ann": str, "sources": list, "inputs": list,
                                  "rerank": (dict, type(None)), "segments": list}


def parse_meta(doc: object, gen: Path) -> IndexMeta:
    """The meta of generation `gen` from its JSON, checked field by field (one clear error for a damaged one)."""
    where = gen / "meta.json"
    if not isinstance(doc, dict) or not {"dim", "model", "backend", "max_length"} <= doc.keys():
        raise ZhembedError(f"{where} lacks the fields an index needs; rebuild the index")
    for key, kinds in TYPES.items():
        value = doc.get(key)
        if key in doc and (isinstance(value, bool) or not isinstance(value, kinds) or (kinds is int and value <= 0)):
            if not (key == "documents" and value == 0):
                raise ZhembedError(f"{where}: {key} is {value!r:.60}, which an index cannot have; rebuild the index")
    if "segments" in doc:
        listed = doc["segments"]
    else:  # format 2: the generation folder holds the index's one segment
        listed = [{"name": gen.name, "count": doc.get("count", 0), "faiss_index": doc.get("faiss_index", "")}]
    try:
        segments = tuple(Segment(str(s["name"]), int(s["count"]), str(s.get("faiss_index", ""))) for s in listed)
    except (KeyError, TypeError, ValueError):
        raise ZhembedError(f"{where}: its segments are damaged; rebuild the index") from None
    if not all(SEGMENT.fullmatch(s.name) for s in segments):
        raise ZhembedError(f"{where} names a segment outside the index; rebuild the index")
    known = {k: doc[k] for k in IndexMeta.__dataclass_fields__ if k in doc and k != "segments"}
    meta = IndexMeta(**known, segments=segments)
    return replace(meta, dimensions=meta.dimensions or meta.dim,
                   documents=meta.documents if "documents" in doc else meta.count)


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


def read_live(path: Path) -> tuple[Path, IndexMeta]:
    """The live generation and its meta; one clear error if there is none or it is damaged."""
    gen = live_generation(path)
    if gen is None:
        raise ZhembedError(f"{path} is not a zhembed index (no CURRENT file); build one with `zhembed index build`")
    return gen, read_generation(gen)


def read_generation(gen: Path) -> IndexMeta:
    """The meta of one generation folder (live or not)."""
    try:
        return parse_meta(json.loads((gen / "meta.json").read_text(encoding="utf-8")), gen)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ZhembedError(f"{gen / 'meta.json'} is unreadable ({e}); rebuild the index") from None


@contextmanager
def writer_lock(path: Path) -> Iterator[None]:
    """The index's one-writer lock (DIR/.lock, released by the OS if the writer dies)."""
    path.mkdir(parents=True, exist_ok=True)
    with open(path / ".lock", "a+b") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"zhembed: {path} is being written by another process; waiting for it", file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _next_name(path: Path, prefix: str) -> str:
    numbers = [int(p.name[4:10]) for p in path.glob(f"{prefix}-*") if SEGMENT.fullmatch(p.name[:10])]
    return f"{prefix}-{max(numbers, default=0) + 1:06d}"


def write_segment(path: Path, vectors: np.ndarray, ids: list, texts: list[str], spans: list | None,
                  precision: str, ann: str) -> Segment:
    """A new segment of the index at `path` (fsynced, renamed into place whole). The caller holds the lock."""
    name = _next_name(path, "seg")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = ann_lib.build(vectors, precision, ann)
    with replace_dir(path / name) as tmp:
        ann_lib.write(tmp, index, precision, vectors)
        record_store.write(tmp, ids, texts, spans)
    return Segment(name, len(vectors), type(index).__name__)


def read_vectors(path: Path, segment: Segment, records: RecordFile, precision: str) -> Ann:
    """A segment's nearest-neighbour structure, checked against its records and its meta count;
    FileNotFoundError if a file is missing (a writer may have just removed a generation)."""
    ann = ann_lib.read(path / segment.name, precision)
    if not len(records) == ann.ntotal == segment.count:
        raise ZhembedError(f"{path / segment.name} is inconsistent: {ann.ntotal} vectors, {len(records)} records, "
                           f"meta count {segment.count}; rebuild the index")
    return ann


def commit(path: Path, meta: IndexMeta) -> Path:
    """Write a new generation naming `meta`'s segments, switch CURRENT to it, and remove what no kept
    generation needs. The caller holds the lock."""
    gen = path / _next_name(path, "gen")
    shutil.rmtree(gen, ignore_errors=True)
    gen.mkdir()
    write_text_atomic(gen / "meta.json", meta.to_json())
    write_text_atomic(path / "CURRENT", gen.name)
    kept = sorted(p for p in path.glob("gen-*") if GENERATION.fullmatch(p.name))[-KEEP_GENERATIONS:]
    needed = {p.name for p in kept}
    for g in kept:
        try:
            needed |= {s.name for s in read_generation(g).segments}
        except ZhembedError:
            pass  # a damaged older generation: its segments are not protected
    for stale in path.iterdir():
        if stale.is_dir() and (SEGMENT.fullmatch(stale.name) or stale.name.endswith((".tmp", ".old"))) \
                and stale.name not in needed:
            shutil.rmtree(stale, ignore_errors=True)
    return gen

