"""The history of generations, kept in llm's own logs database.

llm logs each generation as a turn whose ``response_json`` is the plugin's
record. The plugin's table ``imagen4_images`` holds one row per image, filled
by a trigger on ``turns``: a row appears exactly when llm logs the turn,
whichever command logged it, and never when logging is off."""

from __future__ import annotations

import contextlib
import datetime
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import llm
import sqlite_utils

MIGRATIONS_TABLE = "imagen4_migrations"
# Seconds a command waits for another process's write to finish.
BUSY_TIMEOUT = 30.0

_RECORD_FIELDS = {
    "api_model": "request.model",
    "prompt": "request.prompt",
    "negative_prompt": "request.negative_prompt",
    "aspect_ratio": "request.aspect_ratio",
    "seed": "seed",
    "credits_used": "credits_used",
    "folder": "directory",
    "metadata": "metadata",
    "provenance": "provenance",
}
_IMAGE_FIELDS = (
    "status",
    "url",
    "sha256",
    "bytes",
    "width",
    "height",
    "content_type",
    "error",
)


def _insert_images(t: str, source: str = "") -> str:
    """INSERT of one row per image from rows ``t`` carrying a turn's ``id``,
    ``model``, ``response_json`` and ``datetime_utc``: ``NEW`` in the trigger,
    ``turns`` in the backfill, a one-row subquery in the journal. ``source``
    is whatever must come before the images in the FROM clause."""
    fields = {
        "turn_id": f"{t}.id",
        "position": "json_extract(image.value, '$.position')",
        "model": f"{t}.model",
        **{
            name: f"json_extract({t}.response_json, '$.{key}')"
            for name, key in _RECORD_FIELDS.items()
        },
        "path": f"json_extract({t}.response_json, '$.directory')"
        " || json_extract(image.value, '$.name')",
        **{name: f"json_extract(image.value, '$.{name}')" for name in _IMAGE_FIELDS},
        "datetime_utc": f"{t}.datetime_utc",
    }
    return (
        f"INSERT OR REPLACE INTO imagen4_images ({', '.join(fields)}) "
        f"SELECT {', '.join(fields.values())} "
        f"FROM {source}json_each(CASE WHEN json_valid({t}.response_json) "
        f"THEN {t}.response_json ELSE '{{}}' END, '$.images') AS image "
        f"WHERE json_extract({t}.response_json, '$.plugin') = 'llm-imagen4'"
    )


_JOURNAL_INSERT = _insert_images(
    "src",
    "(SELECT :id AS id, :model AS model, :response_json AS response_json,"
    " :datetime_utc AS datetime_utc) AS src, ",
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
            "folder": str,
            "metadata": int,
            "provenance": str,
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
    table.create_index(["status"])
    db.execute(
        "CREATE TRIGGER imagen4_images_from_turn AFTER INSERT ON turns BEGIN "
        + _insert_images("NEW")
        + "; END"
    )
    # Turns logged before the trigger existed.
    db.execute(_insert_images("turns", "turns, "))


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
def transaction(db: sqlite_utils.Database) -> Iterator[None]:
    """A transaction that takes SQLite's write lock at its start. Another
    process's write then makes it wait (the busy timeout) rather than fail,
    as a read that later turns into a write can; and of several processes
    migrating a new database at once, one migrates and the others find it
    done."""
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

    with transaction(db):
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
    seed: int | None = None,
    since: str | None = None,
    missing: bool = False,
) -> list[dict[str, Any]]:
    """Generations, newest first, each with its images; ``missing`` keeps
    those with an image whose file is not on disk."""
    where, params = [], {}
    if query:
        where.append("prompt like :query")
        params["query"] = f"%{query}%"
    if model:
        where.append("model = :model")
        params["model"] = model
    if seed is not None:
        where.append("seed = :seed")
        params["seed"] = seed
    if since:
        where.append("datetime_utc >= :since")
        params["since"] = since
    sql = f"""
        select turn_id from imagen4_images
        {"where " + " and ".join(where) if where else ""}
        group by turn_id
        order by max(datetime_utc) desc, turn_id desc
    """
    found = []
    for (turn_id,) in db.execute(sql, params).fetchall():
        row = generation(db, turn_id)
        if row is None or (missing and all(i["exists"] for i in row["images"])):
            continue
        found.append(row)
        if limit and len(found) == limit:
            break
    return found


def generation(db: sqlite_utils.Database, turn_id: str) -> dict[str, Any] | None:
    rows = list(
        db.query(
            "select * from imagen4_images where turn_id = ? order by position",
            [turn_id],
        )
    )
    if not rows:
        return None
    first = rows[0]
    return {
        "id": turn_id,
        **{
            key: first[key]
            for key in (
                "datetime_utc",
                "model",
                "api_model",
                "prompt",
                "negative_prompt",
                "aspect_ratio",
                "seed",
                "credits_used",
                "folder",
                "metadata",
            )
        },
        "provenance": json.loads(first["provenance"]) if first["provenance"] else None,
        "images": [
            {
                **{key: row[key] for key in ("position", "path", *_IMAGE_FIELDS)},
                "exists": bool(
                    row["status"] == "saved"
                    and row["path"]
                    and Path(row["path"]).is_file()
                ),
            }
            for row in rows
        ],
    }


class Journal:
    """The generation's rows, written the moment the API answers and again as
    each image is saved or fails, so that a download that never finished (a
    crash, Ctrl-C) can be completed later by ``llm imagen4 download``. When
    the generation finishes the rows are removed: llm's log of the turn then
    writes the final ones through the trigger, or, with logging off, none."""

    def __init__(self, db: sqlite_utils.Database, turn_id: str, model_id: str):
        self.db = db
        self.params = {
            "id": turn_id,
            "model": model_id,
            "datetime_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        }

    def write(self, record: dict[str, Any]) -> None:
        with transaction(self.db):
            self.db.execute(
                _JOURNAL_INSERT, {**self.params, "response_json": json.dumps(record)}
            )

    def finish(self) -> None:
        with transaction(self.db):
            self.db.execute(
                "DELETE FROM imagen4_images WHERE turn_id = ?", [self.params["id"]]
            )
        self.db.close()


def mark_saved(
    db: sqlite_utils.Database, turn_id: str, position: int, saved: Any
) -> None:
    with transaction(db):
        db.execute(
            "UPDATE imagen4_images SET status = 'saved', error = NULL, path = ?,"
            " sha256 = ?, bytes = ?, width = ?, height = ?, content_type = ?"
            " WHERE turn_id = ? AND position = ?",
            [
                str(saved.path),
                saved.sha256,
                saved.bytes,
                saved.width,
                saved.height,
                saved.content_type,
                turn_id,
                position,
            ],
        )


CANNED_QUERIES = {
    "generations_by_day": {
        "title": "Generations by day and model",
        "sql": "select day, model, count(*) as generations, sum(images) as images,"
        " sum(credits) as credits from (select date(datetime_utc) as day, model,"
        " count(*) as images, max(credits_used) as credits"
        " from imagen4_images group by turn_id)"
        " group by day, model order by day desc, model",
    },
    "seeds_for_prompt": {
        "title": "Every seed used for a prompt",
        "description": "Generations whose prompt contains the text, newest first",
        "sql": "select seed, model, aspect_ratio, datetime_utc, turn_id, prompt,"
        " count(*) as images from imagen4_images"
        " where prompt like '%' || :prompt || '%'"
        " group by turn_id order by datetime_utc desc",
    },
    "missing_images": {
        "title": "Images whose files are missing",
        "description": "Images never saved (a failed or unfinished download): "
        "llm imagen4 download TURN_ID fetches them. "
        "llm imagen4 history --missing also finds files deleted since.",
        "sql": "select turn_id, position, status, error, url, prompt, datetime_utc"
        " from imagen4_images where status != 'saved' order by datetime_utc desc",
    },
}


def datasette_metadata(path: Path) -> dict[str, Any]:
    """Datasette metadata for a logs database at ``path``: the canned queries,
    under the database name Datasette gives the file."""
    return {
        "databases": {
            path.stem: {
                "queries": CANNED_QUERIES,
                "tables": {
                    "imagen4_images": {
                        "description": "One row per image generated by llm-imagen4",
                        "sort_desc": "datetime_utc",
                    }
                },
            }
        }
    }
