"""A true llm process with its standard output and/or standard error on a
pseudo-terminal, as a terminal user has them, the others piped."""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass
from pathlib import Path

# What the test's own terminal may set, which would decide for the process.
TERMINAL_VARIABLES = ("TERM", "TERM_PROGRAM", "KITTY_WINDOW_ID", "TMUX")


@dataclass
class Ran:
    returncode: int
    terminal: bytes  # what the process wrote to the terminal
    stdout: bytes  # what it wrote to the pipe, when stdout was not the terminal
    stderr: bytes  # likewise


def run_llm(
    folder: Path,
    *args: str,
    terminal: dict[str, str],
    stdout_tty: bool = True,
    stderr_tty: bool = False,
    window: tuple[int, int, int, int] = (24, 80, 0, 0),
    timeout: float = 60.0,
) -> Ran:
    """Run ``llm ARGS`` in ``folder`` with ``terminal``'s variables, the
    terminal ``window`` (rows, columns, width and height in pixels), and
    read everything it writes until it ends."""
    env = {k: v for k, v in os.environ.items() if k not in TERMINAL_VARIABLES}
    env.update(terminal)
    main, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", *window))
    pipes = {}
    ends = {}
    for name, on_tty in (("stdout", stdout_tty), ("stderr", stderr_tty)):
        if on_tty:
            ends[name] = secondary
        else:
            pipes[name], ends[name] = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llm", *args],
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=ends["stdout"],
        stderr=ends["stderr"],
    )
    for fd in {secondary, *ends.values()}:
        os.close(fd)
    read = {main: b"", **{fd: b"" for fd in pipes.values()}}
    open_fds = set(read)
    deadline = time.monotonic() + timeout
    try:
        while open_fds:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"llm {' '.join(args)} did not end in time")
            ready, _, _ = select.select(list(open_fds), [], [], left)
            for fd in ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError as ex:
                    # A terminal's main side says EIO once the process closed it.
                    if ex.errno != errno.EIO:
                        raise
                    chunk = b""
                if chunk:
                    read[fd] += chunk
                else:
                    open_fds.discard(fd)
        returncode = proc.wait(max(0.0, deadline - time.monotonic()))
    finally:
        proc.kill()
        for fd in read:
            os.close(fd)
    return Ran(
        returncode,
        read[main],
        read[pipes["stdout"]] if "stdout" in pipes else b"",
        read[pipes["stderr"]] if "stderr" in pipes else b"",
    )
