"""The ids and texts of an index, kept on disk and read only for the hits a search returns.

records.jsonl holds one {"id", "text"} per vector; records.offsets.npy the byte offset of each line (and the
end), memory-mapped, so an index of millions of texts costs 8 bytes per text in memory, not the texts;
records.crc32.npy the CRC-32 of each line, checked whenever a line is read, so a damaged or reordered
record file is refused instead of returning another text.
"""

from __future__ import annotations

import json
import mmap
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..atomic import write_atomic
from ..errors import ZhembedError

RECORDS, OFFSETS, CHECKSUMS = "records.jsonl", "records.offsets.npy", "records.crc32.npy"


def write(gen: Path, ids: Sequence, texts: Sequence[str], spans: Sequence[tuple[int, int]] | None = None) -> None:
    """One line per vector; `spans` (for passages of long documents) the passage's character offsets in its
    document."""
    records = [{"id": i, "text": t} for i, t in zip(ids, texts)]
    for record, (start, end) in zip(records, spans or ()):
        record.update(start=start, end=end)
    lines = [(json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8") for r in records]
    offsets = np.zeros(len(lines) + 1, dtype=np.uint64)
    np.cumsum([len(line) for line in lines], out=offsets[1:])
    write_atomic(gen / RECORDS, lambda f: f.writelines(lines))
    write_atomic(gen / OFFSETS, lambda f: np.save(f, offsets))
    write_atomic(gen / CHECKSUMS, lambda f: np.save(f, np.array([zlib.crc32(x) for x in lines], dtype=np.uint32)))


class RecordFile:
    """Lazy access to the records of one generation: record(i) -> (id, text)."""

    def __init__(self, gen: Path):
        self.path = gen / RECORDS
        if not self.path.exists():
            raise FileNotFoundError(self.path)
        with open(self.path, "rb") as f:
            self._data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if self.path.stat().st_size else b""
        self.offsets = _offsets(gen, self._data)
        self.checksums = _checksums(gen, len(self.offsets) - 1)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def record(self, i: int) -> tuple[str | int, str, int | None, int | None]:
        """(id, text, start, end): start and end are the passage's offsets in its document (None if whole)."""
        line = self._data[int(self.offsets[i]):int(self.offsets[i + 1])]
        if self.checksums is not None and zlib.crc32(line) != int(self.checksums[i]):
            raise ZhembedError(f"{self.path}: record {i + 1} does not match its checksum (the file was changed or "
                               "reordered); rebuild the index")
        try:
            record = json.loads(line)
            return record["id"], record["text"], record.get("start"), record.get("end")
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
            raise ZhembedError(f"{self.path}: record {i + 1} is damaged; rebuild the index") from None


class RecordSet:
    """The records of several segments as one: record(i) over their concatenation."""

    def __init__(self, files: list[RecordFile]):
        self.files = files
        self.starts = np.cumsum([0] + [len(f) for f in files])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def record(self, i: int) -> tuple[str | int, str, int | None, int | None]:
        part = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.files[part].record(i - int(self.starts[part]))


class Column(Sequence):
    """The ids (0), texts (1), starts (2) or ends (3) of a RecordFile or RecordSet, as a read-only sequence."""

    def __init__(self, records: RecordFile | RecordSet, field: int):
        self.records, self.field = records, field

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.records.record(j)[self.field] for j in range(*i.indices(len(self)))]
        return self.records.record(i if i >= 0 else len(self) + i)[self.field]

    def __iter__(self) -> Iterator:
        return (self.records.record(i)[self.field] for i in range(len(self)))

    def __eq__(self, other) -> bool:
        return list(self) == list(other)


def _load_array(path: Path, dtype) -> np.ndarray:
    """A saved 1-d array of `dtype`, memory-mapped; one clear error for a truncated or foreign file."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ZhembedError(f"{path} is damaged ({str(e).splitlines()[0][:80]}); rebuild the index") from None
    if array.ndim != 1 or array.dtype != dtype:
        raise ZhembedError(f"{path} is damaged (a {array.dtype} array of shape {array.shape}); rebuild the index")
    return array


def _checksums(gen: Path, count: int) -> np.ndarray | None:
    """Each record line's CRC-32 (None for an index written before they were saved)."""
    if not (gen / CHECKSUMS).exists():
        return None
    checksums = _load_array(gen / CHECKSUMS, np.uint32)
    if len(checksums) != count:
        raise ZhembedError(f"{gen / CHECKSUMS} has {len(checksums)} entries for {count} records; rebuild the index")
    return checksums


def _offsets(gen: Path, data) -> np.ndarray:
    """The saved line offsets, or (an index written before they were saved) one scan of the file."""
    if (gen / OFFSETS).exists():
        offsets = _load_array(gen / OFFSETS, np.uint64)
        if len(offsets) and int(offsets[0]) == 0 and int(offsets[-1]) == len(data) and np.all(np.diff(offsets) > 0):
            return offsets
        raise ZhembedError(f"{gen / OFFSETS} does not match {gen / RECORDS}; rebuild the index")
    positions, start = [0], 0
    while (newline := data.find(b"\n", start)) != -1:
        start = newline + 1
        positions.append(start)
    return np.asarray(positions, dtype=np.uint64)
