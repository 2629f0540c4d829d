"""Every write the plugin makes to llm's own tables, and every use of llm's
internals it takes: a logged turn rewritten in place once ``download`` has
saved its images, and a generation logged that llm never logged. Each is
written as llm itself would have written it: the turn, its messages, its
thread's tip and its ``turn_search`` row."""

from __future__ import annotations

import datetime

import llm
import sqlite_utils

from . import journal
from .record import GenerationRecord


def update_turn(
    db: sqlite_utils.Database, generation_id: str, record: GenerationRecord
) -> bool:
    """Say in the logged turn what is now true of its images (after
    ``download`` saved some), as llm would have logged it: its record, and
    the response text llm shows. False when there is no such turn."""
    from llm.logs import TURN_SEARCH_INSERT_SQL, LogStore, condense_payload
    from llm.parts import Message, TextPart

    row = db.execute(
        "SELECT parent_message_hash, tip_message_hash, thread_id FROM turns WHERE id = ?",
        [generation_id],
    ).fetchone()
    if row is None:
        return False
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
    return True


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
    # from_dict keeps no start time; the turn's is when it was generated.
    response._start_utcnow = datetime.datetime.fromisoformat(entry.created_utc)
    response.log_to_db(db)


def write_finished(db: sqlite_utils.Database, entry: journal.Entry) -> bool:
    """A generation finished from the journal: its logged turn updated, or
    logged if the process that made it stopped before llm could log it.
    True when a logged turn was rewritten in place."""
    assert entry.record is not None
    if update_turn(db, entry.id, entry.record):
        return True
    log_new(db, entry)
    return False
