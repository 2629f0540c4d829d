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
  find text in old prompts without reading them all, brought up to date by
  the reads that look for text.

llm logs each generation as a turn whose ``response_json`` is the plugin's
record, from whichever route made it: that is the one source of truth.
Bringing the index up to date costs one small query when nothing changed,
and reads only the new turns when some were logged; anything else (a turn
deleted, ``turns`` rebuilt by a migration) rebuilds it from ``turns``. It
is done in SQL, a few thousand turns a transaction, each turn's record
parsed once a statement.

Opening a logs database is here too: llm's migrations and the plugin's,
and the index brought up to date."""

from __future__ import annotations

import contextlib
import functools
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


# Turns of this plugin. The model is compared first, as it is cheap; a turn
# without a text id, or whose record is no JSON, is none of the plugin's.
OURS = (
    f"t.model IN ({MODEL_IDS}) AND typeof(t.id) = 'text'"
    " AND json_valid(t.response_json)"
    f" AND json_extract(t.response_json, '$.plugin') = '{PLUGIN}'"
)
# The images of a turn ``t``, one row each, as the columns read them: none
# where the record holds no list of them.
IMAGES_OF_T = (
    "json_each(CASE WHEN json_valid(t.response_json)"
    " AND json_type(t.response_json, '$.images') = 'array'"
    " THEN t.response_json ELSE '[]' END, '$.images') AS image"
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
    images) gives of the turns that match ``these``, in their order. An
    image row left without its generation (by hand) makes way."""
    made = columns.of(table)
    verb = "INSERT OR REPLACE" if table == IMAGES else "INSERT"
    return (
        f"{verb} INTO {table} ({', '.join(column.name for column in made)})"
        f" SELECT {', '.join(column.sql for column in made)} FROM {source}"
        f" WHERE {these} ORDER BY t.rowid"
    )


def _index_turns(db: sqlite_utils.Database, where: str, params: Any = ()) -> None:
    """Add to the index the plugin's turns that match ``where`` and are not
    in it yet, in the order llm logged them, in two statements of SQL:
    their images first, which each generation's count of saved images
    reads, then the generations. Each record is parsed once a statement;
    the cheap tests come first, so that only the plugin's turns are."""
    these = (
        f"t.model IN ({MODEL_IDS}) AND {where} AND NOT EXISTS"
        f" (SELECT 1 FROM {GENERATIONS} g WHERE g.turn_id = t.id) AND {OURS}"
    )
    db.execute(_insert(IMAGES, f"turns t, {IMAGES_OF_T}", these), params)
    db.execute(_insert(GENERATIONS, "turns t", these), params)


# The index's indexes, as m002_index made them: each table, its columns,
# and whether they are unique. The ones whose entries go in at random
# places are made at the end of a long catch-up rather than kept up to date
# through every slice of it.
INDEXES = (
    (GENERATIONS, ("turn_id",), True),
    (GENERATIONS, ("model",), False),
    (GENERATIONS, ("seed",), False),
    (GENERATIONS, ("datetime_utc",), False),
    (GENERATIONS, ("request_key", "seed"), False),
    (GENERATIONS, ("tool_call_id",), False),
    (IMAGES, ("turn_id", "position"), True),
)
AT_RANDOM = ((GENERATIONS, ("seed",)), (GENERATIONS, ("request_key", "seed")))


def _index_name(table: str, names: tuple[str, ...]) -> str:
    """The name sqlite-utils gives an index."""
    return f"idx_{table}_{'_'.join(names)}"


def _make_indexes(db: sqlite_utils.Database) -> None:
    for table, names, unique in INDEXES:
        db[table].create_index(list(names), unique=unique, if_not_exists=True)


def _indexes_missing(db: sqlite_utils.Database) -> bool:
    wanted = [_index_name(table, names) for table, names, _ in INDEXES]
    (found,) = db.execute(
        "SELECT count(*) FROM sqlite_master WHERE type = 'index'"
        f" AND name IN ({', '.join('?' * len(wanted))})",
        wanted,
    ).fetchone()
    return found != len(wanted)


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
    db[IMAGES].create({column.name: column.type for column in columns.of(IMAGES)})
    _make_indexes(db)
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


def searched(db: sqlite_utils.Database) -> int | None:
    """The rowid of imagen4_generations up to which the prompt search has
    every prompt, once it is brought up to date; None where there is no
    search. Only the reads that look for text use the search, so they
    alone bring it up to date: catching up with a long history does not
    wait for it. Where the database cannot be written now (read only, or
    locked past the busy timeout), the search stays as far as it was, and
    the generations above it are read directly."""
    if not trigram() or not db[SEARCH].exists():
        return None
    with contextlib.suppress(sqlite3.OperationalError):
        if _search_row(db) != _generations_top(db):
            with transaction(db):
                _update_search(db)
    return _search_row(db)


def _search_row(db: sqlite_utils.Database) -> int | None:
    """How far the search has read the index; None when it must start
    again, as when the value there is no rowid of it."""
    row = db.execute("SELECT search_rowid FROM imagen4_sync").fetchone()
    value = row[0] if row else None
    return value if type(value) is int and value >= 0 else None


def _update_search(db: sqlite_utils.Database) -> None:
    """Add to the search the generations indexed since it was last brought
    up to date, or all of them when it must start again."""
    covered = _search_row(db)
    top = _generations_top(db)
    if covered is None or covered > top:  # > top: the index was emptied by hand
        db.execute(f"INSERT INTO {SEARCH} ({SEARCH}) VALUES ('delete-all')")
        covered = 0
    db.execute(
        f"INSERT INTO {SEARCH} (rowid, prompt) SELECT rowid, prompt"
        f" FROM {GENERATIONS} WHERE rowid > ? ORDER BY rowid",
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
    """How far the index has read ``turns``. A state that is not one the
    plugin writes (its row gone, values of other types) is one that no
    ``turns`` matches, so that the index is checked and made again."""
    row = db.execute(
        "SELECT turns_rowid, turns_count, last_turn_id FROM imagen4_sync"
    ).fetchone()
    if row is None:
        return 0, -1, None
    rowid, count, last = row
    if (
        type(rowid) is not int
        or type(count) is not int
        or not (last is None or type(last) is str)
    ):
        return 0, -1, None
    return rowid, count, last


def refresh(db: sqlite_utils.Database) -> None:
    """Bring the index up to date with ``turns``: nothing to do when no turn
    was logged since (one query); the new turns alone when only new ones
    were logged; and when anything else changed (a turn deleted, logged
    again, ``turns`` rebuilt), the index rows out of date dropped and their
    turns indexed again. The index's indexes a long catch-up left to its
    end, or that were dropped, are made again."""
    if _state(db) == _turns_now(db) and not _indexes_missing(db):
        return
    check = True
    while not _catch_up(db, check):
        check = False
    if _indexes_missing(db):
        with transaction(db):
            _make_indexes(db)


def _catch_up(db: sqlite_utils.Database, check: bool) -> bool:
    """One short write transaction of bringing the index up to date: at
    most SLICE turns indexed. True once it is up to date.

    With ``check`` (the first of a refresh), the index is first made sure
    to hold what it says: as many turns up to the last it read as there
    were then. Counting them is the one cost that grows with the history,
    paid once a refresh: the count the next slices record is the checked
    one and what they add, so that a turn deleted meanwhile shows at the
    next refresh. When more than one slice is ahead, the indexes whose
    entries go in at random places are dropped until the end."""
    with transaction(db):
        db.execute(
            "INSERT INTO imagen4_sync (id) SELECT 1"
            " WHERE NOT EXISTS (SELECT 1 FROM imagen4_sync)"
        )
        rowid, count, last = _state(db)
        (top,) = db.execute("SELECT max(rowid) FROM turns").fetchone()
        top = top or 0
        if rowid and _turn_at(db, rowid) != last:
            _drop_out_of_date(db)
            rowid = count = 0
        if check:
            (total,) = db.execute("SELECT count(*) FROM turns").fetchone()
            read = _turns_up_to(db, rowid, top, total)
            if read != count:
                _drop_out_of_date(db)
                rowid = count = read = 0
            after = total - read
            if after > SLICE:
                for table, names in AT_RANDOM:
                    db.execute(f"DROP INDEX IF EXISTS [{_index_name(table, names)}]")
        slice_end = db.execute(
            "SELECT rowid FROM turns WHERE rowid > ? ORDER BY rowid LIMIT 1 OFFSET ?",
            [rowid, SLICE - 1],
        ).fetchone()
        if slice_end:
            upper, added = slice_end[0], SLICE
        else:
            upper = top
            (added,) = db.execute(
                "SELECT count(*) FROM turns WHERE rowid > ?", [rowid]
            ).fetchone()
        _index_turns(db, "t.rowid > ? AND t.rowid <= ?", [rowid, upper])
        db.execute(
            "UPDATE imagen4_sync SET turns_rowid = ?, turns_count = ?, last_turn_id = ?",
            [upper, count + added, _turn_at(db, upper)],
        )
        return upper == top


def _turns_up_to(db: sqlite_utils.Database, rowid: int, top: int, total: int) -> int:
    """How many of the ``total`` turns have a rowid up to ``rowid``: counted
    on the side of it that is likely the smaller, as counting walks them."""
    if rowid <= top // 2:
        (upto,) = db.execute(
            "SELECT count(*) FROM turns WHERE rowid <= ?", [rowid]
        ).fetchone()
        return upto
    (after,) = db.execute(
        "SELECT count(*) FROM turns WHERE rowid > ?", [rowid]
    ).fetchone()
    return total - after


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
    stopped before llm could log it; the index follows. A database that is
    gone is made again only in a folder that is there: no folder is made
    where an entry says."""
    if not path.is_file() and not path.parent.is_dir():
        raise FileNotFoundError(f"no folder {path.parent} for the logs database")
    db = connect(path)
    try:
        prepare(db)
        with transaction(db):
            if turns.write_finished(db, entry):
                reindex_turn(db, entry.id)
    finally:
        db.close()


def open_for_logging(path: Path | None) -> None:
    """Make sure a turn can be logged in ``path`` before anything is sent,
    as ``llm prompt`` does: its folder made, llm's migrations (and the
    plugin's) run."""
    import llm

    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = open_db(path, create=True)
        assert db is not None
        db.close()
    except (sqlite3.Error, OSError) as ex:
        raise llm.ModelError(f"Cannot log to {path}: {ex}") from None


def log_response(
    response: Any, path: Path, thread: tuple[str, str] | None = None
) -> None:
    """Log a response in the logs database at ``path``, as ``llm prompt``
    does (``turns.log_in``); the index follows, or the next read does."""
    db = connect(path)
    try:
        with transaction(db):
            turns.log_in(db, response, thread)
        with contextlib.suppress(sqlite3.Error, OSError):
            prepare(db)
    finally:
        db.close()
