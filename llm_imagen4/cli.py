"""The ``llm imagen4`` command group."""

from __future__ import annotations

import json
import sys
from functools import partial
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


@imagen4.command()
@click.argument("prompt")
@click.option(
    "-m",
    "--model",
    "model_id",
    type=click.Choice(MODEL_IDS),
    default="imagen4",
    show_default=True,
    help="Model to use",
)
@click.option("-r", "--aspect-ratio", type=click.Choice(ASPECT_RATIOS))
@click.option("-n", "--num-images", type=click.IntRange(1, 4), help="1 to 4")
@click.option("--seed", type=int, help="Seed; drawn at random when not given")
@click.option("--negative-prompt", help="What to leave out (imagen4 only)")
@click.option(
    "--enhance-prompt/--no-enhance-prompt",
    default=None,
    help="Let the API rewrite the prompt (newer models)",
)
@click.option(
    "--person-generation",
    type=click.Choice(_choices("person_generation")),
    help="Newer models",
)
@click.option(
    "--safety-setting",
    type=click.Choice(_choices("safety_setting")),
    help="Newer models",
)
@click.option(
    "--watermark/--no-watermark",
    "add_watermark",
    default=None,
    help="Invisible watermark (newer models)",
)
@click.option(
    "-o",
    "--output",
    help="Folder to save into (created if missing), or a file for one image",
)
@click.option("--retries", type=click.IntRange(1, 10), help="Attempts at most")
@click.option(
    "--timeout",
    type=click.FloatRange(0, 3600, min_open=True),
    help="Seconds to wait for the API",
)
@click.option("--key", help="API key or the alias of a stored key")
@click.option("json_", "--json", is_flag=True, help="Print a JSON object")
@click.option("--no-log", is_flag=True, help="Do not log to the history")
@click.option("open_", "--open", is_flag=True, help="Open the images when saved")
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
    import llm
    import pydantic
    from llm.cli import logs_on

    from . import history
    from .generate import LOGGING, prepare

    prompt = read_prompt(prompt)
    spec = SPECS_BY_ID[model_id]
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
        prepare(spec, prompt, validated)
    except llm.ModelError as ex:
        raise click.ClickException(str(ex)) from None

    db = None
    if logs_on() and not no_log:
        db = history.open_db()
        history.migrate(db)
    response = model.prompt(prompt, key=key, stream=False, **options)
    logging = LOGGING.set(db is not None)
    try:
        response.text()
    except llm.ModelError as ex:
        raise click.ClickException(str(ex)) from None
    finally:
        LOGGING.reset(logging)
    if db is not None:
        with history.transaction(db):
            response.log_to_db(db)

    record = response.response_json
    result_paths = [
        record["directory"] + image["name"]
        for image in record["images"]
        if image["status"] == "saved"
    ]
    if json_:
        click.echo(json.dumps(_json_summary(response, result_paths)))
    else:
        for path in result_paths:
            click.echo(path)
    if open_:
        for path in result_paths:
            click.launch(path)
    failed = len(record["images"]) - len(result_paths)
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


@imagen4.command(name="history")
@click.option("-n", "--limit", type=click.IntRange(0), default=20, show_default=True)
@click.option("-q", "--query", help="Only prompts containing this text")
@click.option("-m", "--model", type=click.Choice(MODEL_IDS), help="Only this model")
@click.option("json_", "--json", is_flag=True, help="Print a JSON array")
def history_command(
    limit: int, query: str | None, model: str | None, json_: bool
) -> None:
    """Recent generations, newest first.

    \b
        llm imagen4 history
        llm imagen4 history -q racoon -n 5 --json
    """
    from . import history

    path = history.logs_db_path()
    rows: list[dict[str, Any]] = []
    if path.exists():
        db = history.open_db(path)
        history.migrate(db)
        rows = history.generations(db, limit=limit or None, query=query, model=model)
    if json_:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(
            f"{row['id']}  {row['datetime_utc'][:19]}  {row['model']}  "
            f"seed {row['seed']}  {row['aspect_ratio']}"
        )
        click.echo(f"  {' '.join(row['prompt'].split())}")
        for image in row["images"]:
            click.echo(f"  {image['path'] or image['url']}")


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
    from pathlib import Path

    import llm

    from . import api, history
    from .files import Destination

    path = history.logs_db_path()
    if not path.exists():
        raise click.ClickException(f"No generation with id {generation_id}")
    db = history.open_db(path)
    history.migrate(db)
    rows = list(
        db.query(
            "select * from imagen4_images where turn_id = ? order by position",
            [generation_id],
        )
    )
    if not rows:
        raise click.ClickException(f"No generation with id {generation_id}")
    missing = [
        row
        for row in rows
        if row["status"] != "saved" or not row["path"] or not Path(row["path"]).exists()
    ]
    if not missing:
        api.notify(f"All {len(rows)} images of {generation_id} are on disk")
        return
    try:
        destination = Destination.into(
            Path(output or rows[0]["folder"]).expanduser().absolute(),
            rows[0]["prompt"],
            output,
        )
        destination.create()
    except llm.ModelError as ex:
        raise click.ClickException(str(ex)) from None
    failed = 0
    with api.image_client() as client:
        for row in missing:
            number = row["position"] + 1
            if not row["url"]:
                api.notify(f"Image {number} has no URL to fetch it from")
                failed += 1
                continue
            try:
                saved = api.fetch_image(
                    client,
                    row["url"],
                    partial(destination.save, position=row["position"]),
                )
            except (llm.ModelError, OSError) as ex:
                api.notify(f"Image {number} could not be fetched: {ex}")
                failed += 1
                continue
            history.mark_saved(db, generation_id, row["position"], saved)
            click.echo(saved.path)
    if failed:
        raise click.ClickException(
            f"{failed} of {len(missing)} missing images could not be restored"
        )
