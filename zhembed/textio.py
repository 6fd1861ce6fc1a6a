"""Reading a user's texts (plain lines, JSONL, TSV or Parquet) and writing vectors (.npy or .jsonl).

Every bad record is reported with its file and line number; with `skip_bad` it is counted and skipped instead.
"""

from __future__ import annotations

import codecs
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .atomic import write_atomic, write_text_atomic
from .errors import ZhembedError

if TYPE_CHECKING:
    import pyarrow as pa

FORMATS = {".txt": "text", ".jsonl": "jsonl", ".json": "jsonl", ".tsv": "tsv", ".parquet": "parquet"}


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 file, or an error naming the file and the line of a bad byte. Lines end at
    \n, \r\n or \r only (as in every reader here), so U+2028 or U+0085 inside a text never splits it."""
    lines = []
    for number, raw in enumerate(_read_bytes(path).splitlines(), 1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ZhembedError(f"{path}:{number}: not UTF-8 text") from None
    return lines


def corpus_files(spec: str | Path) -> list[Path]:
    """One corpus file, or several separated by commas."""
    return [Path(p) for p in str(spec).split(",") if p]


def read_corpus(spec: str | Path, limit: int | None = None, seed: int = 0) -> list[str]:
    """Distinct non-empty lines of one or more UTF-8 files (comma-separated), shuffled with `seed`, at most
    `limit` of them."""
    sentences = list(dict.fromkeys(s.strip() for path in corpus_files(spec) for s in read_lines(path) if s.strip()))
    if not sentences:
        raise ZhembedError(f"corpus {spec} has no sentences")
    np.random.default_rng(seed).shuffle(sentences)
    return sentences[:limit] if limit else sentences


def _read_bytes(path: Path) -> bytes:
    """The file's bytes without a UTF-8 byte-order mark (which editors on Windows put first)."""
    try:
        return Path(path).read_bytes().removeprefix(codecs.BOM_UTF8)
    except FileNotFoundError:
        raise ZhembedError(f"input file not found: {path}") from None
    except IsADirectoryError:
        raise ZhembedError(f"input is a directory, not a file: {path}") from None


@dataclass
class Records:
    """Texts with their ids (a string or an integer as the input gives it, so 1 and "1" stay distinct; None
    when the input has no id field), their 0-based positions among the input's `total` data lines (or
    Parquet rows), and a message for each bad line that was skipped."""

    texts: list[str] = field(default_factory=list)
    ids: list[str | int | None] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    total: int = 0
    skipped: list[str] = field(default_factory=list)
    blank: int = 0  # blank lines of a plain-text file: skipped without complaint, and counted


class _Reader:
    def __init__(self, path: Path, skip_bad: bool):
        self.path, self.skip_bad, self.records = Path(path), skip_bad, Records()

    def bad(self, line: int, why: str) -> None:
        message = f"{self.path}:{line}: {why}"
        if not self.skip_bad:
            raise ZhembedError(message + " (or pass --skip-bad to skip such lines)")
        self.records.skipped.append(message)

    def reject(self, line: int, why: str) -> None:
        self.records.total += 1
        self.bad(line, why)

    def add(self, line: int, text: object, id_: object = None) -> None:
        self.records.total += 1
        if not isinstance(text, str):
            return self.bad(line, f"text is {type(text).__name__}, not a string")
        if not text.strip():
            return self.bad(line, "empty text")
        if id_ is not None and (isinstance(id_, bool) or not isinstance(id_, str | int)):
            return self.bad(line, f"id {id_!r} is {type(id_).__name__}; ids are strings or integers")
        self.records.texts.append(text)
        self.records.ids.append(id_)
        self.records.rows.append(self.records.total - 1)


def input_format(path: Path) -> str:
    """text, jsonl, tsv or parquet, from the file name (anything else is read as plain text)."""
    return FORMATS.get(Path(path).suffix.lower(), "text")


def read_records(path: Path, text_field: str | None = None, id_field: str | None = None,
                 skip_bad: bool = False) -> Records:
    """Texts (and ids) from one file: one per line; JSONL or Parquet with `text_field` (default "text");
    TSV with a header row naming the columns."""
    reader = _Reader(path, skip_bad)
    kind = input_format(path)
    if kind == "parquet":
        _read_parquet(reader, text_field or "text", id_field)
    else:
        lines = _decoded_lines(reader)
        if kind == "jsonl" or (kind == "text" and text_field):
            _read_jsonl(reader, lines, text_field or "text", id_field)
        elif kind == "tsv":
            _read_tsv(reader, lines, text_field, id_field)
        else:
            for number, line in lines:
                if line.strip():
                    reader.add(number, line)
                else:
                    reader.records.total += 1
                    reader.records.blank += 1
    if not reader.records.texts:
        raise ZhembedError(f"{path} has no texts" + (f" ({len(reader.records.skipped)} bad lines skipped)"
                                                      if reader.records.skipped else ""))
    return reader.records


def _decoded_lines(reader: _Reader) -> list[tuple[int, str]]:
    data = _read_bytes(reader.path)
    if not data.strip():
        raise ZhembedError(f"{reader.path} is empty")
    lines = []
    for number, raw in enumerate(data.splitlines(), 1):
        try:
            lines.append((number, raw.decode("utf-8")))
        except UnicodeDecodeError:
            reader.reject(number, "not UTF-8 text")
    return lines


def _read_jsonl(reader: _Reader, lines: list[tuple[int, str]], text_field: str, id_field: str | None) -> None:
    for number, line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            reader.reject(number, f"not a JSON line ({e.msg})")
            continue
        if not isinstance(record, dict) or text_field not in record:
            reader.reject(number, f"no string field {text_field!r}")
        elif id_field and record.get(id_field) is None:
            reader.reject(number, f"no id field {id_field!r}")
        else:
            reader.add(number, record[text_field], record.get(id_field) if id_field else None)


def _tsv(path: Path, lines: list[tuple[int, str]]) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """A TSV's column names (its first line) and each later line's number and cells."""
    if not lines or lines[0][0] != 1:
        raise ZhembedError(f"{path}:1: the TSV header line is not readable text; it must name the columns")
    return lines[0][1].split("\t"), [(number, line.split("\t")) for number, line in lines[1:]]


def _read_tsv(reader: _Reader, lines: list[tuple[int, str]], text_field: str | None, id_field: str | None) -> None:
    header, rows = _tsv(reader.path, lines)
    text_col = _column(reader.path, header, text_field or "text")
    id_col = _column(reader.path, header, id_field) if id_field else None
    for number, cells in rows:
        if len(cells) != len(header):
            reader.reject(number, f"{len(cells)} columns, the header has {len(header)}")
        else:
            reader.add(number, cells[text_col], cells[id_col] if id_col is not None else None)


def _column(path: Path, header: list[str], name: str) -> int:
    if name not in header:
        raise ZhembedError(f"{path}:1: the TSV header has no column {name!r} (columns: {', '.join(header)})")
    return header.index(name)


def _read_parquet(reader: _Reader, text_field: str, id_field: str | None) -> None:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(reader.path)
    except FileNotFoundError:
        raise ZhembedError(f"input file not found: {reader.path}") from None
    except Exception as e:
        raise ZhembedError(f"{reader.path}: not a readable Parquet file ({e})") from None
    for name in filter(None, (text_field, id_field)):
        if name not in table.column_names:
            raise ZhembedError(f"{reader.path}: no column {name!r} (columns: {', '.join(table.column_names)})")
    texts = table.column(text_field).to_pylist()
    ids = table.column(id_field).to_pylist() if id_field else [None] * len(texts)
    for row, (text, id_) in enumerate(zip(texts, ids), 1):
        reader.add(row, text, id_)


def read_table(path: Path, text_field: str = "text") -> pa.Table:
    """A pyarrow Table of one user file with all its fields: Parquet; JSONL; TSV with a header row naming the
    columns (every cell a string); plain text as one `text_field` column, a line per row. For commands that
    write the input's other fields back out beside the vectors (embed-dataset); read_records gives texts and ids."""
    import pyarrow as pa

    kind = input_format(path)
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if kind == "jsonl":
            import pyarrow.json as pj

            return pj.read_json(path)
        lines = read_lines(Path(path))
    except ZhembedError:
        raise
    except Exception as e:
        raise ZhembedError(f"{path}: cannot read it ({e})") from None
    if kind != "tsv":
        return pa.table({text_field: lines})
    if not lines:
        raise ZhembedError(f"{path} is empty; a TSV needs a header row naming its columns")
    header, rows = _tsv(path, list(enumerate(lines, 1)))
    for number, cells in rows:
        if len(cells) != len(header):
            raise ZhembedError(f"{path}:{number}: {len(cells)} columns, the header has {len(header)}")
    return pa.table({name: [cells[i] for _, cells in rows] for i, name in enumerate(header)})


def check_output(path: Path, suffixes: tuple[str, ...] | None = None, option: str = "--output") -> Path:
    """Before any work: `path` can be written (its folder exists and is writable, it is no folder itself) and
    has one of `suffixes` (any case); else one line naming the path and the fix."""
    path = Path(path)
    if path.is_dir():
        raise ZhembedError(f"{option} {path} is a folder; give a file name")
    if suffixes and path.suffix.lower() not in suffixes:
        raise ZhembedError(f"{option} {path} must end in {' or '.join(suffixes)}")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ZhembedError(f"{option} {path}: the folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ZhembedError(f"{option} {path} cannot be written (permission denied); choose another place")
    return path


VECTOR_SUFFIXES = (".npy", ".jsonl")


def write_vectors(path: Path, texts: list[str], vectors: np.ndarray) -> None:
    """.npy (float32 matrix) or .jsonl ({"text", "embedding"} per line), under exactly `path` (any case of the
    suffix), written whole or not at all."""
    path = check_output(path, VECTOR_SUFFIXES)
    if path.suffix.lower() == ".npy":
        write_atomic(path, lambda f: np.save(f, vectors.astype(np.float32)))
    else:
        write_text_atomic(path, "".join(json.dumps({"text": t, "embedding": [round(float(x), 6) for x in v]},
                                                   ensure_ascii=False) + "\n" for t, v in zip(texts, vectors)))
