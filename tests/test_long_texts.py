"""Long documents on the shipped model: chunked encoding, and an index of passages with character offsets."""

from __future__ import annotations

import numpy as np
import pytest

from zhembed import Encoder
from zhembed.runtime import SHIPPED_MODEL
from zhembed.search.build import BuildSpec, build_index
from zhembed.search.index import Index
from zhembed.textio import Records

pytestmark = pytest.mark.skipif(not (SHIPPED_MODEL / "onnx").exists(), reason="no shipped model")

TOPICS = [
    "花呗每个月的还款日是几号？逾期还款会产生多少利息？可以用余额宝自动还款吗？提前还款有没有手续费？",
    "明天北京会下雨吗？这周末气温会降到零度以下，出门记得带伞和厚外套。天气预报说有大风蓝色预警。",
    "昨晚的篮球比赛湖人队加时险胜，詹姆斯最后一秒投中三分球。球迷们在球馆里欢呼，主教练赛后接受了采访。",
    "红烧肉要先焯水再炒糖色，加入生抽老抽和八角，小火慢炖一个小时。最后大火收汁，肥而不腻入口即化。",
    "新买的手机电池一天就没电了，是不是后台应用太多？充电的时候手机发烫正常吗？要不要换一块原装电池？",
    "国庆节去云南旅游，丽江古城和大理洱海哪个更值得去？玉龙雪山需要提前预约门票吗？住宿怎么安排比较好？",
    "每天背五十个英语单词，坚持三个月词汇量能提高多少？听力总是跟不上，应该看美剧还是听新闻广播练习？",
    "最近总是头疼失眠，去医院应该挂神经内科还是精神科？做核磁共振之前需要空腹吗？医保能报销多少？",
]


def paragraph(topic: str, length: int = 250) -> str:
    return (topic * (length // len(topic) + 1))[:length]


@pytest.fixture(scope="module")
def encoder():
    return Encoder.load()


def test_chunked_encoding_covers_the_whole_text(encoder):
    doc = "\n".join(paragraph(t) for t in TOPICS)
    assert len(doc) >= 2000 and encoder.truncated([doc]) == 1 and len(encoder.passages(doc)) > 2
    whole, cut = encoder.encode(doc, long="chunk"), encoder.encode(doc)
    last = encoder.encode(paragraph(TOPICS[-1]))
    assert float(whole @ last) > float(cut @ last)  # the last paragraph counts only when the text is chunked
    assert np.isclose(np.linalg.norm(whole), 1) and float(encoder.encode("你好", long="chunk") @ encoder.encode("你好")) > 0.9999


def test_an_index_of_passages_finds_the_document_and_the_paragraph(encoder, tmp_path):
    paragraphs = [paragraph(t) for t in TOPICS]
    doc = "\n".join(paragraphs)  # 8 paragraphs, 2,007 characters
    distractors = ["\n".join(paragraphs[j] for j in order) for order in ([0, 1, 3], [4, 5, 6, 7], [1, 7, 0, 4])]
    records = Records(texts=[*distractors, doc], ids=["d0", "d1", "d2", "long"])
    index = build_index(records, tmp_path / "idx", encoder, BuildSpec(chunk=True), "docs")
    assert index.meta.chunk and index.meta.documents == 4 and len(index) > 4
    start3 = doc.index(paragraphs[2])
    end3 = start3 + len(paragraphs[2])
    hits = Index.load(tmp_path / "idx", encoder).search(paragraphs[2], k=3)[0]
    best = hits[0]
    assert best.id == "long" and len({h.id for h in hits}) == len(hits)  # each document once
    overlap = min(best.end, end3) - max(best.start, start3)
    assert overlap >= 0.5 * len(paragraphs[2]), (best.start, best.end, start3, end3)
    assert doc[best.start:best.end] == best.text


def test_chunked_encoding_tokenizes_once_and_keeps_the_token_budget(tiny_bert, monkeypatch):
    enc = Encoder.load(tiny_bert)
    texts = ["很长的文字" * 120, "短句"]
    tokenized, widths = [], []
    real_tokenize, real_embed = enc.tokenize, enc.embed_ids
    monkeypatch.setattr(enc, "tokenize", lambda t, n: tokenized.append(len(t)) or real_tokenize(t, n))
    monkeypatch.setattr(enc, "embed_ids", lambda b, normalize=True, backend=None:
                        widths.append(len(b) * max(map(len, b))) or real_embed(b, normalize, backend))
    out = enc.encode(texts, long="chunk", max_length=64, max_batch_tokens=128)
    assert out.shape == (2, enc.dim) and len(tokenized) == 1  # every window tokenized in one call, once
    assert max(widths) <= 128
