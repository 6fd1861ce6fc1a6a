"""Tokenization for the runtime: tokenizer.json through `tokenizers`, one configured copy per max_length.

`tokenizers.Tokenizer` keeps truncation as mutable state, so one shared tokenizer re-configured per call
lets two threads encoding at different lengths truncate each other's texts. Each length gets its own copy,
configured once and never changed afterwards.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ..errors import ZhembedError, require
from ..modeldir import read_pad_tokens, tokenizer_files


def load_tokenizer(model_dir: Path):
    """tokenizer.json through `tokenizers`; a WordPiece vocab.txt directory through transformers."""
    from tokenizers import Tokenizer

    tokenizer_json, vocab = tokenizer_files(model_dir)
    if tokenizer_json is not None:
        try:
            return Tokenizer.from_file(str(tokenizer_json))
        except Exception as e:
            raise ZhembedError(f"cannot read {tokenizer_json}: {e}") from None
    if vocab is not None:
        require("train", f"{model_dir} (a vocab.txt tokenizer without tokenizer.json)", ("transformers",))
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(model_dir)).backend_tokenizer
    raise ZhembedError(f"{model_dir} has no tokenizer (neither tokenizer.json nor vocab.txt)")


def pad_token_id(model_dir: Path, tokenizer) -> int:
    """The padding id named by tokenizer_config.json or config.json; 0 if neither names one."""
    for value in read_pad_tokens(model_dir):
        if isinstance(value, str) and tokenizer.token_to_id(value) is not None:
            return tokenizer.token_to_id(value)
        if isinstance(value, int):
            return value
    return 0


class TruncatingTokenizer:
    """Token ids of texts cut to a length, safe to call from many threads at many lengths."""

    def __init__(self, tokenizer, max_positions: int):
        self.base, self.max_positions = tokenizer, max_positions
        self._json = tokenizer.to_str()
        self._by_length: dict[int, object] = {}
        self._lock = threading.Lock()
        # No token covers more characters than its longest piece does (twice that, for normalization), so a
        # text cut to (max_length + 8) times this keeps its first max_length tokens: cost follows max_length.
        self.chars_per_token = 2 * max(16, max(map(len, tokenizer.get_vocab())))

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character offsets of each token of `text`, without special tokens and without truncation."""
        return self._for_length(0).encode(text, add_special_tokens=False).offsets

    def _for_length(self, max_length: int):
        """The copy that truncates at `max_length` (0: never truncates)."""
        configured = self._by_length.get(max_length)
        if configured is None:
            with self._lock:
                configured = self._by_length.get(max_length)
                if configured is None:
                    configured = type(self.base).from_str(self._json)
                    configured.no_padding()
                    if max_length:
                        configured.enable_truncation(max_length)
                    else:
                        configured.no_truncation()
                    self._by_length[max_length] = configured
        return configured

    def __call__(self, texts: list[str], max_length: int) -> list[list[int]]:
        """Ids of each text, truncated to max_length (and to the model's position limit)."""
        return [e.ids for e in self._encode(texts, max_length, with_offsets=False)[0]]

    def truncated(self, texts: list[str], max_length: int) -> int:
        """How many texts have more than max_length tokens (with special tokens), i.e. are cut."""
        encodings, cut = self._encode(texts, max_length)
        return sum(bool(e.overflowing) or c for e, c in zip(encodings, cut))

    def _encode(self, texts: list[str], max_length: int, with_offsets: bool = True) -> tuple[list, list[bool]]:
        """Encodings truncated to max_length, and which texts were first cut to a bounded number of characters
        (those are longer than max_length tokens whatever their content)."""
        if max_length < 2:
            raise ZhembedError(f"max_length must be at least 2, got {max_length}")
        length = min(max_length, self.max_positions)
        limit = (length + 8) * self.chars_per_token
        cut = [len(t) > limit for t in texts]
        tokenizer = self._for_length(length)
        encode = tokenizer.encode_batch if with_offsets else tokenizer.encode_batch_fast
        encodings = encode([t[:limit] if c else t for t, c in zip(texts, cut)])
        return encodings, cut
