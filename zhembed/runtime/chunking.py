"""Long texts: character spans of overlapping token windows, so a text longer than the model's input is
embedded whole (or indexed passage by passage) instead of cut off."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_OVERLAP = 32  # tokens shared by consecutive windows


def token_windows(offsets: list[tuple[int, int]], text_length: int, window: int,
                  overlap: int = DEFAULT_OVERLAP) -> list[tuple[int, int]]:
    """(start, end) character spans of windows of at most `window` tokens, each starting `window - overlap`
    tokens after the one before; a text that fits is one span."""
    if window < 1:
        raise ValueError(f"window must be positive, got {window}")
    if len(offsets) <= window:
        return [(0, text_length)]
    step = max(1, window - min(overlap, window // 2))
    spans = []
    for lo in range(0, len(offsets), step):
        hi = min(lo + window, len(offsets))
        spans.append((offsets[lo][0], offsets[hi - 1][1]))
        if hi == len(offsets):
            break
    return spans


@dataclass
class Passages:
    """Texts expanded into their windows: every window's text, text after text, and each text's spans."""

    pieces: list[str]
    spans: list[list[tuple[int, int]]]

    @property
    def counts(self) -> list[int]:
        """Windows per text."""
        return [len(s) for s in self.spans]

    def flat_spans(self) -> list[tuple[int, int]]:
        return [span for spans in self.spans for span in spans]

    @classmethod
    def of(cls, texts: list[str], spans: list[list[tuple[int, int]]]) -> Passages:
        return cls([text[a:b] for text, text_spans in zip(texts, spans) for a, b in text_spans], spans)


def combine(vectors: np.ndarray, windows: list[int], weights: np.ndarray, normalize: bool = True) -> np.ndarray:
    """One vector per text from its windows' vectors (`windows[i]` consecutive rows for text i): their mean
    weighted by `weights` (each window's tokens), unit length again if asked."""
    out = np.zeros((len(windows), vectors.shape[1]), dtype=np.float32)
    row = 0
    for i, count in enumerate(windows):
        w = weights[row:row + count, None]
        out[i] = (vectors[row:row + count] * w).sum(0) / w.sum()
        row += count
    if normalize:
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out
