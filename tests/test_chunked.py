"""The one resumable chunked encoder (runtime/chunked.py): reuse by settings and content, prefixes, kills."""

from __future__ import annotations

import numpy as np
import pytest

from zhembed.runtime.chunked import encode_resumable


def counting(calls: list):
    def encode(texts):
        calls.append(len(texts))
        return np.array([[len(t), ord(t[0])] for t in texts], dtype=np.float32)
    return encode


def test_a_rerun_and_a_prefix_reuse_the_chunks_and_other_settings_do_not(tmp_path):
    texts = [f"句子{i}" for i in range(10)]
    calls: list = []
    whole = encode_resumable(texts, counting(calls), tmp_path, "model-a", chunk=4, show_progress=False)
    assert calls == [4, 4, 2] and whole.shape == (10, 2)
    calls.clear()
    np.testing.assert_array_equal(encode_resumable(texts, counting(calls), tmp_path, "model-a", chunk=4,
                                                   show_progress=False), whole)
    assert calls == []
    prefix = encode_resumable(texts[:8], counting(calls), tmp_path, "model-a", chunk=4, show_progress=False)
    assert calls == [] and np.array_equal(prefix, whole[:8])  # the first N texts of the same list: nothing new
    encode_resumable(texts, counting(calls), tmp_path, "model-b", chunk=4, show_progress=False)
    assert calls == [4, 4, 2]  # another model never reuses model-a's vectors


def test_a_killed_run_keeps_its_finished_chunks(tmp_path):
    texts = [f"t{i}" for i in range(12)]
    calls: list = []

    def dies_on_the_second_chunk(part):
        if calls:
            raise KeyboardInterrupt
        return counting(calls)(part)

    with pytest.raises(KeyboardInterrupt):
        encode_resumable(texts, dies_on_the_second_chunk, tmp_path, "m", chunk=4, dtype=np.float16, show_progress=False)
    calls.clear()
    out = encode_resumable(texts, counting(calls), tmp_path, "m", chunk=4, dtype=np.float16, show_progress=False)
    assert calls == [4, 4] and out.dtype == np.float16
