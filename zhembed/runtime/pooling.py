"""Pooling and normalization of token vectors into sentence vectors, written once for every backend."""

from __future__ import annotations

import numpy as np

def pool(hidden: np.ndarray, mask: np.ndarray, mode: str = "mean") -> np.ndarray:
    """[batch, seq, dim] token vectors and a [batch, seq] mask -> [batch, dim] sentence vectors."""
    m = mask[..., None].astype(hidden.dtype)
    if mode == "cls":
        return hidden[:, 0].copy()
    if mode == "max":
        return np.where(m > 0, hidden, -np.inf).max(axis=1)
    if mode == "lasttoken":
        return hidden[np.arange(len(hidden)), mask.sum(1) - 1].copy()
    return (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, in place (zero rows stay zero)."""
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors


def truncate(vectors: np.ndarray, dimensions: int, renormalize: bool = True) -> np.ndarray:
    """The first `dimensions` components of each row (a Matryoshka prefix), unit-length again if asked; always a
    new array, so the caller's vectors (perhaps a read-only memory map) are never changed."""
    out = np.array(vectors[..., :dimensions], dtype=np.float32)
    if renormalize:
        out /= np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    return out
