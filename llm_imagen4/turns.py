"""llm's side of a generation: where llm logs a turn, logging one as llm
does, hearing when llm (or a caller) has logged one, failing ``llm
prompt`` when an image was not saved, and a model's defaults.

Everything here leans on llm itself, some of it on llm's internals (its
click context, ``LogStore``, ``_conversation_name``, a response's
``log_to_db``, ``logs_json_for_response_ids``), so it is kept in this one
module, each use with a test that fails if llm changes underneath."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import click
import llm

from . import recovery
from .record import GenerationRecord
from .terminal import command, notify


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


def open_for_logging(path: Path | None) -> None:
    """Make sure a turn can be logged in ``path`` before anything is sent,
    as ``llm prompt`` does: its folder made, llm's migrations (and the
    plugin's) run."""
    from . import history

    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = history.open_db(path, create=True)
        assert db is not None
        db.close()
    except (sqlite3.Error, OSError) as ex:
        raise llm.ModelError(f"Cannot log to {path}: {ex}") from None


def log(
    response: llm.Response, path: Path | None, thread: tuple[str, str] | None = None
) -> None:
    """Log the turn as ``llm prompt`` does, in a conversation of its own or
    in ``thread`` (a conversation id and the prompt that names it). A logs
    database that cannot be written is one line: the images are saved, and
    the journal keeps the generation for ``llm imagen4 download`` to log."""
    if path is None:
        return
    try:
        _log(response, path, thread)
    except (sqlite3.Error, OSError) as ex:
        notify(_not_logged_line(response.id, _record(response), ex))
        recovery.logged(response.id, ok=False)
        return
    recovery.logged(response.id)


def _record(response: llm.Response) -> GenerationRecord:
    return GenerationRecord.model_validate(response.response_json)


def _log(response: llm.Response, path: Path, thread: tuple[str, str] | None) -> None:
    from llm.logs import LogStore
    from llm.models import _conversation_name

    from . import history

    db = history.connect(path)
    try:
        with history.transaction(db):
            if thread is None:
                response.log_to_db(db)
            else:
                store = LogStore(db)
                thread_id, prompt = thread
                store.ensure_thread(thread_id, name=_conversation_name(prompt))
                store.log(response, thread_id=thread_id)
        # The history's index follows; if it cannot now, the next read will.
        with contextlib.suppress(sqlite3.Error, OSError):
            history.prepare(db)
    finally:
        db.close()


def hear_logging(response: llm.Response, record: GenerationRecord) -> None:
    """On ``llm prompt`` and the Python API, llm or the caller logs the turn:
    hear when it has (the journal entry then goes), note the database for
    ``download`` to record in, and make a logs database that cannot be
    written one line rather than a traceback after the images were saved.
    On ``llm prompt``, a turn with an image not saved then fails the
    command (see ``fail_if_unsaved``)."""
    from . import history

    log_to_db = response.log_to_db

    def log_and_tell(db: Any) -> None:
        try:
            log_to_db(db)
        except (sqlite3.Error, OSError) as ex:
            notify(_not_logged_line(response.id, record, ex))
            recovery.logged(response.id, ok=False)
        else:
            path = history.db_path(db)
            if path.name:  # not in memory, nor temporary
                recovery.logged_in(response.id, path)
            recovery.logged(response.id)
        context = _prompt_context()
        if context is not None and record.unsaved():
            if context.params.get("json_output"):
                from llm.cli import logs_json_for_response_ids

                # What llm prints with --json once the turn is logged,
                # which the failure would keep it from printing.
                click.echo(logs_json_for_response_ids(db, [response.id]))
            raise click.ClickException(_unsaved_summary(record))

    response.log_to_db = log_and_tell


def _prompt_context() -> click.Context | None:
    """``llm prompt``'s click context, when that is what runs now (not
    ``llm chat``, whose session goes on, nor the Python API)."""
    context = click.get_current_context(silent=True)
    while context is not None and context.command.name != "prompt":
        context = context.parent
    return context


def fail_if_unsaved(response: Any, record: GenerationRecord, text: str) -> None:
    """On ``llm prompt``, a generation with an image not saved fails the
    command, as it fails ``llm imagen4``; it stays in the journal for
    ``llm imagen4 download``. llm offers a model no way to fail once its
    turn is logged, so where llm logs the turn the failure comes once it
    has (``hear_logging``). Where it does not (``-n``, ``llm logs off``),
    or logs another object (``--async``), the response itself fails: llm
    then prints only the error, so its text is printed here first, and an
    async turn is logged by ``download``."""
    context = _prompt_context()
    if context is None or not record.unsaved():
        return
    logs = llm_target() is not None or bool(context.params.get("json_output"))
    if isinstance(response, llm.Response) and logs:
        return
    click.echo(text)
    summary = _unsaved_summary(record)
    if llm_target() is not None and recovery.keeps(response.id):
        summary += "; the turn is logged once they are, by " + command(
            "llm", "imagen4", "download", response.id
        )
    raise llm.ModelError(summary)


def _unsaved_summary(record: GenerationRecord) -> str:
    return f"{len(record.unsaved())} of {len(record.images)} images were not saved"


def _not_logged_line(
    generation_id: str, record: GenerationRecord, ex: Exception
) -> str:
    """What a logs database that could not be written leaves: what is saved,
    and whether ``download`` can log it later (only from the journal)."""
    saved = len(record.images) - len(record.unsaved())
    line = f"Could not log the turn ({ex}); " + (
        "the images are saved"
        if saved == len(record.images)
        else f"{saved} of {len(record.images)} images are saved"
    )
    if not recovery.keeps(generation_id):
        return line + ", and the recovery journal could not keep it to log later"
    return (
        line
        + ", and "
        + command("llm", "imagen4", "download", generation_id)
        + " logs it later"
    )
