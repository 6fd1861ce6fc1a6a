"""The nearest-neighbour structure of an index, at one of three precisions, on faiss.

- fp32: the vectors themselves, searched exactly (flat) or with HNSW;
- int8: 8-bit scalar-quantized vectors (about 0.3 of HNSW's memory with its graph), flat or HNSW;
- binary: RaBitQ codes, one bit per dimension and two floats (1/26 of the memory), flat or IVF; the query
  stays in float (4-bit), so a code's score estimates the cosine far better than a Hamming distance.

int8 and binary first take a few times k candidates, then rescore them with the exact vectors, which stay
on disk (vectors.npy, memory-mapped: only the candidates' rows are read). Indexes written before (int8 IVF,
binary Hamming flat or IVF) still load, with their own search settings.
"""

from __future__ import annotations

import math
from types import ModuleType
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import write_atomic
from ..errors import ZhembedError

PRECISIONS = ("fp32", "int8", "binary")
EXACT_LIMIT = 20_000  # below this many vectors, `ann="auto"` searches exactly
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128
INT8_HNSW_M = 16
# Per faiss type: the search settings, and the candidates per hit that are rescored with the exact vectors.
# Chosen on the 346,868-sentence corpus with 1,000 lcqmc_dev queries (docs/RESULTS.md) for recall@10 >= 0.95
# (int8) and >= 0.90 (binary) against exact search, at a p50 below fp32 HNSW's.
SEARCH = {"IndexFlatIP": ({}, 1), "IndexHNSWFlat": ({"efSearch": HNSW_EF_SEARCH}, 1),
          "IndexScalarQuantizer": ({}, 4), "IndexHNSWSQ": ({"efSearch": 128}, 2),
          "IndexRaBitQ": ({"qb": 4}, 4), "IndexIVFRaBitQ": ({"nprobe": 24, "qb": 4}, 4),
          "IndexIVFScalarQuantizer": ({"nprobe": 40}, 4),                      # int8 before 2026-12-03
          "IndexBinaryFlat": ({}, 100), "IndexBinaryIVF": ({"nprobe": 64}, 100)}  # binary before 2026-12-03


def faiss() -> ModuleType:
    """faiss, imported on first use (the [search] extra)."""
    import faiss as module

    return module


def check_precision(precision: str, dimensions: int) -> None:
    if precision not in PRECISIONS:
        raise ZhembedError(f"unknown --precision {precision!r}; choose {', '.join(PRECISIONS)}")
    if precision == "binary" and dimensions % 8:
        raise ZhembedError(f"binary indexes need a multiple of 8 dimensions, got {dimensions}")


def kind(ann: str, count: int) -> str:
    """exact or approximate, from --ann and the number of vectors."""
    if ann not in ("auto", "exact", "hnsw"):
        raise ZhembedError(f"unknown --ann {ann!r}; choose auto, exact or hnsw")
    return "exact" if ann == "exact" or (ann == "auto" and count < EXACT_LIMIT) else "approximate"


@dataclass
class Ann:
    """A faiss index over unit vectors (inner product = cosine), with rescoring for int8 and binary."""

    index: object
    exact_vectors: np.ndarray | None = None  # [n, d] float32, memory-mapped; None for fp32

    def __post_init__(self):
        params, self.rescore = SEARCH[type(self.index).__name__]
        for name, value in params.items():
            setattr(self.index.hnsw if name == "efSearch" else self.index, name, value)

    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    def vectors(self) -> np.ndarray:
        if self.exact_vectors is not None:
            return np.asarray(self.exact_vectors)
        return self.index.reconstruct_n(0, self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows), each [len(queries), k], best first; rows -1 where there are fewer hits."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, self.ntotal)
        if self.exact_vectors is None:
            return self.index.search(queries, k)
        hamming = isinstance(self.index, faiss().IndexBinary)  # binary indexes written before 2026-12-03
        _, candidates = self.index.search(binary_codes(queries) if hamming else queries,
                                          min(self.ntotal, k * self.rescore))
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        for q, cand in enumerate(candidates):
            cand = np.sort(cand[cand >= 0])
            exact = self.exact_vectors[cand] @ queries[q]
            best = np.argsort(-exact)[:k]
            scores[q, :len(best)], rows[q, :len(best)] = exact[best], cand[best]
        return scores, rows


def binary_codes(vectors: np.ndarray) -> np.ndarray:
    """One bit per dimension, its sign. (Centering on the corpus mean first was measured: recall fell.)"""
    return np.packbits(vectors > 0, axis=1)


def build(vectors: np.ndarray, precision: str, ann: str) -> object:
    """The faiss index for `vectors` ([n, d], unit rows) at `precision`."""
    fs = faiss()
    n, d = vectors.shape
    approximate = kind(ann, n) == "approximate"
    ip = fs.METRIC_INNER_PRODUCT
    if precision == "fp32" and approximate:
        index = fs.IndexHNSWFlat(d, HNSW_M, ip)
    elif precision == "fp32":
        index = fs.IndexFlatIP(d)
    elif precision == "int8" and approximate:
        index = fs.IndexHNSWSQ(d, fs.ScalarQuantizer.QT_8bit, INT8_HNSW_M, ip)
    elif precision == "int8":
        index = fs.IndexScalarQuantizer(d, fs.ScalarQuantizer.QT_8bit, ip)
    elif approximate:
        nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))  # faiss wants 39 training points per list
        index = fs.IndexIVFRaBitQ(fs.IndexFlatIP(d), d, nlist, ip)
    else:
        index = fs.IndexRaBitQ(d, ip)
    if hasattr(index, "hnsw"):
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
    return index


def write(gen: Path, index: object, precision: str, vectors: np.ndarray) -> None:
    """vectors.faiss, and for int8 and binary the exact vectors beside it (vectors.npy)."""
    fs = faiss()
    data = fs.serialize_index_binary(index) if isinstance(index, fs.IndexBinary) else fs.serialize_index(index)
    write_atomic(gen / "vectors.faiss", lambda f: f.write(data.tobytes()))
    if precision != "fp32":
        write_atomic(gen / "vectors.npy", lambda f: np.save(f, np.ascontiguousarray(vectors, dtype=np.float32)))


def read(gen: Path, precision: str) -> Ann:
    """The index of a generation, with its exact vectors memory-mapped; a clear error if damaged."""
    path = gen / "vectors.faiss"
    if not path.exists():
        raise FileNotFoundError(path)
    fs = faiss()
    readers = (fs.read_index, fs.read_index_binary) if precision == "binary" else (fs.read_index,)
    for reader in readers:  # a binary index written before 2026-12-03 is a faiss IndexBinary
        try:
            index = reader(str(path))
            break
        except RuntimeError as e:
            error = e
    else:
        raise ZhembedError(f"{path} is not a readable faiss index ({str(error).splitlines()[0][:120]}); "
                           "rebuild the index") from None
    if type(index).__name__ not in SEARCH:
        raise ZhembedError(f"{path} holds a faiss {type(index).__name__}, which zhembed does not search; "
                           "rebuild the index")
    if precision == "fp32":
        return Ann(index)
    try:
        exact = np.load(gen / "vectors.npy", mmap_mode="r")
    except ValueError as e:
        raise ZhembedError(f"{gen / 'vectors.npy'} is not readable ({e}); rebuild the index") from None
    if exact.shape[0] != index.ntotal:
        raise ZhembedError(f"{gen} is inconsistent: {index.ntotal} codes, {exact.shape[0]} exact vectors; rebuild it")
    return Ann(index, exact)
