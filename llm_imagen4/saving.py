"""Saving a generation's images: those that came inline (from memory, or the
bytes the journal kept) and the rest from their URLs, all at once, each
through ``files.Destination`` with its provenance. What happens to each
image is written on its record, and the journal entry says so as each
lands; a failure is that image's and never stops the others."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import llm

from . import (
    api,
    concurrency,
    errors,
    files,
    imagehost,
    images,
    provenance,
)
from .c2pa import has_c2pa
from .record import GenerationRecord, ImageRecord, folder_text
from .recovery import Tracked
from .terminal import command, notify


def _settle(image: ImageRecord, outcome: files.SavedFile | BaseException) -> None:
    """What happened to an image, on its record."""
    if isinstance(outcome, files.SavedFile):
        image.status, image.error, image.placing = "saved", None, None
        image.name = outcome.path.name
        image.sidecar = outcome.sidecar.name if outcome.sidecar else None
        image.sha256, image.bytes = outcome.sha256, outcome.bytes
        image.width, image.height = outcome.width, outcome.height
        image.content_type, image.c2pa = outcome.content_type, outcome.c2pa
        return
    image.status = "refused" if isinstance(outcome, errors.Refused) else "failed"
    if isinstance(outcome, OSError):
        image.error = f"could not write the file: {outcome.strerror or outcome}"
    elif isinstance(outcome, llm.ModelError):
        image.error = str(outcome)
    elif isinstance(outcome, KeyboardInterrupt):
        image.error = "stopped"
    else:
        image.error = f"{type(outcome).__name__}: {outcome}"


def _saver(
    destination: files.Destination,
    record: GenerationRecord,
    image: ImageRecord,
    naming: Callable[[str], None],
    resumed: bool,
) -> Callable[[Iterable[bytes]], files.SavedFile]:
    """What saves one image's bytes. Resuming a generation, an earlier
    process may have saved the image without its journal saying so (a
    full disk, a kill): bytes already under the generation's name are that
    file, recorded rather than saved again."""
    finish = provenance.finisher(record.image_provenance(image))

    def known(sha256: str, size: int) -> files.SavedFile | None:
        return _adopt(destination, record, image, sha256, size)

    def save(chunks: Iterable[bytes]) -> files.SavedFile:
        try:
            return destination.save(
                chunks,
                image.position,
                finish,
                api.MAX_IMAGE_BYTES,
                naming,
                known if resumed else None,
            )
        except (files.TooLarge, images.Impossible) as ex:
            raise errors.Refused(str(ex)) from None
        except images.NotAnImage as ex:
            raise errors.DownloadError(str(ex)) from None

    return save


def _read_blocks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while block := f.read(65536):
            yield block


def save_images(
    tracked: Tracked,
    destination: files.Destination,
    inline: dict[int, bytes] | None = None,
    cancel: threading.Event | None = None,
) -> None:
    """Save every image of the tracked generation not saved yet. ``inline``
    holds the bytes of images that came inside the answer, where the
    journal could not keep them. Ctrl-C (or ``cancel``) stops starting
    more, and leaves the journal to finish the rest later."""
    record = tracked.entry.record
    assert record is not None
    inline = inline or {}
    todo = [image for image in record.images if image.status in ("pending", "failed")]
    if not todo:
        return
    try:
        destination.create()
    except llm.ModelError as ex:
        for image in todo:
            _settle(image, ex)
        tracked.update()
        return
    saving = _Saving(tracked, destination, record, inline)
    stopping = cancel or threading.Event()
    try:
        for image, outcome in concurrency.in_threads(
            todo, saving.save_one, should_start=lambda image: not stopping.is_set()
        ):
            if isinstance(outcome, BaseException):
                saving.settle(image, outcome)
    except BaseException as ex:
        stopping.set()
        # The journal still has every image not saved.
        destination.discard_partial()
        if not tracked.journaled:
            raise
        notify(
            "Stopped; finish it with: "
            + command("llm", "imagen4", "download", tracked.id)
        )
        tracked.keep()
        concurrency.stopped(ex)


class _Saving:
    """The images of one generation being saved, each in a thread of its
    own; every change to the record goes to the journal under one lock."""

    def __init__(
        self,
        tracked: Tracked,
        destination: files.Destination,
        record: GenerationRecord,
        inline: dict[int, bytes],
    ):
        self.tracked, self.destination = tracked, destination
        self.record, self.inline = record, inline
        self.lock = threading.Lock()

    def naming(self, image: ImageRecord) -> Callable[[str], None]:
        """What the saver calls with the image's sha256 just before it
        gives the file its name: the journal then knows which file to
        look for should the process stop there."""

        def note(sha256: str) -> None:
            with self.lock:
                image.placing = sha256
                self.tracked.update()

        return note

    def save_one(self, image: ImageRecord) -> None:
        try:
            outcome: Any = image.placing and _adopt(
                self.destination, self.record, image, image.placing
            )
            if not outcome:
                outcome = self._saved(image)
        except Exception as ex:  # noqa: BLE001 - every failure is the image's
            outcome = ex
        self.settle(image, outcome)

    def _saved(self, image: ImageRecord) -> files.SavedFile:
        """The image saved from the answer, the journal's stash or its URL."""
        save = _saver(
            self.destination,
            self.record,
            image,
            self.naming(image),
            self.tracked.resumed,
        )
        kept = self.tracked.stashed(image.position)
        if image.position in self.inline:
            return save([self.inline[image.position]])
        if kept is not None:
            return save(_read_blocks(kept))
        if not isinstance(image.url, str) or not image.url:
            raise errors.DownloadError("the API gave no URL to fetch it from")
        return imagehost.fetch_image(image.url, save)

    def settle(self, image: ImageRecord, outcome: Any) -> None:
        with self.lock:
            _settle(image, outcome)
            if isinstance(outcome, files.SavedFile):
                folder = folder_text(outcome.path.parent)
                # Saved elsewhere than the generation's folder (download -o).
                image.directory = None if folder == self.record.directory else folder
                self.tracked.unstash(image.position)
            self.tracked.update()


def _adopt(
    destination: files.Destination,
    record: GenerationRecord,
    image: ImageRecord,
    sha256: str,
    size: int | None = None,
) -> files.SavedFile | None:
    """The file of the generation's that holds these bytes, if there is one:
    the image, saved already by a process that could not say so, so it is
    not saved again. Its sidecar, if it should have one and is missing, is
    written now."""
    path = destination.find(sha256, size)
    if path is None:
        return None
    with open(path, "rb") as f:
        head = f.read(65536)
    try:
        kind = images.measured(path, images.sniff(head))
    except images.NotAnImage:
        return None
    size = path.stat().st_size
    image_record = record.image_provenance(image)
    c2pa = image_record is not None and has_c2pa(path, kind.content_type)
    sidecar = None
    if image_record is not None and provenance.needs_sidecar(kind.content_type, c2pa):
        sidecar = files.sidecar_of(path)
        with contextlib.suppress(FileExistsError):
            files.write_new(
                sidecar, provenance.sidecar_bytes(image_record, path, sha256)
            )
    return files.SavedFile.of(path, sha256, size, kind, sidecar, c2pa)
