"""Many prompts, in four steps: load a batch file (``batchfile``), partition
its rows (each checked as a generation is; the unfinished generations of
earlier runs finished from the journal, with no new request; rows already
done skipped), send the rest (``sending``), and summarise. No click here:
each row's outcome is a ``Report`` told to a ``Listener`` as it comes, and
the run ends with an ``Outcome``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import llm

from . import (
    api,
    catalogue,
    concurrency,
    engine,
    finishing,
    history,
    index,
    journal,
    ledger,
    recovery,
    specs,
    turns,
)
from .batchfile import Row, Source, read_rows
from .budget import Budget
from .sending import Sending, send
from .terminal import command, counted, notify, printable


@dataclass(frozen=True)
class Settings:
    """What ``llm imagen4 batch`` was told: the generate flags, the defaults
    of every row, and how to run."""

    options: dict[str, Any]
    model_name: str
    key: str | None
    database: Path | None
    no_log: bool
    jobs: int
    fmt: str
    redo: bool
    max_credits: float | None
    max_usd: float | None


@dataclass
class Report:
    """What became of one row: ``done``, ``recovered``, ``skipped``,
    ``failed`` or ``not started``, with its fields (``id``, ``paths``,
    ``seed``, ``error``, ``reason``); ``sent`` for a row that went out."""

    row: Row
    status: str
    fields: dict[str, Any] = field(default_factory=dict)
    sent: bool = False

    def json(self) -> dict[str, Any]:
        return {
            "row": self.row.number,
            "prompt": self.row.prompt,
            "status": self.status,
            **self.fields,
            **({"earlier": self.row.earlier} if self.row.earlier else {}),
        }


class Listener(Protocol):
    def sending(self, count: int) -> None:
        """``count`` rows are about to be sent."""

    def reported(self, report: Report) -> None:
        """A row's outcome, as it comes."""


@dataclass
class Outcome:
    """How the run ended: its summary line, whether it failed, and for a dry
    run the requests it would send and what they would cost."""

    summary: str
    failed: bool
    requests: list[dict[str, Any]] | None = None
    estimate: str | None = None


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


def run(
    source: Source, settings: Settings, listener: Listener, dry_run: bool = False
) -> Outcome:
    rows = read_rows(source.read(), source.name, settings.fmt)
    if not rows:
        raise llm.ModelError(f"No prompts in {source.name}")
    # One key for every row: a bad one is one error, not one a row.
    engine.api_key(settings.key)
    log_to = turns.target(settings.database, settings.no_log)
    tally = Tally()
    jobs = _checked(rows, settings, tally, listener)
    if not dry_run:
        index.open_for_logging(log_to)
    todo = _partition(jobs, settings, log_to, tally, listener, dry_run)
    if dry_run:
        return _dry_run(todo, tally)
    budget = Budget(settings.max_credits, settings.max_usd)
    if budget.capped:
        budget.published = catalogue.prices()
    listener.sending(len(todo))
    how = Sending(
        settings.jobs,
        settings.key,
        log_to,
        budget,
        lambda job, outcome: listener.reported(_sent(job, outcome, tally)),
    )
    unsent, stopped_for = send(todo, how)
    for job in unsent:
        listener.reported(Report(job.row, "not started", {"reason": stopped_for}))
    return _summary(len(rows), tally, todo, unsent, stopped_for, budget, settings.key)


def _checked(
    rows: list[Row], settings: Settings, tally: Tally, listener: Listener
) -> list[Job]:
    """Each row checked as a generation is, before anything is sent; a row
    that cannot be one fails alone."""
    given = {k: v for k, v in settings.options.items() if v is not None}
    checked: list[Job] = []
    # Each model looked up once: llm lists every model of every plugin to
    # find one.
    models: dict[str, llm.Model] = {}
    for row in rows:
        if row.error is None:
            try:
                chosen = row.model_name or settings.model_name
                if chosen not in models:
                    models[chosen] = engine.resolve(chosen)
                row_options = {**given, **row.options}
                run_options, request = engine.check(
                    models[chosen], row.prompt, row_options, settings.key
                )
                checked.append(
                    Job(
                        row, models[chosen], run_options, request, "seed" in row_options
                    )
                )
                continue
            except llm.ModelError as ex:
                # An option from the row is named as the row names it, one
                # from the flags as its flag.
                from_row = isinstance(ex, specs.OptionError) and ex.name in row.options
                row.error = printable(str(ex) if from_row else specs.as_typed(ex))
        tally.failed += 1
        listener.reported(Report(row, "failed", {"error": row.error}))
    return checked


def _partition(
    jobs: list[Job],
    settings: Settings,
    log_to: Path | None,
    tally: Tally,
    listener: Listener,
    dry_run: bool,
) -> list[Job]:
    """The rows to send: not those an earlier run left unfinished (finished
    from the journal now, unless never answered), nor those already done."""
    db = history.open_db(log_to) if log_to and not settings.redo else None
    unfinished = {} if settings.redo else _unfinished_by_request()
    todo = []
    for job in jobs:
        entry_id = unfinished.get(request_key(job.request, job.seeded))
        if entry_id:
            unfinished = {k: v for k, v in unfinished.items() if v != entry_id}
            if dry_run:
                notify(
                    f"Row {job.row.number}: would be finished from the journal"
                    f" ({entry_id})"
                )
                tally.recovered += 1
                continue
            report = _recover(entry_id, job)
            if report is not None:
                # Paid for already: never generated again, saved or not.
                listener.reported(report)
                if report.status == "recovered":
                    tally.recovered += 1
                else:
                    tally.failed += 1
                continue
        if db is not None and history.done(db, job.request, job.seeded):
            tally.skipped += 1
            listener.reported(Report(job.row, "skipped"))
            continue
        todo.append(job)
    return todo


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


def _recover(entry_id: str, job: Job) -> Report | None:
    """Finish a row's unfinished generation from the journal: its report
    (``recovered``, or ``failed``: its images still not all saved, or
    another process saving them now, for ``download`` to finish). None when
    the row is to be sent: finished by another process meanwhile, or never
    answered and settled by what the API's log says; where that earlier
    request may have been charged, the row's report will say so."""
    hint = command("llm", "imagen4", "download", entry_id)
    try:
        with concurrency.sigterm_as_interrupt():
            tracked = recovery.Tracked.take(entry_id)
            result = finishing.finish(tracked) if tracked is not None else None
    except recovery.Busy:
        return Report(
            job.row,
            "failed",
            {
                "id": entry_id,
                "error": f"another process is saving its images now; then {hint}",
            },
        )
    if tracked is None or result is None:
        return None
    if result.unanswered:
        if result.listed is None or result.listed.charged:
            job.row.earlier = {"id": entry_id, "what": result.note or ""}
        return None
    record = tracked.entry.record
    assert record is not None
    paths = [str(path) for path in record.saved_paths()]
    if result.failed or result.lost:
        error = f"images not saved; finish them with {hint}"
        return Report(
            job.row, "failed", {"id": entry_id, "paths": paths, "error": error}
        )
    return Report(job.row, "recovered", {"id": entry_id, "paths": paths})


def _sent(job: Job, outcome: Any, tally: Tally) -> Report:
    """The report of a row that went out, with its response (logged) or what
    stopped it."""
    if isinstance(outcome, BaseException):
        tally.failed += 1
        error = str(outcome) or type(outcome).__name__
        return Report(job.row, "failed", {"error": error}, sent=True)
    record = engine.record_of(outcome)
    paths = [str(path) for path in record.saved_paths()]
    if record.unsaved():
        tally.failed += 1
        fields = {"id": outcome.id, "paths": paths, "error": "images not saved"}
        return Report(job.row, "failed", fields, sent=True)
    tally.generated += 1
    fields = {"id": outcome.id, "paths": paths, "seed": record.seed}
    return Report(job.row, "done", fields, sent=True)


def _dry_run(todo: list[Job], tally: Tally) -> Outcome:
    """The requests that would be sent (a row without a seed shows none: its
    seed is drawn when it is sent), and what they would cost."""
    requests = [
        job.request
        if job.seeded
        else {k: v for k, v in job.request.items() if k != "seed"}
        for job in todo
    ]
    summary = (
        f"{counted(len(todo), 'request')} would be sent; "
        f"{counted(tally.recovered, 'row')} would be finished from the journal, "
        f"{counted(tally.skipped, 'row')} already done, "
        f"{counted(tally.failed, 'row')} with errors "
        "(a row without a seed gets one when sent)"
    )
    return Outcome(
        summary,
        bool(tally.failed),
        requests,
        _estimate(todo, catalogue.prices()) if todo else None,
    )


def _estimate(jobs: list[Job], prices: dict[str, float | None]) -> str:
    """What sending ``jobs`` would cost at the published prices, in a line."""
    images = sum(job.images for job in jobs)
    unpriced = sorted(
        {job.model.model_id for job in jobs if prices.get(job.model.model_id) is None}
    )
    if unpriced:
        return (
            f"Estimated cost: unknown for {counted(images, 'image')}: "
            f"no price an image is published for {', '.join(unpriced)}"
        )
    rates = sorted({prices[job.model.model_id] for job in jobs})
    usd = sum(prices[job.model.model_id] * job.images for job in jobs)
    rate = " to ".join(
        catalogue.usd_text(r)
        for r in (rates[:1] + rates[-1:] if len(rates) > 1 else rates)
    )
    return (
        f"Estimated cost: {catalogue.usd_text(usd)} for {counted(images, 'image')}"
        f" at {rate} an image"
    )


def _summary(
    total: int,
    tally: Tally,
    todo: list[Job],
    unsent: list[Job],
    stopped_for: str,
    budget: Budget,
    key: str | None,
) -> Outcome:
    summary = (
        f"{counted(total, 'row')}: {tally.generated} generated, "
        f"{tally.recovered} recovered, "
        f"{tally.skipped} skipped (already done), {tally.failed} failed"
    )
    if unsent:
        summary += f", {len(unsent)} not started ({stopped_for})"
    never = {job.row.number for job in unsent}
    again = [
        job.row.earlier
        for job in todo
        if job.row.earlier and job.row.number not in never
    ]
    if again:
        summary += f"; {counted(len(again), 'row')} bought again, " + "; ".join(
            _settled_again(earlier, key) for earlier in again
        )
    spent = ledger.describe_cost(budget.credits or None, budget.usd or None)
    if spent:
        summary += f"; spent {spent}"
    return Outcome(summary, bool(tally.failed) or stopped_for == "stopped")


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
