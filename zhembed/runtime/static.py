"""The static tier: a text's vector is the mean of its tokens' rows of one table, with numpy alone.

A static model (zhembed-static-zh, made by `zhembed distill-static`) has no layers, so it encodes far
faster than any transformer; it knows no word order. It speaks the Encoder's whole interface, so every
command that takes --model takes it. Tokenization is one `encode_batch` over all texts; then each
length-sorted batch is one gather of table rows and one sum (numpy's reduceat over rows is ten times slower).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from pathlib import Path

import numpy as np

from ..modeldir import WEIGHTS_FILE, SentenceConfig, read_sentence_config, read_static_table
from .encoder import Encoder
from .pooling import normalize as normalize_rows
from .tokenizer import load_tokenizer

NO_POSITION_LIMIT = 1 << 20  # a static model reads any number of tokens; max_length still cuts, as for any model
MIN_BATCH = 4096
BATCH_TOKENS = 1 << 16       # padded tokens per batch: bounds the gathered rows (BATCH_TOKENS x dim floats)


class StaticTable:
    """The engine of a static model: rows of the table for token ids (the Encoder's backend). One extra zero
    row at the end is the padding, so a padded batch sums to the same vectors as its texts alone."""

    name = "static"

    def __init__(self, weights_file: Path, table: np.ndarray):
        """The table is held as float32 (a stored fp16 table doubles in memory): numpy sums float32 rows many
        times faster than it converts fp16 ones on the fly."""
        self.weights_file = Path(weights_file)
        self.rows = np.vstack([np.asarray(table, dtype=np.float32), np.zeros((1, table.shape[1]), np.float32)])
        self.pad_id = len(table)

    @property
    def table(self) -> np.ndarray:
        return self.rows[:-1]

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Token vectors [batch, seq, dim], so mean pooling over the mask gives the same vectors."""
        return self.rows[input_ids]

    def mean(self, batch: list[list[int]]) -> np.ndarray:
        """[len(batch), dim]: the mean of each text's rows (zeros for a text without tokens), from one padded
        gather and one sum over its positions."""
        lengths = np.fromiter(map(len, batch), dtype=np.int64, count=len(batch))
        width = max(1, int(lengths.max(initial=0)))
        padded = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        padded[np.arange(width)[None, :] < lengths[:, None]] = np.fromiter(
            chain.from_iterable(batch), dtype=np.int64, count=int(lengths.sum()))
        return self.rows[padded].sum(axis=1) / np.maximum(lengths, 1)[:, None].astype(np.float32)


class StaticEncoder(Encoder):
    """An Encoder over a static model directory: no prompt, no special tokens, no position limit."""

    def __init__(self, path: Path, tokenizer, table: np.ndarray, config: SentenceConfig | None = None):
        """`config` defaults to the directory's; training passes one to score a table it has not saved yet."""
        super().__init__(path, tokenizer, StaticTable(Path(path) / WEIGHTS_FILE, table),
                         config or read_sentence_config(path), dim=table.shape[1], max_positions=NO_POSITION_LIMIT)

    @classmethod
    def load(cls, path: str | Path) -> StaticEncoder:
        return cls(Path(path), load_tokenizer(Path(path)), read_static_table(Path(path)))

    @property
    def table(self) -> np.ndarray:
        return self.backend.table

    def encode(self, texts: str | Sequence[str], batch_size: int = 32, max_length: int = 256, normalize: bool = True,
               show_progress: bool | None = None, max_batch_tokens: int | None = None, **kwargs) -> np.ndarray:
        """As `Encoder.encode`. Batches hold at least MIN_BATCH texts and at most BATCH_TOKENS padded tokens
        unless asked otherwise: a text's vector does not depend on its batch, and small batches only add
        overhead."""
        batch_size = max(batch_size, MIN_BATCH) if batch_size >= 1 else batch_size
        tokens = max_batch_tokens or max(BATCH_TOKENS, max_length)
        return super().encode(texts, batch_size, max_length, normalize, show_progress, tokens, **kwargs)

    def embed_ids(self, batch: list[list[int]], normalize: bool = True) -> np.ndarray:
        """The mean of each text's token rows (no prompt, no special tokens), L2-normalized if asked."""
        out = self.backend.mean(batch)
        return normalize_rows(out) if normalize else out

    def __repr__(self) -> str:
        return f"StaticEncoder({str(self.path)!r}, dim={self.dim}, vocabulary={len(self.table)})"
