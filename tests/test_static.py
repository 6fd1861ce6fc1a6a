"""The static tier: the numpy runtime, the directory sentence-transformers reads, the CLI, distill-static."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import CHARS, make_tiny_bert
from zhembed import Encoder
from zhembed.modeldir import is_static_dir, model_info, write_static_model
from zhembed.runtime import SHIPPED_MODEL, SHIPPED_STATIC
from zhembed.runtime.encoder import StaticEncoder

TEXTS = ["花呗怎么还款", "花呗如何还钱", "今天天气很好", "", "我的儿子！他猛然间喊道，我的儿子在哪儿？"]


def static_tokenizer_of(model_dir: Path):
    from zhembed.train.static import static_tokenizer

    return static_tokenizer(model_dir)


@pytest.fixture(scope="module")
def tiny_static(tmp_path_factory) -> Path:
    """The shipped model's pieces with a random 8-dimensional fp16 table."""
    tokenizer = static_tokenizer_of(SHIPPED_MODEL)
    table = np.random.default_rng(0).standard_normal((tokenizer.get_vocab_size(), 8)).astype(np.float32)
    out = tmp_path_factory.mktemp("static") / "tiny-static"
    write_static_model(out, tokenizer, table)
    return out


def test_vectors_are_the_normalized_mean_of_the_token_rows(tiny_static):
    enc = Encoder.load(tiny_static)
    assert isinstance(enc, StaticEncoder) and enc.dim == 8 and enc.prompt == ""
    table = np.asarray(enc.table, dtype=np.float32)
    got = enc.encode(TEXTS, batch_size=2)
    for text, vector in zip(TEXTS, got):
        ids = enc.tokenizer.encode(text, add_special_tokens=False).ids
        if not ids:
            assert not vector.any()  # nothing to average: a zero vector, never NaN
            continue
        mean = table[ids].mean(0)
        np.testing.assert_allclose(vector, mean / np.linalg.norm(mean), atol=1e-6)
    np.testing.assert_allclose(enc.embed_ids(enc.tokenize(TEXTS, 256)), enc.encode(TEXTS), atol=1e-6)


def test_a_vector_does_not_depend_on_its_batch(tiny_static):
    enc = Encoder.load(tiny_static)
    texts = [TEXTS[4] * 40, "", TEXTS[0], TEXTS[2] * 7]
    alone = np.stack([enc.encode(t, max_length=4096) for t in texts])
    np.testing.assert_allclose(enc.encode(texts, max_length=4096), alone, atol=1e-6)
    np.testing.assert_allclose(enc.encode(texts, max_length=4096, max_batch_tokens=4096), alone, atol=1e-6)


def test_the_directory_is_static_and_info_says_so(tiny_static):
    info = model_info(tiny_static)
    assert is_static_dir(tiny_static) and info["kind"].startswith("static") and info["hidden_size"] == 8
    assert not is_static_dir(SHIPPED_MODEL) and model_info(SHIPPED_MODEL)["kind"].startswith("transformer")


@pytest.mark.parametrize("which", ["tiny", "shipped"])
def test_sentence_transformers_gives_the_same_vectors(tiny_static, which):
    """Also on the shipped directory as a checkout has it (git keeps no empty 1_Normalize folder)."""
    from sentence_transformers import SentenceTransformer

    path = tiny_static if which == "tiny" else SHIPPED_STATIC
    if not (path / "model.safetensors").exists():
        pytest.skip("zhembed-static-zh is not shipped yet")
    texts = [t for t in TEXTS if t]
    theirs = SentenceTransformer(str(path), device="cpu").encode(texts, convert_to_numpy=True)
    ours = Encoder.load(path).encode(texts)
    cos = (theirs * ours).sum(1) / np.linalg.norm(theirs, axis=1)
    assert cos.min() >= 0.9999, cos


def test_a_corrupt_table_is_one_clear_error(tiny_static, tmp_path):
    import shutil

    from zhembed import ZhembedError

    broken = tmp_path / "broken"
    shutil.copytree(tiny_static, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ZhembedError, match="truncated or corrupt"):
        Encoder.load(broken)


def test_commands_take_a_static_model(tiny_static, tmp_path, monkeypatch, capsys):
    from test_cli import run

    monkeypatch.chdir(tmp_path)
    (tmp_path / "texts.txt").write_text("\n".join(t for t in TEXTS if t) + "\n", encoding="utf-8")
    code, out, err = run(monkeypatch, capsys, "info", str(tiny_static))
    assert code == 0 and "kind: static" in out, err
    code, out, err = run(monkeypatch, capsys, "similarity", "花呗怎么还款", "花呗如何还钱", "-m", str(tiny_static))
    assert code == 0 and len(out.splitlines()) == 1, err
    code, _, err = run(monkeypatch, capsys, "encode", "-i", "texts.txt", "-o", "v.npy", "-m", str(tiny_static))
    assert code == 0 and np.load(tmp_path / "v.npy").shape == (4, 8), err
    code, _, err = run(monkeypatch, capsys, "index", "build", "--input", "texts.txt", "--out", "idx", "-m", str(tiny_static))
    assert code == 0, err
    code, out, err = run(monkeypatch, capsys, "search", "idx", "花呗怎么还款", "-k", "1")
    assert code == 0 and "花呗怎么还款" in out, err


def test_exporting_a_static_model_is_one_clear_error(tiny_static, monkeypatch, capsys):
    from test_cli import run

    code, _, err = run(monkeypatch, capsys, "export", str(tiny_static))
    assert code == 2 and "is a static model" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.skipif(not (SHIPPED_STATIC / "model.safetensors").exists(), reason="zhembed-static-zh is not shipped yet")
def test_the_shipped_static_model_loads_by_name_and_ranks_paraphrases_first():
    enc = Encoder.load("zhembed-static-zh")
    scores = enc.similarity("花呗怎么还款", ["花呗如何还钱", "今天天气很好"])
    assert enc.path == SHIPPED_STATIC and scores[0] > scores[1]
    size = sum(f.stat().st_size for f in SHIPPED_STATIC.rglob("*") if f.is_file())
    assert size <= 15 * 2**20, size


def test_distill_static_trains_a_table_that_resumes(tmp_path):
    """End to end on a tiny BERT: targets, piece vectors, regression, pairs, validation, save, resume."""
    from zhembed.errors import ZhembedError
    from zhembed.train.static import StaticConfig, distill_static

    teacher = make_tiny_bert(tmp_path / "bert")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(teacher)).backend_tokenizer.save(str(teacher / "tokenizer.json"))
    rng = np.random.default_rng(0)
    sentences = ["".join(rng.choice(CHARS, size=int(rng.integers(4, 12)))) for _ in range(600)]
    (tmp_path / "corpus.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    pairs = [f"{sentences[i]}\t{sentences[i][::-1]}\t{i % 2}" for i in range(200)]
    (tmp_path / "pairs.tsv").write_text("\n".join(pairs) + "\n", encoding="utf-8")
    cfg = StaticConfig(model=str(teacher), out=str(tmp_path / "static"), corpus=str(tmp_path / "corpus.txt"),
                       train=[str(tmp_path / "pairs.tsv")], val_fraction=0.1, pca_dims=16, regression_epochs=1,
                       pair_epochs=1, regression_batch=64, batch_size=32, work_dir=str(tmp_path / "work"),
                       eval_every=5, log_every=5, threads=1)
    lines: list[str] = []
    out = distill_static(cfg, log=lines.append)
    enc = Encoder.load(out)
    assert enc.dim == 16 and len(enc.table) > 300 and enc.encode("的一是").shape == (16,)
    run = json.loads((out / "zhembed_run.json").read_text())
    assert run["command"] == "distill-static" and "mean" in run["validation"]
    assert any(line.startswith("eval step") and "agreement" in line for line in lines)
    with pytest.raises(ZhembedError, match="--resume"):
        distill_static(cfg, log=lines.append)
    distill_static(cfg, resume=True, log=lines.append)  # finished: resumes at the last step, trains nothing
    assert any(line.startswith("resumed at step") for line in lines)


def test_a_cascade_index_rescores_first_stage_candidates_with_the_transformer(tiny_static, tiny_bert, tmp_path,
                                                                             monkeypatch, capsys):
    from test_cli import run

    from zhembed.search import Index

    texts = ["花呗怎么还款", "花呗如何还钱", "今天天气很好", "我的儿子在哪儿", "明天会下雨吗", "借呗额度怎么提高"]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    code, _, err = run(monkeypatch, capsys, "index", "build", "-i", tmp_path / "texts.txt", "--out", tmp_path / "idx",
                       "--first-stage", tiny_static, "-m", tiny_bert)
    assert code == 0, err
    index = Index.load(tmp_path / "idx")
    assert index.meta.model == str(tiny_static) and index.meta.rerank["model"] == str(tiny_bert)
    transformer = Encoder.load(tiny_bert)
    query = transformer.encode("花呗怎么还款")
    exact = sorted(((float(v @ query), t) for v, t in zip(transformer.encode(texts), texts)), reverse=True)[:3]
    hits = index.search("花呗怎么还款", k=3, rerank=6)[0]
    assert [h.text for h in hits] == [t for _, t in exact]
    np.testing.assert_allclose([h.score for h in hits], [s for s, _ in exact], atol=1e-5)
    first_stage = index.search("花呗怎么还款", k=3, rerank=0)[0]  # the static model's own scores
    static_query = Encoder.load(tiny_static).encode("花呗怎么还款")
    assert abs(first_stage[0].score - float(Encoder.load(tiny_static).encode(first_stage[0].text) @ static_query)) < 1e-5
    code, out, err = run(monkeypatch, capsys, "search", tmp_path / "idx", "花呗怎么还款", "-k", "2", "--rerank", "6")
    assert code == 0 and out.splitlines()[1].endswith(exact[0][1]), err


WHITESPACE_ENDS = [chr(c) for c in range(0x110000) if chr(c).isspace()] + [chr(c) for c in range(0x2000, 0x2070)] + \
    ["\ufeff", "\u180e", "\x00", "\x7f", "\u00ad", "\u2581", "\u3164", "\uffa0"]
ODD_TEXTS = ["", " ", "   ", "你好 ", " 你好", "  前后  空格  ", "a\t\tb", "第一行\n第二行\n", "😀🎉", "ＡＢＣ１２３", "ǅ ﬁ ①②",
             "花呗怎么还款" * 80, "a<s>b", "</s>", "<unk> <pad>"] + [f"你好{w}" for w in WHITESPACE_ENDS] + [f"a{w}{w}b" for w in WHITESPACE_ENDS]


@pytest.mark.parametrize("name", [SHIPPED_MODEL, SHIPPED_STATIC])
def test_sentencepiece_ids_are_the_tokenizers_ids(name):
    """Both shipped models tokenize through sentencepiece (runtime.tokenizer.UnigramIds): the same ids as
    tokenizers gives, at every length, for odd whitespace, emoji, width variants, long texts and, where the
    data is here, 5,000 corpus sentences."""
    truncating = Encoder.load(name)._truncating
    assert truncating.fast is not None
    texts = ODD_TEXTS + _corpus(5000)
    for length in (8, 64, 256):
        slow = [e.ids for e in truncating._encode(texts, length, with_offsets=False)[0]]
        assert truncating(texts, length) == slow
        plain = [i for i, t in enumerate(texts) if truncating.fast.reads([t])]  # without a literal "<s>" etc.
        for threads in (1, 2):
            assert len(plain) == len(texts) - 3 and truncating.fast([texts[i] for i in plain], length, threads) == \
                [slow[i] for i in plain]


def test_few_texts_never_start_sentencepiece_threads():
    """sentencepiece's list call starts a thread pool each time, even for one thread: about 30 us on a quiet
    host and 2 ms on a busy one, where a one-sentence encode took 4 ms in all. Below FAST_BATCH_THREADED texts the
    ids come from one call per text."""
    truncating = Encoder.load(SHIPPED_MODEL)._truncating
    calls = []

    class Watch:
        def __init__(self, processor):
            self.processor = processor

        def encode(self, texts, **kw):
            calls.append(type(texts))
            return self.processor.encode(texts, **kw)
    truncating.fast.processor = Watch(truncating.fast.processor)
    assert truncating(["花呗怎么还款", "借呗"], 64) and calls == [str, str]


def _corpus(n: int) -> list[str]:
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus" / "sentences.txt"
    return path.read_text(encoding="utf-8").splitlines()[:n] if path.exists() else []


def test_a_tokenizer_sentencepiece_cannot_copy_keeps_tokenizers(tiny_bert):
    truncating = Encoder.load(tiny_bert)._truncating  # a BERT WordPiece vocabulary
    assert truncating.fast is None and truncating(["花呗怎么还款"], 8)[0][0] == truncating.base.token_to_id("[CLS]")
