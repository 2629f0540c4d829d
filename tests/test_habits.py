"""A command line that forgives llm habits: ``-o name value``, and a
command's name mistyped as a prompt."""

import subprocess
import sys
from pathlib import Path

import click
import pytest

from llm_imagen4 import cli

ROUTES = {
    "default": ["a cat"],
    "generate": ["generate", "a cat"],
    "rerun": ["rerun", "01jq7m2v0c8ns1xkd9y0a5e4bq"],
    "batch": ["batch", "prompts.txt"],
}
BOOLEAN = {
    name for name, field in cli.OPTION_FIELDS.items() if field.annotation == bool | None
}


def nothing_happened(machine) -> None:
    """Nothing sent, and llm's user folder as it was: empty."""
    assert machine.generations == []
    assert list(Path(machine.user_path).iterdir()) == []


@pytest.mark.parametrize("route", ROUTES)
def test_o_with_a_model_option_names_the_flag_and_sends_nothing(
    new_machine, llm_cli, route
):
    (new_machine.work / "prompts.txt").write_text("a cat\n")
    result = llm_cli("imagen4", *ROUTES[route], "-o", "aspect_ratio", "16:9")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: -o is --output here, where the images go; give the options as "
        "flags: --aspect-ratio 16:9 (or -r 16:9)\n"
    )
    assert result.stdout == ""
    nothing_happened(new_machine)


@pytest.mark.parametrize("name", cli.OPTION_FIELDS)
def test_every_option_given_with_o_is_named_as_its_flag(new_machine, llm_cli, name):
    value = "true" if name in BOOLEAN else "x y"
    result = llm_cli("imagen4", "a cat", "-o", name, value)
    assert result.exit_code == 1
    suggested = cli.flag(name) + ("" if name in BOOLEAN else " 'x y'")
    assert f"give the options as flags: {suggested}" in result.stderr
    nothing_happened(new_machine)


def test_several_o_options_become_one_line_to_paste(new_machine, llm_cli):
    result = llm_cli(
        "imagen4",
        *("a cat", "-o", "seed", "5", "-o", "enhance_prompt", "false"),
        *("-o", "num_images", "2"),
    )
    assert result.exit_code == 1
    assert result.stderr.endswith(
        "flags: --seed 5 --no-enhance-prompt --num-images 2 "
        "(or --seed 5 --no-enhance-prompt -n 2)\n"
    )
    nothing_happened(new_machine)


def test_o_as_a_folder_is_still_a_folder(fake, generate):
    [path] = generate("a cat", "-o", "aspect_ratio")
    assert Path(path).parent == fake.work / "aspect_ratio"


def test_another_extra_argument_is_still_clicks_error(new_machine, llm_cli):
    result = llm_cli("imagen4", "a cat", "16:9")
    assert result.exit_code == 2
    assert "Got unexpected extra argument (16:9)" in result.stderr
    nothing_happened(new_machine)


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("histroy", "history"),
        ("galery", "gallery"),
        ("dowload", "download"),
        ("History", "history"),
        ("shwo", "show"),
    ],
)
def test_a_mistyped_command_is_not_sent_as_a_prompt(new_machine, llm_cli, typed, meant):
    result = llm_cli("imagen4", typed)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: Did you mean llm imagen4 {meant}? To make an image of that "
        f"word: llm imagen4 generate {typed}\n"
    )
    nothing_happened(new_machine)


def test_the_way_to_make_the_image_keeps_the_flags(new_machine, llm_cli):
    result = llm_cli("imagen4", "-r", "16:9", "histroy", "-n", "2")
    assert result.exit_code == 1
    assert result.stderr.endswith("word: llm imagen4 generate -r 16:9 histroy -n 2\n")
    nothing_happened(new_machine)


def test_every_command_of_the_group_is_recognised_mistyped(new_machine, llm_cli):
    names = cli.imagen4.list_commands(click.Context(cli.imagen4))
    assert {"history", "show", "download"} <= set(names)
    for name in names:
        typo = name[:-1]  # its last letter dropped
        result = llm_cli("imagen4", typo)
        assert result.exit_code == 1, name
        assert f"Did you mean llm imagen4 {name}?" in result.stderr
    nothing_happened(new_machine)


def test_a_command_added_later_is_recognised_too(new_machine):
    """The names are read from the group when the command line is read."""
    script = (
        "import click, sys\n"
        "from llm_imagen4.cli import imagen4\n"
        "imagen4.add_command(click.Command('balance', callback=lambda: None))\n"
        "from llm.cli import cli\n"
        "cli(sys.argv[1:])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, "imagen4", "balanse"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr == (
        "Error: Did you mean llm imagen4 balance? To make an image of that "
        "word: llm imagen4 generate balanse\n"
    )
    nothing_happened(new_machine)


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "histroy"],
        ["sunset"],
        ["histroy lesson"],
    ],
    ids=["the long form", "a word near no command", "two words"],
)
def test_other_prompts_are_sent(fake, llm_cli, args):
    result = llm_cli("imagen4", *args)
    assert result.exit_code == 0, result.output
    [request] = fake.generations
    assert request.body["prompt"] == args[-1]
