"""A command line that forgives llm habits: ``-o name value``."""

from pathlib import Path

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
