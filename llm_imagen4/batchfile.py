"""A batch file, read as untrusted input: plain text (one prompt a line),
JSONL or CSV with a header, within caps on its size and rows, never a
FIFO, a device or a socket. Each row is a prompt, a model and the options
of the request; a row that cannot be one fails alone, named by its line or
record."""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import os
import stat
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import llm
from sqlite_utils.utils import Format, rows_from_file

from . import specs

# A row's fields: its prompt, its model, any option of the request as the
# models' Options declare it, and where to save.
ROW_FIELDS = (
    "prompt",
    "model",
    *dict.fromkeys(
        name for spec in specs.SPECS for name in specs.request_options(spec)
    ),
    "output",
)


# The most a batch may be: its file is read whole, and its rows checked,
# before anything is sent.
MAX_BYTES = 16 * 1024 * 1024
MAX_ROWS = 10_000
# Where rows_from_file puts the values of a CSV record beyond its header's
# columns: the name of no field, and a header names fields only.
_EXTRAS = "(more values than the header has columns)"


class BatchError(llm.ModelError):
    """The file as a whole cannot be read: nothing is sent."""


@dataclass
class Row:
    number: int  # line number (text, JSONL) or record number (CSV), from 1
    prompt: str = ""
    model_name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    # An earlier request of the row that was never answered, and what is
    # known of it: the row is sent again, as only that brings its images.
    earlier: dict[str, str] | None = None


# How standard input is named in messages.
STDIN = "<stdin>"


@dataclass
class Source:
    """A batch file open for reading, or standard input."""

    name: str
    stream: BinaryIO

    def read(self) -> bytes:
        """All of it, read no further than one byte past MAX_BYTES: a file
        (or an endless pipe) of more is refused."""
        data = self.stream.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise BatchError(
                f"{self.name} is over {MAX_BYTES // 2**20} MiB, the most a batch"
                " file may hold: split it"
            )
        return data


@contextlib.contextmanager
def open_source(path: str) -> Iterator[Source]:
    """FILE, or standard input for ``-``. A file must be a regular one and
    is never waited on: a FIFO, a device or a socket is refused unopened, and
    what is opened (without blocking) is checked again. click.File would
    block opening a FIFO nobody writes."""
    if path == "-":
        yield Source(STDIN, sys.stdin.buffer)
        return
    try:
        _check_regular(os.stat(path).st_mode, path)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as ex:
        raise BatchError(f"{path}: {ex.strerror}") from None
    with os.fdopen(fd, "rb") as stream:
        # Another file may have taken its name in between.
        _check_regular(os.fstat(fd).st_mode, path)
        yield Source(path, stream)


def _check_regular(mode: int, path: str) -> None:
    if stat.S_ISFIFO(mode):
        raise BatchError(
            f"{path} is a pipe, not a regular file: give - and pipe it to"
            " standard input"
        )
    if not stat.S_ISREG(mode):
        raise BatchError(f"{path} is not a regular file")


def detect_format(name: str, first_line: str) -> str:
    lower = name.lower()
    if lower.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if lower.endswith(".csv"):
        return "csv"
    if name == STDIN and first_line.lstrip().startswith("{"):
        return "jsonl"
    return "text"


def read_rows(data: bytes, name: str, fmt: str = "auto") -> list[Row]:
    """The rows of a batch file: plain text (one prompt a line), JSONL or CSV
    (with the columns in ROW_FIELDS), in UTF-8 with or without a BOM; at
    most MAX_ROWS."""
    stream = io.BytesIO(data)
    try:
        if fmt == "auto":
            fmt = detect_format(name, stream.readline().decode("utf-8-sig"))
            stream.seek(0)
        if fmt != "csv":
            return _at_most(_line_rows(stream, fmt), name)
        with _csv_field_limit(MAX_BYTES):
            return _at_most(_csv_rows(stream, name), name)
    except UnicodeDecodeError:
        raise BatchError(f"{name} is not UTF-8 text") from None


def _at_most(rows: Iterable[Row], name: str) -> list[Row]:
    """The rows, read no further than one past MAX_ROWS: more are refused."""
    kept = list(itertools.islice(rows, MAX_ROWS + 1))
    if len(kept) > MAX_ROWS:
        raise BatchError(
            f"{name} has more than {MAX_ROWS:,} rows, the most a batch takes: split it"
        )
    return kept


def _line_rows(stream: BinaryIO, fmt: str) -> Iterator[Row]:
    """Text or JSONL rows, numbered by their line. Lines end as a file's do
    (\\n, \\r\\n or \\r), not as str.splitlines has them: that also breaks
    at U+2028, U+0085 and others, which a JSON string may hold as they are."""
    for number, line in enumerate(io.TextIOWrapper(stream, encoding="utf-8-sig"), 1):
        if not line.strip() or (fmt == "text" and line.lstrip().startswith("#")):
            continue
        yield (
            _row(number, line)
            if fmt == "jsonl"
            else _fields(number, {"prompt": line.strip()})
        )


class _StrictCSV(csv.excel):
    """Excel's CSV, where a quote left open, or closed before its field ends,
    is an error: read on, the rest of the file would be one prompt."""

    strict = True


@contextlib.contextmanager
def _csv_field_limit(limit: int) -> Iterator[None]:
    """csv reads no field over 131,072 characters, and its reader stops
    there. With the limit at the file's own cap, a long field is a value like
    any other, and its row is refused for what it holds, alone."""
    previous = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _csv_rows(stream: BinaryIO, name: str) -> Iterator[Row]:
    """CSV records, numbered from 1 after the header, which the first record
    shows. A file that is not CSV from some record on is refused whole."""
    records, _ = rows_from_file(
        stream,
        Format.CSV,
        dialect=_StrictCSV,
        encoding="utf-8-sig",
        extras_key=_EXTRAS,
    )
    number = 0
    try:
        for number, record in enumerate(records, 1):
            if number == 1:
                _check_columns(set(record) - {_EXTRAS}, name)
            yield _record(number, record)
    except csv.Error as ex:
        raise BatchError(f"{name}: record {number + 1} is not CSV: {ex}") from None


def _record(number: int, record: dict[str, Any]) -> Row:
    if _EXTRAS in record:
        return Row(number, error="more values than the header has columns")
    return _fields(number, {k: v for k, v in record.items() if v not in ("", None)})


def _check_columns(columns: set[str], name: str) -> None:
    unknown = columns - set(ROW_FIELDS)
    if "prompt" not in columns or unknown:
        raise BatchError(
            f"{name}: CSV columns must include prompt and be among "
            f"{', '.join(ROW_FIELDS)}"
            + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else "")
        )


def _row(number: int, line: str) -> Row:
    try:
        record = json.loads(line)
    except RecursionError:
        return Row(number, error="not valid JSON: nested too deeply")
    except ValueError:
        return Row(number, error="not valid JSON")
    if not isinstance(record, dict):
        return Row(number, error="not a JSON object")
    return _fields(number, record)


def _fields(number: int, record: dict[str, Any]) -> Row:
    """The row a record's fields make, or the first reason they make none."""
    unknown = set(record) - set(ROW_FIELDS)
    if unknown:
        return Row(number, error=f"unknown fields: {', '.join(sorted(unknown))}")
    for name, value in record.items():
        unfit = _unfit(value)
        if unfit:
            return Row(number, error=f"{name}: {unfit}")
    prompt = record.pop("prompt", None)
    if not isinstance(prompt, str):
        return Row(number, error="no prompt")
    model_name = record.pop("model", None)
    if model_name is not None and not isinstance(model_name, str):
        return Row(number, error="model: not the name of a model")
    return Row(number, prompt=prompt, model_name=model_name, options=record)


def _unfit(value: Any) -> str | None:
    """What makes a text unfit for a request or a file name: a NUL, which no
    file name can hold and the history cuts text short at, or half of a
    surrogate pair (a JSON escape such as \\ud800), which is not UTF-8."""
    if not isinstance(value, str):
        return None
    if "\0" in value:
        return "holds a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "holds half of a surrogate pair, which is not text"
    return None
