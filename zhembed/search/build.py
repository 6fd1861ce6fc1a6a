"""Building and extending an index: encode the input (resumably, in chunks), write it as one new segment,
merge the newest segments, commit a generation. See search/store.py for the layout and its crash-safety.

A killed build or add resumes at its first missing chunk and produces the same vectors; a rerun of one that
completed (perhaps killed just after the switch) adds nothing.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import ZhembedError
from ..runtime import Encoder
from ..runtime.chunked import encode_resumable, fingerprint
from ..runtime.pooling import truncate
from ..textio import Records
from . import ann as ann_lib
from .index import Index, check_encoder
from .records import RecordFile
from .store import (IndexMeta, Segment, commit, live_generation, read_live, read_vectors, write_segment,
                    writer_lock)

CHUNK = 4096
MAX_SEGMENTS = 8  # beyond this, the newest two are merged whatever their sizes


@dataclass(frozen=True)
class BuildSpec:
    """How a new index is built. An add keeps the index's own settings; it uses only batch_size and
    show_progress."""

    model: str | None = None       # the model's path, recorded in the index (None: the default model)
    ann: str = "auto"              # auto, exact or hnsw (see ann.kind)
    batch_size: int = 64
    max_length: int = 128
    precision: str = "fp32"        # fp32, int8 or binary
    dimensions: int | None = None  # index a prefix of the vectors (Matryoshka); None: all of them
    chunk: bool = False            # index overlapping passages of long texts
    rerank: dict | None = None     # {"model", "backend", "model_id", "dim"} of a second-stage model: a cascade
    show_progress: bool = False


def build_index(records: Records, out: Path, encoder: Encoder, spec: BuildSpec = BuildSpec(), source: str = "",
                append: bool = False) -> Index:
    """Encode `records` and write a new index at `out`, or with `append` add them to it as a new segment.
    `encoder` encodes (in a cascade, the fast first stage). Writers of one index run one at a time."""
    out = Path(out)
    if not records.texts:
        raise ZhembedError(f"no texts to {'add to' if append else 'index in'} {out}")
    ann_lib.check_precision(spec.precision, spec.dimensions or encoder.dim)
    ann_lib.kind(spec.ann, 0)
    if spec.dimensions is not None and not 8 <= spec.dimensions <= encoder.dim:
        raise ZhembedError(f"--dimensions must be between 8 and the model's {encoder.dim}, got {spec.dimensions}")
    with writer_lock(out):
        live = read_live(out) if live_generation(out) is not None else None
        if append and live is None:
            raise ZhembedError(f"{out} is not a zhembed index (no CURRENT file); build one with `zhembed index build`")
        meta = live[1] if live else new_meta(encoder, spec)
        check_encoder(encoder, meta.dim, meta.model_id, meta.model)
        key = input_key(records, meta.model, encoder.backend.name, meta.max_length) + ("+chunk" if meta.chunk else "")
        if live is not None:
            done = key in meta.inputs if append else meta.inputs == [key]
            if not done and not append:
                raise ZhembedError(f"{out} already holds an index; use `zhembed index add` to extend it, or another --out")
            if done:  # the caller sees the same generation come back
                shutil.rmtree(out / ".partial", ignore_errors=True)
                return Index(out, live[0], meta, encoder)
        segment = _encode_segment(records, out, encoder, meta, spec)
        meta = replace(meta, segments=meta.segments + (segment,), documents=meta.documents + len(records.texts),
                       sources=meta.sources + [source], inputs=meta.inputs + [key])
        meta = merge_newest(out, meta)
        gen = commit(out, meta)
        shutil.rmtree(out / ".partial", ignore_errors=True)
        return Index(out, gen, meta, encoder)


def new_meta(encoder: Encoder, spec: BuildSpec) -> IndexMeta:
    return IndexMeta(model=spec.model, backend=encoder.backend.name, dim=encoder.dim, max_length=spec.max_length,
                     model_id=encoder.model_id, dimensions=spec.dimensions or encoder.dim, precision=spec.precision,
                     ann=spec.ann, chunk=spec.chunk, rerank=spec.rerank)


def input_key(records: Records, model: str | None, backend: str, max_length: int) -> str:
    """The identity of one `index build`/`add` input, recorded in the index so a rerun adds nothing twice."""
    return fingerprint(records.texts, json.dumps([model, backend, max_length, CHUNK]))


def _encode_segment(records: Records, out: Path, encoder, meta: IndexMeta, spec: BuildSpec) -> Segment:
    given = records.ids or [None] * len(records.texts)
    ids = [i if i is not None else str(meta.documents + n) for n, i in enumerate(given)]
    texts, spans = records.texts, None
    if meta.chunk:  # each document becomes its passages, each passage a vector
        passages = encoder.split_long(records.texts, meta.max_length)
        ids = [ids[n] for n, count in enumerate(passages.counts) for _ in range(count)]
        texts, spans = passages.pieces, passages.flat_spans()
    settings = json.dumps([meta.model, encoder.backend.name, encoder.model_id, meta.max_length])
    encode = lambda part: encoder.encode(part, batch_size=spec.batch_size, max_length=meta.max_length,  # noqa: E731
                                         show_progress=False)
    vectors = encode_resumable(texts, encode, out / ".partial" / "chunks", settings, CHUNK, desc="index",
                               show_progress=spec.show_progress)
    return write_segment(out, truncate(vectors, meta.dimensions), ids, texts, spans, meta.precision, meta.ann)


def merge_newest(out: Path, meta: IndexMeta) -> IndexMeta:
    """Merge the newest two segments while the older is no larger than the newer, or while there are more than
    MAX_SEGMENTS: the sizes then grow geometrically, so each text is rewritten about log2(total / added) times."""
    segments = list(meta.segments)
    while len(segments) > 1 and (segments[-2].count <= segments[-1].count or len(segments) > MAX_SEGMENTS):
        files = [RecordFile(out / s.name) for s in segments[-2:]]
        rows = [records.record(i) for records in files for i in range(len(records))]
        vectors = np.concatenate([read_vectors(out, s, records, meta.precision).vectors()
                                  for s, records in zip(segments[-2:], files)])
        spans = [(r[2], r[3]) for r in rows] if meta.chunk else None
        segments[-2:] = [write_segment(out, vectors, [r[0] for r in rows], [r[1] for r in rows], spans,
                                       meta.precision, meta.ann)]
    return replace(meta, segments=tuple(segments))
