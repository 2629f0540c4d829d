"""The plugin's objects in a logs database, beside llm's tables and never
in them, made by the plugin's own migrations and safe to drop at any time:

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

llm logs each generation as a turn whose ``response_json`` is the plugin's
record, from whichever route made it: that is the one source of truth.
Bringing the index up to date costs one small query when nothing changed,
and reads only the new turns when some were logged; anything else (a turn
deleted, ``turns`` rebuilt by a migration) rebuilds it from ``turns``.

Opening a logs database is here too: llm's migrations and the plugin's,
and the index brought up to date."""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlite_utils
from llm.cli import logs_db_path as default_path
from sqlite_utils.migrations import Migrations

from . import columns, journal, legacy, specs, turns
from .columns import GENERATIONS, IMAGES
from .record import PLUGIN

# Seconds a command waits for another process's write to finish.
BUSY_TIMEOUT = 30.0
MIGRATIONS = Migrations("llm-imagen4")
TABLES = (GENERATIONS, IMAGES, "imagen4_sync")
VIEW = "imagen4_images"
# The prompts' full-text index: an FTS5 table over imagen4_generations.prompt
# (its rowid is the generation's), holding only the trigrams.
SEARCH = "imagen4_prompt_search"
MODEL_IDS = ", ".join(f"'{spec.model_id}'" for spec in specs.SPECS)


# Turns of this plugin. The model is compared first, as it is cheap.
OURS = (
    f"t.model IN ({MODEL_IDS}) AND json_valid(t.response_json)"
    f" AND json_extract(t.response_json, '$.plugin') = '{PLUGIN}'"
)
# The images of a turn ``t``, one row each, as the columns read them.
IMAGES_OF_T = (
    "json_each(CASE WHEN json_valid(t.response_json) THEN t.response_json"
    " ELSE '{}' END, '$.images') AS image"
)


def _select(reading: dict[str, str]) -> str:
    """The view's columns, each read as ``reading`` says: the SQL of each
    column of the index by its name."""
    return ", ".join(
        f"{column.sql.format_map(reading) if column.table is None else reading[column.name]}"
        f" AS {column.name}"
        for column in columns.in_view()
    )


def _view_sql() -> str:
    """The index's rows whose turn is still there, and the plugin's turns
    logged since the index last read ``turns``, read from their records."""
    indexed = {
        **{column.name: f"g.{column.name}" for column in columns.of(GENERATIONS)},
        **{column.name: f"i.{column.name}" for column in columns.of(IMAGES)},
    }
    live = {
        column.name: column.sql
        for column in (*columns.of(GENERATIONS), *columns.of(IMAGES))
    }
    return (
        f"SELECT {_select(indexed)}"
        f" FROM {GENERATIONS} g JOIN turns t ON t.id = g.turn_id"
        f" JOIN {IMAGES} i ON i.turn_id = g.turn_id"
        " UNION ALL"
        f" SELECT {_select(live)}"
        f" FROM turns t, {IMAGES_OF_T}"
        " WHERE t.rowid > (SELECT turns_rowid FROM imagen4_sync) AND "
        + OURS
        + f" AND t.id NOT IN (SELECT turn_id FROM {GENERATIONS})"
    )


def _insert(table: str, source: str, these: str) -> str:
    """INSERT into ``table`` of what ``source`` (turns ``t``, and their
    images) gives of the turns that match ``these``, in their order."""
    made = columns.of(table)
    return (
        f"INSERT INTO {table} ({', '.join(column.name for column in made)})"
        f" SELECT {', '.join(column.sql for column in made)} FROM {source}"
        f" WHERE {these} ORDER BY t.rowid"
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
    db.execute(_insert(GENERATIONS, "turns t", these), [json.dumps(chosen)])
    db.execute(_insert(IMAGES, f"turns t, {IMAGES_OF_T}", these), [json.dumps(chosen)])


@MIGRATIONS()
def m001_leave_turns(db: sqlite_utils.Database) -> None:
    """Before 0.2 the plugin filled its table with a trigger on llm's
    ``turns`` and kept unfinished downloads as rows in it. The trigger goes;
    what the old table holds is rescued (see ``legacy``); the old table and
    its own migrations table make way for the index."""
    db.execute("DROP TRIGGER IF EXISTS imagen4_images_from_turn")
    if db[VIEW].exists():
        legacy.rescue(db, db_path(db))
        db[VIEW].drop()
    db.execute("DROP TABLE IF EXISTS imagen4_migrations")


@MIGRATIONS()
def m002_index(db: sqlite_utils.Database) -> None:
    """The index: its tables made from ``columns.COLUMNS``, its indexes, the
    state of its reading ``turns``, and the view."""
    db[GENERATIONS].create(
        {column.name: column.type for column in columns.of(GENERATIONS)}
    )
    generations = db[GENERATIONS]
    generations.create_index(["turn_id"], unique=True)
    generations.create_index(["model"])
    generations.create_index(["seed"])
    generations.create_index(["datetime_utc"])
    generations.create_index(["request_key", "seed"])
    generations.create_index(["tool_call_id"])
    db[IMAGES].create({column.name: column.type for column in columns.of(IMAGES)})
    db[IMAGES].create_index(["turn_id", "position"], unique=True)
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
def trigram() -> bool:
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
    return trigram() and not db[SEARCH].exists()


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
    if not trigram() or not db[SEARCH].exists():
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
        not trigram() or not db[SEARCH].exists() or search == _generations_top(db)
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


def reindex_turn(db: sqlite_utils.Database, generation_id: str) -> None:
    """Index again one turn whose record was rewritten in place, in the
    place it had: the history's order is the index's."""
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


def record_finished(path: Path, entry: journal.Entry) -> None:
    """A generation finished from the journal, in the logs database at
    ``path``: its turn updated, or logged if the process that made it
    stopped before llm could log it; the index follows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = connect(path)
    try:
        prepare(db)
        with transaction(db):
            if turns.write_finished(db, entry):
                reindex_turn(db, entry.id)
    finally:
        db.close()
