"""The command line's parts shared by the ``llm imagen4`` commands: the
flags made from the models' ``Options`` (so names, ranges, choices and help
are declared once, in ``specs``), the options several commands take, the
group that sends a prompt to ``generate``, and a command that answers llm
habits before anything is sent. Failures become one line here."""

from __future__ import annotations

import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click_default_group import DefaultGroup

from . import specs

OPTION_FIELDS = specs.OPTION_FIELDS
flag = specs.flag
_flags = specs.flags_of


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
        return click.option(*flags, name, default=None, help=specs.help_of(name))
    return click.option(*flags, name, type=_click_type(name), help=specs.help_of(name))


def apply(decorators: list[Callable]) -> Callable[[Callable], Callable]:
    def apply(command: Callable) -> Callable:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


model_options = apply([_option(name) for name in OPTION_FIELDS])
database_option = click.option(
    "-d",
    "--database",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The logs database (default: llm logs path)",
)
key_option = click.option("--key", help="API key, or the name of a stored key")
json_option = click.option("json_", "--json", is_flag=True, help="Print JSON")
preview_option = click.option(
    "--preview",
    is_flag=True,
    help="Draw the images in the terminal (kitty, WezTerm, Ghostty, iTerm2)",
)


def model_option(default: str | None) -> Callable:
    ids = ", ".join(spec.model_id for spec in specs.SPECS)
    return click.option(
        "-m",
        "--model",
        "model_name",
        default=default,
        show_default=default is not None,
        help=f"{ids}, or an alias of one",
    )


def one_line(ex: Exception) -> click.ClickException:
    """One line for an expected failure, options spelled as flags."""
    from .terminal import printable

    return click.ClickException(printable(specs.as_typed(ex)))


# Set in a context's meta when a word that is no command went to generate.
_DEFAULT_ROUTE = "llm_imagen4.default_route"


class Group(DefaultGroup):
    """``llm imagen4 PROMPT`` is ``llm imagen4 generate PROMPT``. Which way
    a command line went is noted, for generate to tell a command's name
    mistyped from a prompt."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        ctx.meta[_DEFAULT_ROUTE] = bool(args) and args[0] not in self.commands
        return super().resolve_command(ctx, args)


class Forgiving(click.Command):
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


def reported(command: Callable) -> Callable:
    """A command whose expected failures (the plugin's, llm's) are one line
    and exit 1, never a traceback."""
    import functools

    import llm

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except llm.ModelError as ex:
            raise one_line(ex) from None

    return run
