"""--preview: each saved image drawn in the terminal, with kitty's graphics
protocol or iTerm2's inline images, by true llm processes whose standard
output and/or standard error is a pseudo-terminal."""

import base64
import json
import os
import re
from pathlib import Path

import pytest

from llm_imagen4 import preview

from .conftest import history
from .fake_api import jpeg
from .ptys import run_llm

KITTY = {"TERM": "xterm-kitty"}
WEZTERM = {"TERM": "xterm-256color", "TERM_PROGRAM": "WezTerm"}
ITERM2 = {"TERM": "xterm-256color", "TERM_PROGRAM": "iTerm.app"}
NO_IMAGES = {"TERM": "xterm-256color"}
KITTY_CHUNK = re.compile(rb"\x1b_G([^;\x1b]*);([^\x1b]*)\x1b\\")
ITERM2_FILE = re.compile(rb"\x1b\]1337;File=([^:\x07]*):([^\x07]*)\x07")


def kitty_images(shown: bytes) -> list[tuple[dict[str, str], bytes, int]]:
    """Each image in kitty's protocol: its first chunk's keys, the bytes it
    carries, and in how many chunks; each chunk as the protocol wants it."""
    found: list[tuple[dict[str, str], bytes, int]] = []
    keys: dict[str, str] | None = None
    payload, chunks = b"", 0
    for control, chunk in KITTY_CHUNK.findall(shown):
        fields = dict(pair.split("=", 1) for pair in control.decode().split(","))
        assert len(chunk) <= 4096
        if keys is None:
            keys = fields
        else:
            assert set(fields) == {"m"}  # later chunks carry only m
        payload += chunk
        chunks += 1
        if fields["m"] == "0":
            del keys["m"]
            found.append((keys, base64.b64decode(payload, validate=True), chunks))
            keys, payload, chunks = None, b"", 0
        else:
            assert fields["m"] == "1" and len(chunk) % 4 == 0
    assert keys is None, "an image's last chunk is missing"
    return found


def iterm2_images(shown: bytes) -> list[tuple[dict[str, str], bytes]]:
    return [
        (
            dict(pair.split("=", 1) for pair in args.decode().split(";")),
            base64.b64decode(data, validate=True),
        )
        for args, data in ITERM2_FILE.findall(shown)
    ]


def lines(shown: bytes) -> list[str]:
    """The lines of text a terminal got, with the images taken out."""
    text = ITERM2_FILE.sub(b"", KITTY_CHUNK.sub(b"", shown)).decode()
    return [line for line in text.replace("\r\n", "\n").split("\n") if line]


@pytest.fixture
def made(fake, generate, llm_cli):
    """A generation in the history: its id and its saved paths."""

    def make(*args: str) -> tuple[str, list[str]]:
        paths = generate(*args)
        return history(llm_cli)[0]["id"], paths

    return make


def test_show_preview_draws_the_saved_png_with_kittys_protocol(fake, made):
    generation_id, [path] = made("a lighthouse at dawn", "-r", "16:9")
    ran = run_llm(
        fake.work,
        *("imagen4", "show", generation_id, "--preview"),
        terminal=KITTY,
        window=(40, 120, 0, 0),
    )
    assert ran.returncode == 0, ran.stderr
    [(keys, data, chunks)] = kitty_images(ran.terminal)
    assert data == Path(path).read_bytes()
    assert chunks > 1
    # Transmitted and shown, as PNG, no answer, as wide as the terminal.
    assert keys == {"a": "T", "f": "100", "q": "2", "c": "120"}
    shown = lines(ran.terminal)
    assert f"id: {generation_id}" in shown and f"  path: {path}" in shown
    assert ran.stderr == b""


def test_a_generation_with_preview_draws_each_image_with_iterm2s(fake):
    # 200 columns of 20 pixels: a 1024-pixel image takes 51, not upscaled.
    ran = run_llm(
        fake.work,
        *("imagen4", "two herons", "-n", "2", "--preview"),
        terminal=ITERM2,
        window=(50, 200, 4000, 1000),
    )
    assert ran.returncode == 0, ran.stderr
    paths = [str(fake.work / "two-herons.png"), str(fake.work / "two-herons-2.png")]
    # The paths first, as without --preview, then the images in their order.
    assert lines(ran.terminal) == paths
    assert ran.terminal.index(paths[1].encode()) < ran.terminal.index(b"\x1b]1337")
    drawn = iterm2_images(ran.terminal)
    assert [data for _, data in drawn] == [Path(p).read_bytes() for p in paths]
    for (args, data), path in zip(drawn, paths, strict=True):
        assert args == {
            "name": base64.b64encode(Path(path).name.encode()).decode(),
            "size": str(len(data)),
            "width": "51",
            "preserveAspectRatio": "1",
            "inline": "1",
        }
    assert ran.stderr == b""


def test_with_stdout_a_pipe_the_image_goes_to_the_terminal_on_stderr(fake):
    ran = run_llm(
        fake.work,
        *("imagen4", "a kite", "--preview"),
        terminal=WEZTERM,
        stdout_tty=False,
        stderr_tty=True,
        window=(30, 90, 900, 600),
    )
    assert ran.returncode == 0, ran.terminal
    path = fake.work / "a-kite.png"
    assert ran.stdout == f"{path}\n".encode()
    [(keys, data, _)] = kitty_images(ran.terminal)
    assert data == path.read_bytes()
    # Cells of 10 by 20 pixels: 90 columns, and the rows that keep it square.
    assert (keys["c"], keys["r"]) == ("90", "45")
    assert lines(ran.terminal) == []


def test_with_no_terminal_nothing_is_drawn_and_one_line_says_so(fake):
    ran = run_llm(
        fake.work,
        *("imagen4", "a kite", "--preview"),
        terminal=KITTY,
        stdout_tty=False,
        stderr_tty=False,
    )
    assert ran.returncode == 0
    assert ran.stdout == f"{fake.work / 'a-kite.png'}\n".encode()
    assert ran.stderr == (
        b"No preview: standard output and standard error are not terminals\n"
    )
    assert ran.terminal == b""


def test_a_terminal_that_draws_no_images_gets_one_line(fake, made):
    generation_id, [path] = made("a kite")
    ran = run_llm(
        fake.work,
        *("imagen4", "show", generation_id, "--preview"),
        terminal=NO_IMAGES,
    )
    assert ran.returncode == 0
    assert b"\x1b" not in ran.terminal and f"  path: {path}" in lines(ran.terminal)
    assert ran.stderr == (
        b"No preview: this terminal draws no images; "
        b"kitty, WezTerm, Ghostty and iTerm2 do\n"
    )


def test_json_on_a_terminal_is_never_mixed_with_images(fake, made):
    generation_id, [path] = made("a kite")
    ran = run_llm(
        fake.work,
        *("imagen4", "show", generation_id, "--json", "--preview"),
        terminal=KITTY,
    )
    assert ran.returncode == 0
    assert b"\x1b" not in ran.terminal
    assert json.loads(ran.terminal)["images"][0]["path"] == path
    assert ran.stderr == (
        b"No preview: --json output is not mixed with images, "
        b"and standard error is not a terminal\n"
    )


def test_kitty_is_sent_no_jpeg(fake, made):
    fake.fail_downloads(body=jpeg(1024, 1024))
    generation_id, [path] = made("a jpeg")
    assert path.endswith(".jpg")
    ran = run_llm(
        fake.work, *("imagen4", "show", generation_id, "--preview"), terminal=KITTY
    )
    assert ran.returncode == 0
    assert b"\x1b_G" not in ran.terminal
    assert ran.stderr.decode() == (
        f"Not drawn: {path} is a JPEG, and kitty's graphics protocol takes only "
        "PNG as it is\n"
    )


def test_only_a_regular_file_within_the_cap_is_drawn(fake, made):
    generation_id, paths = made("three", "-n", "3")
    fifo, big, kept = (Path(p) for p in paths)
    fifo.unlink()
    os.mkfifo(fifo)
    with big.open("r+b") as f:
        f.truncate(preview.MAX_BYTES + 1)  # still a PNG's first bytes
    ran = run_llm(
        fake.work, *("imagen4", "show", generation_id, "--preview"), terminal=KITTY
    )
    assert ran.returncode == 0
    [(_, data, _)] = kitty_images(ran.terminal)
    assert data == kept.read_bytes()
    assert ran.stderr.decode().splitlines() == [
        f"Not drawn: {fifo} is not a regular file",
        f"Not drawn: {big} is over 32 MB",
    ]


@pytest.mark.parametrize(
    ("environ", "spoken"),
    [
        ({"TERM": "xterm-kitty"}, "kitty"),
        ({"TERM": "xterm-256color", "KITTY_WINDOW_ID": "3"}, "kitty"),
        ({"TERM_PROGRAM": "WezTerm"}, "kitty"),
        ({"TERM_PROGRAM": "ghostty"}, "kitty"),
        ({"TERM": "xterm-ghostty"}, "kitty"),
        ({"TERM_PROGRAM": "iTerm.app"}, "iTerm2"),
        # kitty started from a shell in iTerm2 inherits its TERM_PROGRAM only.
        ({"TERM": "xterm-kitty", "TERM_PROGRAM": "iTerm.app"}, "kitty"),
        # tmux and screen pass no images on, whatever terminal they are in.
        ({"TERM": "tmux-256color", "KITTY_WINDOW_ID": "3"}, None),
        ({"TERM": "screen", "TERM_PROGRAM": "iTerm.app"}, None),
        ({"TMUX": "/tmp/tmux-0/default", "TERM_PROGRAM": "WezTerm"}, None),
        # tmux told to set TERM=xterm-kitty still passes no images on.
        ({"TMUX": "/tmp/tmux-0/default", "TERM": "xterm-kitty"}, None),
        ({"TERM_PROGRAM": "tmux", "TERM": "xterm-kitty"}, None),
        ({"TERM": "xterm-256color", "TERM_PROGRAM": "Apple_Terminal"}, None),
        ({}, None),
    ],
)
def test_the_protocol_comes_from_the_terminals_variables(environ, spoken):
    assert preview.protocol(environ) == spoken


def test_kitty_chunks_are_at_most_4096_bytes_and_whole_base64():
    data = os.urandom(10_000)
    [(keys, carried, chunks)] = kitty_images(preview.kitty(data, 7, None))
    assert carried == data and chunks == 4 and keys["c"] == "7"
