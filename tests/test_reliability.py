"""Reliability, round two: interrupted commands exit 130/143 and leave no output that looks complete; output
errors are one line with status 2, checked before the work; huge lines cost what max_length allows; exact
truncation counts; the serve command's own checks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from zhembed import Encoder


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "zhembed", *map(str, args)], capture_output=True, text=True,
                          timeout=120, **kw)


def _big_input(tmp_path, n=400_000):
    path = tmp_path / "big.txt"
    path.write_text("".join(f"第{i}句话，今天天气很好\n" for i in range(n)), encoding="utf-8")
    return path


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
@pytest.mark.parametrize("command", ["encode", "index"])
def test_a_signal_never_reports_success_nor_leaves_complete_looking_output(tmp_path, tiny_bert, sig, code, word, command):
    big = _big_input(tmp_path)
    out = tmp_path / ("v.jsonl" if command == "encode" else "idx")
    args = (["encode", "-i", big, "-o", out] if command == "encode" else ["index", "build", "--input", big, "--out", out])
    # SIGINT as a terminal delivers it, even when the tests run in a background job (which ignores SIGINT,
    # and a child would inherit that)
    child = subprocess.Popen([sys.executable, "-m", "zhembed", *map(str, args), "-m", str(tiny_bert)],
                             stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(6)  # past the imports (torch for the tiny model) even on a loaded machine, into the work
    assert child.poll() is None, "the command finished before the signal; make the input larger"
    child.send_signal(sig)
    _, err = child.communicate(timeout=60)
    assert child.returncode == code and word in err and "Traceback" not in err, (child.returncode, err[-3000:])
    if command == "encode":
        assert not out.exists()
    else:
        assert not (out / "CURRENT").exists()


def test_typer_exit_codes_are_not_lost(tmp_path):
    result = _cli("encode")  # no texts and no --input: a usage mistake
    assert result.returncode == 2


@pytest.mark.parametrize("output, message", [
    ("{tmp}", "is a folder"),
    ("{tmp}/missing/v.npy", "does not exist"),
    ("{tmp}/v.txt", "must end in .npy or .jsonl"),
])
def test_encode_checks_its_output_before_the_work(tmp_path, tiny_bert, output, message):
    result = _cli("encode", "你好", "-o", output.format(tmp=tmp_path), "-m", tiny_bert)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_disk_full_is_one_line(tmp_path, tiny_bert):
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    os.symlink("/dev/full", tmp_path / "full.jsonl")
    result = _cli("encode", "你好", "-o", tmp_path / "full.jsonl", "-m", tiny_bert)
    # the atomic writer writes beside the link, so the disk-full device is never written; the rename replaces it
    assert result.returncode in (0, 2) and "Traceback" not in result.stderr


def test_an_os_error_while_writing_is_one_line(tmp_path, tiny_bert, monkeypatch, capsys):
    import errno

    from test_cli import run

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "v.npy"))
    monkeypatch.setattr("zhembed.textio.write_atomic", full)
    code, _, err = run(monkeypatch, capsys, "encode", "你好", "-o", tmp_path / "v.npy", "-m", tiny_bert)
    assert code == 2 and "No space left on device (free some disk space)" in err and len(err.strip().splitlines()) == 1


def test_an_upper_case_suffix_writes_exactly_that_file(tmp_path, tiny_bert):
    result = _cli("encode", "你好", "-o", tmp_path / "UP.NPY", "-m", tiny_bert)
    assert result.returncode == 0 and (tmp_path / "UP.NPY").exists() and not (tmp_path / "UP.NPY.npy").exists()
    assert np.load(tmp_path / "UP.NPY").shape == (1, 32)


def test_a_huge_line_costs_what_max_length_allows(tiny_bert):
    enc = Encoder.load(tiny_bert)
    huge = "今天天气很好" * 850_000  # 5.1M characters
    start = time.perf_counter()
    vector = enc.encode(huge, max_length=64)
    assert time.perf_counter() - start < 2.0
    assert np.allclose(vector, enc.encode(huge[:2000], max_length=64), atol=1e-6)
    assert enc.truncated([huge], 64) == 1


def test_a_text_of_exactly_max_length_tokens_is_not_counted_as_truncated(tiny_bert):
    enc = Encoder.load(tiny_bert)
    text = "好" * 60
    n = len(enc.tokenize([text], 512)[0])
    assert enc.truncated([text], n) == 0 and enc.truncated([text], n - 1) == 1


def test_serve_refuses_an_empty_api_key_and_a_bad_port(tiny_bert):
    result = _cli("serve", "-m", tiny_bert, env={**os.environ, "ZHEMBED_API_KEY": ""})
    assert result.returncode == 2 and "API key" in result.stderr and "empty" in result.stderr
    result = _cli("serve", "-m", tiny_bert, "--port", "99999")
    assert result.returncode == 2 and "--port" in result.stderr and "65535" in result.stderr


def test_index_reruns_say_nothing_to_do_once_and_builds_count_truncation(tmp_path, tiny_bert):
    corpus = tmp_path / "c.txt"
    corpus.write_text("你好\n" + "好" * 300 + "\n再见\n\n", encoding="utf-8")  # a trailing blank line is fine
    args = ("index", "build", "--input", corpus, "--out", tmp_path / "idx", "-m", tiny_bert, "--max-length", "64")
    first = _cli(*args)
    assert first.returncode == 0 and "1 of 3 texts are longer than 64 tokens" in first.stderr
    again = _cli(*args)
    assert again.returncode == 0 and "nothing to do" in again.stderr and "texts (" not in again.stderr


def test_progress_bars_do_not_flood_a_log(tmp_path, tiny_bert):
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"第{i}句话\n" for i in range(30_000)), encoding="utf-8")
    result = _cli("encode", "-i", corpus, "-o", tmp_path / "v.npy", "-m", tiny_bert)
    assert result.returncode == 0 and result.stderr.count("\r") <= 3


def test_usage_errors_are_a_message_not_a_traceback_whichever_typer_is_installed():
    """transformers pulls in typer >= 0.22, which replaces typer-slim's files and raises its own click's errors."""
    result = _cli("encode", "--bogus")
    assert result.returncode == 2 and "No such option" in result.stderr and "Traceback" not in result.stderr


def test_index_and_cluster_outputs_are_checked_and_a_file_size_limit_is_one_line(tmp_path, tiny_bert):
    import resource

    corpus = tmp_path / "c.txt"
    corpus.write_text("你好\n再见\n", encoding="utf-8")
    (tmp_path / "afile").touch()
    result = _cli("index", "build", "-i", corpus, "--out", tmp_path / "afile", "-m", tiny_bert)
    assert result.returncode == 2 and "is a file" in result.stderr
    (tmp_path / "adir").mkdir()
    result = _cli("cluster", "-i", corpus, "-k", "1", "--out", tmp_path / "adir", "-m", tiny_bert)
    assert result.returncode == 2 and "is a folder" in result.stderr
    assert _cli("index", "build", "-i", corpus, "--out", tmp_path / "idx", "-m", tiny_bert).returncode == 0
    more = tmp_path / "more.txt"
    more.write_text("".join(f"第{i}句话今天天气很好\n" for i in range(3000)), encoding="utf-8")
    limited = subprocess.run([sys.executable, "-m", "zhembed", "index", "add", str(tmp_path / "idx"), "-i", str(more)],
                             capture_output=True, text=True, timeout=120,
                             preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (100 * 1024, 100 * 1024)))
    assert limited.returncode == 2 and "ulimit -f" in limited.stderr and "Traceback" not in limited.stderr
    assert len(limited.stderr.strip().splitlines()) == 1
    assert _cli("search", tmp_path / "idx", "你好", "-k", "1").returncode == 0  # the old index still loads


def test_the_readme_says_how_to_install_from_a_checkout_and_a_wheel():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert "`pip install zhembed`" not in readme  # not on PyPI: that command fails
    assert "pip install -e ." in readme and "pip wheel --no-deps -w dist ." in readme


def test_an_immutable_output_is_one_line_before_the_work(tmp_path, tiny_bert):
    import shutil

    target = tmp_path / "locked.npy"
    target.touch()
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(target)], capture_output=True).returncode:
        pytest.skip("needs chattr +i (root, on a file system with attributes)")
    try:
        result = _cli("encode", "你好", "-o", target, "-m", tiny_bert)
        assert result.returncode == 2 and "cannot be written" in result.stderr and "Traceback" not in result.stderr
    finally:
        subprocess.run(["chattr", "-i", str(target)])


def test_after_a_signal_nothing_is_committed_even_when_a_library_swallowed_it(tmp_path, monkeypatch):
    from zhembed import atomic

    monkeypatch.setattr(atomic, "_signals", [])
    try:
        atomic.stop(signal.SIGINT)
    except BaseException:  # as a library's broad handler would, letting the work run on
        pass
    with pytest.raises(atomic.Stopped):
        atomic.write_text_atomic(tmp_path / "v.jsonl", "{}\n")
    with pytest.raises(atomic.Stopped), atomic.replace_dir(tmp_path / "idx") as tmp:
        (tmp / "CURRENT").write_text("1")
    assert not list(tmp_path.iterdir())


def test_an_error_that_a_signal_caused_is_reported_as_the_signal(monkeypatch, capsys):
    """SIGTERM inside an extension's import during model loading came out as 'cannot load model weights ...:
    initialization failed' with status 2 (seen in CI on a loaded machine); it is the signal: 143, 'terminated'."""
    from zhembed import atomic, cli
    from zhembed.errors import ZhembedError

    monkeypatch.setattr(atomic, "_signals", [])
    monkeypatch.setattr(cli.signal, "signal", lambda *a: None)

    def app(standalone_mode):
        try:
            atomic.stop(signal.SIGTERM)
        except BaseException:  # as an interrupted extension import turns it into its own error
            raise ZhembedError("cannot load model weights from m: initialization failed") from None

    monkeypatch.setattr(cli, "app", app)
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 143 and "terminated" in capsys.readouterr().err
