"""Progress bars for long work: live on a terminal, and on anything else (a log file, CI) one line every
half minute at most, so logs are not flooded with redraws."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

LOG_INTERVAL_S = 30.0
Log = Callable[[str], None]  # where long work reports its lines (print, a file's writer, a test's list.append)


def progress(iterable: Iterable | None = None, enabled: bool = True, **kw: Any) -> Any:
    """A tqdm bar on stderr (`enabled` False: none)."""
    from tqdm.auto import tqdm

    tty = sys.stderr.isatty()
    return tqdm(iterable, file=sys.stderr, disable=not enabled, mininterval=0.1 if tty else LOG_INTERVAL_S,
                dynamic_ncols=tty, **kw)
