"""Many prompts: reading a batch file, knowing which rows are already done,
and running the rest with a set number of requests in flight."""

from __future__ import annotations

import csv
import io
import json
import queue
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

ROW_FIELDS = (
    "prompt",
    "negative_prompt",
    "aspect_ratio",
    "seed",
    "num_images",
    "model",
    "output",
)


class BatchError(Exception):
    """The file as a whole cannot be read: nothing is sent."""


@dataclass
class Row:
    number: int  # line number (text, JSONL) or record number (CSV), from 1
    prompt: str = ""
    model_id: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def detect_format(name: str, first_line: str) -> str:
    lower = name.lower()
    if lower.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if lower.endswith(".csv"):
        return "csv"
    if name == "-" and first_line.lstrip().startswith("{"):
        return "jsonl"
    return "text"


def read_rows(data: bytes, name: str, fmt: str = "auto") -> list[Row]:
    """The rows of a batch file: plain text (one prompt a line), JSONL or CSV
    (with the columns in ROW_FIELDS)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BatchError(f"{name} is not UTF-8 text") from None
    if fmt == "auto":
        fmt = detect_format(name, next(iter(text.splitlines()), ""))
    if fmt == "text":
        return [
            Row(number, prompt=line.strip())
            for number, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
    if fmt == "jsonl":
        return [
            _row(number, line)
            for number, line in enumerate(text.splitlines(), 1)
            if line.strip()
        ]
    reader = csv.DictReader(io.StringIO(text))
    unknown = set(reader.fieldnames or ()) - set(ROW_FIELDS)
    if "prompt" not in (reader.fieldnames or ()) or unknown:
        raise BatchError(
            f"{name}: CSV columns must include prompt and be among "
            f"{', '.join(ROW_FIELDS)}"
            + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else "")
        )
    return [
        _fields(number, {k: v for k, v in record.items() if v not in ("", None)})
        for number, record in enumerate(reader, 1)
    ]


def _row(number: int, line: str) -> Row:
    try:
        record = json.loads(line)
    except ValueError:
        return Row(number, error="not valid JSON")
    if not isinstance(record, dict):
        return Row(number, error="not a JSON object")
    return _fields(number, record)


def _fields(number: int, record: dict[str, Any]) -> Row:
    unknown = set(record) - set(ROW_FIELDS)
    if unknown:
        return Row(number, error=f"unknown fields: {', '.join(sorted(unknown))}")
    prompt = record.pop("prompt", None)
    if not isinstance(prompt, str):
        return Row(number, error="no prompt")
    model_id = record.pop("model", None)
    return Row(number, prompt=prompt, model_id=model_id, options=record)


def request_key(request: dict[str, Any], with_seed: bool) -> str:
    """What identifies a request when a batch is run again: everything it
    sends, and the seed only when the row chose one."""
    return json.dumps(
        {k: v for k, v in request.items() if with_seed or k != "seed"},
        sort_keys=True,
    )


def done_keys(db: Any) -> set[str]:
    """Request keys (with and without seed) of the generations in the history
    whose images were all saved."""
    keys = set()
    for (made,) in db.execute(
        "select provenance from imagen4_images where provenance is not null"
        " group by turn_id having min(status = 'saved') = 1"
    ).fetchall():
        made = json.loads(made)
        request = {"model": made["api_model"], "prompt": made["prompt"]}
        request.update(made["options"])
        keys.add(request_key(request, True))
        keys.add(request_key(request, False))
    return keys


@dataclass
class Outcome:
    row: Row
    value: Any = None  # what the task returned
    error: BaseException | None = None


class Runner:
    """Runs tasks in daemon threads, at most ``pacer.limit`` at once, yielding
    each outcome as it comes. The first Ctrl-C stops starting new tasks and
    lets those in flight finish; a second one stops at once. ``should_start``
    is asked before each task starts."""

    def __init__(self, pacer: Any, notify: Callable[[str], None]):
        self.pacer = pacer
        self.notify = notify
        self.stopping = False
        self._interrupts = 0

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._interrupts += 1
        if self._interrupts > 1:
            raise KeyboardInterrupt
        self.stopping = True
        self.notify("Stopping: finishing the rows in flight (Ctrl-C again to stop now)")

    def run(
        self,
        rows: list[Row],
        task: Callable[[Row], Any],
        should_start: Callable[[], bool],
    ) -> Iterator[Outcome]:
        done: queue.Queue = queue.Queue()

        def work(row: Row) -> None:
            try:
                done.put(Outcome(row, value=task(row)))
            except Exception as ex:
                done.put(Outcome(row, error=ex))

        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, self._on_sigint) if in_main else None
        try:
            waiting = list(reversed(rows))
            in_flight = 0

            def start_more() -> None:
                nonlocal in_flight
                while (
                    waiting
                    and not self.stopping
                    and in_flight < self.pacer.limit
                    and should_start()
                ):
                    threading.Thread(
                        target=work, args=(waiting.pop(),), daemon=True
                    ).start()
                    in_flight += 1

            start_more()
            while in_flight:
                try:
                    outcome = done.get(timeout=0.1)
                except queue.Empty:
                    continue
                in_flight -= 1
                # Keep the requests in flight before handling this outcome.
                start_more()
                yield outcome
        finally:
            if in_main:
                signal.signal(signal.SIGINT, previous)
