"""The history: every generation llm logged, read from its logs database.

llm logs each generation as a turn whose ``response_json`` is the plugin's
record, from whichever route made it. That is the one source of truth. The
plugin keeps objects of its own beside llm's tables, never in them, made by
its own migrations and safe to drop at any time:

- ``imagen4_images``, a view with one row per image, always as ``turns``
  says: the index's rows whose turn still exists, and the image turns
  logged since the index last read ``turns``;
- ``imagen4_generations`` (one row per generation) and
  ``imagen4_image_files`` (one row per image), an index brought up to date
  from ``turns`` before every read by the plugin's commands;
- ``imagen4_sync``, how far the index has read ``turns``, and how far the
  prompt search has read the index;
- ``imagen4_prompt_search``, a full-text index of the prompts (FTS5 with
  the trigram tokenizer, where SQLite has it) that ``history -q`` uses to
  find text in old prompts without reading them all.

Bringing the index up to date costs one small query when nothing changed,
and reads only the new turns when some were logged; anything else (a turn
deleted, ``turns`` rebuilt by a migration) rebuilds it from ``turns``."""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import os
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llm
import sqlite_utils
from sqlite_utils.migrations import Migrations

from . import journal, specs
from .record import PLUGIN, GenerationRecord

# Seconds a command waits for another process's write to finish.
BUSY_TIMEOUT = 30.0
MIGRATIONS = Migrations("llm-imagen4")
TABLES = ("imagen4_generations", "imagen4_image_files", "imagen4_sync")
VIEW = "imagen4_images"
# The prompts' full-text index: an FTS5 table over imagen4_generations.prompt
# (its rowid is the generation's), holding only the trigrams.
SEARCH = "imagen4_prompt_search"
MODEL_IDS = ", ".join(f"'{spec.model_id}'" for spec in specs.SPECS)


def _field(path: str, source: str = "t.response_json") -> str:
    return f"json_extract({source}, '$.{path}')"


# Every column of the index, as SQL over a turn ``t`` and, for images, one
# ``image`` of its record: the index, its refresh and the view all read
# turns through these, so they cannot disagree.
GENERATION_COLUMNS = {
    "turn_id": "t.id",
    # The turn's rowid when it was indexed: a turn logged again (a new
    # rowid) or a rebuilt turns table shows as an index row out of date.
    "turn_rowid": "t.rowid",
    "model": "t.model",
    "api_model": _field("request.model"),
    "prompt": _field("request.prompt"),
    "negative_prompt": _field("request.negative_prompt"),
    "aspect_ratio": _field("request.aspect_ratio"),
    "seed": _field("seed"),
    "images": "json_array_length(t.response_json, '$.images')",
    "saved": "(SELECT count(*) FROM json_each(t.response_json, '$.images')"
    " WHERE json_extract(value, '$.status') = 'saved')",
    "credits_used": _field("credits_used"),
    "usd_spent": _field("usd_spent"),
    "client_request_id": _field("client_request_id"),
    "inference_id": _field("inference_id"),
    "tool_call_id": _field("tool_call_id"),
    # The request without its seed: what a batch row is matched on.
    "request_key": "json_remove(json_extract(t.response_json, '$.request'), '$.seed')",
    "folder": _field("directory"),
    "metadata": _field("metadata"),
    "datetime_utc": "t.datetime_utc",
}
IMAGE_FIELDS = (
    "status",
    "url",
    "sha256",
    "bytes",
    "width",
    "height",
    "content_type",
    "error",
    "enhanced_prompt",
)
IMAGE_COLUMNS = {
    "turn_id": "t.id",
    "position": _field("position", "image.value"),
    "path": f"coalesce({_field('directory', 'image.value')}, {_field('directory')})"
    f" || {_field('name', 'image.value')}",
    **{name: _field(name, "image.value") for name in IMAGE_FIELDS},
}
# Turns of this plugin. The model is compared first, as it is cheap.
OURS = (
    f"t.model IN ({MODEL_IDS}) AND json_valid(t.response_json)"
    f" AND json_extract(t.response_json, '$.plugin') = '{PLUGIN}'"
)
IMAGES_OF_T = (
    "json_each(CASE WHEN json_valid(t.response_json) THEN t.response_json"
    " ELSE '{}' END, '$.images') AS image"
)
# The view's columns, in order.
VIEW_COLUMNS = (
    "id",
    "turn_id",
    "position",
    "model",
    "api_model",
    "prompt",
    "enhanced_prompt",
    "negative_prompt",
    "aspect_ratio",
    "seed",
    "status",
    "path",
    "url",
    "sha256",
    "bytes",
    "width",
    "height",
    "content_type",
    "error",
    "credits_used",
    "usd_spent",
    "client_request_id",
    "inference_id",
    "tool_call_id",
    "folder",
    "metadata",
    "provenance",
    "datetime_utc",
)


def _view_sql() -> str:
    # Each image's id: its turn's id and its position, stable however
    # often the index is made again.
    indexed = {
        **{name: f"g.{name}" for name in GENERATION_COLUMNS},
        **{name: f"i.{name}" for name in IMAGE_COLUMNS},
        "provenance": _field("provenance"),
        "id": "g.turn_id || ':' || i.position",
    }
    live = {
        **GENERATION_COLUMNS,
        **IMAGE_COLUMNS,
        "provenance": _field("provenance"),
        "id": f"t.id || ':' || {IMAGE_COLUMNS['position']}",
    }
    return (
        f"SELECT {', '.join(f'{indexed[c]} AS {c}' for c in VIEW_COLUMNS)}"
        " FROM imagen4_generations g JOIN turns t ON t.id = g.turn_id"
        " JOIN imagen4_image_files i ON i.turn_id = g.turn_id"
        " UNION ALL"
        f" SELECT {', '.join(f'{live[c]} AS {c}' for c in VIEW_COLUMNS)}"
        f" FROM turns t, {IMAGES_OF_T}"
        " WHERE t.rowid > (SELECT turns_rowid FROM imagen4_sync) AND "
        + OURS
        + " AND t.id NOT IN (SELECT turn_id FROM imagen4_generations)"
    )


def _index_turns(db: sqlite_utils.Database, where: str, params: Any = ()) -> None:
    """Add to the index the plugin's turns that match ``where``, in the order
    llm logged them. The turns are chosen first, by cheap tests, and only
    they have their records read."""
    chosen = [
        row[0]
        for row in db.execute(
            f"SELECT t.rowid FROM turns t WHERE t.model IN ({MODEL_IDS}) AND {where}",
            params,
        )
    ]
    if not chosen:
        return
    these = f"t.rowid IN (SELECT value FROM json_each(?)) AND {OURS}"
    db.execute(
        f"INSERT INTO imagen4_generations ({', '.join(GENERATION_COLUMNS)})"
        f" SELECT {', '.join(GENERATION_COLUMNS.values())} FROM turns t"
        f" WHERE {these} ORDER BY t.rowid",
        [json.dumps(chosen)],
    )
    db.execute(
        f"INSERT INTO imagen4_image_files ({', '.join(IMAGE_COLUMNS)})"
        f" SELECT {', '.join(IMAGE_COLUMNS.values())} FROM turns t, {IMAGES_OF_T}"
        f" WHERE {these} ORDER BY t.rowid",
        [json.dumps(chosen)],
    )


@MIGRATIONS()
def m001_leave_turns(db: sqlite_utils.Database) -> None:
    """Before 0.2 the plugin filled its table with a trigger on llm's
    ``turns`` and kept unfinished downloads as rows in it. The trigger goes;
    unfinished rows move to the recovery journal; images that ``download``
    restored are marked saved in their turn; the old table and its own
    migrations table make way for the index."""
    db.execute("DROP TRIGGER IF EXISTS imagen4_images_from_turn")
    if db[VIEW].exists():
        _rescue_old_rows(db)
        db[VIEW].drop()
    db.execute("DROP TABLE IF EXISTS imagen4_migrations")


def _rescue_old_rows(db: sqlite_utils.Database) -> None:
    rows = list(db.query("SELECT * FROM imagen4_images ORDER BY turn_id, position"))
    by_turn: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_turn.setdefault(row["turn_id"], []).append(row)
    for turn_id, images in by_turn.items():
        turn = db.execute(
            "SELECT response_json FROM turns WHERE id = ?", [turn_id]
        ).fetchone()
        if turn is None:
            _journal_old_rows(db, turn_id, images)
            continue
        record = GenerationRecord.model_validate_json(turn[0])
        changed = False
        for row, image in zip(images, record.images, strict=False):
            if row["status"] == "saved" and image.status != "saved" and row["path"]:
                path = Path(row["path"])
                image.status, image.name, image.error = "saved", path.name, None
                image.sha256, image.bytes = row["sha256"], row["bytes"]
                image.width, image.height = row["width"], row["height"]
                image.content_type = row["content_type"]
                changed = True
        if changed:
            update_turn(db, turn_id, record)


def _journal_old_rows(
    db: sqlite_utils.Database, turn_id: str, rows: list[dict[str, Any]]
) -> None:
    """An old ``pending`` generation, never logged: the recovery journal
    takes it, so that ``llm imagen4 download`` can finish it."""
    first = rows[0]
    provenance = json.loads(first["provenance"]) if first["provenance"] else None
    request = {"model": first["api_model"], "prompt": first["prompt"]}
    request.update((provenance or {}).get("options") or {"seed": first["seed"]})
    record = GenerationRecord.model_validate(
        {
            "request": request,
            "seed": first["seed"],
            "credits_used": first["credits_used"],
            "directory": first["folder"],
            "metadata": bool(first["metadata"]),
            "provenance": provenance,
            "images": [
                {
                    "position": row["position"],
                    "status": "saved" if row["status"] == "saved" else "failed",
                    "name": Path(row["path"]).name if row["path"] else None,
                    **{
                        k: row[k]
                        for k in (
                            "url",
                            "sha256",
                            "bytes",
                            "width",
                            "height",
                            "content_type",
                            "error",
                        )
                    },
                }
                for row in rows
            ],
        }
    )
    with journal.claimed(turn_id) as held:
        if held is not None and held.load() is None:
            held.write(
                journal.Entry(
                    id=turn_id,
                    model=first["model"],
                    record=record,
                    log_to=str(db_path(db)),
                    created_utc=first["datetime_utc"] or journal.now_utc(),
                )
            )


@MIGRATIONS()
def m002_index(db: sqlite_utils.Database) -> None:
    db["imagen4_generations"].create(
        {
            "turn_id": str,
            "turn_rowid": int,
            "model": str,
            "api_model": str,
            "prompt": str,
            "negative_prompt": str,
            "aspect_ratio": str,
            "seed": int,
            "images": int,
            "saved": int,
            "credits_used": float,
            "usd_spent": float,
            "client_request_id": str,
            "inference_id": str,
            "tool_call_id": str,
            "request_key": str,
            "folder": str,
            "metadata": int,
            "datetime_utc": str,
        }
    )
    generations = db["imagen4_generations"]
    generations.create_index(["turn_id"], unique=True)
    generations.create_index(["model"])
    generations.create_index(["seed"])
    generations.create_index(["datetime_utc"])
    generations.create_index(["request_key", "seed"])
    generations.create_index(["tool_call_id"])
    db["imagen4_image_files"].create(
        {
            "turn_id": str,
            "position": int,
            "path": str,
            **{name: str for name in IMAGE_FIELDS},
            "bytes": int,
            "width": int,
            "height": int,
        }
    )
    db["imagen4_image_files"].create_index(["turn_id", "position"], unique=True)
    # How far the index has read turns: every turn up to ``turns_rowid`` is
    # in it, ``turns_count`` of them then, the last being ``last_turn_id``;
    # and the rowid of imagen4_generations up to which the prompt search
    # has every prompt (NULL: make it again from the start). The search
    # table itself is made by ``prepare``, where SQLite can.
    db["imagen4_sync"].create(
        {
            "id": int,
            "turns_rowid": int,
            "turns_count": int,
            "last_turn_id": str,
            "search_rowid": int,
        },
        pk="id",
    )
    db["imagen4_sync"].insert({"id": 1, "turns_rowid": 0, "turns_count": 0})
    db.create_view(VIEW, _view_sql())


# -- the prompt search -------------------------------------------------------------
#
# The search is kept to this invariant: every generation whose rowid is at
# most ``imagen4_sync.search_rowid`` has its prompt in it under its rowid (a
# generation keeps its rowid, and its prompt, until the index is rebuilt).
# What the search finds is checked against the index; the generations above
# ``search_rowid`` are read directly. A machine whose SQLite lacks the
# trigram tokenizer never touches the search, and leaves ``search_rowid``
# NULL whenever it rebuilds the index, so that a machine that has it starts
# the search again.


@functools.cache
def _trigram() -> bool:
    """Whether this SQLite has FTS5 with the trigram tokenizer (3.34 on)."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE VIRTUAL TABLE t USING fts5(x, tokenize = 'trigram')")
    except sqlite3.Error:
        return False
    finally:
        conn.close()
    return True


def _search_missing(db: sqlite_utils.Database) -> bool:
    return _trigram() and not db[SEARCH].exists()


def _make_search(db: sqlite_utils.Database) -> None:
    db.execute(
        f"CREATE VIRTUAL TABLE {SEARCH} USING fts5(prompt,"
        " content = 'imagen4_generations', content_rowid = 'rowid',"
        " tokenize = 'trigram')"
    )
    db.execute("UPDATE imagen4_sync SET search_rowid = NULL")


def _generations_top(db: sqlite_utils.Database) -> int:
    return db.execute("SELECT max(rowid) FROM imagen4_generations").fetchone()[0] or 0


def _update_search(db: sqlite_utils.Database) -> None:
    """Add to the search the generations indexed since it was last brought
    up to date, or all of them when it must start again."""
    if not _trigram() or not db[SEARCH].exists():
        return
    (covered,) = db.execute("SELECT search_rowid FROM imagen4_sync").fetchone()
    top = _generations_top(db)
    if covered is None or covered > top:  # > top: the index was emptied by hand
        db.execute(f"INSERT INTO {SEARCH} ({SEARCH}) VALUES ('delete-all')")
        covered = 0
    db.execute(
        f"INSERT INTO {SEARCH} (rowid, prompt) SELECT rowid, prompt"
        " FROM imagen4_generations WHERE rowid > ? ORDER BY rowid",
        [covered],
    )
    db.execute("UPDATE imagen4_sync SET search_rowid = ?", [top])


# -- opening a logs database ---------------------------------------------------


def default_path() -> Path:
    return llm.user_dir() / "logs.db"


def db_path(db: sqlite_utils.Database) -> Path:
    return Path(db.execute("PRAGMA database_list").fetchone()[2])


def connect(path: Path) -> sqlite_utils.Database:
    """A logs database, waiting for other writers rather than failing."""
    return sqlite_utils.Database(sqlite3.connect(str(path), timeout=BUSY_TIMEOUT))


@contextlib.contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[None]:
    """A transaction that takes SQLite's write lock at its start, so that a
    concurrent writer makes it wait (the busy timeout) rather than fail."""
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise
    db.conn.execute("COMMIT")


def _ours_missing(db: sqlite_utils.Database) -> bool:
    names = {
        row[0]
        for row in db.execute(
            "SELECT name FROM sqlite_master WHERE name IN (?, ?, ?, ?)", [*TABLES, VIEW]
        )
    }
    return names != {*TABLES, VIEW}


def prepare(db: sqlite_utils.Database) -> None:
    """llm's migrations and the plugin's, and the index brought up to date.
    Objects of the plugin that were dropped are made again."""
    from llm.migrations import MIGRATIONS as LLM_MIGRATIONS
    from llm.migrations import migrate as llm_migrate

    applied = (
        {row[0] for row in db.execute("SELECT name FROM _llm_migrations")}
        if db["_llm_migrations"].exists()
        else set()
    )
    llm_current = {fn.__name__ for fn in LLM_MIGRATIONS} <= applied
    if (
        not llm_current
        or MIGRATIONS.pending(db)
        or _ours_missing(db)
        or _search_missing(db)
    ):
        with transaction(db):
            if not llm_current:
                llm_migrate(db)
            if _ours_missing(db) and not MIGRATIONS.pending(db):
                # Dropped by hand: all of it is derived, so make it anew.
                db.execute(f"DROP VIEW IF EXISTS {VIEW}")
                with contextlib.suppress(sqlite3.Error):  # a SQLite without trigrams
                    db.execute(f"DROP TABLE IF EXISTS {SEARCH}")
                for table in TABLES:
                    db.execute(f"DROP TABLE IF EXISTS {table}")
                db.execute(
                    f"DELETE FROM [{Migrations.migrations_table}]"
                    " WHERE migration_set = ? AND name != 'm001_leave_turns'",
                    [MIGRATIONS.name],
                )
            MIGRATIONS.apply(db)
            if _search_missing(db):
                _make_search(db)
    refresh(db)


def open_db(path: Path | None, *, create: bool = False) -> sqlite_utils.Database | None:
    """The logs database at ``path`` (``llm logs path`` when None), prepared
    for reading the history; None when there is none yet and ``create`` is
    false."""
    path = path or default_path()
    if not create and not path.exists():
        return None
    db = connect(path)
    prepare(db)
    return db


# -- keeping the index up to date ---------------------------------------------


# Turns indexed in one write transaction: catching up with many (the first
# read of a long history, a rebuilt turns table) takes many short
# transactions, so that llm, which waits 5 s for a lock, can always log.
SLICE = 5000


def _turns_now(db: sqlite_utils.Database) -> tuple[int, int, str | None]:
    rowid, count = db.execute("SELECT max(rowid), count(*) FROM turns").fetchone()
    return rowid or 0, count, _turn_at(db, rowid)


def _turn_at(db: sqlite_utils.Database, rowid: int | None) -> str | None:
    row = db.execute("SELECT id FROM turns WHERE rowid = ?", [rowid]).fetchone()
    return row[0] if row else None


def _state(db: sqlite_utils.Database) -> tuple[int, int, str | None]:
    return tuple(
        db.execute(
            "SELECT turns_rowid, turns_count, last_turn_id FROM imagen4_sync"
        ).fetchone()
    )


def refresh(db: sqlite_utils.Database) -> None:
    """Bring the index up to date with ``turns``: nothing to do when no turn
    was logged since (one query); the new turns alone when only new ones
    were logged; and when anything else changed (a turn deleted, logged
    again, ``turns`` rebuilt), the index rows out of date dropped and their
    turns indexed again."""
    search = db.execute("SELECT search_rowid FROM imagen4_sync").fetchone()[0]
    if _state(db) == _turns_now(db) and (
        not _trigram() or not db[SEARCH].exists() or search == _generations_top(db)
    ):
        return
    while not _catch_up(db):
        pass


def _catch_up(db: sqlite_utils.Database) -> bool:
    """One short write transaction of bringing the index up to date: at
    most SLICE turns indexed. True once it is up to date. Counting all of
    ``turns`` once is its one cost that grows with the history."""
    with transaction(db):
        rowid, count, last = _state(db)
        top, total, _ = _turns_now(db)

        def up_to(limit: int) -> int:
            """How many turns there are up to rowid ``limit``."""
            (after,) = db.execute(
                "SELECT count(*) FROM turns WHERE rowid > ?", [limit]
            ).fetchone()
            return total - after

        if up_to(rowid) != count or (rowid and _turn_at(db, rowid) != last):
            _drop_out_of_date(db)
            rowid = 0
        slice_end = db.execute(
            "SELECT rowid FROM turns WHERE rowid > ? ORDER BY rowid LIMIT 1 OFFSET ?",
            [rowid, SLICE - 1],
        ).fetchone()
        upper = slice_end[0] if slice_end else top
        _index_turns(
            db,
            "t.rowid > ? AND t.rowid <= ?"
            " AND NOT EXISTS (SELECT 1 FROM imagen4_generations g WHERE g.turn_id = t.id)",
            [rowid, upper],
        )
        db.execute(
            "UPDATE imagen4_sync SET turns_rowid = ?, turns_count = ?, last_turn_id = ?",
            [upper, up_to(upper), _turn_at(db, upper)],
        )
        _update_search(db)
        return upper == top


def _drop_out_of_date(db: sqlite_utils.Database) -> None:
    """Drop the index rows whose turn is gone or is not the row it was."""
    stale = (
        "SELECT g.turn_id FROM imagen4_generations g"
        " LEFT JOIN turns t ON t.id = g.turn_id WHERE t.rowid IS NOT g.turn_rowid"
    )
    db.execute(f"DELETE FROM imagen4_image_files WHERE turn_id IN ({stale})")
    dropped = db.execute(f"DELETE FROM imagen4_generations WHERE turn_id IN ({stale})")
    if dropped.rowcount:
        # Its rowids may be given again: the search starts again.
        db.execute("UPDATE imagen4_sync SET search_rowid = NULL")


# -- reading ---------------------------------------------------------------------


@dataclass
class HistoryImage:
    position: int
    path: str | None
    status: str
    url: str | None
    sha256: str | None
    bytes: int | None
    width: int | None
    height: int | None
    content_type: str | None
    error: str | None
    enhanced_prompt: str | None
    exists: bool


@dataclass
class HistoryEntry:
    id: str
    datetime_utc: str
    model: str
    api_model: str
    prompt: str
    negative_prompt: str | None
    aspect_ratio: str | None
    seed: int | None
    credits_used: float | None
    usd_spent: float | None
    folder: str | None
    metadata: bool
    tool_call_id: str | None
    images: list[HistoryImage] = field(default_factory=list)

    @property
    def missing(self) -> list[HistoryImage]:
        return [image for image in self.images if not image.exists]


_ENTRY_COLUMNS = (
    "turn_id",
    "datetime_utc",
    "model",
    "api_model",
    "prompt",
    "negative_prompt",
    "aspect_ratio",
    "seed",
    "credits_used",
    "usd_spent",
    "folder",
    "metadata",
    "tool_call_id",
)


def _like(text: str) -> str:
    """``text`` as a LIKE pattern that matches it literally, anywhere."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _entries(db: sqlite_utils.Database, rows: list[tuple]) -> list[HistoryEntry]:
    entries = [
        HistoryEntry(
            id=row[0],
            **dict(zip(_ENTRY_COLUMNS[1:], row[1:], strict=True)),
        )
        for row in rows
    ]
    if not entries:
        return entries
    by_id = {entry.id: entry for entry in entries}
    marks = ", ".join("?" * len(by_id))
    for row in db.execute(
        f"SELECT turn_id, position, path, {', '.join(IMAGE_FIELDS)}"
        f" FROM imagen4_image_files WHERE turn_id IN ({marks})"
        " ORDER BY turn_id, position",
        list(by_id),
    ):
        values = dict(zip(("position", "path", *IMAGE_FIELDS), row[1:], strict=True))
        saved = values["status"] == "saved" and bool(values["path"])
        by_id[row[0]].images.append(
            HistoryImage(**values, exists=saved and os.path.isfile(values["path"]))
        )
    for entry in entries:
        entry.metadata = bool(entry.metadata)
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
    # A page at a time: as many as asked for, or more when some will be
    # left out for having all their files.
    page = 200 if missing else limit or 1000
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
    columns = ", ".join(f"g.{name}" for name in _ENTRY_COLUMNS)
    # (FROM, the rowid that orders it, more conditions and their values)
    sources: list[tuple[str, str, list[str], list[Any]]] = [
        ("imagen4_generations g", "g.rowid", [], [])
    ]
    covered = None
    # The trigram index helps when the text has three characters in a row
    # that are not LIKE's wildcards there; its LIKE is a first sieve only.
    if search and re.search("[^%_]{3}", search) and _trigram() and db[SEARCH].exists():
        (covered,) = db.execute("SELECT search_rowid FROM imagen4_sync").fetchone()
    if covered:
        sources = [
            ("imagen4_generations g", "g.rowid", ["g.rowid > ?"], [covered]),
            (
                # CROSS JOIN: the search gives the rowids, newest first.
                f"{SEARCH} s CROSS JOIN imagen4_generations g ON g.rowid = s.rowid",
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
                f"SELECT {order}, {columns} FROM {source}"
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
        f"SELECT {', '.join(_ENTRY_COLUMNS)} FROM imagen4_generations WHERE turn_id = ?",
        [generation_id],
    ).fetchall()
    entries = _entries(db, rows)
    return entries[0] if entries else None


@dataclass
class LoggedTurn:
    """A generation as llm logged it."""

    model: str
    record: GenerationRecord
    options: dict[str, Any]


def turn(db: sqlite_utils.Database, generation_id: str) -> LoggedTurn | None:
    row = db.execute(
        "SELECT model, response_json, options_json FROM turns WHERE id = ?",
        [generation_id],
    ).fetchone()
    if row is None or not row[1]:
        return None
    return LoggedTurn(
        row[0], GenerationRecord.model_validate_json(row[1]), json.loads(row[2] or "{}")
    )


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


# -- writing -----------------------------------------------------------------------


def update_turn(
    db: sqlite_utils.Database, generation_id: str, record: GenerationRecord
) -> None:
    """Say in the logged turn what is now true of its images (after
    ``download`` saved some), as llm would have logged it: its record, and
    the response text llm shows. The index follows."""
    from llm.logs import TURN_SEARCH_INSERT_SQL, LogStore, condense_payload
    from llm.parts import Message, TextPart

    row = db.execute(
        "SELECT parent_message_hash, tip_message_hash, thread_id FROM turns WHERE id = ?",
        [generation_id],
    ).fetchone()
    if row is None:
        return
    parent, old_tip, thread_id = row
    messages = [
        Message(role="assistant", parts=[TextPart(text=record.text(generation_id))])
    ]
    tip = LogStore(db).ensure_chain(messages, parent=parent)
    db.execute(
        "UPDATE turns SET tip_message_hash = ?, response_json = ? WHERE id = ?",
        [tip, condense_payload(record.model_dump(), messages), generation_id],
    )
    db.execute(
        "UPDATE threads SET tip_message_hash = ? WHERE id = ? AND tip_message_hash = ?",
        [tip, thread_id, old_tip],
    )
    db["turn_search"].delete_where("turn_id = ?", [generation_id])
    db.execute(TURN_SEARCH_INSERT_SQL, {"turn_id": generation_id})
    if db["imagen4_generations"].exists():
        # Indexed again in its place: the history's order is the index's.
        place = db.execute(
            "SELECT rowid FROM imagen4_generations WHERE turn_id = ?", [generation_id]
        ).fetchone()
        db.execute("DELETE FROM imagen4_image_files WHERE turn_id = ?", [generation_id])
        db.execute("DELETE FROM imagen4_generations WHERE turn_id = ?", [generation_id])
        _index_turns(db, "t.id = ?", [generation_id])
        if place:
            db.execute(
                "UPDATE imagen4_generations SET rowid = ? WHERE turn_id = ?",
                [place[0], generation_id],
            )


def log_new(db: sqlite_utils.Database, entry: journal.Entry) -> None:
    """Log a generation that was finished from the journal and never logged
    (the process stopped first), as llm would have: a turn of its model."""
    assert entry.record is not None
    model = llm.get_model(entry.model)
    record = entry.record
    options = {
        name: value
        for name, value in (record.provenance or {}).get("options", {}).items()
        if name in model.Options.model_fields
    }
    response = llm.Response.from_dict(
        {
            "model": entry.model,
            "prompt": {
                "messages": [
                    {
                        "role": "user",
                        "parts": [{"type": "text", "text": record.request["prompt"]}],
                    }
                ],
                "options": options,
            },
            "messages": [
                {
                    "role": "assistant",
                    "parts": [{"type": "text", "text": record.text(entry.id)}],
                }
            ],
            "id": entry.id,
        },
        model=model,
    )
    response.response_json = record.model_dump()
    if usage := record.usage():
        response.set_usage(details=usage)
    # from_dict keeps no start time; the turn's is when it was generated.
    response._start_utcnow = datetime.datetime.fromisoformat(entry.created_utc)
    response.log_to_db(db)


def record_finished(path: Path, entry: journal.Entry) -> None:
    """A generation finished from the journal, in the logs database at
    ``path``: its turn updated, or logged if the process that made it
    stopped before llm could log it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = connect(path)
    try:
        prepare(db)
        with transaction(db):
            if db.execute("SELECT 1 FROM turns WHERE id = ?", [entry.id]).fetchone():
                assert entry.record is not None
                update_turn(db, entry.id, entry.record)
            else:
                log_new(db, entry)
    finally:
        db.close()


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
                    VIEW: {
                        "description": "One row per image generated by llm-imagen4",
                        "sort_desc": "datetime_utc",
                    }
                },
            }
        }
    }
