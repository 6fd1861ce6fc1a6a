"""Clustering sentence vectors: k-means for a fixed number of clusters, or threshold communities for
deduplicating near-paraphrases, and a summary of each cluster (size and most central sentences)."""

from __future__ import annotations

import numpy as np

from ..errors import ZhembedError


def kmeans(vectors: np.ndarray, k: int, seed: int = 42, iterations: int = 25) -> np.ndarray:
    """Spherical k-means (faiss); one label per vector, 0 the largest cluster."""
    import faiss

    if not 1 <= k <= len(vectors):
        raise ZhembedError(f"-k must be between 1 and the number of texts ({len(vectors)}), got {k}")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    km = faiss.Kmeans(x.shape[1], k, niter=iterations, seed=seed, spherical=True, verbose=False)
    km.train(x)
    return _by_size(km.index.search(x, 1)[1][:, 0])


def communities(vectors: np.ndarray, threshold: float, block: int = 4096) -> np.ndarray:
    """Threshold communities, as sentence-transformers' community_detection: the text with the most
    neighbours at cosine >= threshold founds a cluster of its unassigned neighbours, then the next, and so on.
    A text with no such neighbour is a cluster of its own. One label per vector, 0 the largest cluster."""
    import faiss

    if not -1 <= threshold <= 1:
        raise ZhembedError(f"--threshold is a cosine similarity in [-1, 1], got {threshold}")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    neighbours = []
    for start in range(0, len(x), block):
        lims, _, ids = index.range_search(x[start:start + block], threshold)
        neighbours += [ids[lims[i]:lims[i + 1]] for i in range(len(lims) - 1)]
    labels = np.full(len(x), -1, dtype=np.int64)
    for cluster, founder in enumerate(np.argsort([-len(n) for n in neighbours], kind="stable")):
        if labels[founder] >= 0:
            continue
        members = [m for m in neighbours[founder] if labels[m] < 0] + [founder]
        labels[members] = cluster
    return _by_size(labels)


def _by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 0.. by decreasing size (ties by first appearance)."""
    values, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    mapping = np.empty(values.max() + 1, dtype=np.int64)
    mapping[values[order]] = np.arange(len(values))
    return mapping[labels]


def summarize(vectors: np.ndarray, labels: np.ndarray, texts: list[str], top: int = 3) -> list[dict]:
    """Per cluster: its id, size, and the `top` texts nearest its centroid."""
    summary = []
    for cluster in range(int(labels.max()) + 1):
        members = np.flatnonzero(labels == cluster)
        centroid = vectors[members].mean(axis=0)
        central = members[np.argsort(-(vectors[members] @ centroid), kind="stable")[:top]]
        summary.append({"cluster": cluster, "size": len(members), "central": [texts[i] for i in central]})
    return summary
