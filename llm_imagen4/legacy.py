"""What a logs database of the plugin's 0.1 holds, rescued on the way to
the index.

0.1 filled a table of its own, ``imagen4_images``, from a trigger on llm's
``turns``, and kept there the downloads it had not finished. Its rows say
two things the turns do not: which images ``download`` restored after the
turn was logged, and which generations never reached ``turns`` at all.
The first are marked saved in their turn; the second go to the recovery
journal, for ``llm imagen4 download`` to finish."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlite_utils
from pydantic import ValidationError

from . import columns, journal, turns
from .record import GenerationRecord, ImageRecord

# The fields of an image the old table and a record have alike, beside its
# position, status and file name, which are read apart.
_COPIED = tuple(
    column.name
    for column in columns.of(columns.IMAGES)
    if column.name in ImageRecord.model_fields
    and column.name not in ("position", "status")
)


def rescue(db: sqlite_utils.Database, log_to: Path) -> None:
    """Rescue what the old table of the logs database at ``log_to`` holds.
    A generation whose rows or turn are not as 0.1 wrote them (values of
    other types, a record that is not one) is left as it is."""
    rows = list(db.query("SELECT * FROM imagen4_images ORDER BY turn_id, position"))
    by_turn: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_turn.setdefault(row["turn_id"], []).append(row)
    for turn_id, images in by_turn.items():
        turn = db.execute(
            "SELECT response_json FROM turns WHERE id = ?", [turn_id]
        ).fetchone()
        try:
            if turn is None:
                _journal_old_rows(turn_id, images, log_to)
            else:
                _mark_restored(db, turn_id, turn[0], images)
        except (ValidationError, ValueError, TypeError):
            continue


def _mark_restored(
    db: sqlite_utils.Database,
    turn_id: str,
    logged: Any,
    rows: list[dict[str, Any]],
) -> None:
    """Images ``download`` saved after their turn was logged are marked
    saved in it, with what the old rows say of their files."""
    record = GenerationRecord.model_validate_json(logged)
    changed = False
    for position, (row, image) in enumerate(zip(rows, record.images, strict=False)):
        if row["status"] == "saved" and image.status != "saved" and row["path"]:
            record.images[position] = ImageRecord.model_validate(
                {
                    **image.model_dump(),
                    **{name: row[name] for name in _COPIED if name in row},
                    "status": "saved",
                    "name": Path(row["path"]).name,
                    "error": None,
                }
            )
            changed = True
    if changed:
        turns.update_turn(db, turn_id, record)


def _journal_old_rows(turn_id: str, rows: list[dict[str, Any]], log_to: Path) -> None:
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
                    **{name: row[name] for name in _COPIED if name in row},
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
                    log_to=str(log_to),
                    created_utc=first["datetime_utc"] or journal.now_utc(),
                )
            )
