"""The Encoder: Chinese text in, sentence vectors out, for any local sentence-transformers/BERT directory."""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import ZhembedError
from ..modeldir import (WEIGHTS_FILE, SentenceConfig, find_onnx, is_static_dir, read_model_config, read_sentence_config,
                        read_static_table)
from ..progress import progress
from .backends import Backend, OnnxBackend, TorchBackend
from .calibration import Calibration
from .chunked import file_digest
from .chunking import Passages, combine, token_windows
from .locations import model_dir as find_model_dir
from .pooling import normalize as normalize_rows
from .pooling import pool, truncate
from .static import BATCH_TOKENS, MIN_BATCH, NO_POSITION_LIMIT, StaticTable
from .tokenizer import TruncatingTokenizer, load_tokenizer, pad_token_id


def check_texts(texts: object) -> list[str]:
    """A list of str, or a clear error naming what is wrong and where."""
    if texts is None:
        raise TypeError("texts must be a string or a list of strings, got None")
    if isinstance(texts, (bytes, dict)) or not isinstance(texts, Sequence | np.ndarray):
        raise TypeError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, not str: {text!r:.60}")
    return list(texts)


SIMILAR_LENGTH = 0.75  # a batch ends before a text shorter than this share of its longest (+ SLACK tokens)
SLACK = 4


def length_batches(ids: list[list[int]], batch_size: int,
                   max_batch_tokens: int | None = None) -> Iterator[np.ndarray]:
    """Index arrays of batches over texts sorted longest first, capped by count and padded token budget. A batch
    also ends where the next text is much shorter than its longest (under SIMILAR_LENGTH of it): padding short
    texts to a long one costs more than a smaller batch does (32 random sentences in one padded pass ran at a
    third of the speed of the same texts in similar-length groups, int8 on 2 cores)."""
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    order = np.argsort(-lengths, kind="stable")
    shorter = lengths[order] + SLACK  # ascending when negated: a batch's end is one binary search, not a scan
    start = 0
    while start < len(order):
        width = int(lengths[order[start]])  # the longest in the batch, since sorted
        size = batch_size if max_batch_tokens is None else max(1, min(batch_size, max_batch_tokens // max(width, 1)))
        similar = int(np.searchsorted(-shorter, -SIMILAR_LENGTH * width, side="right"))
        end = max(start + 1, min(start + size, similar))
        yield order[start:end]
        start = end


class Encoder:
    """Encode sentences with mean (or the directory's) pooling, length-sorted batches and the default prompt.

    >>> enc = Encoder.load()                       # the shipped default model
    >>> enc.similarity("花呗怎么还款", ["花呗如何还钱", "今天天气很好"])
    """

    def __init__(self, path: Path, tokenizer, backend: Backend, config: SentenceConfig, pad_id: int = 0,
                 dim: int | None = None, max_positions: int | None = None):
        """`dim` and `max_positions` default to the directory's config.json (hidden_size, max_position_embeddings)."""
        self.path, self.tokenizer, self.backend, self.config, self.pad_id = path, tokenizer, backend, config, pad_id
        model_config = read_model_config(path) if dim is None or max_positions is None else {}
        self.dim: int = dim or config.dim or int(model_config["hidden_size"])
        self.max_positions: int = max_positions or int(model_config.get("max_position_embeddings", 512))
        self._truncating = TruncatingTokenizer(tokenizer, self.max_positions)

    @classmethod
    def load(cls, path: str | Path | None = None, backend: str = "auto", num_threads: int | None = None,
             onnx_file: str | None = None, graph_optimization: str = "all", onnx_spinning: str = "always") -> Encoder:
        """Load a local model directory (`None`: the default model; a shipped model's name: that model).

        backend: "torch"; "onnx" (DIR/onnx/model_qint8.onnx, else model.onnx, or `onnx_file`); "auto" picks
        ONNX when an exported file exists. The ONNX path imports neither torch nor transformers; the default
        model ships its int8 export, so it loads at once. A static model directory (zhembed-static-zh) always
        runs on numpy, whichever backend is asked for. onnx_spinning: "always", "within-runs" or "never"
        (runtime.backends.OnnxBackend).
        """
        if backend not in ("auto", "onnx", "torch"):
            raise ZhembedError(f"unknown backend {backend!r}; choose auto, onnx or torch")
        model_dir = find_model_dir(path)
        if is_static_dir(model_dir):
            return StaticEncoder.load(model_dir)
        onnx_path = find_onnx(model_dir, onnx_file) if backend != "torch" else None
        if backend == "onnx" and onnx_path is None:
            raise ZhembedError(f"{model_dir} has no ONNX export; run: zhembed export {model_dir} --format onnx")
        if onnx_path is not None:
            engine = OnnxBackend(onnx_path, num_threads, graph_optimization, onnx_spinning)
        else:
            engine = TorchBackend(model_dir, num_threads)
        tokenizer = load_tokenizer(model_dir)
        return cls(model_dir, tokenizer, engine, read_sentence_config(model_dir), pad_token_id(model_dir, tokenizer))

    @functools.cached_property
    def model_id(self) -> str:
        """A short hash of the tokenizer and the weights this encoder runs: two encoders with the same id give
        the same vectors. Indexes record it, so a query is never encoded by another model."""
        return file_digest(self.backend.weights_file, self.tokenizer.to_str().encode("utf-8"))

    @property
    def prompt(self) -> str:
        return self.config.prompt

    def tokenize(self, texts: list[str], max_length: int) -> list[list[int]]:
        """Token ids of each text with the default prompt prepended, truncated to max_length (and to the
        model's position limit). Safe to call from several threads at different lengths."""
        return self._truncating([self.prompt + t for t in texts], max_length)

    @property
    def dimensions(self) -> list[int]:
        """The vector sizes this model serves, largest first: the Matryoshka sizes its directory records, or
        else only its full size."""
        return self.config.dimensions or [self.dim]

    def check_dimensions(self, dimensions: int | None) -> int:
        """`dimensions` itself if the model serves that size (None: the full size), else a clear error."""
        if dimensions is None:
            return self.dim
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions not in self.dimensions:
            raise ZhembedError(f"dimensions must be one of {', '.join(map(str, self.dimensions))} for this model, "
                               f"got {dimensions!r}")
        return dimensions

    def passages(self, text: str, max_length: int = 256) -> list[tuple[int, int]]:
        """(start, end) character spans of overlapping windows that each fit `max_length` tokens with the
        prompt and special tokens; one span for a text that fits."""
        room = min(max_length, self.max_positions) - len(self._truncating.offsets(self.prompt)) - 4
        return token_windows(self._truncating.offsets(text), len(text), max(8, room))

    def split_long(self, texts: Sequence[str], max_length: int = 256) -> Passages:
        """Every text as its windows of at most `max_length` tokens (one window for a text that fits): the one
        place long texts are expanded, for encode(long="chunk"), the server and chunked indexes."""
        return Passages.of(list(texts), [self.passages(text, max_length) for text in texts])

    def truncated(self, texts: Sequence[str], max_length: int = 256) -> int:
        """How many of `texts` are longer than `max_length` tokens (and so are cut, unless long="chunk")."""
        return self._truncating.truncated([self.prompt + t for t in texts], max_length)

    def encode(self, texts: str | Sequence[str], batch_size: int = 32, max_length: int = 256,
               normalize: bool = True, show_progress: bool | None = None,
               max_batch_tokens: int | None = None, dimensions: int | None = None,
               long: str = "truncate") -> np.ndarray:
        """Vectors as float32, one row per text in input order (a single string gives one vector).

        Texts are sorted by token length and batched by `batch_size`, or, with `max_batch_tokens`, so
        that each padded batch holds at most that many tokens (and at most `batch_size` texts).
        `dimensions` keeps that many leading components (one of `self.dimensions`), normalized again.
        `long`: "truncate" cuts a text at `max_length` tokens; "chunk" embeds it in overlapping windows and
        averages them, weighted by their tokens.
        """
        single = isinstance(texts, str)
        size = self.check_dimensions(dimensions)
        if long not in ("truncate", "chunk"):
            raise ZhembedError(f"long must be 'truncate' or 'chunk', got {long!r}")
        items = check_texts([texts] if single else texts)
        if batch_size < 1:
            raise ZhembedError(f"batch_size must be positive, got {batch_size}")
        if max_batch_tokens is not None and max_batch_tokens < max_length:
            raise ZhembedError(f"max_batch_tokens ({max_batch_tokens}) must be at least max_length ({max_length})")
        if long == "chunk":
            out = self._encode_chunked(items, batch_size, max_length, max_batch_tokens, normalize, show_progress)
        else:
            out = self._embed_all(self.tokenize(items, max_length), batch_size, max_batch_tokens, normalize,
                                  show_progress)
        if size < self.dim:
            out = truncate(out, size, renormalize=normalize)
        return out[0] if single else out

    def _embed_all(self, ids: list[list[int]], batch_size: int, max_batch_tokens: int | None, normalize: bool,
                   show_progress: bool | None) -> np.ndarray:
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        batches = list(length_batches(ids, batch_size, max_batch_tokens))
        if show_progress is None:
            show_progress = len(ids) >= 2000 and sys.stderr.isatty()
        vectors = self._map(lambda idx, backend: self.embed_ids([ids[i] for i in idx], normalize, backend), batches)
        for idx, batch in progress(zip(batches, vectors), show_progress, total=len(batches), desc="encode", unit="batch"):
            out[idx] = batch
        return out

    def embed_group(self, batch: list[list[int]], beside: bool = False) -> np.ndarray:
        """embed_ids of one batch, normalized: on every core, or with `beside` on one core (the backend's lane,
        where it has one), to run beside up to `lanes` others (the server's worker runs its groups so)."""
        return self.embed_ids(batch, True, self.backend.lane() if beside else None)

    @property
    def lanes(self) -> int:
        """How many batches run at once: the backend's threads where it has a lane (Backend.lane), else 1."""
        return self.backend.threads if self.backend.lane() is not None else 1

    @functools.cached_property
    def _lane_pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(self.backend.threads, thread_name_prefix="zhembed-lane")

    def _map(self, fn, batches: list) -> Iterator[np.ndarray]:
        """fn(batch, backend) over the batches, in order. One batch runs on the backend with every core;
        several run side by side, one per core, on its lane where it has one."""
        lane = self.backend.lane() if len(batches) > 1 else None
        if lane is None:
            yield from (fn(batch, self.backend) for batch in batches)
            return
        futures = [self._lane_pool.submit(fn, batch, lane) for batch in batches]
        try:
            yield from (future.result() for future in futures)
        finally:
            for future in futures:
                future.cancel()

    def _encode_chunked(self, items: list[str], batch_size: int, max_length: int, max_batch_tokens: int | None,
                        normalize: bool, show_progress: bool | None) -> np.ndarray:
        """Each text's windows embedded (tokenized once), then averaged by their tokens."""
        passages = self.split_long(items, max_length)
        ids = self.tokenize(passages.pieces, max_length)
        vectors = self._embed_all(ids, batch_size, max_batch_tokens, True, show_progress)
        weights = np.array([len(x) for x in ids], dtype=np.float32)
        return combine(vectors, passages.counts, weights, normalize)

    def embed_ids(self, batch: list[list[int]], normalize: bool = True,
                  backend: Backend | None = None) -> np.ndarray:
        """One forward pass over already tokenized texts: pad, run the backend (or `backend`, such as its
        lane), pool, normalize."""
        input_ids, mask = self.pad(batch)
        out = pool((backend or self.backend)(input_ids, mask), mask, self.config.pooling).astype(np.float32, copy=False)
        return normalize_rows(out) if normalize else out

    def pad(self, batch: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        width = max(len(x) for x in batch)
        input_ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, x in enumerate(batch):
            input_ids[row, :len(x)] = x
            mask[row, :len(x)] = 1
        return input_ids, mask

    def similarity(self, a: str | Sequence[str], b: str | Sequence[str], calibrated: bool = False,
                   **kw) -> np.ndarray | float:
        """Cosine similarity: a float for two strings, else a matrix [len(a), len(b)]. With `calibrated`, the
        probability that the texts match instead, from the directory's calibration.json (a monotone map of
        the cosine, fitted on validation pairs); a directory without one raises a clear error."""
        calibration = self.calibration if calibrated else None
        va, vb = self.encode(a, normalize=True, **kw), self.encode(b, normalize=True, **kw)
        scores = np.atleast_2d(va) @ np.atleast_2d(vb).T
        if calibration is not None:
            scores = calibration(scores)
        if isinstance(a, str) and isinstance(b, str):
            return float(scores[0, 0])
        if isinstance(a, str):
            return scores[0]
        return scores

    @functools.cached_property
    def calibration(self) -> Calibration:
        """The directory's map from cosine to match probability (an error if it has none)."""
        return Calibration.read(self.path)

    def __repr__(self) -> str:
        return f"Encoder({str(self.path)!r}, backend={self.backend.name!r}, dim={self.dim})"


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

    def embed_ids(self, batch: list[list[int]], normalize: bool = True,
                  backend: StaticTable | None = None) -> np.ndarray:
        """The mean of each text's token rows (no prompt, no special tokens), L2-normalized if asked."""
        out = (backend or self.backend).mean(batch)
        return normalize_rows(out) if normalize else out

    def __repr__(self) -> str:
        return f"StaticEncoder({str(self.path)!r}, dim={self.dim}, vocabulary={len(self.table)})"
