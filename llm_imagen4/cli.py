"""The ``llm imagen4`` command group."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import click
from click_default_group import DefaultGroup

from .models import ASPECT_RATIOS, SPECS, SPECS_BY_ID, GenerateOptions

MODEL_IDS = [spec.model_id for spec in SPECS]
# Flags of the generate command that are model options, by option name.
OPTION_FLAGS = {
    "aspect_ratio": "--aspect-ratio",
    "num_images": "--num-images",
    "seed": "--seed",
    "negative_prompt": "--negative-prompt",
    "enhance_prompt": "--enhance-prompt",
    "person_generation": "--person-generation",
    "safety_setting": "--safety-setting",
    "add_watermark": "--watermark",
    "output": "--output",
    "metadata": "--no-metadata",
    "retries": "--retries",
    "timeout": "--timeout",
}


def _choices(name: str) -> list[str]:
    annotation = GenerateOptions.model_fields[name].annotation
    return list(annotation.__args__[0].__args__)  # Optional[Literal[...]]


@click.group(cls=DefaultGroup, default="generate", default_if_no_args=False)
def imagen4() -> None:
    """Generate images with Google's Imagen 4 through the AI/ML API.

    \b
        llm imagen4 "Racoon eating ice-cream" -r 16:9
        llm imagen4 history
    """


def read_prompt(prompt: str) -> str:
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


def _apply(decorators: list[Callable]) -> Callable[[Callable], Callable]:
    def apply(command: Callable) -> Callable:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


# The request's flags, shared by generate, rerun and batch.
_request_options = _apply(
    [
        click.option("-r", "--aspect-ratio", type=click.Choice(ASPECT_RATIOS)),
        click.option("-n", "--num-images", type=click.IntRange(1, 4), help="1 to 4"),
        click.option("--seed", type=int, help="Seed; drawn at random when not given"),
        click.option("--negative-prompt", help="What to leave out (imagen4 only)"),
        click.option(
            "--enhance-prompt/--no-enhance-prompt",
            default=None,
            help="Let the API rewrite the prompt (newer models)",
        ),
        click.option(
            "--person-generation",
            type=click.Choice(_choices("person_generation")),
            help="Newer models",
        ),
        click.option(
            "--safety-setting",
            type=click.Choice(_choices("safety_setting")),
            help="Newer models",
        ),
        click.option(
            "--watermark/--no-watermark",
            "add_watermark",
            default=None,
            help="Invisible watermark (newer models)",
        ),
        click.option(
            "-o",
            "--output",
            help="Folder to save into (created if missing), or a file for one image",
        ),
        click.option(
            "--no-metadata",
            "metadata",
            flag_value=False,
            default=None,
            help="Do not write how the image was made into it",
        ),
        click.option("--retries", type=click.IntRange(1, 10), help="Attempts at most"),
        click.option(
            "--timeout",
            type=click.FloatRange(0, 3600, min_open=True),
            help="Seconds to wait for the API",
        ),
        click.option("--key", help="API key or the alias of a stored key"),
        click.option("--no-log", is_flag=True, help="Do not log to the history"),
    ]
)
_output_options = _apply(
    [
        click.option("json_", "--json", is_flag=True, help="Print a JSON object"),
        click.option(
            "open_", "--open", is_flag=True, help="Open the images when saved"
        ),
    ]
)


def _model_option(default: str | None, help: str) -> Callable:
    return click.option(
        "-m",
        "--model",
        "model_id",
        type=click.Choice(MODEL_IDS),
        default=default,
        show_default=default is not None,
        help=help,
    )


@imagen4.command()
@click.argument("prompt")
@_model_option("imagen4", "Model to use")
@_request_options
@_output_options
def generate(
    prompt: str,
    model_id: str,
    key: str | None,
    json_: bool,
    no_log: bool,
    open_: bool,
    **flags: Any,
) -> None:
    """Generate images from PROMPT (- reads it from standard input).

    Prints the path of each saved image, one per line.

    \b
        llm imagen4 "Racoon eating ice-cream" -r 16:9
        llm imagen4 "a lighthouse at dawn" -m imagen4-ultra -n 4 -o lighthouses
        echo "a teapot" | llm imagen4 - --seed 42
    """
    run(model_id, read_prompt(prompt), flags, key, json_, no_log, open_)


def check(
    model_id: str, prompt: str, flags: dict[str, Any], key: str | None
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Everything that can be checked before anything is sent: the model, its
    options, the key, the prompt and where the images go. Returns the model,
    the options given and the request that would be sent."""
    import llm
    import pydantic

    from .generate import prepare

    spec = SPECS_BY_ID.get(model_id)
    if spec is None:
        raise click.ClickException(f"Unknown model {model_id}")
    options = {name: value for name, value in flags.items() if value is not None}
    for name in options:
        if name not in spec.options.model_fields:
            raise click.ClickException(f"{model_id} does not take {OPTION_FLAGS[name]}")
    try:
        validated = spec.options(**options)
    except pydantic.ValidationError as ex:
        error = ex.errors()[0]
        raise click.ClickException(
            f"{OPTION_FLAGS[error['loc'][0]]}: {error['msg']}"
        ) from None
    model = llm.get_model(model_id)
    try:
        model.get_key(key)
        request, _ = prepare(spec, prompt, validated)
    except llm.ModelError as ex:
        raise click.ClickException(str(ex)) from None
    return model, options, request


def generate_now(
    model: Any, prompt: str, options: dict[str, Any], key: str | None, logging: bool
) -> Any:
    """One generation through the model; the response, not yet logged."""
    from .generate import LOGGING

    response = model.prompt(prompt, key=key, stream=False, **options)
    token = LOGGING.set(logging)
    try:
        response.text()
    finally:
        LOGGING.reset(token)
    return response


def _logs_db() -> Any:
    """The logs database, migrated, when logging is on; else None."""
    from llm.cli import logs_on

    from . import history

    if not logs_on():
        return None
    db = history.open_db()
    history.migrate(db)
    return db


def _log(db: Any, response: Any) -> None:
    from . import history

    with history.transaction(db):
        response.log_to_db(db)


def saved_paths(record: dict[str, Any]) -> list[str]:
    return [
        record["directory"] + image["name"]
        for image in record["images"]
        if image["status"] == "saved"
    ]


def run(
    model_id: str,
    prompt: str,
    flags: dict[str, Any],
    key: str | None,
    json_: bool,
    no_log: bool,
    open_: bool,
) -> None:
    """Check everything, generate, log, and print the paths."""
    import llm

    model, options, _ = check(model_id, prompt, flags, key)
    db = None if no_log else _logs_db()
    try:
        response = generate_now(model, prompt, options, key, db is not None)
    except llm.ModelError as ex:
        raise click.ClickException(str(ex)) from None
    if db is not None:
        _log(db, response)
    record = response.response_json
    paths = saved_paths(record)
    if json_:
        click.echo(json.dumps(_json_summary(response, paths)))
    else:
        for path in paths:
            click.echo(path)
    if open_:
        for path in paths:
            click.launch(path)
    failed = len(record["images"]) - len(paths)
    if failed:
        raise click.ClickException(
            f"{failed} of {len(record['images'])} images were not saved"
        )


def _json_summary(response: Any, paths: list[str]) -> dict[str, Any]:
    record = response.response_json
    options = {
        key: value
        for key, value in dict(response.prompt.options).items()
        if value is not None
    }
    return {
        "id": response.id,
        "model": response.model.model_id,
        "api_model": record["request"]["model"],
        "prompt": record["request"]["prompt"],
        "seed": record["seed"],
        "options": options,
        "credits_used": record["credits_used"],
        "paths": paths,
        "images": [
            {
                "path": record["directory"] + image["name"] if image["name"] else None,
                **{k: v for k, v in image.items() if k != "name"},
            }
            for image in record["images"]
        ],
    }


@imagen4.command()
@click.argument("source")
@_model_option(None, "Model to use  [default: the original's]")
@click.option("--vary", is_flag=True, help="Draw a new seed")
@_request_options
@_output_options
def rerun(
    source: str,
    model_id: str | None,
    vary: bool,
    key: str | None,
    json_: bool,
    no_log: bool,
    open_: bool,
    **flags: Any,
) -> None:
    """Make a generation again: the same model, prompt, options and seed.

    SOURCE is a generation id from the history, or an image file made by this
    plugin. Flags override what they name.

    \b
        llm imagen4 rerun 01jq7m2v0c8ns1xkd9y0a5e4bq
        llm imagen4 rerun racoon-eating-ice-cream.png -n 4 --vary
        llm imagen4 rerun racoon-eating-ice-cream.png -m imagen4-ultra
    """
    made = _provenance_of(source)
    if vary and flags["seed"] is not None:
        raise click.ClickException("--vary and --seed cannot be used together")
    options = {
        name: value
        for name, value in made["options"].items()
        if name in OPTION_FLAGS and not (vary and name == "seed")
    }
    options.update({name: value for name, value in flags.items() if value is not None})
    run(
        model_id or made["model"],
        made["prompt"],
        options,
        key,
        json_,
        no_log,
        open_,
    )


def _provenance_of(source: str) -> dict[str, Any]:
    """How a generation was made: from an image file, or from the history."""
    from . import provenance

    path = Path(source)
    if path.is_file():
        made = provenance.read(path)
        if made is None:
            raise click.ClickException(f"{source} has no provenance from llm-imagen4")
        return made
    db = _history_db()
    row = None
    if db is not None:
        row = db.execute(
            "select provenance from imagen4_images where turn_id = ?"
            " and provenance is not null limit 1",
            [source],
        ).fetchone()
    if row is None:
        raise click.ClickException(f"No image file or generation id {source}")
    return json.loads(row[0])


def _history_db() -> Any:
    """The logs database with the plugin's table, or None before any."""
    from . import history

    path = history.logs_db_path()
    if not path.exists():
        return None
    db = history.open_db(path)
    history.migrate(db)
    return db


@imagen4.command(name="history")
@click.option("-n", "--limit", type=click.IntRange(0), default=20, show_default=True)
@click.option("-q", "--query", help="Only prompts containing this text")
@click.option("-m", "--model", type=click.Choice(MODEL_IDS), help="Only this model")
@click.option("--seed", type=int, help="Only generations with this seed")
@click.option(
    "--since",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]),
    help="Only generations from this date or time (UTC) on",
)
@click.option("--missing", is_flag=True, help="Only generations with files missing")
@click.option("--paths", is_flag=True, help="Print only the paths, one per line")
@click.option("json_", "--json", is_flag=True, help="Print a JSON array")
def history_command(
    limit: int,
    query: str | None,
    model: str | None,
    seed: int | None,
    since: Any,
    missing: bool,
    paths: bool,
    json_: bool,
) -> None:
    """Recent generations, newest first.

    \b
        llm imagen4 history
        llm imagen4 history -q racoon -n 5 --json
        llm imagen4 history --since 2026-11-01 --paths
        llm imagen4 history --missing
    """
    from . import history

    db = _history_db()
    rows: list[dict[str, Any]] = []
    if db is not None:
        rows = history.generations(
            db,
            limit=limit or None,
            query=query,
            model=model,
            seed=seed,
            since=since.isoformat() if since else None,
            missing=missing,
        )
    if json_:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        if paths:
            for image in row["images"]:
                if image["path"]:
                    click.echo(image["path"])
            continue
        click.echo(
            f"{row['id']}  {row['datetime_utc'][:19]}  {row['model']}  "
            f"seed {row['seed']}  {row['aspect_ratio']}"
        )
        click.echo(f"  {' '.join(row['prompt'].split())}")
        for image in row["images"]:
            gone = "" if image["exists"] else f"  ({image['status']}, missing)"
            click.echo(f"  {image['path'] or image['url']}{gone}")


@imagen4.command()
@click.argument("generation_id")
@click.option("json_", "--json", is_flag=True, help="Print a JSON object")
def show(generation_id: str, json_: bool) -> None:
    """One generation in full: every field, every file and whether it exists.

    \b
        llm imagen4 show 01jq7m2v0c8ns1xkd9y0a5e4bq
    """
    from . import history

    db = _history_db()
    found = history.generation(db, generation_id) if db is not None else None
    if found is None:
        raise click.ClickException(f"No generation with id {generation_id}")
    if json_:
        click.echo(json.dumps(found, indent=2))
        return
    made = found.pop("provenance") or {}
    images = found.pop("images")
    for name, value in found.items():
        click.echo(f"{name}: {value}")
    for name, value in (made.get("options") or {}).items():
        click.echo(f"option {name}: {value}")
    for image in images:
        click.echo(f"image {image['position'] + 1}:")
        for name, value in image.items():
            if name != "position":
                click.echo(f"  {name}: {value}")


@imagen4.command()
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False)
)
@click.option("json_", "--json", is_flag=True, help="Print a JSON array")
def inspect(files: tuple[str, ...], json_: bool) -> None:
    """Print how images were made, from the provenance written into them.

    \b
        llm imagen4 inspect racoon-eating-ice-cream.png
        llm imagen4 inspect *.png --json
    """
    from . import api, provenance

    found, missing = [], 0
    for name in files:
        made = provenance.read(Path(name))
        if made is None:
            api.notify(f"{name}: no provenance from llm-imagen4")
            missing += 1
            continue
        found.append({"path": str(Path(name).absolute()), **made})
    if json_:
        click.echo(json.dumps(found, indent=2, ensure_ascii=False))
    else:
        for made in found:
            click.echo(made["path"])
            click.echo(f"  model: {made['model']} ({made['api_model']})")
            click.echo(f"  prompt: {made['prompt']}")
            if made.get("negative_prompt"):
                click.echo(f"  negative prompt: {made['negative_prompt']}")
            click.echo(f"  seed: {made['seed']}")
            options = ", ".join(f"{k}={v}" for k, v in made["options"].items())
            click.echo(f"  options: {options}")
            click.echo(f"  made: {made['created_utc']} (turn {made['turn_id']})")
            if made.get("credits_used") is not None:
                click.echo(f"  credits used: {made['credits_used']}")
            click.echo(f"  by: llm-imagen4 {made['version']}")
            click.echo(f"  again: llm imagen4 rerun {made['path']}")
    if missing:
        raise click.ClickException(
            f"{missing} of {len(files)} files have no provenance"
        )


@imagen4.command(name="models")
def models_command() -> None:
    """The Imagen 4 models, their AI/ML API ids and options."""
    for spec in SPECS:
        default = " (default)" if spec.model_id == "imagen4" else ""
        click.echo(f"{spec.model_id}: {spec.api_id}{default}")
        click.echo(f"  prompt: up to {spec.prompt_max} characters")
        for name, field in spec.options.model_fields.items():
            click.echo(f"  {name}: {field.description}")


@imagen4.command()
@click.argument("generation_id")
@click.option(
    "-o",
    "--output",
    help="Folder to save into (default: the generation's own folder)",
)
def download(generation_id: str, output: str | None) -> None:
    """Fetch a generation's missing images again, without generating again.

    Images whose files are missing or never finished are downloaded from the
    URLs kept in the history. Prints the path of each restored image.

    \b
        llm imagen4 download 01jq7m2v0c8ns1xkd9y0a5e4bq
    """
    import llm

    from . import api, history
    from .files import Destination

    db = _history_db()
    found = history.generation(db, generation_id) if db is not None else None
    if found is None:
        raise click.ClickException(f"No generation with id {generation_id}")
    missing = [image for image in found["images"] if not image["exists"]]
    if not missing:
        api.notify(f"All {len(found['images'])} images of {generation_id} are on disk")
        return
    try:
        destination = Destination.into(
            Path(output or found["folder"]).expanduser().absolute(),
            found["prompt"],
            output,
        )
        destination.create()
    except llm.ModelError as ex:
        raise click.ClickException(str(ex)) from None
    if found["metadata"]:
        # The same record as the first time, so the file is the same again.
        destination.record = found["provenance"]
    failed = 0
    client = api.image_client()
    for image in missing:
        number = image["position"] + 1
        if not image["url"]:
            api.notify(f"Image {number} has no URL to fetch it from")
            failed += 1
            continue
        try:
            saved = api.fetch_image(
                client,
                image["url"],
                partial(destination.save, position=image["position"]),
            )
        except (llm.ModelError, OSError) as ex:
            api.notify(f"Image {number} could not be fetched: {ex}")
            failed += 1
            continue
        history.mark_saved(db, generation_id, image["position"], saved)
        click.echo(saved.path)
    if failed:
        raise click.ClickException(
            f"{failed} of {len(missing)} missing images could not be restored"
        )


@imagen4.command()
@click.option(
    "-o",
    "--output",
    default="imagen4-gallery.html",
    show_default=True,
    help="The page to write",
)
@click.option(
    "-n",
    "--limit",
    type=click.IntRange(0),
    default=0,
    help="At most N generations (0: all)",
)
@click.option("-q", "--query", help="Only prompts containing this text")
@click.option("-m", "--model", type=click.Choice(MODEL_IDS), help="Only this model")
def gallery(output: str, limit: int, query: str | None, model: str | None) -> None:
    """Write the history as one static HTML page of thumbnails.

    Newest first, with prompt, seed, model, size and date on each card, a
    copyable rerun command, and a filter that works in the page. It loads
    nothing from the network. Prints the page's path.

    \b
        llm imagen4 gallery
        llm imagen4 gallery -o ~/Pictures/imagen4.html -q lighthouse
    """
    import os
    import tempfile

    from . import history
    from .gallery import is_gallery, render

    page = Path(output).expanduser().absolute()
    if page.exists() and not is_gallery(page):
        raise click.ClickException(
            f"{output} exists and is not a gallery; it will not be overwritten"
        )
    if not page.parent.is_dir():
        raise click.ClickException(f"No folder {page.parent}")
    db = _history_db()
    rows = (
        history.generations(db, limit=limit or None, query=query, model=model)
        if db is not None
        else []
    )
    fd, tmp = tempfile.mkstemp(prefix=".imagen4-", suffix=".html", dir=page.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(render(rows, page.parent))
    os.replace(tmp, page)
    click.echo(page)


@imagen4.command()
def datasette() -> None:
    """Print Datasette metadata with canned queries for the history.

    \b
        llm imagen4 datasette > imagen4.json
        datasette "$(llm logs path)" -m imagen4.json
    """
    from . import history

    click.echo(json.dumps(history.datasette_metadata(history.logs_db_path()), indent=2))


@imagen4.command()
@click.argument("file")
@_model_option("imagen4", "Model for rows that name none")
@_request_options
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Requests in flight",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "text", "jsonl", "csv"]),
    default="auto",
    show_default=True,
    help="auto: by the file's extension (.jsonl, .csv), else text",
)
@click.option("--redo", is_flag=True, help="Generate rows already done again")
@click.option(
    "--max-credits",
    type=click.FloatRange(0, min_open=True),
    help="Start no more rows once the credits used reach this",
)
@click.option("--dry-run", is_flag=True, help="Print the requests; send nothing")
@click.option("json_", "--json", is_flag=True, help="One JSON object per row")
def batch(
    file: str,
    model_id: str,
    jobs: int,
    fmt: str,
    redo: bool,
    max_credits: float | None,
    dry_run: bool,
    key: str | None,
    json_: bool,
    no_log: bool,
    **flags: Any,
) -> None:
    """Generate images for every prompt in FILE (- for standard input).

    FILE is plain text (one prompt a line; # starts a comment), JSONL, or CSV
    with a header, with the fields prompt, negative_prompt, aspect_ratio,
    seed, num_images, model and output. The flags are the defaults for every
    row. Rows already done, found in the history by their request, are
    skipped. Prints each row's paths (or one JSON object a row with --json),
    and a summary on standard error.

    \b
        llm imagen4 batch prompts.txt -j 8 -o out
        llm imagen4 batch storyboard.jsonl --max-credits 2000000
        llm imagen4 batch shots.csv --dry-run
    """
    import threading

    from . import api
    from . import batch as batches

    try:
        data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
        rows = batches.read_rows(data, file, fmt)
    except OSError as ex:
        raise click.ClickException(f"Cannot read {file}: {ex.strerror}") from None
    except batches.BatchError as ex:
        raise click.ClickException(str(ex)) from None
    if not rows:
        raise click.ClickException(f"No prompts in {file}")
    db = None if (no_log or dry_run) else _logs_db()
    done = set()
    if not redo:
        history_db = db if db is not None else (_history_db() if dry_run else None)
        if history_db is not None:
            done = batches.done_keys(history_db)

    checked, skipped, failed = [], 0, 0

    def report(row: batches.Row, status: str, **fields: Any) -> None:
        if json_:
            click.echo(
                json.dumps(
                    {
                        "row": row.number,
                        "prompt": row.prompt,
                        "status": status,
                        **fields,
                    }
                )
            )

    for row in rows:
        if row.error is None:
            row_flags = {**flags, **row.options}
            try:
                model, options, request = check(
                    row.model_id or model_id, row.prompt, row_flags, key
                )
            except click.ClickException as ex:
                row.error = ex.message
        if row.error is not None:
            api.notify(f"Row {row.number}: {row.error}")
            report(row, "failed", error=row.error)
            failed += 1
            continue
        if batches.request_key(request, "seed" in options) in done:
            report(row, "skipped")
            skipped += 1
            continue
        if dry_run:
            click.echo(json.dumps(request))
        checked.append((row, model, options))
    if dry_run:
        api.notify(
            f"{len(checked)} requests would be sent; "
            f"{skipped} rows already done, {failed} rows with errors"
        )
        if failed:
            raise click.exceptions.Exit(1)
        return

    by_row = {row.number: (model, options) for row, model, options in checked}
    pacer = api.Pacer(jobs, notify=api.notify)
    credits = 0.0
    credits_lock = threading.Lock()
    generated = 0

    def task(row: batches.Row) -> Any:
        nonlocal credits
        model, options = by_row[row.number]
        api.PACER.set(pacer)
        response = generate_now(model, row.prompt, options, key, db is not None)
        with credits_lock:
            credits += response.response_json["credits_used"] or 0
        return response

    def should_start() -> bool:
        return max_credits is None or credits < max_credits

    runner = batches.Runner(pacer, api.notify)
    progress = (
        click.progressbar(length=len(checked), label="Generating", file=sys.stderr)
        if sys.stderr.isatty()
        else None
    )
    started = 0
    for outcome in runner.run([row for row, _, _ in checked], task, should_start):
        started += 1
        if progress:
            progress.update(1)
        row = outcome.row
        if outcome.error is not None:
            api.notify(f"Row {row.number}: {outcome.error}")
            report(row, "failed", error=str(outcome.error))
            failed += 1
            continue
        response = outcome.value
        if db is not None:
            _log(db, response)
        record = response.response_json
        paths = saved_paths(record)
        if len(paths) < len(record["images"]):
            failed += 1
            report(row, "failed", id=response.id, paths=paths, error="images not saved")
        else:
            generated += 1
            report(row, "done", id=response.id, paths=paths, seed=record["seed"])
        if not json_:
            for path in paths:
                click.echo(path)
    if progress:
        progress.render_finish()
    not_started = len(checked) - started
    summary = (
        f"{len(rows)} rows: {generated} generated, "
        f"{skipped} skipped (already done), {failed} failed"
    )
    if not_started:
        reason = "stopped" if runner.stopping else "--max-credits reached"
        summary += f", {not_started} not started ({reason})"
    if credits:
        summary += f"; {credits:g} credits used"
    api.notify(summary)
    if failed or runner.stopping:
        raise click.exceptions.Exit(1)
