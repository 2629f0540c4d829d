"""Drawing saved images in the terminal, with kitty's graphics protocol
(kitty, WezTerm, Ghostty) or iTerm2's inline images.

Both take the file's bytes as they are (kitty only a PNG's), so nothing is
decoded here. Escape sequences go to a terminal only, never into a pipe or
a file: standard output when it is one, else standard error."""

from __future__ import annotations

import base64
import os
import struct
import sys
from collections.abc import Mapping
from typing import TextIO

from . import images
from .terminal import notify

KITTY = "kitty"
ITERM2 = "iTerm2"
# The most of one file that is drawn: an Imagen 4 PNG is 1 to 2 MB.
MAX_BYTES = 32 * 1024 * 1024
# kitty takes base64 in chunks of at most 4096 bytes (each but the last a
# multiple of 4).
CHUNK = 4096
# The formats kitty's protocol does not take, as they are named.
OTHER_FORMATS = {"image/jpeg": "JPEG", "image/webp": "WebP"}
# The terminals that draw, for the line that says a terminal does not.
DRAWING_TERMINALS = "kitty, WezTerm, Ghostty and iTerm2"


def protocol(environ: Mapping[str, str]) -> str | None:
    """The protocol the terminal in ``environ`` speaks, if any.

    tmux and screen pass no images on, whatever terminal they run in and
    whatever ``TERM`` they were told to set, so they are ruled out first.
    ``TERM`` is set by the terminal the program runs in, so it is read next;
    then ``TERM_PROGRAM``; and last kitty's ``KITTY_WINDOW_ID``, which
    anything started from kitty inherits, other terminals included."""
    term = environ.get("TERM", "")
    program = environ.get("TERM_PROGRAM", "")
    if environ.get("TMUX") or program == "tmux" or term.startswith(("screen", "tmux")):
        return None
    if term in ("xterm-kitty", "xterm-ghostty"):
        return KITTY
    if program == "iTerm.app":
        return ITERM2
    if program in ("WezTerm", "ghostty") or environ.get("KITTY_WINDOW_ID"):
        return KITTY
    return None


def _target(json_: bool) -> TextIO | None:
    """Where to draw: standard output when it is a terminal (unless it
    carries JSON), else standard error when that is one."""
    if not json_ and sys.stdout.isatty():
        return sys.stdout
    if sys.stderr.isatty():
        return sys.stderr
    return None


def _window(fd: int) -> tuple[int, int, int, int]:
    """The terminal's columns, rows, and width and height in pixels (0 when
    the terminal does not say)."""
    try:
        import fcntl
        import termios

        rows, cols, width, height = struct.unpack(
            "HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(8))
        )
    except (ImportError, OSError):
        cols, rows = os.get_terminal_size(fd)
        width = height = 0
    return cols or 80, rows, width, height


def fit(
    image_width: int, image_height: int, window: tuple[int, int, int, int]
) -> tuple[int, int | None]:
    """The columns and rows the image takes: the terminal's width, or fewer
    for an image narrower than that, and the rows that keep its aspect ratio.
    Both only when the terminal tells its size in pixels; else the width,
    and no rows (the terminal works them out)."""
    cols, rows, width, height = window
    if not (width and height and rows and image_width and image_height):
        return cols, None
    cell_width, cell_height = width / cols, height / rows
    taken = max(1, min(cols, int(image_width / cell_width)))
    high = taken * cell_width * image_height / image_width / cell_height
    return taken, max(1, round(high))


def kitty(data: bytes, cols: int, rows: int | None) -> bytes:
    """A PNG as kitty's graphics protocol takes it: transmitted and shown
    (``a=T``), as PNG (``f=100``), ``cols`` wide and ``rows`` high, with no
    answer from the terminal (``q=2``: it would arrive as typed input).
    The rows are given when known: some versions of kitty (0.26, for one)
    and of WezTerm keep an image's own height when given only its width."""
    payload = base64.standard_b64encode(data)
    chunks = [payload[i : i + CHUNK] for i in range(0, len(payload), CHUNK)]
    size = f"c={cols}," + (f"r={rows}," if rows else "")
    out = []
    for n, chunk in enumerate(chunks):
        keys = f"a=T,f=100,q=2,{size}" if n == 0 else ""
        more = 1 if n < len(chunks) - 1 else 0
        out.append(b"\x1b_G%sm=%d;%s\x1b\\" % (keys.encode(), more, chunk))
    return b"".join(out)


def iterm2(data: bytes, cols: int, name: str) -> bytes:
    """A file as iTerm2's inline images take it: ``cols`` cells wide, its
    aspect ratio kept."""
    encoded_name = base64.standard_b64encode(os.fsencode(name)).decode()
    args = (
        f"name={encoded_name};size={len(data)};width={cols};"
        "preserveAspectRatio=1;inline=1"
    )
    return b"\x1b]1337;File=%s:%s\x07" % (
        args.encode(),
        base64.standard_b64encode(data),
    )


def _read(path: str) -> bytes:
    """The file's bytes: a regular file only, and at most MAX_BYTES."""
    with os.fdopen(images.open_regular(path), "rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise OSError(f"{path} is over {MAX_BYTES // (1024 * 1024)} MB")
    return data


def draw(paths: list[str], *, json_: bool = False) -> None:
    """Draw each image at ``paths`` in the terminal; a line on standard error
    for each that cannot be, or one line when none can."""
    if not paths:
        return
    stream = _target(json_)
    if stream is None:
        if json_ and sys.stdout.isatty():
            notify(
                "No preview: --json output is not mixed with images, "
                "and standard error is not a terminal"
            )
        else:
            notify("No preview: standard output and standard error are not terminals")
        return
    spoken = protocol(os.environ)
    if spoken is None:
        notify(f"No preview: this terminal draws no images; {DRAWING_TERMINALS} do")
        return
    window = _window(stream.fileno())
    for path in paths:
        try:
            data = _read(path)
            kind = images.sniff(data[:65536])
        except OSError as ex:
            notify(
                f"Not drawn: {path}: {ex.strerror}"
                if ex.strerror
                else f"Not drawn: {ex}"
            )
            continue
        except images.NotAnImage:
            notify(f"Not drawn: {path} is not a PNG, JPEG or WebP image")
            continue
        cols, rows = fit(kind.width, kind.height, window)
        if spoken == ITERM2:
            sequence = iterm2(data, cols, os.path.basename(path))
        elif kind.content_type == "image/png":
            sequence = kitty(data, cols, rows)
        else:
            notify(
                f"Not drawn: {path} is a {OTHER_FORMATS[kind.content_type]}, and "
                "kitty's graphics protocol takes only PNG as it is"
            )
            continue
        stream.flush()
        # The cursor is left on the image's last row, after it.
        stream.buffer.write(sequence + b"\n")
        stream.buffer.flush()
