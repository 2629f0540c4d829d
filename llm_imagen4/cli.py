"""The ``llm imagen4`` commands: click declarations over ``commands``,
which does the work, and ``output``, which prints its results and turns
problems into exit statuses. The flags are ``flags``'."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from . import output, specs
from .flags import (
    OPTION_FIELDS,
    Forgiving,
    Group,
    apply,
    database_option,
    json_option,
    key_option,
    model_option,
    model_options,
    one_line,
    preview_option,
    reported,
)


@click.group(cls=Group, default="generate", default_if_no_args=False)
def imagen4() -> None:
    """Generate images with Google's Imagen 4 through the AI/ML API.

    \b
        llm imagen4 "Racoon eating ice-cream" -r 16:9
        llm imagen4 history
    """


# What generate and rerun share: the model's options and how to run.
_run_options = apply(
    [
        model_options,
        key_option,
        database_option,
        click.option("--no-log", is_flag=True, help="Do not log this generation"),
        json_option,
        click.option(
            "open_", "--open", is_flag=True, help="Open the images when saved"
        ),
        preview_option,
    ]
)


def _split(arguments: dict[str, Any]) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """The model's options, how to run, and how to show the result, from
    the arguments of generate or rerun."""
    from . import commands

    how = commands.HowToRun(
        key=arguments.pop("key"),
        database=arguments.pop("database"),
        no_log=arguments.pop("no_log"),
    )
    shown = {name: arguments.pop(name) for name in ("json_", "open_", "preview")}
    return {name: arguments.pop(name) for name in OPTION_FIELDS}, how, shown


@imagen4.command(cls=Forgiving)
@click.argument("prompt")
@model_option(specs.DEFAULT_MODEL)
@_run_options
@reported
def generate(prompt: str, model_name: str, **arguments: Any) -> None:
    """Generate images from PROMPT (- reads it from standard input).

    Prints the path of each saved image, one per line.

    \b
        llm imagen4 "Racoon eating ice-cream" -r 16:9
        llm imagen4 "a lighthouse at dawn" -m imagen4-ultra -n 4 -o lighthouses
        echo "a teapot" | llm imagen4 - --seed 42
    """
    from . import commands

    options, how, shown = _split(arguments)
    text = commands.read_prompt(prompt, sys.stdin.buffer)
    output.generated(commands.generate(text, model_name, options, how), **shown)


@imagen4.command(cls=Forgiving)
@click.argument("source")
@model_option(None)
@click.option("--vary", is_flag=True, help="Draw a new seed")
@click.option(
    "--as-made",
    is_flag=True,
    help="Send the prompt the API rewrote, with enhance_prompt off",
)
@_run_options
@reported
def rerun(
    source: str, model_name: str | None, vary: bool, as_made: bool, **arguments: Any
) -> None:
    """Make a generation again: the same model, prompt, options and seed.

    SOURCE is a generation id from the history, or an image file made by this
    plugin, whose record is read as a request only: the images go to the
    current folder, or to -o. Flags override what they name.

    \b
        llm imagen4 rerun 01jq7m2v0c8ns1xkd9y0a5e4bq
        llm imagen4 rerun racoon-eating-ice-cream.png -n 4 --vary
        llm imagen4 rerun racoon-eating-ice-cream.png --as-made
    """
    from . import commands

    options, how, shown = _split(arguments)
    generated = commands.rerun(source, model_name, vary, as_made, options, how)
    output.generated(generated, **shown)


@imagen4.command(name="history")
@click.option(
    "-n",
    "--limit",
    type=click.IntRange(0),
    default=20,
    show_default=True,
    help="At most N generations (0: all)",
)
@click.option("-q", "--query", help="Only prompts containing this text")
@model_option(None)
@click.option("--seed", type=int, help="Only generations with this seed")
@click.option(
    "--since",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]),
    help="Only generations from this date or time (UTC) on",
)
@click.option("--tool", is_flag=True, help="Only generations a chat model asked for")
@click.option("--missing", is_flag=True, help="Only generations with files missing")
@click.option(
    "--paths",
    is_flag=True,
    help="Print only the paths of the files there, one per line",
)
@json_option
@database_option
@reported
def history_command(**arguments: Any) -> None:
    """Recent generations, newest first.

    \b
        llm imagen4 history
        llm imagen4 history -q racoon -n 5 --json
        llm imagen4 history --since 2026-11-01 --paths
        llm imagen4 history --missing
    """
    from . import commands

    paths, json_ = arguments.pop("paths"), arguments.pop("json_")
    output.history(commands.history_list(**arguments), paths, json_)


@imagen4.command()
@click.argument("generation_id")
@json_option
@database_option
@preview_option
@reported
def show(generation_id: str, json_: bool, database: Path | None, preview: bool) -> None:
    """One generation in full: every field, every file and whether it exists.

    \b
        llm imagen4 show 01jq7m2v0c8ns1xkd9y0a5e4bq
        llm imagen4 show 01jq7m2v0c8ns1xkd9y0a5e4bq --preview
    """
    from . import commands

    output.shown(commands.show(generation_id, database), json_, preview)


@imagen4.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@json_option
@reported
def inspect(files: tuple[Path, ...], json_: bool) -> None:
    """Print how images were made, from the provenance written into them.

    What a file claims is shown as its claim: the file's real path comes
    from the file system.

    \b
        llm imagen4 inspect racoon-eating-ice-cream.png
        llm imagen4 inspect *.png --json
    """
    from . import commands

    output.inspected(commands.inspect(files), json_)


@imagen4.command(name="import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@database_option
@reported
def import_command(paths: tuple[Path, ...], database: Path | None) -> None:
    """Rebuild the history from the images' own records, sending nothing.

    PATHS are image files, or folders searched for .png, .jpg, .jpeg and
    .webp files (symlinks inside them are not followed). The images of each
    generation become its turn again, with its id, so that show ID and
    rerun ID work; a turn already in the logs database is left as it is.
    A file without the plugin's record is skipped and counted; one that
    cannot be read, holds more than one claim, or whose record cannot be a
    turn, is skipped with a line saying why, and the exit status is then 1.
    Prints each imported image's path, and a summary on standard error.

    \b
        llm imagen4 import ~/Pictures/imagen4
        llm imagen4 import *.png -d rebuilt.db
    """
    from . import importing

    raise SystemExit(importing.run(paths, database))


@imagen4.command()
@click.argument("generation_id", required=False)
@click.option(
    "-o",
    "--output",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to save into (default: the generation's own folder)",
)
@database_option
@reported
def download(
    generation_id: str | None, folder: Path | None, database: Path | None
) -> None:
    """Save the images of unfinished generations, without generating again.

    With no GENERATION_ID, finishes every generation the recovery journal
    holds (a failed download, a Ctrl-C, a crash). With one, that generation:
    from the journal, or from the history when its files are gone. Images
    already saved are never saved again. Prints each saved path. With -d,
    the history to look the id up in, and where the finished generations
    are recorded (those that were to be logged at all).

    \b
        llm imagen4 download
        llm imagen4 download 01jq7m2v0c8ns1xkd9y0a5e4bq -o restored
    """
    from . import commands

    output.downloaded(commands.download(generation_id, folder, database))


@imagen4.command()
@click.argument("generation_id")
@key_option
@database_option
@reported
def status(generation_id: str, key: str | None, database: Path | None) -> None:
    """Ask the API's log what became of a generation.

    After an answer was lost (a timeout, a dropped connection), this says
    whether the generation succeeded and what it cost. It never sends the
    generation again.

    \b
        llm imagen4 status 01jq7m2v0c8ns1xkd9y0a5e4bq
    """
    from . import commands
    from .terminal import printable

    click.echo(printable(commands.status(generation_id, key, database)))


@imagen4.command(name="models")
@click.option(
    "--check",
    is_flag=True,
    help="Ask the API (no key needed) whether each model is still served",
)
@reported
def models_command(check: bool) -> None:
    """The Imagen 4 models: their AI/ML API ids, price an image and options.

    The prices come from the API's published model list (no key needed),
    read at most once a day.
    """
    from . import commands

    output.models(*commands.models(check))


@imagen4.command()
@key_option
@reported
def balance(key: str | None) -> None:
    """The AI/ML API account's balance, in dollars.

    \b
        llm imagen4 balance
    """
    from . import commands, text

    click.echo(text.dollars(commands.balance(key)))


@imagen4.command()
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
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
@model_option(None)
@database_option
@reported
def gallery(
    output: Path,
    limit: int,
    query: str | None,
    model_name: str | None,
    database: Path | None,
) -> None:
    """Write the history as one static HTML page of thumbnails.

    Newest first, with prompt, seed, model, size and date on each card, a
    copyable rerun command, and a filter that works in the page. It loads
    nothing from the network. Prints the page's path.

    \b
        llm imagen4 gallery
        llm imagen4 gallery -o ~/Pictures/imagen4.html -q lighthouse
    """
    from . import commands
    from .terminal import printable

    click.echo(printable(commands.gallery(output, limit, query, model_name, database)))


@imagen4.command()
@database_option
@reported
def datasette(database: Path | None) -> None:
    """Print Datasette metadata with canned queries for the history.

    A Datasette that has the plugin (its datasette extra) offers these
    queries, and shows each image, without a metadata file: this one is for
    a Datasette without the plugin, or to start a metadata file of your own.

    \b
        llm imagen4 datasette > imagen4.json
        datasette "$(llm logs path)" -m imagen4.json
    """
    from . import commands
    from .terminal import dumps

    click.echo(dumps(commands.datasette(database), indent=2))


def _batch_file(ctx: click.Context, param: click.Parameter, value: str) -> Any:
    """FILE, open until the command ends, as batchfile.open_source opens it:
    a FIFO, a device or a socket is refused in one line, never waited on."""
    from . import batchfile

    try:
        return ctx.with_resource(batchfile.open_source(value))
    except batchfile.BatchError as ex:
        raise one_line(ex) from None


@imagen4.command(cls=Forgiving)
# A Path for shell completion; open_source checks it, in one line.
@click.argument(
    "file", type=click.Path(allow_dash=True, readable=False), callback=_batch_file
)
@model_option(specs.DEFAULT_MODEL)
@model_options
@key_option
@database_option
@click.option("--no-log", is_flag=True, help="Do not log the generations")
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
    help="Spend at most this many credits, at the published price an image",
)
@click.option(
    "--max-usd",
    type=click.FloatRange(0, min_open=True),
    help="Spend at most this many dollars, at the published price an image",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the requests and what they would cost; send nothing",
)
@json_option
@reported
def batch(file: Any, **arguments: Any) -> None:
    """Generate images for every prompt in FILE (- for standard input).

    FILE is plain text (one prompt a line; # starts a comment), JSONL, or CSV
    with a header, with the fields prompt, model, output and any option of
    the model (aspect_ratio, seed, negative_prompt, ...). The flags are the
    defaults for every row. Unfinished generations of its rows are finished first; rows already
    done are skipped. Prints each row's paths (or one JSON object a row with
    --json), and a summary on standard error.

    \b
        llm imagen4 batch prompts.txt -j 8 -o out
        llm imagen4 batch storyboard.jsonl --max-usd 5
        llm imagen4 batch shots.csv --dry-run
    """
    from . import batch as batches

    options = {name: arguments.pop(name) for name in OPTION_FIELDS}
    printer = output.BatchPrinter(arguments.pop("json_"))
    dry_run = arguments.pop("dry_run")
    settings = batches.Settings(options=options, **arguments)
    try:
        outcome = batches.run(file, settings, printer, dry_run)
    finally:
        printer.finish()
    output.batch_outcome(outcome)
