"""Sending a batch's rows: at most ``jobs`` requests in flight, paced on
429s, each row started only when the budget admits it, logged as it ends.

The first Ctrl-C (or SIGTERM) sends nothing more: rows not started, and
rows waiting on the pacer (to be sent or sent again), are not sent, and the
rows in flight finish and are logged. A second stops at once, naming the
generations left for ``llm imagen4 download``."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import api, concurrency, engine, errors, recovery, route
from .budget import WAIT, Budget
from .terminal import command, notify


class Interrupts:
    """What Ctrl-C does while rows are sent: the first stops what has not
    gone out; a second stops at once."""

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


@dataclass
class Sending:
    """How the rows go out, and where what they made is told: ``ended`` is
    called, on the calling thread, with each row that went out and its
    response (or what stopped it)."""

    jobs: int
    key: str | None
    log_to: Path | None
    budget: Budget
    ended: Callable[[Any, Any], None]
    # By row number: the generation in flight, and the rows that went out.
    in_flight: dict[int, str] = field(default_factory=dict)
    sent: set[int] = field(default_factory=set)

    def task(self, job: Any, on: route.Route) -> Any:
        """One row, its cost counted here, before the next row may start."""
        record, listed, declined = None, None, False
        try:
            response = engine.generate(
                job.model,
                job.row.prompt,
                job.options,
                self.key,
                on,
                started=lambda response: self.in_flight.update(
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
            if declined:
                self.budget.refused(job.row.number)
            else:
                self.budget.settle(job.row.number, job.model.model_id, record, listed)
        return response


def send(todo: list[Any], how: Sending) -> tuple[list[Any], str]:
    """Send the rows; the rows never sent (not started, or stopped while
    they waited on the pacer), and why."""
    pacer = api.Pacer(how.jobs)
    interrupts = Interrupts(pacer)
    on = route.Route.logged_to(how.log_to, pacer=pacer)

    def should_start(job: Any) -> bool:
        if interrupts.stopping or how.budget.broken:
            return False
        why = how.budget.admit(job.row.number, job.model.model_id, job.images)
        if why not in (None, WAIT):
            how.budget.broken = why
        return why is None

    main = threading.current_thread() is threading.main_thread()
    previous = (
        {sig: signal.signal(sig, interrupts) for sig in (signal.SIGINT, signal.SIGTERM)}
        if main
        else {}
    )
    try:
        for job, outcome in concurrency.in_threads(
            todo,
            lambda job: how.task(job, on),
            limit=lambda: pacer.limit,
            should_start=should_start,
        ):
            how.in_flight.pop(job.row.number, None)
            if isinstance(outcome, errors.NotSent):
                continue
            how.sent.add(job.row.number)
            if not isinstance(outcome, BaseException):
                engine.log(outcome, how.log_to)
            how.ended(job, outcome)
    except KeyboardInterrupt as ex:
        _stopped_at_once(how.in_flight)
        concurrency.stopped(ex)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    unsent = [job for job in todo if job.row.number not in how.sent]
    return unsent, "stopped" if interrupts.stopping else (how.budget.broken or "")


def _stopped_at_once(in_flight: dict[int, str]) -> None:
    if not in_flight:
        notify("Stopped at once, with no generation in flight")
        return
    notify("Stopped at once; these generations may be left to finish:")
    for generation_id in in_flight.values():
        notify(f"  {generation_id}")
    notify("Finish them with: " + command("llm", "imagen4", "download"))
