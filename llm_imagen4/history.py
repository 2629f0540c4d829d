"""The history of generations, kept in llm's own logs database.

llm logs each generation as a turn whose ``response_json`` is the plugin's
record. The plugin's table ``imagen4_images`` holds one row per image, filled
by a trigger on ``turns``: a row appears exactly when llm logs the turn,
whichever command logged it, and never when logging is off."""

from __future__ import annotations

import contextlib
import datetime
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import llm
import sqlite_utils

MIGRATIONS_TABLE = "imagen4_migrations"
# Seconds a command waits for another process's write to finish.
BUSY_TIMEOUT = 30.0

_FIELDS = {
    "position": "json_extract(image.value, '$.position')",
    "model": "{t}.model",
    "api_model": "json_extract({t}.response_json, '$.request.model')",
    "prompt": "json_extract({t}.response_json, '$.request.prompt')",
    "negative_prompt": "json_extract({t}.response_json, '$.request.negative_prompt')",
    "aspect_ratio": "json_extract({t}.response_json, '$.request.aspect_ratio')",
    "seed": "json_extract({t}.response_json, '$.seed')",
    "status": "json_extract(image.value, '$.status')",
    "path": "json_extract({t}.response_json, '$.directory')"
    " || json_extract(image.value, '$.name')",
    "url": "json_extract(image.value, '$.url')",
    "sha256": "json_extract(image.value, '$.sha256')",
    "bytes": "json_extract(image.value, '$.bytes')",
    "width": "json_extract(image.value, '$.width')",
    "height": "json_extract(image.value, '$.height')",
    "content_type": "json_extract(image.value, '$.content_type')",
    "error": "json_extract(image.value, '$.error')",
    "credits_used": "json_extract({t}.response_json, '$.credits_used')",
    "datetime_utc": "{t}.datetime_utc",
}


def _rows_from_turns(t: str) -> str:
    """INSERT of one row per image of the plugin's turns, from ``t``, which
    is ``NEW`` in the trigger and ``turns`` in the backfill."""
    columns = ", ".join(["turn_id", *_FIELDS])
    values = ", ".join([f"{t}.id", *(v.format(t=t) for v in _FIELDS.values())])
    return (
        f"INSERT OR REPLACE INTO imagen4_images ({columns}) SELECT {values} "
        f"FROM json_each(CASE WHEN json_valid({t}.response_json) "
        f"THEN {t}.response_json ELSE '{{}}' END, '$.images') AS image "
        f"WHERE json_extract({t}.response_json, '$.plugin') = 'llm-imagen4'"
    )


def m001_imagen4_images(db: sqlite_utils.Database) -> None:
    db["imagen4_images"].create(
        {
            "id": int,
            "turn_id": str,
            "position": int,
            "model": str,
            "api_model": str,
            "prompt": str,
            "negative_prompt": str,
            "aspect_ratio": str,
            "seed": int,
            "status": str,
            "path": str,
            "url": str,
            "sha256": str,
            "bytes": int,
            "width": int,
            "height": int,
            "content_type": str,
            "error": str,
            "credits_used": float,
            "datetime_utc": str,
        },
        pk="id",
        foreign_keys=[("turn_id", "turns", "id")],
    )
    table = db["imagen4_images"]
    table.create_index(["turn_id", "position"], unique=True)
    table.create_index(["datetime_utc"])
    table.create_index(["seed"])
    table.create_index(["model", "datetime_utc"])
    table.create_index(["path"])
    db.execute(
        "CREATE TRIGGER imagen4_images_from_turn AFTER INSERT ON turns BEGIN "
        + _rows_from_turns("NEW").replace("FROM turns", "")
        + "; END"
    )
    # Turns logged before the trigger existed.
    db.execute(
        _rows_from_turns("turns").replace("FROM json_each", "FROM turns, json_each")
    )


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [m001_imagen4_images]


def logs_db_path() -> Path:
    return llm.user_dir() / "logs.db"


def open_db(path: Path | None = None) -> sqlite_utils.Database:
    """The logs database, waiting for other writers rather than failing."""
    path = path or logs_db_path()
    return sqlite_utils.Database(sqlite3.connect(str(path), timeout=BUSY_TIMEOUT))


def _applied(db: sqlite_utils.Database, table: str) -> set[str]:
    if not db[table].exists():
        return set()
    return {row[0] for row in db.execute(f"select name from [{table}]").fetchall()}


def _up_to_date(db: sqlite_utils.Database) -> bool:
    from llm.migrations import MIGRATIONS as LLM_MIGRATIONS

    return {fn.__name__ for fn in LLM_MIGRATIONS} <= _applied(
        db, "_llm_migrations"
    ) and {fn.__name__ for fn in MIGRATIONS} <= _applied(db, MIGRATIONS_TABLE)


@contextlib.contextmanager
def _exclusive(db: sqlite_utils.Database) -> Iterator[None]:
    """Hold SQLite's write lock, so that of several processes migrating a new
    database at once, one migrates and the others then find it done."""
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.conn.execute("ROLLBACK")
        raise
    db.conn.execute("COMMIT")


def migrate(db: sqlite_utils.Database) -> None:
    """Bring the database up to date: llm's migrations, then the plugin's."""
    if _up_to_date(db):
        return
    from llm.migrations import migrate as llm_migrate

    with _exclusive(db):
        llm_migrate(db)
        if not db[MIGRATIONS_TABLE].exists():
            db[MIGRATIONS_TABLE].create({"name": str, "applied_at": str}, pk="name")
        done = _applied(db, MIGRATIONS_TABLE)
        for fn in MIGRATIONS:
            if fn.__name__ not in done:
                fn(db)
                db[MIGRATIONS_TABLE].insert(
                    {
                        "name": fn.__name__,
                        "applied_at": datetime.datetime.now(
                            datetime.timezone.utc
                        ).isoformat(),
                    }
                )


def generations(
    db: sqlite_utils.Database,
    *,
    limit: int | None = 20,
    query: str | None = None,
    model: str | None = None,
) -> list[dict[str, Any]]:
    """Recent generations, newest first, each with its images."""
    where, params = [], {}
    if query:
        where.append("prompt like :query")
        params["query"] = f"%{query}%"
    if model:
        where.append("model = :model")
        params["model"] = model
    sql = f"""
        select turn_id from imagen4_images
        {"where " + " and ".join(where) if where else ""}
        group by turn_id
        order by max(datetime_utc) desc, turn_id desc
        {"limit :limit" if limit else ""}
    """
    params["limit"] = limit
    turn_ids = [row[0] for row in db.execute(sql, params).fetchall()]
    return [generation(db, turn_id) for turn_id in turn_ids]


def generation(db: sqlite_utils.Database, turn_id: str) -> dict[str, Any]:
    rows = list(
        db.query(
            "select * from imagen4_images where turn_id = ? order by position",
            [turn_id],
        )
    )
    first = rows[0]
    return {
        "id": turn_id,
        "datetime_utc": first["datetime_utc"],
        "model": first["model"],
        "api_model": first["api_model"],
        "prompt": first["prompt"],
        "negative_prompt": first["negative_prompt"],
        "aspect_ratio": first["aspect_ratio"],
        "seed": first["seed"],
        "credits_used": first["credits_used"],
        "images": [
            {
                key: row[key]
                for key in (
                    "position",
                    "status",
                    "path",
                    "url",
                    "sha256",
                    "bytes",
                    "width",
                    "height",
                    "content_type",
                    "error",
                )
            }
            for row in rows
        ],
    }
