"""One generation from start to finish, the same for every route (``llm
imagen4``, ``llm -m``, the Python API, batch rows and the tool): check
everything, send the request, keep what the API answered in the recovery
journal, save the images, and give llm the record to log. Also: finishing
generations the journal still holds, and the one helper that runs work in
threads.

Once the API has answered, the images are paid for: each is either saved,
or kept in the journal (its URL, or its bytes if it came inline) until
``llm imagen4 download`` saves it."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import contextvars
import datetime
import queue
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import llm

from . import (
    answers,
    api,
    errors,
    files,
    imagehost,
    images,
    journal,
    provenance,
    recovery,
    specs,
)
from .record import GenerationRecord, ImageRecord, folder_text
from .terminal import command, notify

T = TypeVar("T")
R = TypeVar("R")
# How often a wait wakes up to let Ctrl-C through.
TICK = 0.1
_UNSET = object()
# The logs database the route running this generation logs its turn to
# (None: not logged), set by the plugin's own routes; otherwise the
# generation asks llm's command line.
LOG_TO: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "imagen4_log_to", default=_UNSET
)
# The tool call this generation answers, when a chat model asked for it.
TOOL_CALL_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "imagen4_tool_call_id", default=None
)


# -- the single concurrency helper ------------------------------------------


def in_threads(
    items: Iterable[T],
    work: Callable[[T], R],
    *,
    limit: Callable[[], int] | None = None,
    should_start: Callable[[T], bool] = lambda item: True,
) -> Iterator[tuple[T, R | BaseException]]:
    """Run ``work`` on each item in daemon threads, each in a copy of the
    caller's context, at most ``limit()`` at once (all at once by default),
    starting the next only while ``should_start(it)``. Yields (item, outcome)
    as each ends; an exception of any kind is the outcome, never a dead
    thread. Waits wake every TICK seconds, so a Ctrl-C is never held up by
    work that hangs, and a thread left running never holds up the exit."""
    pending = list(items)
    pending.reverse()
    done: queue.Queue = queue.Queue()
    running = 0

    def run(item: T) -> None:
        try:
            outcome: Any = work(item)
        except BaseException as ex:  # noqa: BLE001 - every end is an outcome
            outcome = ex
        done.put((item, outcome))

    def start_more() -> None:
        nonlocal running
        while (
            pending
            and (limit is None or running < limit())
            and should_start(pending[-1])
        ):
            context = contextvars.copy_context()
            threading.Thread(
                target=context.run, args=(run, pending.pop()), daemon=True
            ).start()
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


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While a generation runs on the main thread, SIGTERM stops it as
    Ctrl-C does, so that it too says what is left to finish."""
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


# -- models and options -------------------------------------------------------


def resolve(name: str) -> llm.Model:
    """An Imagen 4 model by its id or any alias llm knows for it."""
    try:
        model = llm.get_model(name)
    except llm.UnknownModelError:
        model = None
    if not isinstance(getattr(model, "spec", None), specs.Spec):
        ids = ", ".join(spec.model_id for spec in specs.SPECS)
        raise llm.ModelError(
            f"{name} is not an Imagen 4 model ({ids}, or an alias of one)"
        )
    return model


def api_key(explicit: str | None) -> str:
    """The key as the models find it: ``--key`` (a key or the name of a
    stored one), the key store, or AIMLAPI_KEY."""
    return api.clean_key(resolve(specs.DEFAULT_MODEL).get_key(explicit))


def with_defaults(model_id: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the model's defaults from ``llm models options set``
    for the options not given, as ``llm prompt`` applies them."""
    from llm.cli import get_model_options

    return {**get_model_options(model_id), **options}


class OptionError(llm.ModelError):
    """An option the model does not take, or a value it does not take."""

    def __init__(self, model_id: str, name: str, problem: str | None = None):
        self.name, self.problem = name, problem
        super().__init__(
            f"{name}: {problem}" if problem else f"{model_id} does not take {name}"
        )


def validate_options(spec: specs.Spec, options: dict[str, Any]) -> specs.Imagen4Options:
    """Options as ``spec`` takes them, or OptionError saying which is wrong."""
    import pydantic

    unknown = [name for name in options if name not in spec.options.model_fields]
    if unknown:
        raise OptionError(spec.model_id, unknown[0])
    try:
        return spec.options.model_validate(options)
    except pydantic.ValidationError as ex:
        error = ex.errors()[0]
        raise OptionError(spec.model_id, str(error["loc"][0]), error["msg"]) from None


@dataclass
class Plan:
    """Everything decided before anything is sent."""

    spec: specs.Spec
    options: specs.Imagen4Options
    request: dict[str, Any]
    destination: files.Destination


def plan(spec: specs.Spec, prompt: str, options: specs.Imagen4Options) -> Plan:
    """Check what can be checked before sending: the base URL, the prompt,
    the options, where the images go. Draws the seed if none was given."""
    api.base_url()
    request = specs.build_request(spec, prompt, options)
    destination = files.Destination.plan(options.output, prompt, request["num_images"])
    return Plan(spec, options, request, destination)


def log_target() -> Path | None:
    """The logs database the turn of this generation goes to: as the
    plugin's route says, else as llm's command line will log it, else (the
    Python API) none."""
    chosen = LOG_TO.get()
    return llm_log_target(None) if chosen is _UNSET else chosen


def llm_log_target(outside: Path | None) -> Path | None:
    """Where llm's command line logs what it runs: ``-d`` or logs.db,
    unless ``-n`` or ``llm logs off`` (which ``--log`` overrides); and
    ``outside`` when llm's command line is not what is running."""
    import click

    context = click.get_current_context(silent=True)
    while context is not None and context.command.name not in ("prompt", "chat"):
        context = context.parent
    if context is None:
        return outside
    params = context.params
    database = params.get("database")
    return logs_to(
        Path(database) if database else None,
        bool(params.get("no_log")),
        bool(params.get("log")),
    )


def logs_to(database: Path | None, no_log: bool, log: bool = False) -> Path | None:
    """Where a turn goes, as ``llm prompt`` decides: ``-d`` or logs.db,
    unless ``--no-log`` or ``llm logs off`` (which ``--log`` overrides)."""
    from llm.cli import logs_on

    from . import history

    if no_log or not (logs_on() or log):
        return None
    return (database or history.default_path()).absolute()


def open_log(log_to: Path | None) -> None:
    """Make sure the turn can be logged where it goes before anything is
    sent, as ``llm prompt`` does: the database's folder is made, and llm's
    migrations (and the plugin's) run."""
    import sqlite3

    from . import history

    if log_to is None:
        return
    try:
        log_to.parent.mkdir(parents=True, exist_ok=True)
        db = history.open_db(log_to, create=True)
        assert db is not None
        db.close()
    except (sqlite3.Error, OSError) as ex:
        raise llm.ModelError(f"Cannot log to {log_to}: {ex}") from None


# -- one generation -------------------------------------------------------------


def run(
    model_id: str,
    prompt: llm.Prompt,
    response: Any,
    key: str | None,
    log_to: Path | None,
    cancel: threading.Event | None = None,
) -> str:
    """The body of the models' ``execute``: one generation, its images saved
    or kept in the journal, its record on ``response``. Returns the text."""
    if prompt.system:
        raise llm.ModelError(f"{model_id} does not take a system prompt")
    spec = specs.SPECS_BY_ID[model_id]
    prompt.options = validate_options(
        spec,
        with_defaults(model_id, dict(prompt.options.model_dump(exclude_none=True))),
    )
    key = api.clean_key(key)
    chosen = plan(spec, prompt.prompt, prompt.options)
    # options_json then records the seed that was sent, given or drawn.
    prompt.options.seed = chosen.request["seed"]
    generation_id = response.id
    request_id = api.client_request_id(generation_id)
    entry = journal.Entry(
        id=generation_id,
        model=model_id,
        outcome="prepared",
        record=_record(model_id, chosen, generation_id, request_id, None),
        client_request_id=request_id,
        log_to=str(log_to) if log_to else None,
        created_utc=journal.now_utc(),
    )
    claim = _journal_prepared(entry)
    client = api.ApiClient(
        key,
        attempts=chosen.options.retries or specs.DEFAULT_ATTEMPTS,
        timeout=chosen.options.timeout or specs.DEFAULT_TIMEOUT,
    )

    def going() -> None:
        """An attempt is going out: from now on only the API's log can say
        what became of it. A journal that cannot say so forgets the
        generation rather than claim it was never sent."""
        nonlocal claim
        now = journal.now_utc()
        entry.outcome = "sent"
        entry.sent_utc = entry.sent_utc or now
        entry.last_sent_utc = now
        entry.attempts += 1
        if claim is not None:
            try:
                claim.write(entry)
            except OSError:
                claim.remove()
                claim = None

    try:
        with sigterm_as_interrupt():
            answer = client.generate(chosen.request, request_id, going)
    except errors.UnknownOutcome as ex:
        entry.inference_id = ex.inference_id
        settled = recovery.settle_sent(claim, entry, client)
        raise recovery.LostAnswer(
            f"{ex}; {settled.note}. Nothing was sent again.", settled.listed
        ) from None
    except llm.ModelError:
        # A definite answer: nothing was made, nothing was charged.
        if claim:
            claim.remove()
        raise
    except BaseException:
        if claim and entry.outcome == "prepared":
            claim.remove()
            notify("Stopped before the request was sent; nothing was charged")
        elif claim:
            # Stopped while the request may be under way: whether it was
            # charged is for the API's log to say.
            claim.release()
            notify(
                "Stopped while waiting for the API; it may still make the images "
                "and charge for them. See what became of them with: "
                + command("llm", "imagen4", "download", generation_id)
            )
        raise
    record = _record(model_id, chosen, generation_id, request_id, answer)
    entry.outcome, entry.record = "answered", record
    entry.inference_id = answer.inference_id
    claim = _journal_answer(claim, entry, answer)
    with sigterm_as_interrupt():
        save_images(claim, entry, chosen.destination, answer, cancel)
    response.response_json = record.model_dump()
    if usage := record.usage():
        response.set_usage(details=usage)
    response.set_resolved_model(record.request["model"])
    for image in record.unsaved():
        notify(_unsaved_line(generation_id, image, claim is not None))
    if LOG_TO.get() is _UNSET and isinstance(response, llm.Response):
        _watch_llm_logging(response, record)
    if claim:
        _settle_later(claim, record, log_to, response)
    return record.text(generation_id)


def _journal_prepared(entry: journal.Entry) -> journal.Claim | None:
    """Note the generation in the journal before its request goes out, so
    that a process killed while it waits leaves what to ask the API's log
    about. A journal that cannot be written stops nothing."""
    try:
        claim = journal.claim(entry.id)
        if claim:
            claim.write(entry)
        return claim
    except OSError:
        return None


def _journal_answer(
    claim: journal.Claim | None, entry: journal.Entry, answer: answers.Answer
) -> journal.Claim | None:
    """Keep the answer before any image is fetched: the URLs, and the bytes
    of images that came inline. When the journal cannot be written, print
    the URLs at once, with the command that fetches each."""
    try:
        if claim is None:
            raise OSError("no journal")
        claim.write(entry)
        for ref in answer.images:
            if ref.b64_json:
                claim.stash(ref.position, _decode(ref))
        return claim
    except (OSError, ValueError):
        if claim:
            claim.release()
        notify(
            "Could not write the recovery journal; the images are here if saving fails:"
        )
        for ref in answer.images:
            if ref.url:
                notify(
                    f"  image {ref.position + 1}: {command('curl', '-fLO', ref.url)}"
                )
            else:
                notify(
                    f"  image {ref.position + 1} came inside the answer: if it "
                    "cannot be saved now, it is lost"
                )
        return None


def _decode(ref: answers.ImageRef) -> bytes:
    try:
        return base64.b64decode(ref.b64_json or "", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the inline image is not valid base64") from None


def _record(
    model_id: str,
    chosen: Plan,
    generation_id: str,
    request_id: str,
    answer: answers.Answer | None,
) -> GenerationRecord:
    """The generation's record: before the request goes out (``answer``
    None, no images yet), and once the API has answered."""
    metadata = chosen.options.metadata is not False
    created = datetime.datetime.now(datetime.UTC).isoformat()
    credits = answer.credits_used if answer else None
    usd = answer.usd_spent if answer else None
    return GenerationRecord(
        request=chosen.request,
        seed=chosen.request["seed"],
        credits_used=credits,
        usd_spent=usd,
        client_request_id=request_id,
        inference_id=answer.inference_id if answer else None,
        tool_call_id=TOOL_CALL_ID.get(),
        directory=folder_text(chosen.destination.folder),
        stem=chosen.destination.stem,
        metadata=metadata,
        provenance=provenance.build(
            model_id=model_id,
            request=chosen.request,
            turn_id=generation_id,
            created_utc=created,
            credits_used=credits,
            usd_spent=usd,
        ),
        images=[
            ImageRecord(
                position=ref.position,
                url=ref.url,
                enhanced_prompt=ref.enhanced_prompt,
                # An image the API gave no usable URL or bytes for can
                # never be saved.
                status="refused" if ref.problem else "pending",
                error=ref.problem,
            )
            for ref in (answer.images if answer else [])
        ],
    )


def _unsaved_line(generation_id: str, image: ImageRecord, journaled: bool) -> str:
    line = f"Image {image.position + 1} was not saved: {image.error or image.status}"
    if image.status == "refused":
        return line
    if journaled:
        return (
            line
            + f" - finish it with: {command('llm', 'imagen4', 'download', generation_id)}"
        )
    return line + (f" ({image.url})" if image.url else "")


# -- saving images ------------------------------------------------------------------


def _settle(image: ImageRecord, outcome: files.SavedFile | BaseException) -> None:
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
    naming: Callable[[str], None] | None = None,
) -> Callable[[Iterable[bytes]], files.SavedFile]:
    finish = provenance.finisher(record.image_provenance(image))

    def save(chunks: Iterable[bytes]) -> files.SavedFile:
        try:
            return destination.save(
                chunks, image.position, finish, api.MAX_IMAGE_BYTES, naming
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
    claim: journal.Claim | None,
    entry: journal.Entry,
    destination: files.Destination,
    answer: answers.Answer | None = None,
    cancel: threading.Event | None = None,
) -> None:
    """Save every image of ``entry`` not saved yet: those that came inline,
    from memory or the journal, and the rest from their URLs, all at once.
    A failure is recorded on its image and never stops the others. The
    journal is rewritten by each worker as its image lands, whatever the
    waiting side is doing. Ctrl-C (or ``cancel``) stops starting more, and
    leaves the journal to finish the rest later."""
    record = entry.record
    assert record is not None
    inline = (
        {ref.position: ref for ref in answer.images if ref.b64_json} if answer else {}
    )
    todo = [image for image in record.images if image.status in ("pending", "failed")]
    if not todo:
        return
    try:
        destination.create()
    except llm.ModelError as ex:
        for image in todo:
            _settle(image, ex)
        _rewrite(claim, entry)
        return
    lock = threading.Lock()

    def naming(image: ImageRecord) -> Callable[[str], None]:
        def note(sha256: str) -> None:
            with lock:
                image.placing = sha256
                _rewrite(claim, entry)

        return note

    def save_one(image: ImageRecord) -> None:
        try:
            outcome: Any = image.placing and _adopt(destination, record, image)
            if not outcome:
                save = _saver(
                    destination, record, image, naming(image) if claim else None
                )
                if image.position in inline:
                    outcome = save([_decode(inline[image.position])])
                elif claim and claim.stashed(image.position).exists():
                    outcome = save(_read_blocks(claim.stashed(image.position)))
                elif not isinstance(image.url, str) or not image.url:
                    raise errors.DownloadError("the API gave no URL to fetch it from")
                else:
                    outcome = imagehost.fetch_image(image.url, save)
        except Exception as ex:  # noqa: BLE001 - every failure is the image's
            outcome = ex
        with lock:
            _settle(image, outcome)
            if isinstance(outcome, files.SavedFile):
                folder = folder_text(outcome.path.parent)
                # Saved elsewhere than the generation's folder (download -o).
                image.directory = None if folder == record.directory else folder
                if claim:
                    claim.stashed(image.position).unlink(missing_ok=True)
            _rewrite(claim, entry)

    stopping = cancel or threading.Event()
    try:
        for image, outcome in in_threads(
            todo, save_one, should_start=lambda image: not stopping.is_set()
        ):
            if isinstance(outcome, BaseException):
                with lock:
                    _settle(image, outcome)
                    _rewrite(claim, entry)
    except BaseException:
        stopping.set()
        # The journal still has every image not saved.
        destination.discard_partial()
        if claim:
            notify(
                "Stopped; finish it with: "
                + command("llm", "imagen4", "download", entry.id)
            )
            claim.release()
        raise


def _adopt(
    destination: files.Destination, record: GenerationRecord, image: ImageRecord
) -> files.SavedFile | None:
    """The file an image was being named as when its process stopped, if it
    got the name: saved already, so it is not saved again. Its sidecar, if
    it should have one and the stop came first, is written now."""
    assert image.placing is not None
    path = destination.find(image.placing)
    if path is None:
        return None
    with open(path, "rb") as f:
        head = f.read(65536)
    try:
        kind = images.sniff(head)
    except images.NotAnImage:
        return None
    sha256, size = files.digest(path)
    image_record = record.image_provenance(image)
    c2pa = image_record is not None and images.has_c2pa(path, kind.content_type)
    sidecar = None
    if image_record is not None and (c2pa or kind.content_type != "image/png"):
        sidecar = path.with_name(path.name + ".json")
        with contextlib.suppress(FileExistsError):
            files.write_new(
                sidecar, provenance.sidecar_bytes(image_record, path, sha256)
            )
    return files.SavedFile.of(path, sha256, size, kind, sidecar, c2pa)


def _rewrite(claim: journal.Claim | None, entry: journal.Entry) -> None:
    if claim is None:
        return
    try:
        claim.write(entry)
    except OSError as ex:
        notify(f"Could not update the recovery journal: {ex.strerror or ex}")


# -- after the turn is logged ---------------------------------------------------------

_awaiting_log: dict[str, journal.Claim] = {}
_awaiting_lock = threading.Lock()


def _settle_later(
    claim: journal.Claim, record: GenerationRecord, log_to: Path | None, response: Any
) -> None:
    """A generation is over. Its journal entry stays for ``download`` while
    an image is not saved. Otherwise it goes: at once when the turn is not
    logged, or once it is (so that a process stopped first, or a logs
    database that cannot be written, leaves ``download`` to log it later):
    on the plugin's own routes when the route says so, on ``llm prompt``
    when llm has logged the response."""
    if record.unfinished():
        claim.release()
        return
    if log_to is None:
        claim.remove()
        return
    if LOG_TO.get() is _UNSET and not isinstance(response, llm.Response):
        # llm logs another object (--async): nothing says when.
        claim.remove()
        return
    with _awaiting_lock:
        _awaiting_log[claim.id] = claim


def _watch_llm_logging(response: llm.Response, record: GenerationRecord) -> None:
    """On ``llm prompt`` and the Python API, llm or the caller logs the
    turn: hear when it has, note the database for ``download`` to record
    in, and make a logs database that cannot be written one line rather
    than a traceback after the images were saved."""
    import sqlite3

    log_to_db = response.log_to_db

    def log_and_tell(db: Any) -> None:
        try:
            log_to_db(db)
        except (sqlite3.Error, OSError) as ex:
            notify(_not_logged_line(response.id, record, ex))
            logged(response.id, ok=False)
            return
        _note_database(response.id, db)
        logged(response.id)

    response.log_to_db = log_and_tell


def _note_database(generation_id: str, db: Any) -> None:
    """A generation still in the journal that was not to be logged (the
    Python API) has now been, in ``db``: ``download`` records it there."""
    from . import history

    entry = journal.load(generation_id)
    if entry is None or entry.log_to is not None:
        return
    path = history.db_path(db)
    if not path.name:
        # In memory, or temporary: nothing to record in later.
        return
    claim = journal.claim(generation_id)
    if claim is None:
        return
    try:
        entry = claim.load()
        if entry is not None and entry.log_to is None:
            entry.log_to = str(path)
            claim.write(entry)
    finally:
        claim.release()


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
    if journal.load(generation_id) is None:
        return line + ", and the recovery journal could not keep it to log later"
    return (
        line
        + ", and "
        + command("llm", "imagen4", "download", generation_id)
        + " logs it later"
    )


def logged(generation_id: str, ok: bool = True) -> None:
    """The route logged the turn (``ok``), or could not: the journal entry
    goes, or stays for ``download`` to log it later."""
    with _awaiting_lock:
        claim = _awaiting_log.pop(generation_id, None)
    if claim is None:
        return
    if ok:
        claim.remove()
    else:
        claim.release()


# -- the async route ---------------------------------------------------------------------


async def run_async(
    model_id: str,
    prompt: llm.Prompt,
    response: Any,
    key: str | None,
    log_to: Path | None,
) -> str:
    """``run`` in a daemon thread of its own, so that neither the event loop
    nor the process's exit waits for it. Cancelled (``asyncio.wait_for``, or
    Ctrl-C on ``llm prompt --async``), it stops starting downloads and the
    journal keeps the generation for ``llm imagen4 download``."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[str] = loop.create_future()
    cancel = threading.Event()

    def deliver(outcome: Any) -> None:
        if future.done():
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    def work() -> None:
        try:
            outcome: Any = run(model_id, prompt, response, key, log_to, cancel)
        except BaseException as ex:  # noqa: BLE001 - handed to the awaiting side
            outcome = ex
        with contextlib.suppress(RuntimeError):  # the loop is gone
            loop.call_soon_threadsafe(deliver, outcome)

    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(work,), daemon=True).start()
    try:
        return await future
    except asyncio.CancelledError:
        cancel.set()
        notify(
            "Cancelled; once the API answers, the images are kept for: "
            + command("llm", "imagen4", "download", response.id)
        )
        raise


# -- finishing what the journal holds ------------------------------------------------------


@dataclass
class Finished:
    """What finishing one unfinished generation did."""

    id: str
    saved: list[Path]
    failed: list[ImageRecord]
    logged_to: Path | None = None
    note: str | None = None
    # Still in the journal for a later download, for a reason in ``note``.
    left: bool = False
    # Deleted images that no download can bring back.
    lost: int = 0


def finish(
    claim: journal.Claim,
    entry: journal.Entry,
    output: Path | None = None,
    log_to: Path | None = None,
    restoring: bool = False,
) -> Finished:
    """Save the images of an unfinished generation that are not on disk yet
    (an image already saved, its file there with its sha256, is never saved
    again), then record it where llm logs its turn (or in ``log_to``, if it
    is logged at all) and drop it from the journal once all is done.
    ``restoring``: the entry is a finished generation from the history,
    whose deleted files are fetched again."""
    from . import history

    if entry.outcome != "answered" or entry.record is None:
        return _finish_sent(claim, entry)
    record = entry.record
    gone, deleted = [], set()
    for image in record.images:
        path = record.path(image)
        if image.status == "saved" and not (
            path and image.sha256 and files.same_bytes(path, image.sha256)
        ):
            if image.url or claim.stashed(image.position).exists():
                image.status = "pending"
                deleted.add(image.position)
            else:
                # It came inside the answer, and only its file had it.
                gone.append(image.position + 1)
    before = {image.position for image in record.images if image.status == "saved"}
    destination = files.Destination(
        output or Path(record.directory),
        record.stem or files.slugify(record.request["prompt"]),
    )
    save_images(claim, entry, destination)
    saved = [
        path
        for image in record.images
        if image.status == "saved"
        and image.position not in before
        and (path := record.path(image))
    ]
    result = Finished(
        entry.id, saved, [image.model_copy() for image in record.unfinished()]
    )
    if restoring:
        # A finished generation's deleted files: one that could not be
        # fetched again stays saved, as the history has it, and nothing
        # stays in the journal; download ID tries again.
        for image in record.unfinished():
            if image.position in deleted:
                image.status, image.error = "saved", None
    if gone:
        result.note = (
            f"image {', '.join(map(str, gone))}: its file is gone, and it came "
            "inside the answer, so it cannot be fetched again"
        )
        result.lost = len(gone)
    if entry.log_to:
        target = log_to or Path(entry.log_to)
        try:
            history.record_finished(target, entry)
            result.logged_to = target
        except Exception as ex:  # noqa: BLE001 - the images are saved whatever the history does
            result.note = (
                f"could not record it in {target}: {ex} (download -d DATABASE "
                "records it in another)"
            )
            result.left = True
            claim.release()
            return result
    if record.unfinished():
        claim.release()
    else:
        claim.remove()
    return result


def _finish_sent(claim: journal.Claim, entry: journal.Entry) -> Finished:
    """A request whose answer never arrived, or that never went out: only
    the journal (never sent) or the API's log can say what became of it."""
    if entry.outcome == "prepared":
        settled = recovery.never_sent(claim)
    else:
        try:
            client = api.ApiClient(api_key(None))
        except llm.ModelError as ex:
            claim.release()
            return Finished(
                entry.id,
                [],
                [],
                note=f"its answer was lost, and the API's log could not be asked: {ex}",
                left=True,
            )
        settled = recovery.settle_sent(claim, entry, client)
    return Finished(entry.id, [], [], note=settled.note, left=settled.left)


def status(generation_id: str, key: str | None, database: Path | None = None) -> str:
    """What the API's log says of a generation, by its id: one still in the
    journal is settled by the answer, as ``download`` would; one in the
    history (in ``database``, ``llm logs path`` when None) is looked up by
    its inference id."""
    from . import history, ledger

    client = api.ApiClient(api_key(key))
    with journal.claimed(generation_id) as claim:
        entry = claim.load() if claim else journal.load(generation_id)
        if entry is not None and entry.outcome != "answered":
            if claim is None:
                return f"{generation_id}: another process is working on it now"
            if entry.outcome == "prepared":
                return f"{generation_id}: {recovery.never_sent(claim).note}"
            return f"{generation_id}: {recovery.settle_sent(claim, entry, client).note}"
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
    listed = ledger.find(client, sent)
    if listed is None:
        return f"{generation_id}: the API's log does not list it (yet)"
    return f"{generation_id}: {listed.line()}"


# -- the plugin's own routes ------------------------------------------------------------


def check(
    model: llm.Model, prompt: str, options: dict[str, Any], key: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Everything ``run`` checks before sending, done before anything is
    opened or sent: the options (with the model's defaults), the key, the
    prompt and where the images go. Returns the options to run with, the
    seed drawn now so that the request checked is the one sent, and that
    request."""
    spec = specs.SPECS_BY_ID[model.model_id]
    validated = validate_options(spec, with_defaults(model.model_id, options))
    api.clean_key(model.get_key(key))
    chosen = plan(spec, prompt, validated)
    return {**options, "seed": chosen.request["seed"]}, chosen.request


def generate(
    model: llm.Model,
    prompt: str,
    options: dict[str, Any],
    key: str | None,
    log_to: Path | None,
) -> llm.Response:
    """One generation through llm, as ``llm prompt`` runs it, with its turn
    going to ``log_to`` (None: not logged). The turn is not logged yet."""
    token = LOG_TO.set(log_to)
    try:
        response = model.prompt(prompt, key=key, stream=False, **options)
        response.text()
    finally:
        LOG_TO.reset(token)
    return response


def record_of(response: llm.Response) -> GenerationRecord:
    return GenerationRecord.model_validate(response.response_json)


def log(
    response: llm.Response,
    log_to: Path | None,
    thread: tuple[str, str] | None = None,
) -> None:
    """Log the turn as ``llm prompt`` does, in a thread of its own or in
    ``thread`` (an id and the prompt that names it). A logs database that
    cannot be written is one line: the images are saved, and the journal
    keeps the generation for ``llm imagen4 download`` to log later."""
    import sqlite3

    if log_to is None:
        return
    try:
        _log_to(response, log_to, thread)
    except (sqlite3.Error, OSError) as ex:
        notify(_not_logged_line(response.id, record_of(response), ex))
        logged(response.id, ok=False)
        return
    logged(response.id)


def _log_to(response: llm.Response, path: Path, thread: tuple[str, str] | None) -> None:
    import sqlite3

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
