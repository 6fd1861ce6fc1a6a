"""The nearest-neighbour structure of an index, at one of three precisions, on faiss.

- fp32: the vectors themselves, searched exactly (flat) or with HNSW;
- int8: 8-bit scalar-quantized vectors (a quarter of the memory), flat or IVF;
- binary: one bit per dimension, its sign (1/32 of the memory), flat Hamming or IVF.

int8 and binary first take `rescore` times k candidates, then rescore them with the exact vectors, which
stay on disk (vectors.npy, memory-mapped: only the candidates' rows are read).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import write_atomic
from ..errors import ZhembedError

PRECISIONS = ("fp32", "int8", "binary")
EXACT_LIMIT = 20_000  # below this many vectors, `ann="auto"` searches exactly
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128
# Candidates per hit before rescoring, and IVF lists probed: chosen on the 346,884-sentence corpus with 1,000
# lcqmc_dev queries (docs/RESULTS.md) for recall@10 >= 0.95 (int8) and >= 0.90 (binary) against exact search.
RESCORE = {"fp32": 1, "int8": 4, "binary": 100}
NPROBE = {"int8": 40, "binary": 64}


def faiss():
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
    precision: str
    exact_vectors: np.ndarray | None = None  # [n, d] float32, memory-mapped; None for fp32

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
        if self.precision == "fp32":
            return self.index.search(queries, k)
        wide = min(self.ntotal, k * RESCORE[self.precision])
        probe = queries if self.precision == "int8" else binary_codes(queries)
        _, candidates = self.index.search(probe, wide)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        for q, cand in enumerate(candidates):
            cand = cand[cand >= 0]
            exact = self.exact_vectors[np.sort(cand)] @ queries[q]
            best = np.argsort(-exact)[:k]
            scores[q, :len(best)], rows[q, :len(best)] = exact[best], np.sort(cand)[best]
        return scores, rows


def binary_codes(vectors: np.ndarray) -> np.ndarray:
    """One bit per dimension, its sign. (Centering on the corpus mean first was measured: recall fell.)"""
    return np.packbits(vectors > 0, axis=1)


def build(vectors: np.ndarray, precision: str, ann: str) -> object:
    """The faiss index for `vectors` ([n, d], unit rows) at `precision`."""
    fs = faiss()
    n, d = vectors.shape
    approximate = kind(ann, n) == "approximate"
    nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))  # faiss wants 39 training points per list
    if precision == "fp32":
        if not approximate:
            index = fs.IndexFlatIP(d)
        else:
            index = fs.IndexHNSWFlat(d, HNSW_M, fs.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction, index.hnsw.efSearch = HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH
        index.add(vectors)
        return index
    if precision == "int8":
        sq = fs.ScalarQuantizer.QT_8bit
        if approximate:
            index = fs.IndexIVFScalarQuantizer(fs.IndexFlatIP(d), d, nlist, sq, fs.METRIC_INNER_PRODUCT)
            index.nprobe = NPROBE["int8"]
        else:
            index = fs.IndexScalarQuantizer(d, sq, fs.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.add(vectors)
        return index
    codes = binary_codes(vectors)
    if approximate:
        index = fs.IndexBinaryIVF(fs.IndexBinaryFlat(d), d, nlist)
        index.nprobe = NPROBE["binary"]
        index.train(codes)
    else:
        index = fs.IndexBinaryFlat(d)
    index.add(codes)
    return index


def write(gen: Path, index: object, precision: str, vectors: np.ndarray) -> None:
    """vectors.faiss, and for int8 and binary the exact vectors beside it (vectors.npy)."""
    fs = faiss()
    data = fs.serialize_index_binary(index) if precision == "binary" else fs.serialize_index(index)
    write_atomic(gen / "vectors.faiss", lambda f: f.write(data.tobytes()))
    if precision != "fp32":
        write_atomic(gen / "vectors.npy", lambda f: np.save(f, np.ascontiguousarray(vectors, dtype=np.float32)))


def read(gen: Path, precision: str) -> Ann:
    """The index of a generation, with its exact vectors memory-mapped; a clear error if damaged."""
    path = gen / "vectors.faiss"
    if not path.exists():
        raise FileNotFoundError(path)
    fs = faiss()
    try:
        index = fs.read_index_binary(str(path)) if precision == "binary" else fs.read_index(str(path))
    except RuntimeError as e:
        raise ZhembedError(f"{path} is not a readable faiss index ({str(e).splitlines()[0][:120]}); "
                           "rebuild the index") from None
    if precision == "fp32":
        return Ann(index, precision)
    if hasattr(index, "nprobe"):
        index.nprobe = NPROBE[precision]
    try:
        exact = np.load(gen / "vectors.npy", mmap_mode="r")
    except ValueError as e:
        raise ZhembedError(f"{gen / 'vectors.npy'} is not readable ({e}); rebuild the index") from None
    if exact.shape[0] != index.ntotal:
        raise ZhembedError(f"{gen} is inconsistent: {index.ntotal} codes, {exact.shape[0]} exact vectors; rebuild it")
    return Ann(index, precision, exact)
