"""The columns of the plugin's index, declared once.

A generation is a turn of llm's whose ``response_json`` is the plugin's
record. The index keeps of it one row in ``imagen4_generations`` and one
row per image in ``imagen4_image_files``; the view ``imagen4_images``
shows one row per image. Each row of ``COLUMNS`` below is one column: its
name, the table it is in, the SQL that reads it from a turn, the Python
type of its values (the column's SQL type is the one sqlite-utils gives
that type: TEXT, INTEGER, REAL; INTEGER for bool), its place in the view,
its name in the entries the history returns, the range or form a value
must be in beyond its type, and whether every record has it.

From this one table come the index tables (made by the migration
``m002_index``), the INSERT ... SELECT that catches up with ``turns``, the
view, the entry classes of ``history``, and the check of every value the
history reads back: a logs database may be shared or crafted, so a value
of the wrong type or out of its range is read as None. A value is checked
as the index holds it, after SQLite gave it the column's type where it
could (a number in a TEXT column is its text, digits in an INTEGER column
their number), which keeps it harmless. The tables were made by
``m002_index`` from the columns as they are here: a column added later
needs a migration of its own that adds it, and is left out of m002's."""

from __future__ import annotations

import datetime
import math
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .record import ImageStatus
from .specs import SEED_MAX, SIZES, SPECS_BY_ID

GENERATIONS = "imagen4_generations"
IMAGES = "imagen4_image_files"


def _record(path: str, source: str = "t.response_json") -> str:
    """SQL for the value at ``path`` in a turn's record."""
    return f"json_extract({source}, '$.{path}')"


def _image(name: str) -> str:
    """SQL for a field of one image of the record: ``image`` is its row of
    ``json_each`` over the record's images. It is read from the turn's
    record, which SQLite has parsed once for all the columns of the turn,
    rather than from the image's own text, which it would make and parse
    again for each column."""
    return f"json_extract(t.response_json, image.fullkey || '.{name}')"


@dataclass(frozen=True)
class Column:
    name: str
    # GENERATIONS, IMAGES, or None for a column of the view alone.
    table: str | None
    # SQL over a turn ``t`` and, for an image, its row ``image`` of json_each
    # over the record's images. A column of the view alone may name other
    # columns as ``{name}``, read in each part of the view as that part
    # reads them.
    sql: str
    type: type
    # Its place among the view's columns; None: not in the view.
    view: int | None = None
    # Its name in HistoryEntry or HistoryImage; None: not in them.
    field: str | None = None
    # What a value of the right type must also be.
    check: Callable[[Any], bool] | None = None
    # Whether every record the plugin writes has a value: one it has not is
    # not valid, where one that others have not is merely absent.
    required: bool = False

    def read(self, value: Any) -> Any:
        """A value of this column as read back from a logs database: the
        value when it is of the column's type (a bool kept as 0 or 1, a
        float that may be written as an int) and passes its check; None
        otherwise."""
        if self.type is bool:
            return bool(value) if type(value) is int and value in (0, 1) else None
        if self.type is float and type(value) is int:
            value = float(value)
        if type(value) is not self.type:
            return None
        if self.type is float and not math.isfinite(value):
            return None
        return value if self.check is None or self.check(value) else None


def _between(low: float, high: float = math.inf) -> Callable[[Any], bool]:
    return lambda value: low <= value <= high


def _one_of(*values: str) -> Callable[[Any], bool]:
    return lambda value: value in values


def _a_time(value: str) -> bool:
    try:
        datetime.datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _a_sha256(value: str) -> bool:
    return re.fullmatch("[0-9a-f]{64}", value) is not None


# The largest width or height a PNG can have.
_SIDE = _between(1, 2**31 - 1)


COLUMNS = (
    # One row per generation.
    Column("turn_id", GENERATIONS, "t.id", str, field="id", required=True),
    # The turn's rowid when it was indexed: a turn logged again (a new
    # rowid) or a rebuilt turns table shows as an index row out of date.
    Column("turn_rowid", GENERATIONS, "t.rowid", int),
    Column(
        "model",
        GENERATIONS,
        "t.model",
        str,
        view=3,
        field="model",
        check=_one_of(*SPECS_BY_ID),
        required=True,
    ),
    Column(
        "api_model",
        GENERATIONS,
        _record("request.model"),
        str,
        view=4,
        field="api_model",
        required=True,
    ),
    Column(
        "prompt",
        GENERATIONS,
        _record("request.prompt"),
        str,
        view=5,
        field="prompt",
        required=True,
    ),
    Column(
        "negative_prompt",
        GENERATIONS,
        _record("request.negative_prompt"),
        str,
        view=7,
        field="negative_prompt",
    ),
    Column(
        "aspect_ratio",
        GENERATIONS,
        _record("request.aspect_ratio"),
        str,
        view=8,
        field="aspect_ratio",
        check=_one_of(*SIZES),
        required=True,
    ),
    # The seed that was sent.
    Column(
        "seed",
        GENERATIONS,
        _record("seed"),
        int,
        view=9,
        field="seed",
        check=_between(0, SEED_MAX),
        required=True,
    ),
    Column(
        "images",
        GENERATIONS,
        "json_array_length(t.response_json, '$.images')",
        int,
        check=_between(0),
    ),
    # Counted from the index's images of the turn, which are indexed first.
    Column(
        "saved",
        GENERATIONS,
        f"(SELECT count(*) FROM {IMAGES} i"
        " WHERE i.turn_id = t.id AND i.status = 'saved')",
        int,
        check=_between(0),
    ),
    Column(
        "credits_used",
        GENERATIONS,
        _record("credits_used"),
        float,
        view=19,
        field="credits_used",
        check=_between(0),
    ),
    Column(
        "usd_spent",
        GENERATIONS,
        _record("usd_spent"),
        float,
        view=20,
        field="usd_spent",
        check=_between(0),
    ),
    Column(
        "client_request_id", GENERATIONS, _record("client_request_id"), str, view=21
    ),
    Column("inference_id", GENERATIONS, _record("inference_id"), str, view=22),
    Column(
        "tool_call_id",
        GENERATIONS,
        _record("tool_call_id"),
        str,
        view=23,
        field="tool_call_id",
    ),
    # The request without its seed: what a batch row is matched on.
    Column(
        "request_key",
        GENERATIONS,
        "CASE WHEN json_type(t.response_json, '$.request') = 'object' THEN"
        " json_remove(json_extract(t.response_json, '$.request'), '$.seed') END",
        str,
    ),
    Column(
        "folder",
        GENERATIONS,
        _record("directory"),
        str,
        view=24,
        field="folder",
        required=True,
    ),
    Column(
        "metadata",
        GENERATIONS,
        _record("metadata"),
        bool,
        view=25,
        field="metadata",
        required=True,
    ),
    Column(
        "datetime_utc",
        GENERATIONS,
        "t.datetime_utc",
        str,
        view=27,
        field="datetime_utc",
        check=_a_time,
        required=True,
    ),
    # One row per image.
    Column("turn_id", IMAGES, "t.id", str, view=1),
    # Its place in the record's list, which the plugin writes as its
    # position too: one of its own in its turn, as the index needs.
    Column(
        "position",
        IMAGES,
        "image.key",
        int,
        view=2,
        field="position",
        check=_between(0),
        required=True,
    ),
    Column(
        "path",
        IMAGES,
        f"coalesce({_image('directory')}, {_record('directory')}) || {_image('name')}",
        str,
        view=11,
        field="path",
    ),
    Column(
        "status",
        IMAGES,
        _image("status"),
        str,
        view=10,
        field="status",
        check=_one_of(*typing.get_args(ImageStatus)),
        required=True,
    ),
    Column("url", IMAGES, _image("url"), str, view=12, field="url"),
    Column(
        "sha256",
        IMAGES,
        _image("sha256"),
        str,
        view=13,
        field="sha256",
        check=_a_sha256,
    ),
    Column(
        "bytes", IMAGES, _image("bytes"), int, view=14, field="bytes", check=_between(0)
    ),
    Column("width", IMAGES, _image("width"), int, view=15, field="width", check=_SIDE),
    Column(
        "height", IMAGES, _image("height"), int, view=16, field="height", check=_SIDE
    ),
    Column(
        "content_type",
        IMAGES,
        _image("content_type"),
        str,
        view=17,
        field="content_type",
        check=_one_of("image/png", "image/jpeg", "image/webp"),
    ),
    Column("error", IMAGES, _image("error"), str, view=18, field="error"),
    # The prompt the API made this image from, when it rewrote the user's.
    Column(
        "enhanced_prompt",
        IMAGES,
        _image("enhanced_prompt"),
        str,
        view=6,
        field="enhanced_prompt",
    ),
    # The view's alone. Each image's id: its turn's id and its position,
    # stable however often the index is made again.
    Column("id", None, "{turn_id} || ':' || {position}", str, view=0),
    Column("provenance", None, _record("provenance"), str, view=26),
)


def of(table: str | None) -> tuple[Column, ...]:
    """The columns of ``table``, in its order."""
    return tuple(column for column in COLUMNS if column.table == table)


def in_view() -> tuple[Column, ...]:
    """The view's columns, in its order."""
    shown = [column for column in COLUMNS if column.view is not None]
    return tuple(sorted(shown, key=lambda column: column.view or 0))
