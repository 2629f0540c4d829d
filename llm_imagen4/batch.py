"""Many prompts: reading a batch file, finishing what an earlier run of it
left unfinished, skipping rows already done, and running the rest with a set
number of requests in flight, paced on 429s, within a budget."""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import os
import signal
import stat
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import click
import llm
from sqlite_utils.utils import Format, rows_from_file

from . import (
    api,
    catalogue,
    concurrency,
    engine,
    errors,
    finishing,
    history,
    index,
    journal,
    ledger,
    recovery,
    route,
    specs,
    turns,
)
from .budget import WAIT, Budget
from .terminal import command, dumps, notify, printable

T = TypeVar("T")
# A row's fields: its prompt, its model, any option of the request as the
# models' Options declare it, and where to save.
ROW_FIELDS = (
    "prompt",
    "model",
    *dict.fromkeys(
        name for spec in specs.SPECS for name in specs.request_options(spec)
    ),
    "output",
)


# The most a batch may be: its file is read whole, and its rows checked,
# before anything is sent.
MAX_BYTES = 16 * 1024 * 1024
MAX_ROWS = 10_000
# Where rows_from_file puts the values of a CSV record beyond its header's
# columns: the name of no field, and a header names fields only.
_EXTRAS = "(more values than the header has columns)"


class BatchError(Exception):
    """The file as a whole cannot be read: nothing is sent."""


@dataclass
class Row:
    number: int  # line number (text, JSONL) or record number (CSV), from 1
    prompt: str = ""
    model_name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    # An earlier request of the row that was never answered, and what is
    # known of it: the row is sent again, as only that brings its images.
    earlier: dict[str, str] | None = None


# How standard input is named in messages.
STDIN = "<stdin>"


@dataclass
class Source:
    """A batch file open for reading, or standard input."""

    name: str
    stream: BinaryIO

    def read(self) -> bytes:
        """All of it, read no further than one byte past MAX_BYTES: a file
        (or an endless pipe) of more is refused."""
        data = self.stream.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise BatchError(
                f"{self.name} is over {MAX_BYTES // 2**20} MiB, the most a batch"
                " file may hold: split it"
            )
        return data


@contextlib.contextmanager
def open_source(path: str) -> Iterator[Source]:
    """FILE, or standard input for ``-``. A file must be a regular one and
    is never waited on: a FIFO, a device or a socket is refused unopened, and
    what is opened (without blocking) is checked again. click.File would
    block opening a FIFO nobody writes."""
    if path == "-":
        yield Source(STDIN, sys.stdin.buffer)
        return
    try:
        _check_regular(os.stat(path).st_mode, path)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as ex:
        raise BatchError(f"{path}: {ex.strerror}") from None
    with os.fdopen(fd, "rb") as stream:
        # Another file may have taken its name in between.
        _check_regular(os.fstat(fd).st_mode, path)
        yield Source(path, stream)


def _check_regular(mode: int, path: str) -> None:
    if stat.S_ISFIFO(mode):
        raise BatchError(
            f"{path} is a pipe, not a regular file: give - and pipe it to"
            " standard input"
        )
    if not stat.S_ISREG(mode):
        raise BatchError(f"{path} is not a regular file")


def detect_format(name: str, first_line: str) -> str:
    lower = name.lower()
    if lower.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if lower.endswith(".csv"):
        return "csv"
    if name == STDIN and first_line.lstrip().startswith("{"):
        return "jsonl"
    return "text"


def read_rows(data: bytes, name: str, fmt: str = "auto") -> list[Row]:
    """The rows of a batch file: plain text (one prompt a line), JSONL or CSV
    (with the columns in ROW_FIELDS), in UTF-8 with or without a BOM; at
    most MAX_ROWS."""
    stream = io.BytesIO(data)
    try:
        if fmt == "auto":
            fmt = detect_format(name, stream.readline().decode("utf-8-sig"))
            stream.seek(0)
        if fmt != "csv":
            return _at_most(_line_rows(stream, fmt), name)
        with _csv_field_limit(MAX_BYTES):
            return _at_most(_csv_rows(stream, name), name)
    except UnicodeDecodeError:
        raise BatchError(f"{name} is not UTF-8 text") from None


def _at_most(rows: Iterable[Row], name: str) -> list[Row]:
    """The rows, read no further than one past MAX_ROWS: more are refused."""
    kept = list(itertools.islice(rows, MAX_ROWS + 1))
    if len(kept) > MAX_ROWS:
        raise BatchError(
            f"{name} has more than {MAX_ROWS:,} rows, the most a batch takes: split it"
        )
    return kept


def _line_rows(stream: BinaryIO, fmt: str) -> Iterator[Row]:
    """Text or JSONL rows, numbered by their line. Lines end as a file's do
    (\\n, \\r\\n or \\r), not as str.splitlines has them: that also breaks
    at U+2028, U+0085 and others, which a JSON string may hold as they are."""
    for number, line in enumerate(io.TextIOWrapper(stream, encoding="utf-8-sig"), 1):
        if not line.strip() or (fmt == "text" and line.lstrip().startswith("#")):
            continue
        yield (
            _row(number, line)
            if fmt == "jsonl"
            else _fields(number, {"prompt": line.strip()})
        )


class _StrictCSV(csv.excel):
    """Excel's CSV, where a quote left open, or closed before its field ends,
    is an error: read on, the rest of the file would be one prompt."""

    strict = True


@contextlib.contextmanager
def _csv_field_limit(limit: int) -> Iterator[None]:
    """csv reads no field over 131,072 characters, and its reader stops
    there. With the limit at the file's own cap, a long field is a value like
    any other, and its row is refused for what it holds, alone."""
    previous = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _csv_rows(stream: BinaryIO, name: str) -> Iterator[Row]:
    """CSV records, numbered from 1 after the header, which the first record
    shows. A file that is not CSV from some record on is refused whole."""
    records, _ = rows_from_file(
        stream,
        Format.CSV,
        dialect=_StrictCSV,
        encoding="utf-8-sig",
        extras_key=_EXTRAS,
    )
    number = 0
    try:
        for number, record in enumerate(records, 1):
            if number == 1:
                _check_columns(set(record) - {_EXTRAS}, name)
            yield _record(number, record)
    except csv.Error as ex:
        raise BatchError(f"{name}: record {number + 1} is not CSV: {ex}") from None


def _record(number: int, record: dict[str, Any]) -> Row:
    if _EXTRAS in record:
        return Row(number, error="more values than the header has columns")
    return _fields(number, {k: v for k, v in record.items() if v not in ("", None)})


def _check_columns(columns: set[str], name: str) -> None:
    unknown = columns - set(ROW_FIELDS)
    if "prompt" not in columns or unknown:
        raise BatchError(
            f"{name}: CSV columns must include prompt and be among "
            f"{', '.join(ROW_FIELDS)}"
            + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else "")
        )


def _row(number: int, line: str) -> Row:
    try:
        record = json.loads(line)
    except RecursionError:
        return Row(number, error="not valid JSON: nested too deeply")
    except ValueError:
        return Row(number, error="not valid JSON")
    if not isinstance(record, dict):
        return Row(number, error="not a JSON object")
    return _fields(number, record)


def _fields(number: int, record: dict[str, Any]) -> Row:
    """The row a record's fields make, or the first reason they make none."""
    unknown = set(record) - set(ROW_FIELDS)
    if unknown:
        return Row(number, error=f"unknown fields: {', '.join(sorted(unknown))}")
    for name, value in record.items():
        unfit = _unfit(value)
        if unfit:
            return Row(number, error=f"{name}: {unfit}")
    prompt = record.pop("prompt", None)
    if not isinstance(prompt, str):
        return Row(number, error="no prompt")
    model_name = record.pop("model", None)
    if model_name is not None and not isinstance(model_name, str):
        return Row(number, error="model: not the name of a model")
    return Row(number, prompt=prompt, model_name=model_name, options=record)


def _unfit(value: Any) -> str | None:
    """What makes a text unfit for a request or a file name: a NUL, which no
    file name can hold and the history cuts text short at, or half of a
    surrogate pair (a JSON escape such as \\ud800), which is not UTF-8."""
    if not isinstance(value, str):
        return None
    if "\0" in value:
        return "holds a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "holds half of a surrogate pair, which is not text"
    return None


def request_key(request: dict[str, Any], seeded: bool) -> str:
    """What identifies a row's request when the batch runs again: all it
    sends, and the seed only when the row chose one."""
    return json.dumps(
        {k: v for k, v in request.items() if seeded or k != "seed"}, sort_keys=True
    )


@dataclass
class Job:
    """A row checked and ready to send."""

    row: Row
    model: llm.Model
    options: dict[str, Any]
    request: dict[str, Any]
    seeded: bool

    @property
    def images(self) -> int:
        return self.request.get("num_images", 1)


@dataclass
class Tally:
    generated: int = 0
    recovered: int = 0
    skipped: int = 0
    failed: int = 0


def estimate(jobs: list[Job], prices: dict[str, float | None]) -> str:
    """What sending ``jobs`` would cost at the published prices, in a line."""
    images = sum(job.images for job in jobs)
    unpriced = sorted(
        {job.model.model_id for job in jobs if prices.get(job.model.model_id) is None}
    )
    if unpriced:
        return (
            f"Estimated cost: unknown for {images} {'image' if images == 1 else 'images'}: "
            f"no price an image is published for {', '.join(unpriced)}"
        )
    rates = sorted({prices[job.model.model_id] for job in jobs})
    usd = sum(prices[job.model.model_id] * job.images for job in jobs)
    rate = " to ".join(
        catalogue.usd_text(r)
        for r in (rates[:1] + rates[-1:] if len(rates) > 1 else rates)
    )
    return (
        f"Estimated cost: {catalogue.usd_text(usd)} for {images} "
        f"{'image' if images == 1 else 'images'} at {rate} an image"
    )


class Interrupts:
    """The first Ctrl-C (or SIGTERM) sends nothing more: it stops starting
    rows, stops the pacer (rows waiting on it, to be sent or sent again,
    are not sent) and lets the rows in flight finish; a second one stops at
    once."""

    def __init__(self, pacer: api.Pacer) -> None:
        self.stopping = False
        self.pacer = pacer

    def __call__(self, signum: int, frame: Any) -> None:
        if self.stopping:
            raise KeyboardInterrupt
        self.stopping = True
        self.pacer.stop()
        notify(
            "Stopping: nothing more is sent; finishing the rows in flight "
            "(Ctrl-C again to stop now)"
        )


def run(
    file: Any,
    *,
    options: dict[str, Any],
    model_name: str,
    key: str | None,
    database: Path | None,
    no_log: bool,
    jobs: int,
    fmt: str,
    redo: bool,
    max_credits: float | None,
    max_usd: float | None,
    dry_run: bool,
    json_: bool,
    fail: Callable[[Exception], click.ClickException],
) -> None:
    name = getattr(file, "name", "-")
    try:
        rows = read_rows(file.read(), name, fmt)
    except BatchError as ex:
        raise click.ClickException(printable(str(ex))) from None
    if not rows:
        raise click.ClickException(f"No prompts in {printable(name)}")
    try:
        # One key for every row: a bad one is one error, not one a row.
        engine.api_key(key)
    except llm.ModelError as ex:
        raise fail(ex) from None
    log_to = turns.target(database, no_log)
    tally = Tally()

    def report(row: Row, status: str, **fields: Any) -> None:
        if json_:
            click.echo(
                dumps(
                    {
                        "row": row.number,
                        "prompt": row.prompt,
                        "status": status,
                        **fields,
                        **({"earlier": row.earlier} if row.earlier else {}),
                    }
                )
            )
        elif status == "failed":
            notify(f"Row {row.number}: {fields.get('error')}")

    given = {name: value for name, value in options.items() if value is not None}
    checked: list[Job] = []
    # Each model looked up once: llm lists every model of every plugin to
    # find one.
    models: dict[str, llm.Model] = {}
    for row in rows:
        if row.error is None:
            try:
                chosen = row.model_name or model_name
                if chosen not in models:
                    models[chosen] = engine.resolve(chosen)
                model = models[chosen]
                row_options = {**given, **row.options}
                run_options, request = engine.check(model, row.prompt, row_options, key)
                checked.append(
                    Job(row, model, run_options, request, "seed" in row_options)
                )
                continue
            except llm.ModelError as ex:
                # An option from the row is named as the row names it.
                from_row = isinstance(ex, specs.OptionError) and ex.name in row.options
                row.error = printable(str(ex)) if from_row else fail(ex).message
        tally.failed += 1
        report(row, "failed", error=row.error)
    if not dry_run:
        try:
            index.open_for_logging(log_to)
        except llm.ModelError as ex:
            raise fail(ex) from None
    db = history.open_db(log_to) if log_to and not redo else None
    todo = []
    unfinished = {} if redo else _unfinished_by_request()
    for job in checked:
        entry_id = unfinished.get(request_key(job.request, job.seeded))
        if entry_id:
            if dry_run:
                notify(
                    f"Row {job.row.number}: would be finished from the journal ({entry_id})"
                )
                tally.recovered += 1
                continue
            with concurrency.sigterm_as_interrupt():
                outcome = _recover(entry_id, job, report)
            unfinished = {k: v for k, v in unfinished.items() if v != entry_id}
            if outcome in ("recovered", "failed"):
                # Paid for already: never generated again, saved or not.
                if outcome == "recovered":
                    tally.recovered += 1
                else:
                    tally.failed += 1
                continue
        if db is not None and history.done(db, job.request, job.seeded):
            tally.skipped += 1
            report(job.row, "skipped")
            continue
        todo.append(job)
    if dry_run:
        for job in todo:
            request = (
                job.request
                if job.seeded
                else {k: v for k, v in job.request.items() if k != "seed"}
            )
            click.echo(dumps(request))
        notify(
            f"{len(todo)} requests would be sent; {tally.recovered} rows would be "
            f"finished from the journal, {tally.skipped} rows already done, "
            f"{tally.failed} rows with errors (a row without a seed gets one when sent)"
        )
        if todo:
            notify(estimate(todo, catalogue.prices()))
        if tally.failed:
            raise click.exceptions.Exit(1)
        return
    budget = Budget(max_credits, max_usd)
    if budget.capped:
        budget.published = catalogue.prices()
    unsent, stopped_for = _send(todo, jobs, key, log_to, tally, budget, report, json_)
    summary = (
        f"{len(rows)} rows: {tally.generated} generated, {tally.recovered} recovered, "
        f"{tally.skipped} skipped (already done), {tally.failed} failed"
    )
    for job in unsent:
        report(job.row, "not started", reason=stopped_for)
    if unsent:
        summary += f", {len(unsent)} not started ({stopped_for})"
    never = {job.row.number for job in unsent}
    again = [
        job.row.earlier
        for job in todo
        if job.row.earlier and job.row.number not in never
    ]
    if again:
        summary += f"; {_rows(len(again))} bought again, " + "; ".join(
            _settled_again(earlier, key) for earlier in again
        )
    spent = ledger.describe_cost(budget.credits or None, budget.usd or None)
    if spent:
        summary += f"; spent {spent}"
    notify(summary)
    if tally.failed or stopped_for == "stopped":
        raise click.exceptions.Exit(1)


def _unfinished_by_request() -> dict[str, str]:
    """The journal's unfinished generations that can be finished without
    paying again, by request key (with and without the seed)."""
    by_request: dict[str, str] = {}
    for entry_id in journal.ids():
        entry = journal.load(entry_id)
        if entry is None or entry.record is None:
            continue
        by_request.setdefault(request_key(entry.record.request, True), entry_id)
        by_request.setdefault(request_key(entry.record.request, False), entry_id)
    return by_request


def _recover(entry_id: str, job: Job, report: Callable[..., None]) -> str:
    """Finish a row's unfinished generation from the journal: "recovered",
    "failed" (its images still not all saved, or another process saving
    them now: reported, for ``download`` to finish), "gone" (finished by
    another process meanwhile), or "again": never answered, settled by what
    the API's log says, and the row is sent again; where that earlier
    request may have been charged, the row's report says so."""
    hint = command("llm", "imagen4", "download", entry_id)
    try:
        tracked = recovery.Tracked.take(entry_id)
    except recovery.Busy:
        report(
            job.row,
            "failed",
            id=entry_id,
            error=f"another process is saving its images now; then {hint}",
        )
        return "failed"
    if tracked is None:
        return "gone"
    result = finishing.finish(tracked)
    if result.unanswered:
        if result.listed is None or result.listed.charged:
            job.row.earlier = {"id": entry_id, "what": result.note or ""}
        return "again"
    record = tracked.entry.record
    assert record is not None
    paths = [str(path) for path in record.saved_paths()]
    if result.failed or result.lost:
        report(
            job.row,
            "failed",
            id=entry_id,
            paths=paths,
            error=f"images not saved; finish them with {hint}",
        )
        return "failed"
    report(job.row, "recovered", id=entry_id, paths=paths)
    return "recovered"


def _settled_again(earlier: dict[str, str], key: str | None) -> str:
    """What became of the earlier request of a row bought again, asked of
    the API's log once more now that the row's run is over, as the log
    lists a request only once its answer was delivered: settled by it if
    it is listed now, else left in the journal for ``status`` and
    ``download``."""
    what = earlier["what"]
    try:
        tracked = recovery.Tracked.take(earlier["id"])
        if tracked is not None:
            what = tracked.settle(api.ApiClient(engine.api_key(key))).note
    except llm.ModelError as ex:
        what += f" ({ex})"
    return f"whose earlier request {earlier['id']}: {what}"


def _send(
    todo: list[Job],
    jobs: int,
    key: str | None,
    log_to: Path | None,
    tally: Tally,
    budget: Budget,
    report: Callable[..., None],
    json_: bool,
) -> tuple[list[Job], str]:
    """Run the rows, at most ``jobs`` at once; returns the rows never sent
    (not started, or stopped while they waited on the pacer), and why."""
    pacer = api.Pacer(jobs)
    interrupts = Interrupts(pacer)
    in_flight: dict[int, str] = {}
    sent: set[int] = set()

    on = route.Route.logged_to(log_to, pacer=pacer)

    def task(job: Job) -> Any:
        record, listed, declined = None, None, False
        try:
            response = engine.generate(
                job.model,
                job.row.prompt,
                job.options,
                key,
                on,
                started=lambda response: in_flight.update(
                    {job.row.number: response.id}
                ),
            )
            record = engine.record_of(response)
        except (errors.Declined, errors.NotSent):
            declined = True
            raise
        except recovery.LostAnswer as ex:
            listed = ex.listed
            raise
        finally:
            # Counted here, before the next row may start.
            if declined:
                budget.refused(job.row.number)
            else:
                budget.settle(job.row.number, job.model.model_id, record, listed)
        return response

    def should_start(job: Job) -> bool:
        if interrupts.stopping or budget.broken:
            return False
        why = budget.admit(job.row.number, job.model.model_id, job.images)
        if why not in (None, WAIT):
            budget.broken = why
        return why is None

    main = threading.current_thread() is threading.main_thread()
    previous = (
        {sig: signal.signal(sig, interrupts) for sig in (signal.SIGINT, signal.SIGTERM)}
        if main
        else {}
    )
    progress = (
        click.progressbar(
            length=len(todo),
            label="Generating",
            file=sys.stderr,
            show_pos=True,
            show_percent=True,
        )
        if sys.stderr.isatty()
        else None
    )
    if progress:
        progress.render_progress()
    try:
        for job, outcome in _below(
            progress,
            concurrency.in_threads(
                todo, task, limit=lambda: pacer.limit, should_start=should_start
            ),
        ):
            in_flight.pop(job.row.number, None)
            if isinstance(outcome, errors.NotSent):
                continue
            sent.add(job.row.number)
            if isinstance(outcome, BaseException):
                tally.failed += 1
                report(job.row, "failed", error=str(outcome) or type(outcome).__name__)
                continue
            engine.log(outcome, log_to)
            record = engine.record_of(outcome)
            paths = [str(path) for path in record.saved_paths()]
            if record.unsaved():
                tally.failed += 1
                report(
                    job.row,
                    "failed",
                    id=outcome.id,
                    paths=paths,
                    error="images not saved",
                )
            else:
                tally.generated += 1
                report(
                    job.row,
                    "done",
                    id=outcome.id,
                    paths=paths,
                    seed=record.seed,
                )
            if not json_:
                for path in paths:
                    click.echo(printable(path))
    except KeyboardInterrupt as ex:
        if in_flight:
            notify("Stopped at once; these generations may be left to finish:")
            for generation_id in in_flight.values():
                notify(f"  {generation_id}")
            notify("Finish them with: " + command("llm", "imagen4", "download"))
        else:
            notify("Stopped at once, with no generation in flight")
        concurrency.stopped(ex)
    finally:
        if progress:
            progress.render_finish()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    unsent = [job for job in todo if job.row.number not in sent]
    return unsent, "stopped" if interrupts.stopping else (budget.broken or "")


def _below(progress: Any, outcomes: Iterable[T]) -> Iterator[T]:
    """Each outcome, with the progress bar taken off its line while the
    outcome is printed, and drawn again, a step on, below what was printed.
    Each step shows its position, so the line drawn again always differs
    from the last, which the bar would not draw twice."""
    for outcome in outcomes:
        if progress:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
        yield outcome
        if progress:
            progress.update(1)


def _rows(count: int) -> str:
    return f"{count} {'row' if count == 1 else 'rows'}"
