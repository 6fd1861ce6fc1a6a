"""Clustering sentence vectors: k-means for a fixed number of clusters, or threshold communities for
deduplicating near-paraphrases, and a summary of each cluster (size and most central sentences)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import ZhembedError

if TYPE_CHECKING:
    import faiss


def kmeans(vectors: np.ndarray, k: int, seed: int = 42, iterations: int = 25) -> np.ndarray:
    """Spherical k-means (faiss); one label per vector, 0 the largest cluster."""
    import faiss

    if not 1 <= k <= len(vectors):
        raise ZhembedError(f"-k must be between 1 and the number of texts ({len(vectors)}), got {k}")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    km = faiss.Kmeans(x.shape[1], k, niter=iterations, seed=seed, spherical=True, verbose=False)
    km.train(x)
    return _by_size(km.index.search(x, 1)[1][:, 0])


EXACT_LIMIT = 50_000  # above this many texts, neighbours come from an inverted-file index (IVF), not all pairs
IVF_PROBES = 16


def communities(vectors: np.ndarray, threshold: float, block: int = 4096) -> np.ndarray:
    """Threshold communities, as sentence-transformers' community_detection: the text with the most
    neighbours at cosine >= threshold founds a cluster of its unassigned neighbours, then the next, and so on.
    A text with no such neighbour is a cluster of its own. One label per vector, 0 the largest cluster.
    Up to EXACT_LIMIT texts every pair is compared; above it, each text is compared with the texts of its
    IVF_PROBES nearest k-means cells, which finds nearly all pairs above a high threshold in a fraction of
    the time."""
    if not -1 <= threshold <= 1:
        raise ZhembedError(f"--threshold is a cosine similarity in [-1, 1], got {threshold}")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    index = neighbour_index(x)
    neighbours = []
    for start in range(0, len(x), block):
        lims, _, ids = index.range_search(x[start:start + block], threshold)
        neighbours += np.split(ids, lims[1:-1])
    labels = np.full(len(x), -1, dtype=np.int64)
    for cluster, founder in enumerate(np.argsort([-len(n) for n in neighbours], kind="stable")):
        if labels[founder] >= 0:
            continue
        members = neighbours[founder]
        labels[members[labels[members] < 0]] = cluster
        labels[founder] = cluster
    return _by_size(labels)


def neighbour_index(x: np.ndarray) -> faiss.Index:
    """An exact inner-product index of the vectors, or an IVF one (trained on a seeded sample) above EXACT_LIMIT."""
    import faiss

    if len(x) <= EXACT_LIMIT:
        index = faiss.IndexFlatIP(x.shape[1])
    else:
        cells = int(4 * np.sqrt(len(x)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(x.shape[1]), x.shape[1], cells, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).choice(len(x), min(len(x), 40 * cells), replace=False)
        index.train(x[np.sort(sample)])
        index.nprobe = IVF_PROBES
    index.add(x)
    return index


def _by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 0.. by decreasing size (ties by first appearance)."""
    values, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    mapping = np.empty(values.max() + 1, dtype=np.int64)
    mapping[values[order]] = np.arange(len(values))
    return mapping[labels]


def segments(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The texts ordered by label (stable), and where each label's run starts in that order and how long it is."""
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    return order, starts, np.diff(np.r_[starts, len(order)])


def summarize(vectors: np.ndarray, labels: np.ndarray, texts: list[str], top: int = 3) -> list[dict]:
    """Per cluster: its id, size, and the `top` texts nearest its centroid (in one pass over all clusters)."""
    order, starts, sizes = segments(labels)
    sorted_labels = labels[order]
    centroids = np.add.reduceat(np.asarray(vectors, dtype=np.float32)[order], starts, axis=0)
    scores = (vectors[order] * centroids[np.repeat(np.arange(len(starts)), sizes)]).sum(1)
    ranked = order[np.lexsort((-scores, sorted_labels))]
    return [{"cluster": int(sorted_labels[start]), "size": int(size),
             "central": [texts[i] for i in ranked[start:start + min(top, size)]]}
            for start, size in zip(starts, sizes)]
