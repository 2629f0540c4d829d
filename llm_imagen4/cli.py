"""The ``llm imagen4`` commands: click declarations that call the engine.

The flags that set model options are made from the models' ``Options``, so
names, ranges, choices and help are declared once, in ``specs``."""

from __future__ import annotations

import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click_default_group import DefaultGroup

from . import specs

# Every option of every model, in the order the preview declares them.
OPTION_FIELDS = {
    name: field
    for spec in specs.SPECS
    for name, field in spec.options.model_fields.items()
}


def _flags(name: str) -> list[str]:
    extra = OPTION_FIELDS[name].json_schema_extra or {}
    return list(extra.get("flags") or [f"--{name.replace('_', '-')}"])


def flag(name: str) -> str:
    """How an option is spelled on the command line, for messages."""
    return next(f for f in _flags(name) if f.startswith("--")).split("/")[0]


def _bounds(name: str, kind: str) -> Any:
    values = [
        getattr(meta, kind)
        for spec in specs.SPECS
        if name in spec.options.model_fields
        for meta in spec.options.model_fields[name].metadata
        if hasattr(meta, kind)
    ]
    return (min if kind in ("ge", "gt") else max)(values) if values else None


def _click_type(name: str) -> Any:
    annotation = OPTION_FIELDS[name].annotation
    inner = [arg for arg in typing.get_args(annotation) if arg is not type(None)][0]
    if typing.get_origin(inner) is typing.Literal:
        return click.Choice(typing.get_args(inner))
    if inner is int:
        return click.IntRange(_bounds(name, "ge"), _bounds(name, "le"))
    if inner is float:
        return click.FloatRange(_bounds(name, "gt"), _bounds(name, "le"), min_open=True)
    return inner


def _option(name: str) -> Callable:
    field = OPTION_FIELDS[name]
    flags = _flags(name)
    if field.annotation == bool | None:
        if not any("/" in f for f in flags):
            flags = [f"--{name.replace('_', '-')}/--no-{name.replace('_', '-')}"]
        return click.option(*flags, name, default=None, help=field.description)
    return click.option(*flags, name, type=_click_type(name), help=field.description)


def _apply(decorators: list[Callable]) -> Callable[[Callable], Callable]:
    def apply(command: Callable) -> Callable:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


_model_options = _apply([_option(name) for name in OPTION_FIELDS])
_database_option = click.option(
    "-d",
    "--database",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The logs database (default: llm logs path)",
)
_key_option = click.option("--key", help="API key, or the name of a stored key")
_json_option = click.option("json_", "--json", is_flag=True, help="Print JSON")
_preview_option = click.option(
    "--preview",
    is_flag=True,
    help="Draw the images in the terminal (kitty, WezTerm, Ghostty, iTerm2)",
)


def _model_option(default: str | None) -> Callable:
    ids = ", ".join(spec.model_id for spec in specs.SPECS)
    return click.option(
        "-m",
        "--model",
        "model_name",
        default=default,
        show_default=default is not None,
        help=f"{ids}, or an alias of one",
    )


def _fail(ex: Exception) -> click.ClickException:
    """One line for an expected failure, options spelled as flags."""
    from .specs import OptionError

    if isinstance(ex, OptionError) and ex.name in OPTION_FIELDS:
        message = str(ex).replace(ex.name, flag(ex.name), 1)
    else:
        message = str(ex)
    from .terminal import printable

    return click.ClickException(printable(message))


# Set in a context's meta when a word that is no command went to generate.
_DEFAULT_ROUTE = "llm_imagen4.default_route"


class _Group(DefaultGroup):
    """``llm imagen4 PROMPT`` is ``llm imagen4 generate PROMPT``. Which way
    a command line went is noted, for generate to tell a command's name
    mistyped from a prompt."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        ctx.meta[_DEFAULT_ROUTE] = bool(args) and args[0] not in self.commands
        return super().resolve_command(ctx, args)


class _Forgiving(click.Command):
    """A command that answers llm habits with what to type instead, before
    anything is sent (see ``habits``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if ctx.resilient_parsing:  # completing a word in the shell
            return super().parse_args(ctx, args)
        from . import habits

        typed = list(args)
        hint = habits.options_as_output(self, ctx, typed)
        if hint:
            raise click.ClickException(hint)
        args = super().parse_args(ctx, args)
        if ctx.meta.get(_DEFAULT_ROUTE) and ctx.parent:
            # The group's commands as they are now, any added later included.
            names = ctx.parent.command.list_commands(ctx.parent)
            hint = habits.mistyped_command(ctx.params["prompt"], names, typed)
            if hint:
                raise click.ClickException(hint)
        return args


@click.group(cls=_Group, default="generate", default_if_no_args=False)
def imagen4() -> None:
    """Generate images with Google's Imagen 4 through the AI/ML API.

    \b
        llm imagen4 "Racoon eating ice-cream" -r 16:9
        llm imagen4 history
    """


# What generate and rerun share: the model's options and how to run.
_run_options = _apply(
    [
        _model_options,
        _key_option,
        _database_option,
        click.option("--no-log", is_flag=True, help="Do not log this generation"),
        _json_option,
        click.option(
            "open_", "--open", is_flag=True, help="Open the images when saved"
        ),
        _preview_option,
    ]
)


def _run(arguments: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The model's options, and how to run, from a command's arguments."""
    from . import commands

    run = commands.Run(
        key=arguments.pop("key"),
        database=arguments.pop("database"),
        no_log=arguments.pop("no_log"),
        json_=arguments.pop("json_"),
        open_=arguments.pop("open_"),
        preview=arguments.pop("preview"),
        fail=_fail,
    )
    return {name: arguments.pop(name) for name in OPTION_FIELDS}, run


@imagen4.command(cls=_Forgiving)
@click.argument("prompt")
@_model_option(specs.DEFAULT_MODEL)
@_run_options
def generate(prompt: str, model_name: str, **arguments: Any) -> None:
    """Generate images from PROMPT (- reads it from standard input).

    Prints the path of each saved image, one per line.

    \b
        llm imagen4 "Racoon eating ice-cream" -r 16:9
        llm imagen4 "a lighthouse at dawn" -m imagen4-ultra -n 4 -o lighthouses
        echo "a teapot" | llm imagen4 - --seed 42
    """
    from . import commands

    options, run = _run(arguments)
    commands.generate(prompt, model_name, options, run)


@imagen4.command(cls=_Forgiving)
@click.argument("source")
@_model_option(None)
@click.option("--vary", is_flag=True, help="Draw a new seed")
@click.option(
    "--as-made",
    is_flag=True,
    help="Send the prompt the API rewrote, with enhance_prompt off",
)
@_run_options
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

    options, run = _run(arguments)
    commands.rerun(source, model_name, vary, as_made, options, run)


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
@_model_option(None)
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
@_json_option
@_database_option
def history_command(**arguments: Any) -> None:
    """Recent generations, newest first.

    \b
        llm imagen4 history
        llm imagen4 history -q racoon -n 5 --json
        llm imagen4 history --since 2026-11-01 --paths
        llm imagen4 history --missing
    """
    from . import commands

    commands.history_list(**arguments, fail=_fail)


@imagen4.command()
@click.argument("generation_id")
@_json_option
@_database_option
@_preview_option
def show(generation_id: str, json_: bool, database: Path | None, preview: bool) -> None:
    """One generation in full: every field, every file and whether it exists.

    \b
        llm imagen4 show 01jq7m2v0c8ns1xkd9y0a5e4bq
        llm imagen4 show 01jq7m2v0c8ns1xkd9y0a5e4bq --preview
    """
    from . import commands

    commands.show(generation_id, json_, database, preview, fail=_fail)


@imagen4.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@_json_option
def inspect(files: tuple[Path, ...], json_: bool) -> None:
    """Print how images were made, from the provenance written into them.

    What a file claims is shown as its claim: the file's real path comes
    from the file system.

    \b
        llm imagen4 inspect racoon-eating-ice-cream.png
        llm imagen4 inspect *.png --json
    """
    from . import commands

    commands.inspect(files, json_, fail=_fail)


@imagen4.command(name="import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@_database_option
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
    import llm

    from . import importing

    try:
        code = importing.run(paths, database)
    except llm.ModelError as ex:
        raise _fail(ex) from None
    raise SystemExit(code)


@imagen4.command()
@click.argument("generation_id", required=False)
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to save into (default: the generation's own folder)",
)
@_database_option
def download(
    generation_id: str | None, output: Path | None, database: Path | None
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

    commands.download(generation_id, output, database, fail=_fail)


@imagen4.command()
@click.argument("generation_id")
@_key_option
@_database_option
def status(generation_id: str, key: str | None, database: Path | None) -> None:
    """Ask the API's log what became of a generation.

    After an answer was lost (a timeout, a dropped connection), this says
    whether the generation succeeded and what it cost. It never sends the
    generation again.

    \b
        llm imagen4 status 01jq7m2v0c8ns1xkd9y0a5e4bq
    """
    from . import commands

    commands.status(generation_id, key, database, fail=_fail)


@imagen4.command(name="models")
@click.option(
    "--check",
    is_flag=True,
    help="Ask the API (no key needed) whether each model is still served",
)
def models_command(check: bool) -> None:
    """The Imagen 4 models: their AI/ML API ids, price an image and options.

    The prices come from the API's published model list (no key needed),
    read at most once a day.
    """
    from . import commands

    commands.models(check, fail=_fail)


@imagen4.command()
@_key_option
def balance(key: str | None) -> None:
    """The AI/ML API account's balance, in dollars.

    \b
        llm imagen4 balance
    """
    from . import commands

    commands.balance(key, fail=_fail)


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
@_model_option(None)
@_database_option
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

    commands.gallery(output, limit, query, model_name, database, fail=_fail)


@imagen4.command()
@_database_option
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

    commands.datasette(database)


def _batch_file(ctx: click.Context, param: click.Parameter, value: str) -> Any:
    """FILE, open until the command ends, as batch.open_source opens it: a
    FIFO, a device or a socket is refused in one line, never waited on."""
    from . import batch
    from .terminal import printable

    try:
        return ctx.with_resource(batch.open_source(value))
    except batch.BatchError as ex:
        raise click.ClickException(printable(str(ex))) from None


@imagen4.command(cls=_Forgiving)
# A Path for shell completion; open_source checks it, in one line.
@click.argument(
    "file", type=click.Path(allow_dash=True, readable=False), callback=_batch_file
)
@_model_option(specs.DEFAULT_MODEL)
@_model_options
@_key_option
@_database_option
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
@_json_option
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
    batches.run(file, options=options, fail=_fail, **arguments)
