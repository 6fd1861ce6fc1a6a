"""Batch embedding into Parquet shards (local and Ray give the same rows), resume, and export to Qdrant."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import SENTENCES
from zhembed import Encoder, ZhembedError
from zhembed.scale import embed_dataset as ed
from zhembed.search.build import BuildSpec, build_index
from zhembed.textio import Records
from zhembed.scale.vector_export import export_to_qdrant, qdrant_client


@pytest.fixture
def dataset(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_text("".join(json.dumps({"doc": f"d{i}", "text": s, "n": i}, ensure_ascii=False) + "\n"
                                            for i, s in enumerate(SENTENCES[:20])), encoding="utf-8")
    (folder / "b.txt").write_text("\n".join(SENTENCES[20:32]) + "\n", encoding="utf-8")
    return folder


def cfg(tiny_bert, **kw) -> ed.EmbedConfig:
    return ed.EmbedConfig(model=str(tiny_bert), rows_per_shard=7, **kw)


def read_shards(out):
    return {p.name: pq.read_table(p).to_pydict() for p in sorted(out.glob("*.parquet"))}


def test_local_and_ray_write_identical_shards(tiny_bert, dataset, tmp_path):
    ray = pytest.importorskip("ray")
    # Same settings on both engines, threads included: a matmul split over more threads may differ in the last bit.
    local = ed.embed_dataset(dataset, tmp_path / "local", cfg(tiny_bert, threads=1), "local", log=lambda m: None)
    assert (local["rows"], local["shards"]) == (32, 5)  # a: 7 + 7 + 6, b: 7 + 5
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ed.embed_dataset(dataset, tmp_path / "ray", cfg(tiny_bert, threads=1), "ray", actors=2, log=lambda m: None)
    finally:
        ray.shutdown()
    a, b = read_shards(tmp_path / "local"), read_shards(tmp_path / "ray")
    assert list(a) == list(b) == ["a.jsonl-00000.parquet", "a.jsonl-00001.parquet", "a.jsonl-00002.parquet",
                                  "b.txt-00000.parquet", "b.txt-00001.parquet"]
    for name in a:
        assert a[name].keys() == b[name].keys() and a[name]["text"] == b[name]["text"]
        np.testing.assert_array_equal(np.array(a[name]["embedding"]), np.array(b[name]["embedding"]))
    assert a["a.jsonl-00001.parquet"]["doc"][0] == "d7" and set(a["a.jsonl-00000.parquet"]) == {"doc", "text", "n", "embedding"}
    vectors = Encoder.load(tiny_bert).encode(SENTENCES[:7], max_length=128)
    np.testing.assert_allclose(np.array(a["a.jsonl-00000.parquet"]["embedding"]), vectors, atol=1e-6)


def test_killed_run_resumes_to_the_same_output(tiny_bert, dataset, tmp_path, monkeypatch):
    ed.embed_dataset(dataset, tmp_path / "whole", cfg(tiny_bert), log=lambda m: None)
    real, calls, killed = ed.ShardEmbedder.write, [], []

    def dies_on_third_shard(self, name, table):
        calls.append(name)
        if len(calls) == 3 and not killed:
            killed.append(name)
            raise RuntimeError("killed")
        real(self, name, table)

    monkeypatch.setattr(ed.ShardEmbedder, "write", dies_on_third_shard)
    with pytest.raises(RuntimeError, match="killed"):
        ed.embed_dataset(dataset, tmp_path / "resumed", cfg(tiny_bert), log=lambda m: None)
    calls.clear()
    report = ed.embed_dataset(dataset, tmp_path / "resumed", cfg(tiny_bert), log=lambda m: None)
    assert (report["skipped"], calls) == (2, ["a.jsonl-00002", "b.txt-00000", "b.txt-00001"])
    assert read_shards(tmp_path / "resumed") == read_shards(tmp_path / "whole")
    with pytest.raises(ZhembedError, match="other input contents or settings"):
        ed.embed_dataset(dataset, tmp_path / "resumed", cfg(tiny_bert, batch_size=8), log=lambda m: None)


def test_bad_inputs(tiny_bert, tmp_path):
    (tmp_path / "x.jsonl").write_text('{"body": "你好"}\n', encoding="utf-8")
    with pytest.raises(ZhembedError, match="no field 'text'"):
        ed.embed_dataset(tmp_path / "x.jsonl", tmp_path / "o", cfg(tiny_bert), log=lambda m: None)
    (tmp_path / "y.jsonl").write_text('{"text": "你好"}\n{"text": ""}\n', encoding="utf-8")
    with pytest.raises(ZhembedError, match="row 2: 'text' is empty"):
        ed.embed_dataset(tmp_path / "y.jsonl", tmp_path / "o", cfg(tiny_bert), log=lambda m: None)
    with pytest.raises(ZhembedError, match="input not found"):
        ed.embed_dataset(tmp_path / "nope", tmp_path / "o", cfg(tiny_bert), log=lambda m: None)


def test_qdrant_round_trip_matches_zhembed_search(tiny_bert, tmp_path):
    (tmp_path / "docs.txt").write_text("\n".join(SENTENCES[:40]) + "\n", encoding="utf-8")
    ed.embed_dataset(tmp_path / "docs.txt", tmp_path / "shards", ed.EmbedConfig(model=str(tiny_bert)), log=lambda m: None)
    client = qdrant_client(path=":memory:")
    assert export_to_qdrant(tmp_path / "shards", client, "docs", log=lambda m: None) == 40
    assert export_to_qdrant(tmp_path / "shards", client, "docs", log=lambda m: None) == 40  # idempotent
    assert client.count("docs").count == 40

    encoder = Encoder.load(tiny_bert)
    index = build_index(Records(texts=SENTENCES[:40]), tmp_path / "idx", encoder, BuildSpec(), "docs")
    for query in (SENTENCES[3], "今天天气怎么样", "我想买一部手机"):
        ours = [h.text for h in index.search(query, k=10)[0]]
        vector = encoder.encode(query, max_length=128).tolist()
        theirs = [p.payload["text"] for p in client.query_points("docs", query=vector, limit=10).points]
        assert theirs == ours
    with pytest.raises(ZhembedError, match="exactly one"):
        qdrant_client()


def test_an_input_that_grew_is_refused_not_half_resumed(tiny_bert, tmp_path):
    (tmp_path / "in.txt").write_text("\n".join(SENTENCES[:15]) + "\n", encoding="utf-8")
    ed.embed_dataset(tmp_path / "in.txt", tmp_path / "out", cfg(tiny_bert), log=lambda m: None)
    (tmp_path / "in.txt").write_text("\n".join(SENTENCES[:25]) + "\n", encoding="utf-8")
    with pytest.raises(ZhembedError, match="other input contents"):
        ed.embed_dataset(tmp_path / "in.txt", tmp_path / "out", cfg(tiny_bert), log=lambda m: None)


def test_inputs_with_the_same_stem_keep_all_their_rows(tiny_bert, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "faq.txt").write_text("\n".join(SENTENCES[:3]) + "\n", encoding="utf-8")
    (folder / "faq.jsonl").write_text("".join(json.dumps({"text": s}, ensure_ascii=False) + "\n" for s in SENTENCES[3:6]),
                                      encoding="utf-8")
    report = ed.embed_dataset(folder, tmp_path / "out", cfg(tiny_bert), log=lambda m: None)
    on_disk = sum(len(t["text"]) for t in read_shards(tmp_path / "out").values())
    assert report["rows"] == on_disk == 6


def test_null_ids_are_refused_and_1_differs_from_string_1(tiny_bert, tmp_path):
    (tmp_path / "ids").mkdir()
    (tmp_path / "ids" / "a.jsonl").write_text('{"id": 1, "text": "你好"}\n', encoding="utf-8")
    (tmp_path / "ids" / "b.jsonl").write_text('{"id": "1", "text": "再见"}\n', encoding="utf-8")
    ed.embed_dataset(tmp_path / "ids", tmp_path / "ok", cfg(tiny_bert), log=lambda m: None)
    client = qdrant_client(path=":memory:")
    assert export_to_qdrant(tmp_path / "ok", client, "c", id_field="id", log=lambda m: None) == 2
    assert client.count("c").count == 2
    (tmp_path / "b.jsonl").write_text('{"id": null, "text": "你好"}\n{"id": null, "text": "再见"}\n', encoding="utf-8")
    ed.embed_dataset(tmp_path / "b.jsonl", tmp_path / "nulls", cfg(tiny_bert), log=lambda m: None)
    with pytest.raises(ZhembedError, match="row 1 has no id"):
        export_to_qdrant(tmp_path / "nulls", client, "d", id_field="id", log=lambda m: None)


def test_a_tsv_input_keeps_its_columns(tiny_bert, tmp_path):
    folder = tmp_path / "tsv"
    folder.mkdir()
    (folder / "faq.tsv").write_text("id\ttext\n" + "".join(f"q{i}\t{s}\n" for i, s in enumerate(SENTENCES[:5])),
                                    encoding="utf-8")
    result = ed.embed_dataset(folder, tmp_path / "out", cfg(tiny_bert), log=lambda m: None)
    shard = read_shards(tmp_path / "out")["faq.tsv-00000.parquet"]
    assert result["rows"] == 5 and shard["id"] == [f"q{i}" for i in range(5)] and shard["text"] == SENTENCES[:5]
    (folder / "faq.tsv").write_text("id\ttext\nq0\n", encoding="utf-8")
    with pytest.raises(ZhembedError, match="faq.tsv:2: 1 columns, the header has 2"):
        ed.embed_dataset(folder, tmp_path / "out2", cfg(tiny_bert), log=lambda m: None)
