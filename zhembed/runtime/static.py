"""The static tier's engine: a text's vector is the mean of its tokens' rows of one table, with numpy alone.

A static model (zhembed-static-zh, made by `zhembed distill-static`) has no layers, so it encodes far
faster than any transformer; it knows no word order. `encoder.StaticEncoder` gives it the Encoder's whole
interface, so every command that takes --model takes it. Tokenization is one sentencepiece call over all texts
(runtime.tokenizer.UnigramIds: the ids of its tokenizer.json); then each length-sorted batch is one gather of
table rows and one sum (numpy's reduceat over rows is ten times slower, a running sum per chunk ten times
too), the batches spread over the cores.
"""

from __future__ import annotations

from itertools import chain
from pathlib import Path

import numpy as np

from .backends import default_threads

NO_POSITION_LIMIT = 1 << 20  # a static model reads any number of tokens; max_length still cuts, as for any model
MIN_BATCH = 4096
BATCH_TOKENS = 1 << 12       # padded tokens per batch: the gathered rows (BATCH_TOKENS x dim floats) stay in cache


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
        self.threads = default_threads()

    def lane(self) -> StaticTable:
        """Itself: numpy's gather and sum release the GIL, so batches run side by side on one table."""
        return self

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
