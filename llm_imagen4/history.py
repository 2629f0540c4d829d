"""The history: every generation llm logged, read through the plugin's
index of its logs database (see ``index``), newest first, each with its
images; a logged turn read back; and the Datasette metadata for the
history.

Everything read here comes from a logs database, which may be shared or
crafted: it is input, not the plugin's own word."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any

import sqlite_utils
from pydantic import ValidationError

from . import columns, index
from .columns import GENERATIONS, IMAGES
from .index import (  # noqa: F401 - names other modules import from here
    connect,
    db_path,
    default_path,
    open_db,
    prepare,
    record_finished,
    transaction,
)
from .record import GenerationRecord
from .specs import SPECS_BY_ID

# How a text output shows a value a generation must have and does not,
# or has of the wrong type: JSON shows it as null.
NOT_VALID = "not valid"

# The columns an entry holds, in its order: those with a field.
_ENTRY = tuple(column for column in columns.of(GENERATIONS) if column.field)
_IMAGE = tuple(column for column in columns.of(IMAGES) if column.field)
# The fields of entries and images every generation the plugin logs has.
REQUIRED = frozenset(
    column.field for column in (*_ENTRY, *_IMAGE) if column.field and column.required
)


def _fields(shown: tuple[columns.Column, ...]) -> list[tuple[str, Any]]:
    return [(column.field or column.name, column.type | None) for column in shown]


def _missing(entry: Any) -> list[Any]:
    return [image for image in entry.images if not image.exists]


# One image of a generation, as the history has it, and whether its file
# is there.
HistoryImage = make_dataclass(
    "HistoryImage",
    [*_fields(_IMAGE), ("exists", bool)],
    namespace={"__module__": __name__},
)
# One generation, newest first in the history, with its images and those
# of them whose file is not there.
HistoryEntry = make_dataclass(
    "HistoryEntry",
    [*_fields(_ENTRY), ("images", list, field(default_factory=list))],
    namespace={"__module__": __name__, "missing": property(_missing)},
)


def _like(text: str) -> str:
    """``text`` as a LIKE pattern that matches it literally, anywhere."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _entries(db: sqlite_utils.Database, rows: list[tuple]) -> list[HistoryEntry]:
    """The entries of the index's ``rows`` of generations (the columns of
    ``_ENTRY``), each value checked, with their images. The images are
    found by the turn id as the index has it, valid or not."""
    entries = [
        HistoryEntry(
            **{
                column.field: column.read(value)
                for column, value in zip(_ENTRY, row, strict=True)
            }
        )
        for row in rows
    ]
    if not entries:
        return entries
    by_id = {row[0]: entry for row, entry in zip(rows, entries, strict=True)}
    marks = ", ".join("?" * len(by_id))
    for row in db.execute(
        f"SELECT turn_id, {', '.join(column.name for column in _IMAGE)}"
        f" FROM {IMAGES} WHERE turn_id IN ({marks}) ORDER BY turn_id, position",
        list(by_id),
    ):
        values = {
            column.field: column.read(value)
            for column, value in zip(_IMAGE, row[1:], strict=True)
        }
        saved = values["status"] == "saved" and bool(values["path"])
        by_id[row[0]].images.append(
            HistoryImage(**values, exists=saved and os.path.isfile(values["path"]))
        )
    return entries


def generations(
    db: sqlite_utils.Database,
    *,
    limit: int | None = 20,
    query: str | None = None,
    model: str | None = None,
    seed: int | None = None,
    since: str | None = None,
    tool: bool = False,
    missing: bool = False,
) -> list[HistoryEntry]:
    """Generations, newest first, each with its images. ``missing`` keeps
    those with an image not on disk, reading only as far back as it takes
    to find ``limit`` of them."""
    where, params = [], []
    if query:
        where.append("g.prompt LIKE ? ESCAPE '\\'")
        params.append(_like(query))
    if model:
        where.append("g.model = ?")
        params.append(model)
    if seed is not None:
        where.append("g.seed = ?")
        params.append(seed)
    if since:
        where.append("g.datetime_utc >= ?")
        params.append(since)
    if tool:
        where.append("g.tool_call_id IS NOT NULL")
    # A page at a time: as many as asked for, up to a thousand, or more
    # when some will be left out for having all their files.
    page = 200 if missing else min(limit or 1000, 1000)
    chosen: list[HistoryEntry] = []
    for rows in _newest(db, where, params, query if seed is None else None, page):
        entries = _entries(db, rows)
        chosen.extend(entry for entry in entries if entry.missing or not missing)
        if limit and len(chosen) >= limit:
            return chosen[:limit]
    return chosen


def _newest(
    db: sqlite_utils.Database,
    where: list[str],
    params: list[Any],
    search: str | None,
    page: int,
) -> Iterator[list[tuple]]:
    """The index's generations that match ``where``, newest first, a page
    at a time. With ``search`` (the text ``where`` looks for in prompts),
    the older ones are found through the prompt search: the generations it
    has not read yet are read directly, then it gives the rest in order."""
    chosen = ", ".join(f"g.{column.name}" for column in _ENTRY)
    # (FROM, the rowid that orders it, more conditions and their values)
    sources: list[tuple[str, str, list[str], list[Any]]] = [
        (f"{GENERATIONS} g", "g.rowid", [], [])
    ]
    # The trigram index helps when the text has three characters in a row
    # that are not LIKE's wildcards there; its LIKE is a first sieve only.
    covered = index.searched(db) if search and re.search("[^%_]{3}", search) else None
    if covered:
        sources = [
            (f"{GENERATIONS} g", "g.rowid", ["g.rowid > ?"], [covered]),
            (
                # CROSS JOIN: the search gives the rowids, newest first.
                f"{index.SEARCH} s CROSS JOIN {GENERATIONS} g ON g.rowid = s.rowid",
                "s.rowid",
                ["s.rowid <= ?", "s.prompt LIKE ?"],
                [covered, f"%{search}%"],
            ),
        ]
    for source, order, more, values in sources:
        below = None
        while True:
            clauses = [*where, *more] + ([f"{order} < ?"] if below is not None else [])
            rows = db.execute(
                f"SELECT {order}, {chosen} FROM {source}"
                + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
                + f" ORDER BY {order} DESC LIMIT ?",
                [*params, *values, *([below] if below is not None else []), page],
            ).fetchall()
            if rows:
                yield [row[1:] for row in rows]
            if len(rows) < page:
                break
            below = rows[-1][0]


def generation(db: sqlite_utils.Database, generation_id: str) -> HistoryEntry | None:
    rows = db.execute(
        f"SELECT {', '.join(column.name for column in _ENTRY)} FROM {GENERATIONS}"
        " WHERE turn_id = ?",
        [generation_id],
    ).fetchall()
    entries = _entries(db, rows)
    return entries[0] if entries else None


@dataclass
class LoggedTurn:
    """A generation as llm logged it."""

    model: str
    record: GenerationRecord
    # The options llm logged; none when what it holds is no JSON object.
    options: dict[str, Any]


def turn(db: sqlite_utils.Database, generation_id: str) -> LoggedTurn | None:
    """The turn ``generation_id`` as llm logged it; None when there is none,
    or when it is not a generation the plugin can read: a model of the
    plugin's, and a record whose every field is of its type, with a
    request that names its model and prompt."""
    row = db.execute(
        "SELECT model, response_json, options_json FROM turns WHERE id = ?",
        [generation_id],
    ).fetchone()
    if row is None or row[0] not in SPECS_BY_ID or type(row[1]) is not str:
        return None
    try:
        record = GenerationRecord.model_validate_json(row[1])
    except ValidationError:
        return None
    if not all(type(record.request.get(name)) is str for name in ("model", "prompt")):
        return None
    return LoggedTurn(row[0], record, _options(row[2]))


def _options(logged: Any) -> dict[str, Any]:
    try:
        options = json.loads(logged) if type(logged) is str else None
    except ValueError:
        return {}
    return options if type(options) is dict else {}


def done(
    db: sqlite_utils.Database, request: dict[str, Any], seeded: bool
) -> str | None:
    """A generation in the history with the same request whose images were
    all saved (the seed counts only when ``seeded``): found by an index."""
    row = db.execute(
        "SELECT turn_id FROM imagen4_generations"
        " WHERE request_key = json_remove(json(?), '$.seed')"
        " AND (? OR seed = ?) AND saved = images LIMIT 1",
        [json.dumps(request), not seeded, request["seed"]],
    ).fetchone()
    return row[0] if row else None


# -- Datasette ---------------------------------------------------------------------

CANNED_QUERIES = {
    "generations_by_day": {
        "title": "Generations by day and model",
        "sql": "select day, model, count(*) as generations, sum(images) as images,"
        " sum(credits) as credits, round(sum(usd), 6) as usd from (select date(datetime_utc)"
        " as day, model, count(*) as images, max(credits_used) as credits,"
        " max(usd_spent) as usd from imagen4_images group by turn_id)"
        " group by day, model order by day desc, model",
    },
    "seeds_for_prompt": {
        "title": "Every seed used for a prompt",
        "description": "Generations whose prompt contains the text, newest first",
        "sql": "select seed, model, aspect_ratio, datetime_utc, turn_id, prompt,"
        " count(*) as images from imagen4_images"
        " where instr(lower(prompt), lower(:prompt)) > 0"
        " group by turn_id order by datetime_utc desc",
    },
    "missing_images": {
        "title": "Images never saved",
        "description": "A failed or unfinished download: llm imagen4 download "
        "TURN_ID fetches them. llm imagen4 history --missing also finds files "
        "deleted since.",
        "sql": "select turn_id, position, status, error, url, prompt, datetime_utc"
        " from imagen4_images where status != 'saved' order by datetime_utc desc",
    },
}


def datasette_metadata(path: Path) -> dict[str, Any]:
    """Datasette metadata for the logs database at ``path``: the canned
    queries, under the database name Datasette gives the file."""
    return {
        "databases": {
            path.stem: {
                "queries": CANNED_QUERIES,
                "tables": {
                    index.VIEW: {
                        "description": "One row per image generated by llm-imagen4",
                        "sort_desc": "datetime_utc",
                    }
                },
            }
        }
    }
