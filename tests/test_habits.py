"""A command line that forgives llm habits: ``-o name value``, a command's
name mistyped as a prompt, --open with no viewer, and batch's paths beside
its progress bar on a terminal."""

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from llm_imagen4 import flags

from .conftest import poll
from .ptys import run_llm

ROUTES = {
    "default": ["a cat"],
    "generate": ["generate", "a cat"],
    "rerun": ["rerun", "01jq7m2v0c8ns1xkd9y0a5e4bq"],
    "batch": ["batch", "prompts.txt"],
}
BOOLEAN = {
    name
    for name, field in flags.OPTION_FIELDS.items()
    if field.annotation == bool | None
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


@pytest.mark.parametrize("name", flags.OPTION_FIELDS)
def test_every_option_given_with_o_is_named_as_its_flag(new_machine, llm_cli, name):
    value = "true" if name in BOOLEAN else "x y"
    result = llm_cli("imagen4", "a cat", "-o", name, value)
    assert result.exit_code == 1
    suggested = flags.flag(name) + ("" if name in BOOLEAN else " 'x y'")
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
    from llm_imagen4.cli import imagen4

    names = imagen4.list_commands(click.Context(imagen4))
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


@pytest.fixture
def opener(fake, tmp_path, monkeypatch):
    """A PATH whose xdg-open is the script given, or none at all."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))

    def install(script: str | None) -> Path:
        if script is not None:
            path = folder / "xdg-open"
            path.write_text("#!/bin/sh\n" + script)
            path.chmod(0o755)
        return tmp_path

    return install


linux_only = pytest.mark.skipif(
    sys.platform != "linux", reason="xdg-open is the opener on Linux"
)


@linux_only
def test_open_opens_each_saved_image(opener, llm_cli):
    folder = opener('printf "%s\\n" "$1" >> "${0%/*}/../opened"\n')
    result = llm_cli("imagen4", "two", "-n", "2", "--open")
    assert result.exit_code == 0
    assert result.stderr == ""
    opened = folder / "opened"
    # Each image has an opener of its own, all at once.
    poll(lambda: opened.exists() and len(opened.read_text().splitlines()) == 2)
    assert sorted(opened.read_text().splitlines()) == sorted(result.stdout.splitlines())


@linux_only
def test_open_with_no_viewer_says_one_line_of_its_own(opener, llm_cli, capfd):
    noise = "".join(
        f'echo "xdg-open: attempt {i} failed" >&{i % 2 + 1}\n' for i in range(7)
    )
    folder = opener(noise + ': > "${0%/*}/../ran"\nexit 3\n')
    result = llm_cli("imagen4", "a cat", "--open")
    assert result.exit_code == 0
    assert (folder / "ran").exists()
    assert result.stdout.splitlines() == [str(Path.cwd() / "a-cat.png")]
    assert result.stderr == (
        "Not opened: xdg-open could not open the image (exit status 3); "
        "the image is saved\n"
    )
    # Nothing of the opener's own reached the terminal.
    assert "attempt" not in "".join(capfd.readouterr())


@linux_only
def test_open_with_no_opener_at_all_says_so(opener, llm_cli):
    opener(None)
    result = llm_cli("imagen4", "a cat", "-n", "2", "--open")
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 2
    assert result.stderr == (
        "Not opened: there is no xdg-open here; the images are saved\n"
    )


def screen(shown: bytes) -> list[str]:
    """What a terminal shows after ``shown``: lines, carriage returns,
    erasing to the end of the line; other controls change nothing shown."""
    rows, row, column = [[]], 0, 0
    for token in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]|.", shown.decode(), flags=re.S):
        if token == "\n":
            row, column = row + 1, 0
            if row == len(rows):
                rows.append([])
        elif token == "\r":
            column = 0
        elif token == "\x1b[K":
            del rows[row][column:]
        elif token.startswith("\x1b"):
            continue  # hiding and showing the cursor
        else:
            line = rows[row]
            line[column : column + 1] = [token]
            column += 1
    return ["".join(line) for line in rows]


def test_batch_prints_each_path_on_its_own_line_above_the_bar(fake):
    prompts = fake.work / "prompts.txt"
    prompts.write_text("one\ntwo\nthree\n")
    ran = run_llm(
        fake.work,
        *("imagen4", "batch", str(prompts), "-j", "1"),
        terminal={"TERM": "xterm-256color"},
        stdout_tty=True,
        stderr_tty=True,
    )
    assert ran.returncode == 0, ran.terminal
    *paths, bar, summary, end = screen(ran.terminal)
    assert paths == [str(fake.work / f"{p}.png") for p in ("one", "two", "three")]
    assert bar.startswith("Generating  [####") and "3/3" in bar and "100%" in bar
    assert summary.startswith("3 rows: 3 generated") and end == ""
    assert "\x1b" not in os.fsdecode(ran.stdout)
