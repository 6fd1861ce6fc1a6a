"""Vocabulary pruning: keep the Unigram pieces a Chinese corpus needs, and the matching embedding rows.

Kept: every piece the corpus's tokenization uses (with the model's prompt), every single-character CJK
piece, digits, ASCII letters and punctuation (alone or after the word-boundary mark), and the special
tokens. Unigram picks the highest-scoring segmentation, so any text whose original segmentation uses
only kept pieces is segmented exactly as before.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ZhembedError
from ..modeldir import (WEIGHTS_FILE, copy_model_files, read_model_config, read_sentence_config, read_tokenizer_json,
                        save_weights, update_config, write_tokenizer)
from ..textio import read_lines

if TYPE_CHECKING:
    from tokenizers import Tokenizer

METASPACE = "\u2581"
CJK_RANGES = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2FFFF))


@dataclass
class PruneReport:
    pieces_before: int
    pieces_after: int
    parameters_before: int
    parameters_after: int

    def __str__(self) -> str:
        return (f"pieces {self.pieces_before:,} -> {self.pieces_after:,}; "
                f"parameters {self.parameters_before:,} -> {self.parameters_after:,}")


def _always_kept(piece: str) -> bool:
    """Single CJK characters, digits, ASCII letters and punctuation, bare or after the boundary mark."""
    char = piece[1:] if piece.startswith(METASPACE) and len(piece) == 2 else piece
    if len(char) != 1:
        return piece == METASPACE
    cp = ord(char)
    return (any(lo <= cp <= hi for lo, hi in CJK_RANGES) or char.isascii() and char.isprintable()
            or unicodedata.category(char).startswith("P") or 0xFF01 <= cp <= 0xFF5E or 0x3000 <= cp <= 0x303F)


def used_piece_ids(tokenizer: Tokenizer, texts: list[str], batch: int = 10_000) -> set[int]:
    """Ids of every piece that the tokenization of `texts` uses."""
    used: set[int] = set()
    for lo in range(0, len(texts), batch):
        for enc in tokenizer.encode_batch(texts[lo:lo + batch]):
            used.update(enc.ids)
    return used


def kept_ids(tok_json: dict, used: set[int]) -> list[int]:
    """Old ids to keep, in their original order (so special tokens keep their ids)."""
    special = {t["id"] for t in tok_json.get("added_tokens", [])}
    return [i for i, (piece, _) in enumerate(tok_json["model"]["vocab"])
            if i in used or i in special or _always_kept(piece)]


def _remap_tokenizer(tok_json: dict, keep: list[int]) -> dict:
    new_id = {old: new for new, old in enumerate(keep)}
    model = tok_json["model"]
    model["vocab"] = [model["vocab"][i] for i in keep]
    model["unk_id"] = new_id[model["unk_id"]]
    for token in tok_json.get("added_tokens", []):
        token["id"] = new_id[token["id"]]
    for spec in ((tok_json.get("post_processor") or {}).get("special_tokens") or {}).values():
        spec["ids"] = [new_id[i] for i in spec["ids"]]
    return tok_json


def prune_vocab(model_dir: Path, corpus: Path | list[Path], out: Path) -> PruneReport:
    """Write a copy of `model_dir` whose tokenizer and word embeddings keep only the pieces that the corpus
    (one file or several) needs."""
    corpora = corpus if isinstance(corpus, list) else [corpus]
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    model_dir, out = Path(model_dir), Path(out)
    tok_json = read_tokenizer_json(model_dir)
    if tok_json.get("model", {}).get("type") != "Unigram":
        raise ZhembedError(f"{model_dir}: vocabulary pruning needs a Unigram tokenizer.json (SentencePiece/XLM-R style)")
    prompt = read_sentence_config(model_dir).prompt
    texts = [prompt + line for path in corpora for line in read_lines(path) if line.strip()]
    keep = kept_ids(tok_json, used_piece_ids(Tokenizer.from_str(json.dumps(tok_json)), texts))
    pieces_before = len(tok_json["model"]["vocab"])

    state = load_file(str(model_dir / WEIGHTS_FILE))
    key = next(k for k in state if k.endswith("word_embeddings.weight"))
    before = sum(v.size for k, v in state.items() if not k.startswith("pooler."))
    state[key] = np.ascontiguousarray(state[key][keep])
    copy_model_files(model_dir, out)
    save_weights(out, state)
    write_tokenizer(out, _remap_tokenizer(tok_json, keep))
    _remap_config(out, keep)
    after = sum(v.size for k, v in state.items() if not k.startswith("pooler."))
    return PruneReport(pieces_before, len(keep), before, after)


def _remap_config(model_dir: Path, keep: list[int]) -> None:
    config = read_model_config(model_dir)
    new_id = {old: new for new, old in enumerate(keep)}
    changes = {key: new_id[config[key]] for key in ("pad_token_id", "bos_token_id", "eos_token_id")
               if config.get(key) is not None}
    update_config(model_dir, vocab_size=len(keep), **changes)
