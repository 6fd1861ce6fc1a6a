"""Durable, atomic file writes: a file appears whole under its name, or not at all, and survives a crash.

Each write goes to a temporary file beside the target, is flushed and fsynced, then renamed over the target,
and the folder is fsynced so that the rename itself is on disk.

After a signal (`stop`), no write is committed: a library that swallows the signal's exception and lets the
work run on still cannot leave output that looks complete.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


class Stopped(BaseException):
    """A signal (SIGINT, SIGTERM) stopped the process; raised where it was, as KeyboardInterrupt would be."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_signals: list[int] = []  # the signals received: set by `stop` (the CLI's handler), read before every commit


def stop(signum: int, frame: object = None) -> None:
    """A signal handler: from now on refuse every commit, and raise Stopped where the process is."""
    _signals.append(signum)
    raise Stopped(signum)


def check_not_stopped() -> None:
    """Raise Stopped if a signal has come: before a commit, and where an error may be one a signal caused."""
    if _signals:
        raise Stopped(_signals[0])


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (new or renamed files) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call write(file) on a temporary file, then fsync it and rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        check_not_stopped()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    write_atomic(path, lambda f: f.write(data))


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


@contextmanager
def replace_dir(target: Path) -> Iterator[Path]:
    """Build a folder beside `target` (yielded), then swap it in whole: its files are fsynced, the old folder
    is moved aside, the new one renamed into place and the parent fsynced. An error inside leaves `target`
    as it was; a crash leaves it whole (old or new) with at most a `.tmp` or `.old` sibling."""
    target = Path(target)
    tmp, old = target.with_name(target.name + ".tmp"), target.with_name(target.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        for path in tmp.rglob("*"):
            if path.is_file():
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
        shutil.rmtree(old, ignore_errors=True)
        check_not_stopped()
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        fsync_dir(target.parent)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
