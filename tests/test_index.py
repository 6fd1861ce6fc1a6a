"""Reading corpora, building/extending/searching an index (with a kill mid-build), clustering."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import SENTENCES
from test_cli import run
from zhembed import Encoder, ZhembedError
from zhembed.search import build
from zhembed.search.build import BuildSpec, build_index
from zhembed.search.index import Index
from zhembed.search.cluster import communities, kmeans, summarize
from zhembed.textio import read_records


@pytest.fixture(scope="module")
def encoder(tiny_bert):
    return Encoder.load(tiny_bert)


def test_reads_text_jsonl_tsv_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.txt").write_text("甲\n乙\n", encoding="utf-8")
    (tmp_path / "a.jsonl").write_text('{"t": "甲", "k": 7}\n{"t": "乙", "k": 8}\n', encoding="utf-8")
    (tmp_path / "a.tsv").write_text("k\tt\n7\t甲\n8\t乙\n", encoding="utf-8")
    pq.write_table(pa.table({"t": ["甲", "乙"], "k": [7, 8]}), tmp_path / "a.parquet")
    assert read_records(tmp_path / "a.txt").texts == ["甲", "乙"]
    for name, ids in (("a.jsonl", [7, 8]), ("a.tsv", ["7", "8"]), ("a.parquet", [7, 8])):  # ids keep their type
        records = read_records(tmp_path / name, "t", "k")
        assert (records.texts, records.ids, records.rows, records.total) == (["甲", "乙"], ids, [0, 1], 2)


@pytest.mark.parametrize("name, content, message", [
    ("empty.txt", b"", "is empty"),
    ("blank.jsonl", '{"text": "甲"}\n{"text": " "}\n'.encode(), "blank.jsonl:2: empty text"),
    ("latin1.txt", "甲\n".encode() + "é\n".encode("latin-1"), "latin1.txt:2: not UTF-8 text"),
    ("field.jsonl", '{"text": "甲"}\n{"other": "乙"}\n'.encode(), "field.jsonl:2: no string field 'text'"),
    ("broken.jsonl", '{"text": "甲"}\n{"text": \n'.encode(), "broken.jsonl:2: not a JSON line"),
    ("cols.tsv", "text\tid\n甲\t1\n乙\n".encode(), "cols.tsv:3: 1 columns, the header has 2"),
])
def test_bad_input_names_the_line_or_is_skipped(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ZhembedError, match=message):
        read_records(path)
    if name != "empty.txt":
        records = read_records(path, skip_bad=True)
        assert records.texts[0] == "甲" and len(records.skipped) == 1 and message in records.skipped[0]
        assert records.total == len(records.texts) + 1


def test_blank_lines_of_plain_text_are_skipped_and_counted(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text("甲\n\n  \n乙\n\n", encoding="utf-8")
    records = read_records(path)
    assert records.texts == ["甲", "乙"] and records.rows == [0, 3] and records.blank == 3 and not records.skipped


def test_build_search_add_and_hnsw(encoder, tmp_path):
    records = read_records(_corpus(tmp_path, SENTENCES[:40]))
    index = build_index(records, tmp_path / "idx", encoder, BuildSpec(), "corpus.txt")
    hits = index.search(SENTENCES[:3], k=5)
    assert [h[0].text for h in hits] == SENTENCES[:3] and hits[0][0].score == pytest.approx(1, abs=1e-5)
    assert index.meta.faiss_index == "IndexFlatIP" and len(index) == 40
    assert len(build_index(records, tmp_path / "idx", encoder, BuildSpec(), "again")) == 40  # a rerun: nothing to do
    with pytest.raises(ZhembedError, match="already holds an index"):
        build_index(read_records(_corpus(tmp_path, SENTENCES[:7], "other.txt")), tmp_path / "idx", encoder, BuildSpec(), "b")

    more = read_records(_corpus(tmp_path, SENTENCES[40:60], "more.txt"))
    index = build_index(more, tmp_path / "idx", encoder, BuildSpec(), "more.txt", append=True)
    assert len(index) == 60 and index.search(SENTENCES[50], k=1)[0][0].id == "50"
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == [".lock", "CURRENT", "gen-000001", "gen-000002", "seg-000001", "seg-000002"]

    hnsw = build_index(records, tmp_path / "hnsw", encoder, BuildSpec(ann="hnsw"), "c")
    assert hnsw.meta.faiss_index == "IndexHNSWFlat"
    assert [h[0].text for h in hnsw.search(SENTENCES[:10], k=1)] == SENTENCES[:10]


def test_killed_build_resumes_to_the_same_index(encoder, tmp_path, monkeypatch):
    monkeypatch.setattr(build, "CHUNK", 16)
    records = read_records(_corpus(tmp_path, SENTENCES[:50]))
    whole = build_index(records, tmp_path / "whole", encoder, BuildSpec(), "c")

    real, calls = encoder.encode, []

    def dies_on_third_chunk(texts, **kw):
        calls.append(len(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt  # as a kill between two chunk writes
        return real(texts, **kw)

    monkeypatch.setattr(encoder, "encode", dies_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        build_index(records, tmp_path / "resumed", encoder, BuildSpec(), "c")
    assert not (tmp_path / "resumed" / "CURRENT").exists()  # nothing loadable yet
    assert len(list((tmp_path / "resumed" / ".partial" / "chunks").glob("*.npy"))) == 2
    calls.clear()
    resumed = build_index(records, tmp_path / "resumed", encoder, BuildSpec(), "c")
    assert calls == [16, 2]  # only the missing chunks were encoded
    np.testing.assert_array_equal(resumed.vectors(), whole.vectors())
    assert (resumed.ids, resumed.texts) == (whole.ids, whole.texts)
    assert not (tmp_path / "resumed" / ".partial").exists()


def test_killed_add_leaves_the_old_index_loadable(encoder, tmp_path, monkeypatch):
    build_index(read_records(_corpus(tmp_path, SENTENCES[:20])), tmp_path / "idx", encoder, BuildSpec(), "c")
    monkeypatch.setattr(build.ann_lib, "build", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        build_index(read_records(_corpus(tmp_path, SENTENCES[20:30], "more.txt")), tmp_path / "idx", encoder, BuildSpec(), "more", append=True)
    assert len(Index.load(tmp_path / "idx", encoder)) == 20


def test_cluster_functions():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 16))
    vectors = np.concatenate([c + 0.05 * rng.normal(size=(n, 16)) for c, n in zip(centers, (10, 6, 4))])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    truth = np.repeat([0, 1, 2], (10, 6, 4))
    np.testing.assert_array_equal(kmeans(vectors, 3), truth)
    np.testing.assert_array_equal(communities(vectors, 0.9), truth)
    assert len(set(communities(vectors, 0.99999))) == 20  # nobody that close: all singletons
    groups = summarize(vectors, truth, [f"t{i}" for i in range(20)], top=2)
    assert [g["size"] for g in groups] == [10, 6, 4] and len(groups[0]["central"]) == 2
    with pytest.raises(ZhembedError, match="-k must be between 1 and"):
        kmeans(vectors, 21)


def test_large_inputs_cluster_through_an_ivf_index_and_summarize_in_one_pass(monkeypatch):
    """Above EXACT_LIMIT texts the neighbours come from IVF cells; tight groups come out the same. The summary
    of many clusters no longer scans all labels once per cluster."""
    from zhembed.search import cluster

    rng = np.random.default_rng(1)
    centers = rng.normal(size=(40, 32))
    sizes = rng.integers(1, 30, size=40)
    vectors = np.concatenate([c + 0.03 * rng.normal(size=(n, 32)) for c, n in zip(centers, sizes)])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    exact = cluster.communities(vectors, 0.9)
    monkeypatch.setattr(cluster, "EXACT_LIMIT", 10)
    np.testing.assert_array_equal(cluster.communities(vectors, 0.9), exact)
    texts = [f"t{i}" for i in range(len(vectors))]
    groups = summarize(vectors, exact, texts, top=3)
    assert [g["cluster"] for g in groups] == list(range(len(groups))) and sum(g["size"] for g in groups) == len(texts)
    first = np.flatnonzero(exact == 0)
    centroid = vectors[first].mean(0)
    assert groups[0]["central"] == [texts[i] for i in first[np.argsort(-(vectors[first] @ centroid), kind="stable")[:3]]]


def test_cli_index_search_and_cluster(monkeypatch, capsys, tiny_bert, tmp_path):
    corpus = _corpus(tmp_path, [*SENTENCES[:30], "", *SENTENCES[30:40]])
    code, _, err = run(monkeypatch, capsys, "index", "build", "-i", corpus, "--out", tmp_path / "idx", "-m", tiny_bert)
    assert code == 0 and "40 texts (40 new" in err and "skipped" not in err  # the blank line is no mistake
    code, out, _ = run(monkeypatch, capsys, "search", tmp_path / "idx", SENTENCES[5], "-k", "2", "--json")
    hit = json.loads(out)["hits"][0]
    assert code == 0 and hit["text"] == SENTENCES[5] and hit["id"] == "5"
    code, _, err = run(monkeypatch, capsys, "search", tmp_path / "nowhere", "x")
    assert code == 2 and "is not a zhembed index" in err

    labels = tmp_path / "labels.txt"
    code, _, _ = run(monkeypatch, capsys, "cluster", "-i", corpus, "--out", labels, "-k", "3", "-m", tiny_bert,
                     "--skip-bad")
    lines = labels.read_text().splitlines()
    assert code == 0 and len(lines) == 41 and lines[30] == "-1" and {int(x) for x in lines} == {-1, 0, 1, 2}
    summary = json.loads((tmp_path / "labels.txt.summary.json").read_text(encoding="utf-8"))
    assert sum(g["size"] for g in summary) == 40
    code, _, err = run(monkeypatch, capsys, "cluster", "-i", corpus, "--out", labels, "-m", tiny_bert)
    assert code == 2 and "exactly one" in err


def _corpus(tmp_path, lines, name="corpus.txt"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _records(texts, ids=None):
    from zhembed.textio import Records

    return Records(texts=list(texts), ids=list(ids) if ids else [], rows=list(range(len(texts))), total=len(texts))


def test_concurrent_adds_keep_every_text_exactly_once(encoder, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    build_index(_records(SENTENCES[:10]), tmp_path / "idx", encoder, BuildSpec(), "a")
    batches = [SENTENCES[10 + 10 * w:20 + 10 * w] for w in range(4)]
    add = lambda texts: build_index(_records(texts), tmp_path / "idx", encoder, BuildSpec(), "b", append=True)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(add, batches))
    texts = Index.load(tmp_path / "idx").texts
    assert sorted(texts) == sorted(SENTENCES[:50]) and len(texts) == 50


def test_the_generation_before_the_live_one_stays_for_readers(encoder, tmp_path):
    out = tmp_path / "idx"
    build_index(_records(SENTENCES[:5]), out, encoder, BuildSpec(), "a")
    for lo in (5, 10):
        build_index(_records(SENTENCES[lo:lo + 5]), out, encoder, BuildSpec(), "b", append=True)
    assert sorted(p.name for p in out.glob("gen-*")) == ["gen-000002", "gen-000003"]
    (out / "CURRENT").write_text("gen-000002")  # a reader that read CURRENT just before the last switch
    assert len(Index.load(out)) == 10


def _edit_meta(gen, **changes):
    meta = json.loads((gen / "meta.json").read_text(encoding="utf-8"))
    (gen / "meta.json").write_text(json.dumps({**meta, **changes}), encoding="utf-8")


def _swap_equal_records(gen):
    """Two record lines of the same length exchanged: the offsets still fit, the texts are wrong."""
    lines = (gen / "records.jsonl").read_bytes().splitlines(keepends=True)
    i, j = next((i, j) for i in range(len(lines)) for j in range(i + 1, len(lines)) if len(lines[i]) == len(lines[j]))
    lines[i], lines[j] = lines[j], lines[i]
    (gen / "records.jsonl").write_bytes(b"".join(lines))


@pytest.mark.parametrize("damage, message", [
    (lambda gen, root: (gen / "records.jsonl").write_text(
        "".join((gen / "records.jsonl").read_text().splitlines(keepends=True)[:-1])), "does not match"),
    (lambda gen, root: ((gen / "records.offsets.npy").unlink(), (gen / "records.crc32.npy").unlink(), (gen / "records.jsonl").write_text(
        "".join((gen / "records.jsonl").read_text().splitlines(keepends=True)[:-1]))), "inconsistent: 5 vectors, 4 records"),
    (lambda gen, root: (root / "gen-000001" / "meta.json").write_text("{broken"), "meta.json is unreadable"),
    (lambda gen, root: (gen / "vectors.faiss").write_bytes(b"not faiss"), "not a readable faiss index"),
    (lambda gen, root: (root / "CURRENT").write_text("/etc"), "not a generation of this index"),
    (lambda gen, root: (root / "CURRENT").write_text("../../gen-000001"), "not a generation of this index"),
    (lambda gen, root: _edit_meta(root / "gen-000001", segments=[{"name": "../elsewhere", "count": 5}]),
     "names a segment outside the index"),
    (lambda gen, root: ((root / "CURRENT").unlink(), (root / "CURRENT").mkdir()), "CURRENT is not a file"),
    (lambda gen, root: (gen / "records.offsets.npy").write_bytes(b"\x93NUMPY garbage"), "records.offsets.npy is damaged"),
    (lambda gen, root: (gen / "records.offsets.npy").write_bytes((gen / "records.offsets.npy").read_bytes()[:-8]),
     "records.offsets.npy is damaged"),
    (lambda gen, root: _edit_meta(root / "gen-000001", dimensions="abc"), "dimensions is 'abc'"),
    (lambda gen, root: _edit_meta(root / "gen-000001", max_length=-1), "max_length is -1"),
    (lambda gen, root: _edit_meta(root / "gen-000001", model_id=5), "model_id is 5"),
    (lambda gen, root: _swap_equal_records(gen), "does not match its checksum"),
])
def test_a_damaged_index_is_one_clear_error(encoder, tmp_path, damage, message):
    out = tmp_path / "idx"
    build_index(_records(SENTENCES[:5]), out, encoder, BuildSpec(), "a")
    damage(out / "seg-000001", out)
    with pytest.raises(ZhembedError, match=message):
        Index.load(out, encoder).search("你好", k=5)


def test_another_model_of_the_same_width_is_refused(encoder, tmp_path):
    from conftest import make_tiny_bert

    out = tmp_path / "idx"
    build_index(_records(SENTENCES[:5]), out, encoder, BuildSpec(), "a")
    other = Encoder.load(make_tiny_bert(tmp_path / "other", seed=1))
    assert other.dim == encoder.dim
    with pytest.raises(ZhembedError, match="built with another model"):
        Index.load(out, other)
    assert Index.load(out, encoder).search(SENTENCES[0], k=1)[0][0].text == SENTENCES[0]


def test_ids_keep_their_type(encoder, tmp_path):
    index = build_index(_records(SENTENCES[:2], [1, "1"]), tmp_path / "idx", encoder, BuildSpec(), "a")
    assert Index.load(tmp_path / "idx").ids == [1, "1"] == index.ids


def test_readers_drop_a_bom_keep_unicode_line_separators_and_survive_all_bad_tsv(tmp_path):
    from zhembed.textio import read_lines

    bom = b"\xef\xbb\xbf"
    (tmp_path / "a.txt").write_bytes(bom + "甲\n乙\n".encode())
    (tmp_path / "a.jsonl").write_bytes(bom + '{"text": "甲"}\n'.encode())
    (tmp_path / "a.tsv").write_bytes(bom + "text\tid\n甲\t1\n".encode())
    assert read_records(tmp_path / "a.txt").texts == ["甲", "乙"] and read_lines(tmp_path / "a.txt") == ["甲", "乙"]
    assert read_records(tmp_path / "a.jsonl").texts == ["甲"]
    assert read_records(tmp_path / "a.tsv", id_field="id").ids == ["1"]
    (tmp_path / "sep.txt").write_text("甲\u2028乙\n丙\u0085丁\n", encoding="utf-8")
    assert read_records(tmp_path / "sep.txt").texts == read_lines(tmp_path / "sep.txt") == ["甲\u2028乙", "丙\u0085丁"]
    (tmp_path / "bad.tsv").write_bytes(b"\xff\xfe\n\xff\n")
    with pytest.raises(ZhembedError, match="header line is not readable"):
        read_records(tmp_path / "bad.tsv", skip_bad=True)


def test_rerunning_an_add_that_completed_adds_nothing(encoder, tmp_path, capsys):
    """A kill after the switch to the new generation, before the command could report: the rerun must not
    add the same texts twice."""
    build_index(_records(SENTENCES[:5]), tmp_path / "idx", encoder, BuildSpec(), "a")
    generations = []
    for _ in range(2):
        index = build_index(_records(SENTENCES[5:9]), tmp_path / "idx", encoder, BuildSpec(), "b", append=True)
        generations.append(index.generation)
    assert len(index) == 9 and sorted(index.texts) == sorted(SENTENCES[:9])
    assert generations[0] == generations[1]  # the rerun wrote nothing (the CLI then says "nothing to do")


@pytest.mark.parametrize("precision", ["fp32", "int8", "binary"])
@pytest.mark.parametrize("ann", ["exact", "hnsw"])
def test_every_precision_finds_the_same_neighbours_and_extends(encoder, tmp_path, precision, ann):
    out = tmp_path / "idx"
    index = build_index(_records(SENTENCES[:50]), out, encoder, BuildSpec(ann=ann, precision=precision), "a")
    assert (index.meta.precision, index.meta.dimensions, index.meta.dim) == (precision, 32, 32)
    hits = Index.load(out, encoder).search(SENTENCES[:10], k=3)
    assert [row[0].text for row in hits] == SENTENCES[:10]  # rescored with the exact vectors: itself first
    exact = encoder.encode(SENTENCES[:50], max_length=128)
    for row, q in zip(hits, exact[:10]):  # scores are exact (rescored), and for fp32 and int8 the true top 3
        np.testing.assert_allclose([h.score for h in row], [exact[SENTENCES.index(h.text)] @ q for h in row], atol=1e-4)
        if precision != "binary":
            np.testing.assert_allclose([h.score for h in row], np.sort(exact @ q)[::-1][:3], atol=1e-4)
    build_index(_records(SENTENCES[50:]), out, encoder, BuildSpec(), "b", append=True)
    grown = Index.load(out, encoder)
    assert len(grown) == len(SENTENCES) and grown.meta.precision == precision
    assert grown.search(SENTENCES[55], k=1)[0][0].text == SENTENCES[55]


def test_an_index_of_a_prefix_of_the_vectors(encoder, tmp_path):
    index = build_index(_records(SENTENCES[:30]), tmp_path / "idx", encoder, BuildSpec(dimensions=16), "a")
    assert index.meta.dimensions == 16 and index.vectors().shape == (30, 16)
    assert Index.load(tmp_path / "idx", encoder).search(SENTENCES[4], k=1)[0][0].text == SENTENCES[4]
    with pytest.raises(ZhembedError, match="multiple of 8"):
        build_index(_records(SENTENCES[:5]), tmp_path / "b", encoder, BuildSpec(dimensions=12, precision="binary"), "a")
    with pytest.raises(ZhembedError, match="unknown --precision"):
        build_index(_records(SENTENCES[:5]), tmp_path / "c", encoder, BuildSpec(precision="int4"), "a")


def test_every_index_file_is_fsynced_before_current_switches(encoder, tmp_path, monkeypatch):
    import os

    from zhembed import atomic

    synced = []
    real = os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real(fd))
    build_index(_records(SENTENCES[:5]), tmp_path / "idx", encoder, BuildSpec(), "a")
    names = [os.path.basename(p) for p in synced]
    for name in ("vectors.faiss", "records.jsonl", "records.offsets.npy", "meta.json", "CURRENT"):
        assert any(n.startswith(f".{name}.") for n in names), (name, names)
    assert names.index(next(n for n in names if n.startswith(".CURRENT."))) > names.index(
        next(n for n in names if n.startswith(".meta.json.")))  # the switch comes last
    assert any(p.endswith("gen-000001") for p in synced) and any(p.endswith("idx") for p in synced)  # folders too


def test_searching_read_only_vectors_leaves_them_untouched(encoder, tmp_path):
    index = build_index(_records(SENTENCES[:5]), tmp_path / "idx", encoder, BuildSpec(), "a")
    queries = encoder.encode(SENTENCES[:2], max_length=128)
    queries.setflags(write=False)  # e.g. a memory-mapped file of query vectors
    assert index.search_vectors(queries, k=1)[0][0].text == SENTENCES[0]


def test_an_add_writes_a_new_segment_and_leaves_the_others_untouched(encoder, tmp_path):
    out = tmp_path / "idx"
    build_index(_records(SENTENCES[:30]), out, encoder, BuildSpec(), "a")
    first = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "seg-000001").iterdir()}
    index = build_index(_records(SENTENCES[30:45]), out, encoder, BuildSpec(), "b", append=True)
    assert [(s.name, s.count) for s in index.meta.segments] == [("seg-000001", 30), ("seg-000002", 15)]
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "seg-000001").iterdir()} == first
    whole = build_index(_records(SENTENCES[:45]), tmp_path / "whole", encoder, BuildSpec(), "all")
    merged, single = Index.load(out, encoder).search(SENTENCES[:45:7], k=8), whole.search(SENTENCES[:45:7], k=8)
    assert [[(h.id, round(h.score, 5)) for h in row] for row in merged] == \
        [[(h.id, round(h.score, 5)) for h in row] for row in single]
    # the next add makes the two newest equal (15, 15): they merge, and then so do (30, 30)
    index = build_index(_records(SENTENCES[45:60]), out, encoder, BuildSpec(), "c", append=True)
    assert [s.count for s in index.meta.segments] == [60] and index.texts == SENTENCES
    assert sorted(p.name for p in out.glob("seg-*")) == ["seg-000001", "seg-000002", "seg-000005"]  # gen 2's kept
    with pytest.raises(ZhembedError, match="no texts"):
        build_index(_records([]), out, encoder, BuildSpec(), "d", append=True)


def test_an_index_written_before_segments_loads_and_grows(encoder, tmp_path):
    out = tmp_path / "idx"
    build_index(_records(SENTENCES[:10]), out, encoder, BuildSpec(), "a")
    gen, meta = out / "gen-000001", json.loads((out / "gen-000001" / "meta.json").read_text())
    for f in (out / "seg-000001").iterdir():  # the format-2 layout: the files in the generation itself
        f.rename(gen / f.name)
    (out / "seg-000001").rmdir()
    old = {k: v for k, v in meta.items() if k not in ("segments", "documents")}
    (gen / "meta.json").write_text(json.dumps({**old, "format": 2, "faiss_index": "IndexFlatIP"}))
    assert Index.load(out, encoder).search(SENTENCES[3], k=1)[0][0].text == SENTENCES[3]
    index = build_index(_records(SENTENCES[10:15]), out, encoder, BuildSpec(), "b", append=True)
    assert [s.name for s in index.meta.segments] == ["gen-000001", "seg-000001"]
    assert index.ids == [str(i) for i in range(15)] and Index.load(out, encoder).texts == SENTENCES[:15]


def test_int8_and_binary_indexes_of_the_earlier_kinds_still_search(tmp_path):
    """int8 IVF and binary Hamming (flat and IVF) were written before int8 HNSW and RaBitQ; they still load,
    with their own search settings."""
    import faiss

    from zhembed.search import ann as ann_lib

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((400, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    codes = ann_lib.binary_codes(vectors)
    ivf_binary = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(32), 32, 4)
    ivf_binary.train(codes)
    ivf_int8 = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(32), 32, 4, faiss.ScalarQuantizer.QT_8bit,
                                             faiss.METRIC_INNER_PRODUCT)
    ivf_int8.train(vectors)
    flat_binary = faiss.IndexBinaryFlat(32)
    for name, index, precision, data in (("a", flat_binary, "binary", codes), ("b", ivf_binary, "binary", codes),
                                         ("c", ivf_int8, "int8", vectors)):
        index.add(data)
        (tmp_path / name).mkdir()
        ann_lib.write(tmp_path / name, index, precision, vectors)
        ann = ann_lib.read(tmp_path / name, precision)
        assert type(ann.index) is type(index) and ann.rescore == ann_lib.SEARCH[type(index).__name__][1]
        assert list(ann.search(vectors[:20], 3)[1][:, 0]) == list(range(20))
    built = {p: type(ann_lib.build(vectors, p, "hnsw")).__name__ for p in ann_lib.PRECISIONS}
    assert built == {"fp32": "IndexHNSWFlat", "int8": "IndexHNSWSQ", "binary": "IndexIVFRaBitQ"}
