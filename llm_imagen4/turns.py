"""Every write the plugin makes to llm's own tables, and every use of llm's
internals it takes: where llm logs a turn, a response logged as ``llm
prompt`` logs it (in a conversation of its own or a chat's), hearing when
llm or a caller has logged one, failing ``llm prompt`` when an image was
not saved, a logged turn rewritten in place once
``download`` has saved its images, a generation logged that llm never
logged, and a model's defaults. Each is written as llm itself would have
written it: the turn, its messages, its thread's tip and its
``turn_search`` row. Each use of llm's internals has a test that fails if
llm changes underneath."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

import llm
import sqlite_utils

from . import journal, specs
from .record import PLUGIN, GenerationRecord


class NotOurs(llm.ModelError):
    """The logs database has a turn of that id that is not the plugin's."""


def model_defaults(model_id: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the model's defaults from ``llm models options set``
    for the options not given, as ``llm prompt`` applies them."""
    from llm.cli import get_model_options

    return {**get_model_options(model_id), **options}


def target(database: Path | None, no_log: bool, log: bool = False) -> Path | None:
    """Where a turn goes, as ``llm prompt`` decides: ``-d`` or logs.db,
    unless ``--no-log`` or ``llm logs off`` (which ``--log`` overrides)."""
    from llm.cli import logs_db_path, logs_on

    if no_log or not (logs_on() or log):
        return None
    return (database or logs_db_path()).absolute()


def llm_target() -> Path | None:
    """Where llm's command line logs what it runs now (``llm prompt``,
    ``llm chat``), read from its click context; None when it logs nothing,
    or when llm's command line is not what is running (the Python API)."""
    import click

    context = click.get_current_context(silent=True)
    while context is not None and context.command.name not in ("prompt", "chat"):
        context = context.parent
    if context is None:
        return None
    params = context.params
    database = params.get("database")
    return target(
        Path(database) if database else None,
        bool(params.get("no_log")),
        bool(params.get("log")),
    )


def log_in(
    db: sqlite_utils.Database,
    response: llm.Response,
    thread: tuple[str, str] | None = None,
) -> None:
    """Log the turn as ``llm prompt`` does, in a conversation of its own or
    in ``thread`` (a conversation id and the prompt that names it)."""
    if thread is None:
        response.log_to_db(db)
        return
    from llm.logs import LogStore
    from llm.models import _conversation_name

    store = LogStore(db)
    thread_id, prompt = thread
    store.ensure_thread(thread_id, name=_conversation_name(prompt))
    store.log(response, thread_id=thread_id)


def hear_logging(
    response: llm.Response,
    record: GenerationRecord,
    heard: Callable[[Path | None, Exception | None], None],
) -> None:
    """On ``llm prompt`` and the Python API, llm or the caller logs the turn:
    ``heard`` is told when it has (the database's file, None when in memory),
    or could not (the error, which goes no further: the images are saved).
    On ``llm prompt``, a turn with an image not saved then fails the
    command (see ``fail_if_unsaved``)."""
    import sqlite3

    import click

    log_to_db = response.log_to_db

    def log_and_tell(db: Any) -> None:
        try:
            name = db.execute("PRAGMA database_list").fetchone()[2]
        except sqlite3.Error:
            name = None
        try:
            log_to_db(db)
        except (sqlite3.Error, OSError) as ex:
            heard(Path(name) if name else None, ex)
        else:
            heard(Path(name) if name else None, None)
        context = _prompt_context()
        if context is not None and record.unsaved():
            if context.params.get("json_output"):
                from llm.cli import logs_json_for_response_ids

                # What llm prints with --json once the turn is logged,
                # which the failure would keep it from printing.
                click.echo(logs_json_for_response_ids(db, [response.id]))
            raise click.ClickException(_unsaved_summary(record))

    response.log_to_db = log_and_tell


def _prompt_context() -> Any:
    """``llm prompt``'s click context, when that is what runs now (not
    ``llm chat``, whose session goes on, nor the Python API)."""
    import click

    context = click.get_current_context(silent=True)
    while context is not None and context.command.name != "prompt":
        context = context.parent
    return context


def fail_if_unsaved(
    response: Any, record: GenerationRecord, text: str, kept: bool
) -> None:
    """On ``llm prompt``, a generation with an image not saved fails the
    command, as it fails ``llm imagen4``; it stays in the journal (``kept``)
    for ``llm imagen4 download``. llm offers a model no way to fail once its
    turn is logged, so where llm logs the turn the failure comes once it
    has (``hear_logging``). Where it does not (``-n``, ``llm logs off``),
    or logs another object (``--async``), the response itself fails: llm
    then prints only the error, so its text is printed here first, and an
    async turn is logged by ``download``."""
    import click

    context = _prompt_context()
    if context is None or not record.unsaved():
        return
    logs = llm_target() is not None or bool(context.params.get("json_output"))
    if isinstance(response, llm.Response) and logs:
        return
    click.echo(text)
    summary = _unsaved_summary(record)
    if llm_target() is not None and kept:
        summary += "; the turn is logged once they are, by llm imagen4 download " + (
            response.id
        )
    raise llm.ModelError(summary)


def _unsaved_summary(record: GenerationRecord) -> str:
    return f"{len(record.unsaved())} of {len(record.images)} images were not saved"


def update_turn(
    db: sqlite_utils.Database, generation_id: str, record: GenerationRecord
) -> bool:
    """Say in the logged turn what is now true of its images (after
    ``download`` saved some), as llm would have logged it: its record, and
    the response text llm shows. False when there is no such turn."""
    from llm.logs import TURN_SEARCH_INSERT_SQL, LogStore, condense_payload
    from llm.parts import Message, TextPart

    row = db.execute(
        "SELECT parent_message_hash, tip_message_hash, thread_id, model,"
        " response_json FROM turns WHERE id = ?",
        [generation_id],
    ).fetchone()
    if row is None:
        return False
    parent, old_tip, thread_id, model, logged = row
    if model not in specs.SPECS_BY_ID or not _ours(logged):
        raise NotOurs(
            f"The logs database has a turn {generation_id} that is not a "
            "generation of the plugin's: it is left as it is"
        )
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


def _ours(logged: str | None) -> bool:
    import json

    try:
        record = json.loads(logged or "")
    except ValueError:
        return False
    return isinstance(record, dict) and record.get("plugin") == PLUGIN


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


def write_finished(db: sqlite_utils.Database, entry: journal.Entry) -> bool:
    """A generation finished from the journal: its logged turn updated, or
    logged if the process that made it stopped before llm could log it.
    True when a logged turn was rewritten in place."""
    assert entry.record is not None
    if update_turn(db, entry.id, entry.record):
        return True
    log_new(db, entry)
    return False
