"""One generation from start to finish, the same for every route (``llm
imagen4``, ``llm -m``, the Python API, batch rows and the tool): check
everything, send the request, keep what the API answered in the recovery
journal, save the images, and give llm the record to log.

Once the API has answered, the images are paid for: each is either saved,
or kept in the journal (its URL, or its bytes if it came inline) until
``llm imagen4 download`` saves it."""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llm

from . import (
    answers,
    api,
    concurrency,
    errors,
    files,
    index,
    journal,
    provenance,
    recovery,
    route,
    saving,
    specs,
    turns,
)
from .record import GenerationRecord, ImageRecord, folder_text
from .terminal import command, notify


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


def check(
    model: llm.Model, prompt: str, options: dict[str, Any], key: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Everything ``run`` checks before sending, done before anything is
    opened or sent: the options (with the model's defaults), the key, the
    prompt and where the images go. Returns the options to run with, the
    seed drawn now so that the request checked is the one sent, and that
    request."""
    spec = specs.SPECS_BY_ID[model.model_id]
    validated = specs.validate_options(
        spec, turns.model_defaults(model.model_id, options)
    )
    api.clean_key(model.get_key(key))
    chosen = plan(spec, prompt, validated)
    return {**options, "seed": chosen.request["seed"]}, chosen.request


def log_target() -> Path | None:
    """The logs database this generation's turn goes to, as its route says,
    or (on llm's own route) as llm's command line will log it."""
    now = route.current()
    if now.logging is route.Logging.BY_LLM:
        return turns.llm_target()
    return now.database


# -- one generation ---------------------------------------------------------------


def run(
    model_id: str,
    prompt: llm.Prompt,
    response: Any,
    key: str | None,
    log_to: Path | None,
    cancel: threading.Event | None = None,
) -> str:
    """The body of the models' ``execute``: one generation, its images saved
    or kept in the journal, its record on ``response``, its turn to go to
    ``log_to`` (None: not logged). Returns the text."""
    if prompt.system:
        raise llm.ModelError(f"{model_id} does not take a system prompt")
    spec = specs.SPECS_BY_ID[model_id]
    given = dict(prompt.options.model_dump(exclude_none=True))
    prompt.options = specs.validate_options(spec, turns.model_defaults(model_id, given))
    key = api.clean_key(key)
    chosen = plan(spec, prompt.prompt, prompt.options)
    # options_json then records the seed that was sent, given or drawn.
    prompt.options.seed = chosen.request["seed"]
    request_id = api.client_request_id(response.id)
    tracked = recovery.Tracked.prepare(
        journal.Entry(
            id=response.id,
            model=model_id,
            outcome="prepared",
            record=_record(model_id, chosen, response.id, request_id, None),
            client_request_id=request_id,
            log_to=str(log_to) if log_to else None,
            created_utc=journal.now_utc(),
        )
    )
    client = api.ApiClient(
        key,
        attempts=chosen.options.retries or specs.DEFAULT_ATTEMPTS,
        timeout=chosen.options.timeout or specs.DEFAULT_TIMEOUT,
    )
    answer = _taken(
        _sent(client, chosen.request, request_id, tracked),
        chosen.request["num_images"],
    )
    record = _record(model_id, chosen, response.id, request_id, answer)
    inline = _inline(answer, record)
    if not tracked.answered(record, inline):
        _say_where_the_images_are(response.id, record, answer, chosen.destination)
    with concurrency.sigterm_as_interrupt():
        saving.save_images(tracked, chosen.destination, inline, cancel)
    return _recorded(response, record, tracked, bool(log_to))


def _sent(
    client: api.ApiClient,
    request: dict[str, Any],
    request_id: str,
    tracked: recovery.Tracked,
) -> answers.Answer:
    """The API's answer to the generation; whatever else happens, the
    journal entry is left saying what is known."""
    try:
        with concurrency.sigterm_as_interrupt():
            return client.generate(request, request_id, tracked.sending)
    except errors.UnknownOutcome as ex:
        raise recovery.lost(tracked, client, ex) from None
    except llm.ModelError:
        # A definite answer: nothing was made, nothing was charged.
        tracked.end()
        raise
    except BaseException as ex:
        said = tracked.journaled  # what is left, and how to ask about it
        tracked.stopped()
        if said:
            concurrency.stopped(ex)
        raise


def _recorded(
    response: Any, record: GenerationRecord, tracked: recovery.Tracked, logged: bool
) -> str:
    """The record on ``response``, what was not saved said, and the turn
    handed to whoever logs it; returns the response's text."""
    response.response_json = record.model_dump()
    if usage := record.usage():
        response.set_usage(details=usage)
    response.set_resolved_model(record.request["model"])
    for image in record.unsaved():
        notify(_unsaved_line(response.id, image, tracked.journaled))
    on_llm = route.current().logging is route.Logging.BY_LLM
    if on_llm and isinstance(response, llm.Response):
        turns.hear_logging(
            response, record, lambda path, ex: _heard(response.id, record, path, ex)
        )
    # On llm's own route llm logs the turn, except an async response's (it
    # logs another object, and nothing says when).
    tracked.over(record, logged and (not on_llm or isinstance(response, llm.Response)))
    text = record.text(response.id)
    if on_llm and isinstance(response, llm.Response):
        turns.fail_if_unsaved(response, record, text, recovery.keeps(response.id))
    return text


def _heard(
    generation_id: str,
    record: GenerationRecord,
    path: Path | None,
    ex: Exception | None,
) -> None:
    """llm (or the caller) logged the turn in ``path``, or could not."""
    if ex is not None:
        notify(recovery.not_logged_line(generation_id, record, ex, path))
        recovery.logged(generation_id, ok=False)
        return
    if path is not None:
        recovery.logged_in(generation_id, path)
    recovery.logged(generation_id)


def log(
    response: llm.Response, path: Path | None, thread: tuple[str, str] | None = None
) -> None:
    """Log the turn where the route says, as ``llm prompt`` does (in a
    conversation of its own, or ``thread``). A logs database that cannot be
    written is one line: the images are saved, and the journal keeps the
    generation for ``llm imagen4 download`` to log later."""
    import sqlite3

    if path is None:
        return
    try:
        index.log_response(response, path, thread)
    except (sqlite3.Error, OSError) as ex:
        _heard(response.id, record_of(response), path, ex)
        return
    recovery.logged(response.id)


def _taken(answer: answers.Answer, asked: int) -> answers.Answer:
    """At most the images asked for: an answer with more is obeyed no
    further, and says so once."""
    if len(answer.images) <= asked:
        return answer
    notify(
        f"The API answered with {len(answer.images)} images for {asked} asked "
        f"for; only the first {asked} are taken"
    )
    answer.images = answer.images[:asked]
    return answer


def _inline(answer: answers.Answer, record: GenerationRecord) -> dict[int, bytes]:
    """The bytes of the images that came inside the answer. One whose base64
    does not decode is refused on its record: no other try can mend it."""
    inline = {}
    for ref, image in zip(answer.images, record.images, strict=True):
        if not ref.b64_json:
            continue
        try:
            # Line breaks and spaces, which base64 may be wrapped in, are
            # not part of the data.
            text = "".join(ref.b64_json.split())
            inline[ref.position] = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            image.status, image.error = "refused", "the inline image is not base64"
    return inline


def _say_where_the_images_are(
    generation_id: str,
    record: GenerationRecord,
    answer: answers.Answer,
    destination: files.Destination,
) -> None:
    """The journal could not keep the answer: each URL at once, with a
    command that fetches it under a name the plugin chose, which no file of
    its own has (the server's own name could be any file's, ``.bashrc``)."""
    notify("Could not write the recovery journal; the images are here if saving fails:")
    for ref, image in zip(answer.images, record.images, strict=True):
        if image.status == "refused":
            continue
        if ref.url:
            name = (
                destination.folder
                / f"{destination.stem}-{ref.position + 1}-{generation_id}.png"
            )
            notify(
                f"  image {ref.position + 1}: "
                + command("curl", "-fL", "-o", str(name), ref.url)
            )
        else:
            notify(
                f"  image {ref.position + 1} came inside the answer: if it "
                "cannot be saved now, it is lost"
            )


def _record(
    model_id: str,
    chosen: Plan,
    generation_id: str,
    request_id: str,
    answer: answers.Answer | None,
) -> GenerationRecord:
    """The generation's record: before the request goes out (``answer``
    None, no images yet), and once the API has answered."""
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
        tool_call_id=route.current().tool_call_id,
        directory=folder_text(chosen.destination.folder),
        stem=chosen.destination.stem,
        metadata=chosen.options.metadata is not False,
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


async def run_async(
    model_id: str,
    prompt: llm.Prompt,
    response: Any,
    key: str | None,
    log_to: Path | None,
) -> str:
    """``run`` in a thread of its own, so that neither the event loop nor the
    process's exit waits for it. Cancelled (``asyncio.wait_for``, or Ctrl-C
    on ``llm prompt --async``), it stops starting downloads and the journal
    keeps the generation for ``llm imagen4 download``."""
    cancel = threading.Event()

    def cancelled() -> None:
        cancel.set()
        notify(
            "Cancelled; once the API answers, the images are kept for: "
            + command("llm", "imagen4", "download", response.id)
        )

    try:
        text = await concurrency.in_thread(
            lambda: run(model_id, prompt, response, key, log_to, cancel), cancelled
        )
    except asyncio.CancelledError as ex:
        concurrency.stopped(ex)
    if route.current().logging is route.Logging.BY_LLM:
        turns.fail_if_unsaved(
            response, record_of(response), text, recovery.keeps(response.id)
        )
    return text


# -- the plugin's own routes --------------------------------------------------------


def generate(
    model: llm.Model,
    prompt: str,
    options: dict[str, Any],
    key: str | None,
    on: route.Route,
    started: Callable[[llm.Response], None] = lambda response: None,
) -> llm.Response:
    """One generation through llm, as ``llm prompt`` runs it, on ``on``;
    ``started`` hears of its response (and so its id) before it runs. The
    turn is not logged yet: the route logs it (``log``)."""
    with route.on(on):
        response = model.prompt(prompt, key=key, stream=False, **options)
        started(response)
        response.text()
    return response


def record_of(response: llm.Response) -> GenerationRecord:
    return GenerationRecord.model_validate(response.response_json)
