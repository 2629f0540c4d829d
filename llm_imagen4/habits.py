"""Command lines typed from llm habits, told apart from what they would do
here before anything is sent: ``-o name value`` (how ``llm -m`` takes a
model's options, where ``-o`` is ``--output`` here), and a one-word prompt
that is a command's name mistyped, or typed on a version without it."""

from __future__ import annotations

import click

from . import specs
from .terminal import command

# How far (in letters added, dropped or changed) a one-word prompt may be
# from a command's name to be taken for it.
NEAR = 2
OUTPUT_FLAGS = ("-o", "--output")
OPTION_NAMES = {name for spec in specs.SPECS for name in spec.options.model_fields}


def _as_flags(option: click.Option, value: str) -> tuple[str, str]:
    """``-o name value`` as the command's own flag: long and short."""
    long = next(o for o in option.opts if o.startswith("--"))
    short = next((o for o in option.opts if not o.startswith("--")), long)
    if option.is_flag and option.secondary_opts:
        try:
            on = click.BOOL.convert(value, option, None)
        except click.BadParameter:
            both = f"{long}/{option.secondary_opts[0]}"
            return both, both
        chosen = long if on else option.secondary_opts[0]
        return chosen, chosen
    return command(long, value), command(short, value)


def options_as_output(
    cmd: click.Command, ctx: click.Context, args: list[str]
) -> str | None:
    """When ``-o`` was given a model option's name and a value that click
    would take for one argument too many, the flags to use instead."""
    try:
        # What is left over once every argument has its value.
        _, extra, _ = cmd.make_parser(ctx).parse_args(args=list(args))
    except click.UsageError:
        return None  # click says what is wrong
    if not extra:
        return None
    by_name = {
        param.name: param for param in cmd.params if isinstance(param, click.Option)
    }
    flags = [
        _as_flags(by_name[name], value)
        for flag, name, value in zip(args, args[1:], args[2:], strict=False)
        if flag in OUTPUT_FLAGS and name in OPTION_NAMES and name in by_name
    ]
    if not flags:
        return None
    longs, shorts = (" ".join(forms) for forms in zip(*flags, strict=True))
    return (
        "-o is --output here, where the images go; give the options as flags: "
        + longs
        + (f" (or {shorts})" if shorts != longs else "")
    )


def distance(a: str, b: str) -> int:
    """Levenshtein's: letters added, dropped or changed to make ``a`` ``b``."""
    row = list(range(len(b) + 1))
    for i, letter in enumerate(a, 1):
        diagonal, row[0] = row[0], i
        for j, other in enumerate(b, 1):
            diagonal, row[j] = (
                row[j],
                min(row[j] + 1, row[j - 1] + 1, diagonal + (letter != other)),
            )
    return row[-1]


def mistyped_command(prompt: str, names: list[str], args: list[str]) -> str | None:
    """When a one-word ``prompt`` is within NEAR letters of one of the
    commands ``names``: which it may have meant, and how to make an image of
    it (``args``, the command line after ``llm imagen4``)."""
    if len(prompt.split()) != 1:
        return None
    word = prompt.strip().lower()
    nearest = min((distance(word, name.lower()), name) for name in names)
    if nearest[0] > NEAR:
        return None
    return (
        f"Did you mean {command('llm', 'imagen4', nearest[1])}? To make an image "
        f"of that word: {command('llm', 'imagen4', 'generate', *args)}"
    )
