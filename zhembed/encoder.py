"""The Encoder: Chinese text in, sentence vectors out, for any local sentence-transformers/BERT directory."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .backends import Backend
from .errors import ZhembedError
from .st_format import SentenceConfig, read_sentence_config


def load_tokenizer(model_dir: Path):
    """tokenizer.json through `tokenizers`; a WordPiece vocab.txt directory through transformers."""
    from tokenizers import Tokenizer

    if (model_dir / "tokenizer.json").exists():
        try:
            return Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        except Exception as e:
            raise ZhembedError(f"cannot read {model_dir / 'tokenizer.json'}: {e}") from None
    if (model_dir / "vocab.txt").exists():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(model_dir)).backend_tokenizer
    raise ZhembedError(f"{model_dir} has no tokenizer (neither tokenizer.json nor vocab.txt)")


def _pad_id(model_dir: Path, tokenizer) -> int:
    for name, key in (("tokenizer_config.json", "pad_token"), ("config.json", "pad_token_id")):
        try:
            value = json.loads((model_dir / name).read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError):
            continue
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str) and tokenizer.token_to_id(value) is not None:
            return tokenizer.token_to_id(value)
        if isinstance(value, int):
            return value
    return 0


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


def resolve_model_dir(path: str | Path | None) -> Path:
    """The directory of `path`, or of the project's default model when it is None."""
    if path is None:
        from .default_model import default_model_dir

        return default_model_dir()
    model_dir = Path(path).expanduser().resolve()
    if not model_dir.is_dir():
        raise ZhembedError(f"model directory not found: {path}")
    if not (model_dir / "config.json").exists():
        raise ZhembedError(f"{model_dir} is not a model directory: it has no config.json")
    return model_dir


def find_onnx(model_dir: Path, onnx_file: str | None = None) -> Path | None:
    """The ONNX file to run: `onnx_file` (relative to the directory or absolute), else int8, else fp32."""
    from .onnx_export import FP32_FILE, INT8_FILE, ONNX_DIR

    if onnx_file:
        path = model_dir / onnx_file
        if not path.exists():
            raise ZhembedError(f"ONNX file not found: {path}")
        return path
    return next((p for p in (model_dir / ONNX_DIR / INT8_FILE, model_dir / ONNX_DIR / FP32_FILE) if p.exists()), None)


def default_onnx(required: bool) -> Path | None:
    """The default model's int8 ONNX directory; with `required` False, None (and a warning) if export fails."""
    from .default_model import default_onnx_dir

    try:
        return default_onnx_dir()
    except Exception as e:
        if required:
            raise
        print(f"zhembed: warning: ONNX export of the default model failed ({e}); using torch", file=sys.stderr)
        return None


def length_batches(ids: list[list[int]], batch_size: int, max_batch_tokens: int | None = None):
    """Index arrays of batches over texts sorted longest first, capped by count and padded token budget."""
    order = np.argsort([-len(x) for x in ids], kind="stable")
    start = 0
    while start < len(order):
        width = len(ids[order[start]])  # the longest in the batch, since sorted
        size = batch_size if max_batch_tokens is None else max(1, min(batch_size, max_batch_tokens // max(width, 1)))
        yield order[start:start + size]
        start += size


class Encoder:
    """Encode sentences with mean (or the directory's) pooling, length-sorted batches and the default prompt.

    >>> enc = Encoder.load()                       # the shipped default model
    >>> enc.similarity("花呗怎么还款", ["花呗如何还钱", "今天天气很好"])
    """

    def __init__(self, path: Path, tokenizer, backend: Backend, config: SentenceConfig, pad_id: int = 0):
        self.path, self.tokenizer, self.backend, self.config, self.pad_id = path, tokenizer, backend, config, pad_id
        self.tokenizer.no_padding()
        model_config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        self.dim: int = config.dim or int(model_config["hidden_size"])
        self.max_positions: int = int(model_config.get("max_position_embeddings", 512))

    @classmethod
    def load(cls, path: str | Path | None = None, backend: str = "auto", num_threads: int | None = None,
             onnx_file: str | None = None, graph_optimization: str = "all", onnx_spinning: bool = True) -> Encoder:
        """Load a local model directory (`None`: the default model).

        backend: "torch"; "onnx" (DIR/onnx/model_qint8.onnx, else model.onnx, or `onnx_file`); "auto" picks
        ONNX when an exported file exists. The ONNX path imports neither torch nor transformers. For the
        default model, "auto" and "onnx" use its int8 ONNX export, made once on first use in $ZHEMBED_HOME.
        """
        if backend not in ("auto", "onnx", "torch"):
            raise ZhembedError(f"unknown backend {backend!r}; choose auto, onnx or torch")
        if path is None and backend != "torch":
            path = default_onnx(required=backend == "onnx")
        model_dir = resolve_model_dir(path)
        onnx_path = find_onnx(model_dir, onnx_file) if backend != "torch" else None
        if backend == "onnx" and onnx_path is None:
            raise ZhembedError(f"{model_dir} has no ONNX export; run: zhembed export {model_dir} --format onnx")
        if onnx_path is not None:
            from .backends import OnnxBackend

            engine = OnnxBackend(onnx_path, num_threads, graph_optimization, onnx_spinning)
        else:
            from .backends import TorchBackend

            engine = TorchBackend(model_dir, num_threads)
        tokenizer = load_tokenizer(model_dir)
        return cls(model_dir, tokenizer, engine, read_sentence_config(model_dir), _pad_id(model_dir, tokenizer))

    @property
    def prompt(self) -> str:
        return self.config.prompt

    def tokenize(self, texts: list[str], max_length: int) -> list[list[int]]:
        """Token ids of each text with the default prompt prepended, truncated to max_length (and to the
        model's position limit)."""
        if max_length < 2:
            raise ZhembedError(f"max_length must be at least 2, got {max_length}")
        self.tokenizer.enable_truncation(min(max_length, self.max_positions))
        encodings = self.tokenizer.encode_batch([self.prompt + t for t in texts])
        return [e.ids for e in encodings]

    def encode(self, texts: str | Sequence[str], batch_size: int = 32, max_length: int = 256,
               normalize: bool = True, show_progress: bool | None = None,
               max_batch_tokens: int | None = None) -> np.ndarray:
        """Vectors as float32, one row per text in input order (a single string gives one vector).

        Texts are sorted by token length and batched by `batch_size`, or, with `max_batch_tokens`, so
        that each padded batch holds at most that many tokens (and at most `batch_size` texts).
        """
        single = isinstance(texts, str)
        items = check_texts([texts] if single else texts)
        if batch_size < 1:
            raise ZhembedError(f"batch_size must be positive, got {batch_size}")
        if max_batch_tokens is not None and max_batch_tokens < max_length:
            raise ZhembedError(f"max_batch_tokens ({max_batch_tokens}) must be at least max_length ({max_length})")
        ids = self.tokenize(items, max_length)
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        batches = list(length_batches(ids, batch_size, max_batch_tokens))
        if show_progress is None:
            show_progress = len(ids) >= 2000 and sys.stderr.isatty()
        from tqdm.auto import tqdm

        for idx in tqdm(batches, desc="encode", unit="batch", disable=not show_progress):
            out[idx] = self.embed_ids([ids[i] for i in idx], normalize)
        return out[0] if single else out

    def embed_ids(self, batch: list[list[int]], normalize: bool = True) -> np.ndarray:
        """One forward pass over already tokenized texts: pad, run the backend, pool, normalize."""
        input_ids, mask = self.pad(batch)
        out = self.pool(self.backend(input_ids, mask), mask).astype(np.float32, copy=False)
        if normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def pad(self, batch: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        width = max(len(x) for x in batch)
        input_ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, x in enumerate(batch):
            input_ids[row, :len(x)] = x
            mask[row, :len(x)] = 1
        return input_ids, mask

    def pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Sentence vectors from token vectors, as the directory's Pooling module says."""
        m = mask[..., None].astype(hidden.dtype)
        if self.config.pooling == "cls":
            return hidden[:, 0].copy()
        if self.config.pooling == "max":
            return np.where(m > 0, hidden, -np.inf).max(axis=1)
        if self.config.pooling == "lasttoken":
            return hidden[np.arange(len(hidden)), mask.sum(1) - 1].copy()
        return (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)

    def similarity(self, a: str | Sequence[str], b: str | Sequence[str], **kw) -> np.ndarray | float:
        """Cosine similarity: a float for two strings, else a matrix [len(a), len(b)]."""
        va, vb = self.encode(a, normalize=True, **kw), self.encode(b, normalize=True, **kw)
        scores = np.atleast_2d(va) @ np.atleast_2d(vb).T
        if isinstance(a, str) and isinstance(b, str):
            return float(scores[0, 0])
        if isinstance(a, str):
            return scores[0]
        return scores

    def __repr__(self) -> str:
        return f"Encoder({str(self.path)!r}, backend={self.backend.name!r}, dim={self.dim})"
