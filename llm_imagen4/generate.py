"""One generation from start to finish: request, API, images on disk, and the
record llm logs as the turn's ``response_json``."""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import llm

from . import api
from .files import Destination, SavedFile
from .models import Spec, build_request

PLUGIN = "llm-imagen4"


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
    request = build_request(spec, prompt, options)
    return request, Destination.plan(options.output, prompt, request["num_images"])


def _ensure_history_table() -> None:
    """Give llm's logs database the plugin's table and trigger before the
    turn is logged, whichever command is running."""
    from . import history

    path = history.logs_db_path()
    if path.exists():
        with history.open_db(path) as db:
            history.migrate(db)


def generate(spec: Spec, prompt: str, options: Any, key: str, turn_id: str) -> Result:
    request, destination = prepare(spec, prompt, options)
    _ensure_history_table()
    with api.ApiClient(
        key,
        attempts=options.retries or api.DEFAULT_ATTEMPTS,
        timeout=options.timeout or api.GENERATE_TIMEOUT,
    ) as client:
        generation = client.generate(request)
    # The images are paid for from here on: each is either saved, or kept as
    # a URL in the record so that it can be fetched later.
    record = {
        "plugin": PLUGIN,
        "request": request,
        "seed": generation.seed if generation.seed is not None else request["seed"],
        "credits_used": generation.credits_used,
        # The folder with its trailing separator, and a bare name per image:
        # llm condenses any string that contains the response text, which is
        # the saved paths, so no single string here may be a whole path.
        "directory": str(destination.folder) + os.sep,
        "images": [],
    }
    record["images"] = save_images(generation, destination)
    for image in record["images"]:
        if image["status"] != "saved":
            api.notify(
                f"Image {image['position'] + 1} was generated but not saved: "
                f"{image['error']}"
                + (
                    f" - fetch it later with: llm imagen4 download {turn_id}"
                    if image["url"]
                    else ""
                )
            )
    return Result(request, record)


def _entry(position: int, url: str | None) -> dict[str, Any]:
    return {
        "position": position,
        "status": "failed",
        "name": None,
        "url": url,
        "sha256": None,
        "bytes": None,
        "width": None,
        "height": None,
        "content_type": None,
        "error": None,
    }


def _attempt(entry: dict[str, Any], save: Callable[[], SavedFile]) -> None:
    try:
        saved = save()
    except llm.ModelError as ex:
        entry["error"] = str(ex)
    except OSError as ex:
        entry["error"] = f"could not write the file: {ex.strerror or ex}"
    else:
        entry.update(
            status="saved",
            name=saved.path.name,
            sha256=saved.sha256,
            bytes=saved.bytes,
            width=saved.width,
            height=saved.height,
            content_type=saved.content_type,
        )


def save_images(
    generation: api.Generation, destination: Destination
) -> list[dict[str, Any]]:
    """Write inline images first, then download the rest concurrently. A
    failure is recorded on its image and never stops the others."""
    entries = [_entry(ref.position, ref.url) for ref in generation.images]
    try:
        destination.create()
    except llm.ModelError as ex:
        for entry in entries:
            entry["error"] = str(ex)
        return entries
    to_fetch = []
    for ref, entry in zip(generation.images, entries, strict=False):
        if ref.b64_json:
            try:
                data = base64.b64decode(ref.b64_json, validate=True)
            except (binascii.Error, ValueError):
                entry["error"] = "the inline image is not valid base64"
                continue
            _attempt(entry, partial(destination.save, [data], ref.position))
        elif ref.url:
            to_fetch.append((ref, entry))
        else:
            entry["error"] = "the API answered with neither a URL nor image data"
    if not to_fetch:
        return entries
    try:
        with api.image_client() as client, ThreadPoolExecutor(len(to_fetch)) as pool:
            futures = [
                (
                    entry,
                    pool.submit(
                        api.fetch_image,
                        client,
                        ref.url,
                        lambda chunks, position=ref.position: destination.save(
                            chunks, position
                        ),
                    ),
                )
                for ref, entry in to_fetch
            ]
            for entry, future in futures:
                _attempt(entry, future.result)
    except BaseException:
        # Interrupted: say where the unsaved images are before giving up.
        for entry in entries:
            if entry["status"] != "saved" and entry["url"]:
                api.notify(f"Image {entry['position'] + 1} not saved: {entry['url']}")
        raise
    return entries
