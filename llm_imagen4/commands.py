"""What each ``llm imagen4`` command does once click has read its
arguments: call the engine or the history, and print the outcome. Every
text that came from a prompt, a file or the API is printed escaped."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import llm

from . import engine, history, index, journal, route, specs, turns
from .terminal import command, dumps, notify, printable

Fail = Callable[[Exception], click.ClickException]
ANOTHERS = "the record may be another image's"
NOT_ONE = "it is not evidence of one request"


def _given(options: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in options.items() if value is not None}


@dataclass
class Run:
    """How generate and rerun run a generation and report it."""

    key: str | None
    database: Path | None
    no_log: bool
    json_: bool
    open_: bool
    preview: bool
    fail: Fail


def _run(model: llm.Model, prompt: str, options: dict[str, Any], run: Run) -> None:
    """Check everything, generate, log, print the paths."""
    log_to = turns.target(run.database, run.no_log)
    try:
        run_options, _ = engine.check(model, prompt, options, run.key)
        index.open_for_logging(log_to)
        response = engine.generate(
            model, prompt, run_options, run.key, route.Route.logged_to(log_to)
        )
    except llm.ModelError as ex:
        raise run.fail(ex) from None
    engine.log(response, log_to)
    record = engine.record_of(response)
    paths = [str(path) for path in record.saved_paths()]
    if run.json_:
        click.echo(dumps(_summary(response, record, paths)))
    else:
        for path in paths:
            click.echo(printable(path))
    if run.preview:
        from .preview import draw

        draw(paths, json_=run.json_)
    if run.open_:
        from . import opener

        problem = opener.launch(paths)
        if problem:
            notify(problem)
    if record.unsaved():
        raise click.ClickException(
            f"{len(record.unsaved())} of {len(record.images)} images were not saved"
        )


def _summary(response: Any, record: Any, paths: list[str]) -> dict[str, Any]:
    return {
        "id": response.id,
        "model": response.model.model_id,
        "api_model": record.request["model"],
        "prompt": record.request["prompt"],
        "seed": record.seed,
        "options": response.prompt.options.model_dump(exclude_none=True),
        "credits_used": record.credits_used,
        "usd_spent": record.usd_spent,
        "paths": paths,
        "images": [
            {
                "path": str(record.path(image)) if image.name else None,
                **image.model_dump(exclude={"name", "directory", "placing"}),
            }
            for image in record.images
        ],
    }


def generate(prompt: str, model_name: str, options: dict[str, Any], run: Run) -> None:
    """``prompt`` is the text, or - to read it from standard input."""
    try:
        model = engine.resolve(model_name)
    except llm.ModelError as ex:
        raise run.fail(ex) from None
    _run(model, _read_prompt(prompt), _given(options), run)


def _read_prompt(prompt: str) -> str:
    if prompt != "-":
        return prompt
    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise click.ClickException(
            "The prompt on standard input is not UTF-8"
        ) from None
    if not text.strip():
        raise click.ClickException("The prompt on standard input is empty")
    return text.strip()


def rerun(
    source: str,
    model_name: str | None,
    vary: bool,
    as_made: bool,
    options: dict[str, Any],
    run: Run,
) -> None:
    """The request of a generation from an image file's record (read as a
    request only) or from the history, then generated as ``generate``."""
    from . import provenance

    given = _given(options)
    if vary and "seed" in given:
        raise click.ClickException("--vary and --seed cannot be used together")
    try:
        path = Path(source)
        if path.exists():
            found = provenance.read(path)
            if found is None:
                raise llm.ModelError(f"{source} has no provenance from llm-imagen4")
            if found.conflicting_claims:
                raise llm.ModelError(f"{path}: {found.conflicting_claims}: {NOT_ONE}")
            if found.sidecar_mismatch:
                notify(f"{path}: {found.sidecar_mismatch}: {ANOTHERS}")
            record = found.record
            origin_model = record.model
            prompt, enhanced = record.prompt, record.enhanced_prompt
            spec = specs.SPECS_BY_ID.get(origin_model)
            if spec is None:
                raise llm.ModelError(f"{source}: its record names no Imagen 4 model")
            requested = provenance.rerun_options(record, spec, str(path))
        else:
            db = history.open_db(run.database)
            logged = history.turn(db, source) if db else None
            if logged is None:
                raise llm.ModelError(f"No image file or generation id {source}")
            made, origin_model = logged.record, logged.model
            prompt = made.request["prompt"]
            enhanced = next(
                (i.enhanced_prompt for i in made.images if i.enhanced_prompt), None
            )
            spec = specs.SPECS_BY_ID[origin_model]
            requested = {
                name: made.request[name]
                for name in specs.request_options(spec)
                if name in made.request
            }
        model = engine.resolve(model_name or origin_model)
    except llm.ModelError as ex:
        raise run.fail(ex) from None
    if as_made:
        if not enhanced:
            raise click.ClickException(
                f"{source}: the API did not rewrite its prompt; rerun it as it is"
            )
        prompt = enhanced
        requested["enhance_prompt"] = False
    if vary:
        requested.pop("seed", None)
    _run(model, prompt, {**requested, **given}, run)


def _open(database: Path | None, fail: Fail) -> Any:
    """The history in ``database`` (``llm logs path`` when None, and None if
    llm has logged nothing yet). A database named with -d must exist."""
    if database is not None and not database.is_file():
        raise click.ClickException(f"No logs database at {printable(database)}")
    try:
        return history.open_db(database)
    except Exception as ex:  # noqa: BLE001 - any database error is one line
        raise fail(ex) from None


def _model_id(model_name: str | None, fail: Fail) -> str | None:
    if model_name is None:
        return None
    try:
        return engine.resolve(model_name).model_id
    except llm.ModelError as ex:
        raise fail(ex) from None


def _shown(value: Any) -> str:
    """A value a generation must have, escaped; "not valid" when the
    history has none of the right type."""
    return history.NOT_VALID if value is None else printable(value)


def history_list(
    limit: int,
    query: str | None,
    model_name: str | None,
    seed: int | None,
    since: Any,
    tool: bool,
    missing: bool,
    paths: bool,
    json_: bool,
    database: Path | None,
    fail: Fail,
) -> None:
    if seed is not None and not 0 <= seed <= specs.SEED_MAX:
        raise click.ClickException(
            f"--seed {seed} is not a seed: seeds are 0 to {specs.SEED_MAX}"
        )
    db = _open(database, fail)
    entries = []
    if db is not None:
        entries = history.generations(
            db,
            limit=limit or None,
            query=query,
            model=_model_id(model_name, fail),
            seed=seed,
            since=since.isoformat() if since else None,
            tool=tool,
            missing=missing,
        )
    if json_:
        click.echo(dumps([dataclasses.asdict(entry) for entry in entries], indent=2))
        return
    for entry in entries:
        if paths:
            for image in entry.images:
                if image.path and image.exists:
                    click.echo(printable(image.path))
            continue
        _print_entry(entry)


def _print_entry(entry: Any) -> None:
    """One generation of ``history``: its line, its prompt, its files."""
    cost = " ".join(
        part
        for part in (
            f"{entry.credits_used:g} credits" if entry.credits_used is not None else "",
            f"${entry.usd_spent:.4f}" if entry.usd_spent is not None else "",
        )
        if part
    )
    when = entry.datetime_utc[:19] if entry.datetime_utc else None
    click.echo(
        f"{_shown(entry.id)}  {_shown(when)}  {_shown(entry.model)}"
        f"  seed {_shown(entry.seed)}  {_shown(entry.aspect_ratio)}"
        + (f"  {cost}" if cost else "")
        + ("  (tool)" if entry.tool_call_id else "")
    )
    prompt = " ".join(entry.prompt.split()) if entry.prompt is not None else None
    click.echo(f"  {_shown(prompt)}")
    for image in entry.images:
        gone = "" if image.exists else f"  ({_shown(image.status)}, missing)"
        click.echo(f"  {printable(image.path or image.url or '')}{gone}")


def show(
    generation_id: str, json_: bool, database: Path | None, preview: bool, fail: Fail
) -> None:
    db = _open(database, fail)
    entry = history.generation(db, generation_id) if db else None
    if entry is None:
        raise click.ClickException(f"No generation with id {printable(generation_id)}")
    logged = history.turn(db, generation_id)
    record = logged.record if logged else None
    data = dataclasses.asdict(entry)
    data["options"] = logged.options if logged else {}
    data["provenance"] = record.provenance if record else None
    data["client_request_id"] = record.client_request_id if record else None
    data["inference_id"] = record.inference_id if record else None
    if json_:
        click.echo(dumps(data, indent=2))
    else:
        _show_fields(data)
    if preview:
        from .preview import draw

        draw([image.path for image in entry.images if image.path], json_=json_)


def _show_fields(data: dict[str, Any]) -> None:
    images = data.pop("images")
    data.pop("provenance")
    for name, value in data.pop("options").items():
        data[f"option {name}"] = value
    _print_fields(data, "")
    for image in images:
        position = image.pop("position")
        click.echo(f"image {_shown(position + 1 if position is not None else None)}:")
        _print_fields(image, "  ")


def _print_fields(data: dict[str, Any], indent: str) -> None:
    """Each field with a value, and each a generation must have: what has
    no value is left out, as --json shows it null."""
    for name, value in data.items():
        if value is not None or name in history.REQUIRED:
            click.echo(f"{indent}{name}: {_shown(value)}")


def inspect(files: tuple[Path, ...], json_: bool, fail: Fail) -> None:
    from . import provenance

    shown, problems = [], 0
    for path in files:
        try:
            found = provenance.read(path)
        except provenance.ProvenanceError as ex:
            notify(str(ex))
            problems += 1
            continue
        if found is None:
            notify(f"{path}: no provenance from llm-imagen4")
            problems += 1
            continue
        if found.conflicting_claims:
            notify(f"{path}: {found.conflicting_claims}: {NOT_ONE}")
        if found.sidecar_mismatch:
            notify(f"{path}: {found.sidecar_mismatch}: {ANOTHERS}")
        shown.append(
            {
                "file": str(path.resolve()),
                "source": found.source,
                "c2pa": found.c2pa,
                "sidecar_mismatch": found.sidecar_mismatch,
                "conflicting_claims": found.conflicting_claims,
                "claims": found.record.model_dump(),
            }
        )
    if json_:
        click.echo(dumps(shown, indent=2, ensure_ascii=False))
    else:
        for item in shown:
            claims = item["claims"]
            click.echo(printable(item["file"]))
            if item["c2pa"]:
                click.echo(
                    "  left as received: it carries C2PA Content Credentials,"
                    " which a change would break"
                )
            if item["source"] == "sidecar":
                where = f"{item['file']}.json"
                click.echo(f"  record read from: {printable(where)}")
            click.echo(f"  model: {printable(claims['model'])}")
            click.echo(f"  prompt: {printable(claims['prompt'])}")
            if claims.get("enhanced_prompt"):
                click.echo(f"  enhanced prompt: {printable(claims['enhanced_prompt'])}")
            if claims.get("negative_prompt"):
                click.echo(f"  negative prompt: {printable(claims['negative_prompt'])}")
            click.echo(f"  seed: {printable(claims.get('seed'))}")
            if claims.get("options"):
                options = ", ".join(f"{k}={v}" for k, v in claims["options"].items())
                click.echo(f"  options: {printable(options)}")
            for name in (
                "created_utc",
                "turn_id",
                "credits_used",
                "usd_spent",
                "version",
            ):
                if claims.get(name) is not None:
                    click.echo(f"  {name.replace('_', ' ')}: {printable(claims[name])}")
            if claims.get("path") is not None:
                click.echo(f"  the record claims a path: {printable(claims['path'])}")
            if item["conflicting_claims"]:
                conflict = printable(item["conflicting_claims"])
                click.echo(f"  more than one claim: {conflict}")
            elif item["sidecar_mismatch"]:
                mismatch = printable(item["sidecar_mismatch"])
                click.echo(f"  not this file's record: {mismatch}")
            else:
                again = command("llm", "imagen4", "rerun", item["file"])
                click.echo(f"  again: {again}")
    if problems:
        raise click.ClickException(
            f"{problems} of {len(files)} files have no readable provenance"
        )


def download(
    generation_id: str | None, output: Path | None, database: Path | None, fail: Fail
) -> None:
    from . import finishing, recovery

    if generation_id is None:
        journal.sweep()
    ids = [generation_id] if generation_id else journal.ids()
    if not ids:
        notify("Nothing to finish: every generation's images are saved")
        return
    failed = left = 0
    log_to = database.absolute() if database else None
    destination = output.absolute() if output else None
    if destination:
        try:
            destination.mkdir(parents=True, exist_ok=True)
        except OSError as ex:
            raise click.ClickException(
                f"Cannot create {output}: {ex.strerror}"
            ) from None
    log_checked = False
    for one in ids:
        try:
            tracked = recovery.Tracked.take(one)
            restoring = tracked is None and generation_id is not None
            if restoring:
                entry = finishing.from_history(one, database, destination)
                if entry is None:
                    notify(f"Every saved image of {one} is on disk")
                    return
                tracked = recovery.Tracked.restore(entry)
        except recovery.Busy as ex:
            notify(str(ex))
            failed += generation_id is not None
            continue
        except llm.ModelError as ex:
            raise fail(ex) from None
        if tracked is None:
            continue  # finished by another process meanwhile
        if log_to and tracked.entry.log_to and not log_checked:
            # Before fetching anything, as a generation does.
            try:
                index.open_for_logging(log_to)
            except llm.ModelError as ex:
                tracked.keep()
                raise fail(ex) from None
            log_checked = True
        result = finishing.finish(tracked, destination, log_to, restoring)
        for path in result.saved:
            click.echo(printable(path))
        for image in result.failed:
            notify(
                f"{one}: image {image.position + 1} could not be saved: {image.error}"
            )
        if result.note:
            notify(f"{one}: {printable(result.note)}")
        failed += len(result.failed) + result.lost
        left += result.left
    problems = []
    if failed:
        problems.append(f"{_count(failed, 'image')} could not be saved")
    if left:
        problems.append(
            f"{_count(left, 'generation')} not finished yet: run "
            + command("llm", "imagen4", "download")
            + " again later"
        )
    if problems:
        raise click.ClickException("; ".join(problems))


def status(
    generation_id: str, key: str | None, database: Path | None, fail: Fail
) -> None:
    if database is not None and not database.is_file():
        raise click.ClickException(f"No logs database at {printable(database)}")
    from . import finishing

    try:
        click.echo(printable(finishing.status(generation_id, key, database)))
    except llm.ModelError as ex:
        raise fail(ex) from None


def models(check: bool, fail: Fail) -> None:
    from . import catalogue

    listed, why = None, None
    try:
        listed = catalogue.listings(fresh=check)
    except llm.ModelError as ex:
        if check:
            raise fail(ex) from None
        why = f"the API's model list could not be read: {ex}"
    gone = 0
    for spec in specs.SPECS:
        default = " (default)" if spec.model_id == specs.DEFAULT_MODEL else ""
        line = f"{spec.model_id}: {spec.api_id}{default}"
        listing = listed[spec.api_id] if listed else None
        if check and listing is not None:
            line += "  served" if listing.served else "  NOT SERVED"
            gone += not listing.served
        click.echo(line)
        price = listing.price_line() if listing else f"unknown ({why})"
        click.echo(f"  price: {printable(price)}")
        click.echo(f"  prompt: up to {spec.prompt_max} characters")
        for name, field in spec.options.model_fields.items():
            click.echo(f"  {name}: {field.description}")
    if gone:
        raise click.ClickException(
            f"{gone} of the models are no longer served by the API"
        )


def balance(key: str | None, fail: Fail) -> None:
    from . import api, ledger

    try:
        dollars = ledger.balance(api.ApiClient(engine.api_key(key)))
    except llm.ModelError as ex:
        raise fail(ex) from None
    click.echo(("-" if dollars < 0 else "") + f"${abs(dollars):,.2f}")


def gallery(
    output: Path,
    limit: int,
    query: str | None,
    model_name: str | None,
    database: Path | None,
    fail: Fail,
) -> None:
    from . import files
    from .gallery import is_gallery, render

    page = output.expanduser().absolute()
    if page.exists() and not is_gallery(page):
        raise click.ClickException(
            f"{printable(output)} exists and is not a gallery; it will not be overwritten"
        )
    db = _open(database, fail)
    entries = (
        history.generations(
            db, limit=limit or None, query=query, model=_model_id(model_name, fail)
        )
        if db is not None
        else []
    )
    try:
        page.parent.mkdir(parents=True, exist_ok=True)
    except OSError as ex:
        raise click.ClickException(
            f"Cannot create {printable(page.parent)}: {ex.strerror}"
        ) from None
    tmp, out = files.new_file(page.parent, suffix=".html")
    with out:
        out.write(render(entries, page.parent).encode("utf-8"))
    os.replace(tmp, page)
    click.echo(printable(page))


def datasette(database: Path | None) -> None:
    path = (database or index.default_path()).absolute()
    click.echo(dumps(history.datasette_metadata(path), indent=2))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
