"""Running work beside the caller: the one way the plugin starts a thread.

Each thread is a daemon, so the process's exit never waits for one, and
runs in a copy of the caller's context. Waits wake every TICK seconds, so a
Ctrl-C is never held up by work that hangs. SIGTERM stops a command as
Ctrl-C does, and a stop the plugin has said in a line ends a command
quietly (``stopped``)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")
R = TypeVar("R")
# How often a wait wakes up to let Ctrl-C through.
TICK = 0.1


def _start(target: Callable[[], None]) -> None:
    """``target`` in a daemon thread, in a copy of the caller's context."""
    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(target,), daemon=True).start()


def _outcome(work: Callable[[], R]) -> R | BaseException:
    try:
        return work()
    except BaseException as ex:  # noqa: BLE001 - every end is an outcome
        return ex


def in_threads(
    items: Iterable[T],
    work: Callable[[T], R],
    *,
    limit: Callable[[], int] | None = None,
    should_start: Callable[[T], bool] = lambda item: True,
) -> Iterator[tuple[T, R | BaseException]]:
    """Run ``work`` on each item, at most ``limit()`` at once (all at once by
    default), starting the next only while ``should_start(it)``. Yields
    (item, outcome) as each ends; an exception of any kind is the outcome,
    never a dead thread."""
    pending = list(items)
    pending.reverse()
    done: queue.Queue = queue.Queue()
    running = 0

    def start_more() -> None:
        nonlocal running
        while (
            pending
            and (limit is None or running < limit())
            and should_start(pending[-1])
        ):
            item = pending.pop()
            _start(lambda item=item: done.put((item, _outcome(lambda: work(item)))))
            running += 1

    start_more()
    while running:
        try:
            item, outcome = done.get(timeout=TICK)
        except queue.Empty:
            start_more()
            continue
        running -= 1
        start_more()
        yield item, outcome


async def in_thread(work: Callable[[], R], on_cancel: Callable[[], None]) -> R:
    """Await ``work`` run in a thread, so that the event loop goes on while
    it waits. Cancelled, the thread is told (``on_cancel``) and left to end
    on its own; the cancellation goes on to the caller."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[R] = loop.create_future()

    def deliver(outcome: Any) -> None:
        if future.done():
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    def run() -> None:
        outcome = _outcome(work)
        with contextlib.suppress(RuntimeError):  # the loop is gone
            loop.call_soon_threadsafe(deliver, outcome)

    _start(run)
    try:
        return await future
    except asyncio.CancelledError:
        on_cancel()
        raise


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """On the main thread, SIGTERM stops what runs as Ctrl-C does, so that it
    too says what is left to finish."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stopped(ex: BaseException) -> NoReturn:
    """Go on with a stop (Ctrl-C, SIGTERM, a cancelled await) once the plugin
    has said in a line what it leaves and how to finish it: on a command
    line, a quiet exit with status 1, so that no ``Aborted!`` follows that
    line; anywhere else (the Python API) the stop as it came."""
    import click

    stop = isinstance(ex, (KeyboardInterrupt, asyncio.CancelledError))
    if stop and click.get_current_context(silent=True) is not None:
        raise SystemExit(1) from None
    raise ex
