"""One generation from start to finish: request, API, images on disk, and the
record llm logs as the turn's ``response_json``."""

from __future__ import annotations

import base64
import binascii
import contextvars
import datetime
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import llm

from . import api, provenance
from .files import Destination, SavedFile
from .models import Spec, build_request

PLUGIN = "llm-imagen4"
# False while a command runs that will not log the turn (``--no-log``): the
# generation then keeps no rows in the history, even while it downloads.
LOGGING: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "imagen4_logging", default=True
)


@dataclass
class Result:
    request: dict[str, Any]
    record: dict[str, Any]

    @property
    def saved(self) -> list[Path]:
        folder = Path(self.record["directory"])
        return [
            folder / image["name"]
            for image in self.record["images"]
            if image["status"] == "saved"
        ]

    @property
    def text(self) -> str:
        return "\n".join(str(path) for path in self.saved)


def prepare(
    spec: Spec, prompt: str, options: Any
) -> tuple[dict[str, Any], Destination]:
    """Check everything that can be checked before anything is sent."""
    api.base_url()
    request = build_request(spec, prompt, options)
    return request, Destination.plan(options.output, prompt, request["num_images"])


def _open_journal(turn_id: str, model_id: str) -> Any:
    """The history's journal for this generation, with the plugin's table and
    trigger in place before llm logs the turn; None when nothing is logged."""
    from . import history

    path = history.logs_db_path()
    # As llm's own logs_on(): a logs-off file in the user folder.
    if not path.exists() or (path.parent / "logs-off").exists():
        return None
    db = history.open_db(path)
    history.migrate(db)
    if not LOGGING.get():
        db.close()
        return None
    return history.Journal(db, turn_id, model_id)


def generate(spec: Spec, prompt: str, options: Any, key: str, turn_id: str) -> Result:
    request, destination = prepare(spec, prompt, options)
    journal = _open_journal(turn_id, spec.model_id)
    try:
        client = api.ApiClient(
            key,
            attempts=options.retries or api.DEFAULT_ATTEMPTS,
            timeout=options.timeout or api.GENERATE_TIMEOUT,
        )
        generation = client.generate(request)
    except BaseException:
        if journal:
            journal.finish()
        raise
    # The images are paid for from here on: each is either saved, or kept as
    # a URL in the history so that it can be fetched later.
    seed = generation.seed if generation.seed is not None else request["seed"]
    made = provenance.build(
        model_id=spec.model_id,
        request=request,
        seed=seed,
        credits_used=generation.credits_used,
        turn_id=turn_id,
        created_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(),
    )
    record = {
        "plugin": PLUGIN,
        "request": request,
        "seed": seed,
        "credits_used": generation.credits_used,
        "provenance": made,
        "metadata": options.metadata is not False,
        # The folder with its trailing separator, and a bare name per image:
        # llm condenses any string that contains the response text, which is
        # the saved paths, so no single string here may be a whole path.
        "directory": str(destination.folder) + os.sep,
        "images": [_entry(ref.position, ref.url) for ref in generation.images],
    }
    destination.record = made if record["metadata"] else None
    on_change = (lambda: journal.write(record)) if journal else (lambda: None)
    on_change()
    try:
        save_images(generation, destination, record["images"], on_change)
    except BaseException:
        # Interrupted: the journal keeps what is not saved, for later.
        destination.discard_partial()
        for entry in record["images"]:
            if entry["status"] != "saved" and entry["url"]:
                api.notify(f"Image {entry['position'] + 1} not saved: {entry['url']}")
        if journal:
            api.notify(f"Finish it with: llm imagen4 download {turn_id}")
        raise
    if journal:
        journal.finish()
    for entry in record["images"]:
        if entry["status"] == "saved":
            continue
        line = f"Image {entry['position'] + 1} was generated but not saved: "
        line += entry["error"]
        if entry["url"] and LOGGING.get():
            line += f" - fetch it later with: llm imagen4 download {turn_id}"
        elif entry["url"]:
            line += f" ({entry['url']})"
        api.notify(line)
    return Result(request, record)


def _entry(position: int, url: str | None) -> dict[str, Any]:
    return {
        "position": position,
        "status": "pending",
        "name": None,
        "url": url,
        "sha256": None,
        "bytes": None,
        "width": None,
        "height": None,
        "content_type": None,
        "error": None,
    }


def _settle(entry: dict[str, Any], outcome: SavedFile | BaseException) -> None:
    if isinstance(outcome, SavedFile):
        entry.update(
            status="saved",
            name=outcome.path.name,
            sha256=outcome.sha256,
            bytes=outcome.bytes,
            width=outcome.width,
            height=outcome.height,
            content_type=outcome.content_type,
        )
        return
    entry["status"] = "failed"
    if isinstance(outcome, OSError):
        entry["error"] = f"could not write the file: {outcome.strerror or outcome}"
    else:
        entry["error"] = str(outcome)


def _outcome(save: Callable[[], SavedFile]) -> SavedFile | BaseException:
    try:
        return save()
    except (llm.ModelError, OSError) as ex:
        return ex


def _in_threads(
    tasks: list[Callable[[], SavedFile | BaseException]],
) -> Iterator[tuple[int, SavedFile | BaseException]]:
    """Run tasks at once, yielding (index, outcome) as each ends. Daemon
    threads, so that Ctrl-C is not held up by a download that hangs."""
    done: queue.Queue = queue.Queue()
    for index, task in enumerate(tasks):
        threading.Thread(
            target=lambda index=index, task=task: done.put((index, task())),
            daemon=True,
        ).start()
    for _ in tasks:
        yield done.get()


def save_images(
    generation: api.Generation,
    destination: Destination,
    entries: list[dict[str, Any]],
    on_change: Callable[[], None],
) -> None:
    """Write inline images first, then download the rest concurrently. A
    failure is recorded on its image and never stops the others.
    ``on_change`` is called whenever an image settles while downloads are
    still under way, so that the journal holds what an interruption leaves."""
    try:
        destination.create()
    except llm.ModelError as ex:
        for entry in entries:
            _settle(entry, ex)
        return
    to_fetch = []
    for ref, entry in zip(generation.images, entries, strict=True):
        if ref.b64_json:
            try:
                data = base64.b64decode(ref.b64_json, validate=True)
            except (binascii.Error, ValueError):
                _settle(entry, api.ApiError("the inline image is not valid base64"))
                continue
            _settle(entry, _outcome(partial(destination.save, [data], ref.position)))
        elif ref.url:
            to_fetch.append((ref, entry))
        else:
            _settle(entry, api.ApiError("the API answered with no image"))
    if not to_fetch:
        return
    if len(to_fetch) < len(entries):
        on_change()
    client = api.image_client()

    def download(ref: api.ImageRef) -> SavedFile | BaseException:
        save = partial(destination.save, position=ref.position)
        return _outcome(partial(api.fetch_image, client, ref.url, save))

    tasks = [partial(download, ref) for ref, _ in to_fetch]
    for settled, (index, outcome) in enumerate(_in_threads(tasks), 1):
        _settle(to_fetch[index][1], outcome)
        if settled < len(tasks):
            on_change()
