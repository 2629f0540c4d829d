"""Finishing what a generation left: the images still to save of an entry
the journal holds (``llm imagen4 download``, a batch run again), the
deleted files of a finished one fetched again, and what the API's log says
of one whose answer was lost (``llm imagen4 status``). Each entry's steps
are ``recovery``'s."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import llm

from . import api, concurrency, errors, files, journal, ledger, recovery, saving, specs
from .engine import api_key
from .record import GenerationRecord, ImageRecord


@dataclass
class Recovered:
    """What finishing one generation did."""

    id: str
    saved: list[Path] = field(default_factory=list)
    failed: list[ImageRecord] = field(default_factory=list)
    logged_to: Path | None = None
    note: str | None = None
    # Still in the journal for a later download, for a reason in ``note``.
    left: bool = False
    # Deleted images that no download can bring back.
    lost: int = 0
    # Never answered: what the API's log said of its request, if anything.
    unanswered: bool = False
    listed: ledger.Listed | None = None


def finish(
    tracked: recovery.Tracked,
    output: Path | None = None,
    log_to: Path | None = None,
    restoring: bool = False,
) -> Recovered:
    """Save the images of an unfinished generation that are not on disk yet
    (an image already saved, its file there with its sha256, is never saved
    again), then record it where llm logs its turn (or in ``log_to``, if it
    is logged at all) and end its entry once all is done. ``restoring``:
    a finished generation from the history, whose deleted files are
    fetched again."""
    entry = tracked.entry
    if entry.outcome != "answered" or entry.record is None:
        return _unanswered(tracked)
    record = entry.record
    gone, deleted = _missing(tracked, record)
    before = {image.position for image in record.images if image.status == "saved"}
    destination = files.Destination(
        output or Path(record.directory),
        record.stem or files.slugify(record.request["prompt"]),
    )
    with concurrency.sigterm_as_interrupt():
        saving.save_images(tracked, destination)
    result = Recovered(
        entry.id,
        saved=[
            path
            for image in record.images
            if image.status == "saved"
            and image.position not in before
            and (path := record.path(image))
        ],
        failed=[image.model_copy() for image in record.unfinished()],
    )
    if restoring:
        # A finished generation's deleted files: one that could not be
        # fetched again stays saved, as the history has it; download ID
        # tries again.
        for image in record.unfinished():
            if image.position in deleted:
                image.status, image.error = "saved", None
    if gone:
        result.note = (
            f"image {', '.join(map(str, gone))}: its file is gone, and it came "
            "inside the answer, so it cannot be fetched again"
        )
        result.lost = len(gone)
    if entry.log_to and not _logged(tracked, log_to or Path(entry.log_to), result):
        return result
    tracked.over(record, logged_later=False)
    return result


def _missing(
    tracked: recovery.Tracked, record: GenerationRecord
) -> tuple[list[int], set[int]]:
    """The record's saved images whose files are no longer what was saved:
    those that can be fetched again (from their URL or the journal's stash)
    are marked pending and their positions returned second; the numbers of
    those that came inside the answer, and only their file had, first."""
    gone, deleted = [], set()
    for image in record.images:
        path = record.path(image)
        if image.status == "saved" and not (
            path and image.sha256 and files.same_bytes(path, image.sha256)
        ):
            if image.url or tracked.stashed(image.position):
                image.status = "pending"
                deleted.add(image.position)
            else:
                gone.append(image.position + 1)
    return gone, deleted


def _logged(tracked: recovery.Tracked, target: Path, result: Recovered) -> bool:
    """Record the finished generation in ``target``; when that fails the
    entry is kept (the images are saved whatever the history does) and
    ``result`` says how to record it elsewhere."""
    from . import index

    try:
        index.record_finished(target, tracked.entry)
    except Exception as ex:  # noqa: BLE001 - the images are saved whatever the history does
        result.note = (
            f"could not record it in {target}: {ex} (download -d DATABASE "
            "records it in another)"
        )
        result.left = True
        tracked.keep()
        return False
    result.logged_to = target
    return True


def _unanswered(tracked: recovery.Tracked) -> Recovered:
    """A request whose answer never arrived, or that never went out."""
    try:
        client = api.ApiClient(api_key(None))
    except llm.ModelError:
        client = None
    settled = tracked.settle(client)
    return Recovered(
        tracked.id,
        note=settled.note,
        left=settled.left,
        unanswered=True,
        listed=settled.listed,
    )


def from_history(
    generation_id: str, database: Path | None, output: Path | None
) -> journal.Entry | None:
    """A logged generation as an entry to fetch its deleted files again;
    None when every saved image of it is on disk. ModelError when the
    history has no such generation, or names a folder the files may not be
    fetched into without ``output``."""
    from . import history

    if database is not None and not database.is_file():
        raise llm.ModelError(f"No logs database at {database}")
    db = history.open_db(database)
    # A record the plugin could not have written is none of its turns.
    logged = history.turn(db, generation_id) if db else None
    if logged is None:
        raise llm.ModelError(
            f"No unfinished or logged generation with id {generation_id}"
        )
    record = logged.record
    if output is None:
        _check_restorable(Path(record.directory))
    if all(
        image.status in ("refused", "lost")
        or (image.status == "saved" and (path := record.path(image)) and path.is_file())
        for image in record.images
    ):
        return None
    return journal.Entry(
        id=generation_id,
        model=logged.model,
        record=record,
        client_request_id=record.client_request_id,
        log_to=str(history.db_path(db)),
        created_utc=journal.now_utc(),
    )


def _check_restorable(folder: Path) -> None:
    """A logs database may be shared, or crafted: the folder it records is
    taken to fetch files into only when it is the folder you work in or in
    your home folder, with no hidden folder on the way, and is there."""
    places = [Path.cwd(), Path.home()]
    inside = next(
        (place for place in places if folder == place or place in folder.parents),
        None,
    )
    hidden = inside is not None and any(
        part.startswith(".") for part in folder.relative_to(inside).parts
    )
    if inside is None or hidden or not folder.is_dir() or folder.is_symlink():
        raise llm.ModelError(
            f"The history records the folder {folder}, which is not one to fetch "
            "into without asking: give -o FOLDER to choose where"
        )


def status(generation_id: str, key: str | None, database: Path | None = None) -> str:
    """What the API's log says of a generation, by its id: one still in the
    journal unanswered is settled by it, as ``download`` would; one in the
    history (in ``database``, ``llm logs path`` when None) is looked up by
    its inference id."""
    import datetime

    from . import history

    client = api.ApiClient(api_key(key))
    entry = journal.load(generation_id)
    if entry is not None and entry.outcome != "answered":
        tracked = recovery.Tracked.take(generation_id)
        if tracked is not None:
            return f"{generation_id}: {tracked.settle(client).note}"
    if entry is not None and (sent := recovery.sent_of(entry)) is not None:
        return _asked(client, generation_id, sent)
    db = history.open_db(database)
    turn = history.turn(db, generation_id) if db else None
    if turn is None:
        raise llm.ModelError(f"No generation with id {generation_id}")
    record = turn.record
    made = recovery.moment((record.provenance or {}).get("created_utc"))
    if record.client_request_id is None or made is None:
        raise llm.ModelError(
            f"{generation_id} was made before client request ids were recorded"
        )
    sent = ledger.Sent(
        client_request_id=record.client_request_id,
        api_model=record.request["model"],
        # Sent at most the longest --timeout before its answer was read.
        first=made - datetime.timedelta(seconds=specs.TIMEOUT_MAX),
        last=made,
        inference_id=record.inference_id,
    )
    return _asked(client, generation_id, sent)


def _asked(client: api.ApiClient, generation_id: str, sent: ledger.Sent) -> str:
    try:
        listed = ledger.find(client, sent)
    except errors.ApiError as ex:
        raise llm.ModelError(f"The API's log could not be asked: {ex}") from None
    if listed is None:
        return f"{generation_id}: the API's log does not list it (yet)"
    return f"{generation_id}: {listed.line()}"
