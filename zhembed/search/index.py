"""The read side of an index: open its live generation, search it, and check the model. The on-disk layout
and its life (segments, generations, the lock) live in search/store.py; building and adding in search/build.py.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import ZhembedError
from ..runtime import Encoder
from ..runtime.pooling import truncate
from .ann import Ann
from .records import Column, RecordFile, RecordSet
from .store import IndexMeta, live_generation, read_live, read_vectors

PASSAGES_PER_HIT = 8  # in an index of passages, candidates per document hit (several may share a document)


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
    """Vectors, ids and texts of a corpus, searchable by query text; one or more segments, searched as one.

    >>> index = Index.load("my-index")
    >>> index.search(["花呗怎么还款"], k=3)[0][0].text
    """

    def __init__(self, path: Path, generation: Path, meta: IndexMeta, encoder=None):
        """The generation's records are opened now (memory-mapped), its vectors on first use."""
        self.path, self.generation, self.meta = path, generation, meta
        self.records = RecordSet([RecordFile(path / s.name) for s in meta.segments])
        self._anns: list[Ann] | None = None
        self._encoder, self._reranker = encoder, None

    @classmethod
    def load(cls, path: str | Path, encoder: Encoder | None = None) -> Index:
        """Open the live generation of an index directory; `encoder` must be the model it was built with."""
        path = Path(path)
        for attempt in range(3):  # a writer may switch generations between reading CURRENT and the files
            gen, meta = read_live(path)
            try:
                index = cls(path, gen, meta, encoder)
                index.anns  # read every segment's vectors now, inside the retry
                break
            except FileNotFoundError:
                if attempt == 2 or live_generation(path) == gen:
                    raise ZhembedError(f"{gen} is incomplete (a file is missing); rebuild the index") from None
        if encoder is not None:
            check_encoder(encoder, meta.dim, meta.model_id, meta.model)
        return index

    @property
    def anns(self) -> list[Ann]:
        """Each segment's nearest-neighbour structure, read on first use and checked against its records."""
        if self._anns is None:
            self._anns = [read_vectors(self.path, segment, records, self.meta.precision)
                          for segment, records in zip(self.meta.segments, self.records.files)]
        return self._anns

    def __len__(self) -> int:
        return len(self.records)

    @property
    def ids(self) -> Column:
        return Column(self.records, 0)

    @property
    def texts(self) -> Column:
        return Column(self.records, 1)

    @property
    def dimensions(self) -> int:
        """The size of the stored vectors: the model's, or the prefix chosen with --dimensions."""
        return self.meta.dimensions

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            meta = self.meta
            self._encoder = check_encoder(load_encoder(meta.model, meta.backend), meta.dim, meta.model_id, meta.model)
        return self._encoder

    def vectors(self) -> np.ndarray:
        parts = [ann.vectors() for ann in self.anns]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    @property
    def reranker(self) -> Encoder:
        """A cascade index's second-stage model (built with --first-stage): the transformer that re-scores."""
        rerank = self.meta.rerank
        if self._reranker is None:
            self._reranker = check_encoder(load_encoder(rerank["model"], rerank["backend"]), rerank["dim"],
                                           rerank.get("model_id"), rerank["model"])
        return self._reranker

    def search(self, queries: str | list[str], k: int = 10, rerank: int = 100) -> list[list[Hit]]:
        """The k nearest texts of each query, best first (cosine similarity). In a cascade index (built with a
        first-stage model), the first stage finds `rerank` candidates and the second-stage model re-scores
        them (0: no re-scoring)."""
        texts = [queries] if isinstance(queries, str) else list(queries)
        vectors = self.encoder.encode(texts, max_length=self.meta.max_length)
        if not self.meta.rerank or rerank == 0:
            return self.search_vectors(vectors, k)
        return self._rescored(texts, self.search_vectors(vectors, max(k, rerank)), k)

    def _rescored(self, queries: list[str], candidates: list[list[Hit]], k: int) -> list[list[Hit]]:
        """The best k of each query's candidates by the second-stage model's cosine."""
        model, max_length = self.reranker, self.meta.max_length
        query_vectors = model.encode(queries, max_length=max_length)
        vectors = model.encode([h.text for hits in candidates for h in hits], max_length=max_length)
        out, start = [], 0
        for query, hits in zip(query_vectors, candidates):
            scores = vectors[start:start + len(hits)] @ query
            start += len(hits)
            out.append([replace(hits[i], score=float(scores[i])) for i in np.argsort(-scores, kind="stable")[:k]])
        return out

    def nearest(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) of the k nearest stored vectors to each query (of the index's size) over every
        segment, best first; rows -1 where there are fewer."""
        results = [ann.search(queries, k) for ann in self.anns]
        if len(results) == 1:
            return results[0]
        scores = np.concatenate([s for s, _ in results], axis=1)
        rows = np.concatenate([np.where(r >= 0, r + start, -1) for (_, r), start in zip(results, self.records.starts)],
                              axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)

    def search_vectors(self, vectors: np.ndarray, k: int = 10) -> list[list[Hit]]:
        """Hits for query vectors of the model's full size (cut to the index's size here). In an index of
        passages, each document appears once, with its best passage."""
        if k < 1:
            raise ZhembedError(f"k must be at least 1, got {k}")
        queries = truncate(np.atleast_2d(vectors), self.dimensions)
        scores, rows = self.nearest(queries, k * PASSAGES_PER_HIT if self.meta.chunk else k)
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


def check_encoder(encoder: Encoder, dim: int, model_id: str | None, model: str | None) -> Encoder:
    """The encoder itself, if it is the model an index was built with (dim, model_id); else one clear error."""
    if encoder.dim != dim:
        raise ZhembedError(f"the model's dimension {encoder.dim} differs from the index's {dim}")
    if model_id and encoder.model_id != model_id:
        raise ZhembedError(f"the index was built with another model (id {model_id}, {model}); "
                           f"this one is {encoder.model_id} ({encoder.path}); use that model or rebuild the index")
    return encoder
