"""Tokenization for the runtime: tokenizer.json through `tokenizers`, one configured copy per max_length.

`tokenizers.Tokenizer` keeps truncation as mutable state, so one shared tokenizer re-configured per call
lets two threads encoding at different lengths truncate each other's texts. Each length gets its own copy,
configured once and never changed afterwards.

An XLM-R-style Unigram tokenizer.json (precompiled normalizer, Metaspace, no post-processor or a <s> ... </s>
template), such as both shipped models', also gets a sentencepiece processor built from the same pieces,
scores and normalization map: it gives the same ids about eight times faster than `encode_batch_fast` and
its Encoding objects (20,000 corpus sentences on 2 cores: 600,000 against 70,000 a second), which is most of
a static model's encoding time. tests/test_static.py checks the two agree.
"""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ZhembedError, require
from ..modeldir import read_pad_tokens, tokenizer_files
from .backends import default_threads

if TYPE_CHECKING:
    from tokenizers import Tokenizer

FAST_BATCH_THREADED = 256  # texts from which sentencepiece encodes on every core (below it, threads cost more)


def load_tokenizer(model_dir: Path) -> Tokenizer:
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


def pad_token_id(model_dir: Path, tokenizer: Tokenizer) -> int:
    """The padding id named by tokenizer_config.json or config.json; 0 if neither names one."""
    for value in read_pad_tokens(model_dir):
        if isinstance(value, str) and tokenizer.token_to_id(value) is not None:
            return tokenizer.token_to_id(value)
        if isinstance(value, int):
            return value
    return 0


class UnigramIds:
    """Token ids through sentencepiece for a tokenizer.json it reproduces exactly (`UnigramIds.of`). Texts that
    spell out one of the tokenizer's added tokens (such as "<s>") are not for it: `reads` says so."""

    def __init__(self, processor, space_id: int, bos: list[int], eos: list[int], normalizer, added: list[str]):
        self.processor, self.space_id, self.bos, self.eos = processor, space_id, bos, eos
        self.normalizer, self.added = normalizer, added
        self.ends_in_space: dict[str, bool] = {"": False}  # a text's last character: normalized to a space?

    @classmethod
    def of(cls, tokenizer: Tokenizer, tokenizer_json: str) -> UnigramIds | None:
        """The sentencepiece twin of a `tokenizers.Tokenizer` (and its serialized tokenizer.json), or None where
        it is not one it reproduces (or sentencepiece is not installed)."""
        spec = json.loads(tokenizer_json)
        if not _reproducible(spec):
            return None
        space = next((i for i, (piece, _) in enumerate(spec["model"]["vocab"]) if piece == "\u2581"), None)
        around = _template(spec.get("post_processor"))
        if space is None or around is None:
            return None
        try:
            import sentencepiece
            from sentencepiece import sentencepiece_model_pb2
        except ImportError:
            return None
        proto = _model_proto(spec, sentencepiece_model_pb2)
        added = [t["content"] for t in spec.get("added_tokens", [])]
        return cls(sentencepiece.SentencePieceProcessor(model_proto=proto), space, *around, tokenizer.normalizer, added)

    def reads(self, texts: list[str]) -> bool:
        """Whether none of the texts spells out an added token (tokenizers matches those before normalizing)."""
        joined = "\n".join(texts)
        return not any(token in joined for token in self.added)

    def __call__(self, texts: list[str], length: int, threads: int) -> list[list[int]]:
        """Ids of each text, special tokens included, cut to `length`. sentencepiece drops trailing whitespace,
        which tokenizers keeps as one "▁" piece: that piece is added back."""
        if threads == 1:  # a list call starts a thread pool even for one thread: 30 us quiet, 2 ms on a busy host
            ids = [self.processor.encode(text) for text in texts]
        else:
            ids = self.processor.encode(texts, num_threads=threads)
        last = [t[-1:] for t in texts]
        for c in set(last).difference(self.ends_in_space):
            self.ends_in_space[c] = self.normalizer.normalize_str(c).endswith(" ")
        for i in np.flatnonzero(np.fromiter(map(self.ends_in_space.__getitem__, last), bool, len(texts))):
            ids[i].append(self.space_id)
        room = length - len(self.bos) - len(self.eos)
        if self.bos or self.eos:
            return [self.bos + x[:room] + self.eos for x in ids]
        return [x[:room] if len(x) > room else x for x in ids]


def _reproducible(spec: dict) -> bool:
    """An XLM-R-style Unigram: precompiled normalization (and runs of spaces collapsed), Metaspace."""
    model, pre, norms = spec.get("model") or {}, spec.get("pre_tokenizer") or {}, _normalizers(spec)
    collapse = {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}
    return (model.get("type") == "Unigram" and not model.get("byte_fallback") and model.get("unk_id") is not None
            and norms[0].get("type") == "Precompiled" and all(n == collapse for n in norms[1:])
            and pre == {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True})


def _normalizers(spec: dict) -> list[dict]:
    """The tokenizer.json's normalizers, in order (a Sequence unwrapped)."""
    norm = spec.get("normalizer") or {}
    return norm.get("normalizers", [norm]) if norm.get("type") == "Sequence" else [norm]


def _model_proto(spec: dict, pb) -> bytes:
    """sentencepiece's serialized ModelProto of the same pieces, scores and normalization map."""
    model = spec["model"]
    proto = pb.ModelProto()
    proto.trainer_spec.model_type = pb.TrainerSpec.UNIGRAM
    proto.trainer_spec.unk_id = model["unk_id"]
    proto.trainer_spec.bos_id = proto.trainer_spec.eos_id = proto.trainer_spec.pad_id = -1
    proto.normalizer_spec.name = "precompiled"
    proto.normalizer_spec.precompiled_charsmap = base64.b64decode(_normalizers(spec)[0]["precompiled_charsmap"])
    proto.normalizer_spec.add_dummy_prefix = proto.normalizer_spec.escape_whitespaces = True
    proto.normalizer_spec.remove_extra_whitespaces = True
    special = {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
    kinds = pb.ModelProto.SentencePiece
    for i, (piece, score) in enumerate(model["vocab"]):
        kind = kinds.UNKNOWN if i == model["unk_id"] else kinds.CONTROL if i in special else kinds.NORMAL
        proto.pieces.add(piece=piece, score=score, type=kind)
    return proto.SerializeToString()


def _template(post: dict | None) -> tuple[list[int], list[int]] | None:
    """(ids before, ids after) a single text for no post-processor or a TemplateProcessing of special tokens
    around it; None for anything else."""
    if post is None:
        return [], []
    if post.get("type") != "TemplateProcessing":
        return None
    single, specials = post.get("single", []), post.get("special_tokens", {})
    where = [i for i, part in enumerate(single) if "Sequence" in part]
    if len(where) != 1 or any("SpecialToken" not in p for i, p in enumerate(single) if i != where[0]):
        return None
    ids = [specials[p["SpecialToken"]["id"]]["ids"] for i, p in enumerate(single) if i != where[0]]
    if any(len(x) != 1 for x in ids):
        return None
    flat = [x[0] for x in ids]
    return flat[:where[0]], flat[where[0]:]


class TruncatingTokenizer:
    """Token ids of texts cut to a length, safe to call from many threads at many lengths."""

    def __init__(self, tokenizer, max_positions: int):
        self.base, self.max_positions = tokenizer, max_positions
        self._json = tokenizer.to_str()
        self.fast = UnigramIds.of(tokenizer, self._json)
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
        if self.fast is not None and self.fast.reads(texts):
            length, limit = self._limits(max_length)
            threads = 1 if len(texts) < FAST_BATCH_THREADED else default_threads()
            return self.fast([t[:limit] if len(t) > limit else t for t in texts], length, threads)
        return [e.ids for e in self._encode(texts, max_length, with_offsets=False)[0]]

    def truncated(self, texts: list[str], max_length: int) -> int:
        """How many texts have more than max_length tokens (with special tokens), i.e. are cut."""
        encodings, cut = self._encode(texts, max_length)
        return sum(bool(e.overflowing) or c for e, c in zip(encodings, cut))

    def _limits(self, max_length: int) -> tuple[int, int]:
        """(tokens, characters) a text is cut to: max_length within the position limit, and the characters
        that surely hold that many tokens."""
        if max_length < 2:
            raise ZhembedError(f"max_length must be at least 2, got {max_length}")
        length = min(max_length, self.max_positions)
        return length, (length + 8) * self.chars_per_token

    def _encode(self, texts: list[str], max_length: int, with_offsets: bool = True) -> tuple[list, list[bool]]:
        """Encodings truncated to max_length, and which texts were first cut to a bounded number of characters
        (those are longer than max_length tokens whatever their content)."""
        length, limit = self._limits(max_length)
        cut = [len(t) > limit for t in texts]
        tokenizer = self._for_length(length)
        encode = tokenizer.encode_batch if with_offsets else tokenizer.encode_batch_fast
        encodings = encode([t[:limit] if c else t for t, c in zip(texts, cut)])
        return encodings, cut
