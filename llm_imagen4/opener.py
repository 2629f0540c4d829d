"""Opening saved images in the system's viewer, quietly.

The opener (``xdg-open``, macOS's ``open``) is run with its output thrown
away: when it finds no viewer it writes a page of its own attempts, which
says less than one line of ours."""

from __future__ import annotations

import os
import subprocess
import sys
import time

# Seconds to wait for the opener's verdict. One that is still running by
# then (some wait for the viewer to close) has found a viewer.
VERDICT_WAIT = 2.0


def launch(paths: list[str]) -> str | None:
    """Open each of ``paths``; None when all were opened, else one line why
    not."""
    if not paths:
        return None
    saved = "the image is saved" if len(paths) == 1 else "the images are saved"
    if sys.platform == "win32":
        try:
            for path in paths:
                os.startfile(path)  # type: ignore[attr-defined]
        except OSError as ex:
            return f"Not opened: {ex.strerror}; {saved}"
        return None
    program = "open" if sys.platform == "darwin" else "xdg-open"
    try:
        openers = [
            subprocess.Popen(
                [program, path],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                # A Ctrl-C meant for llm leaves the viewer open.
                start_new_session=True,
            )
            for path in paths
        ]
    except FileNotFoundError:
        return f"Not opened: there is no {program} here; {saved}"
    except OSError as ex:
        return f"Not opened: {program}: {ex.strerror}; {saved}"
    deadline = time.monotonic() + VERDICT_WAIT
    failed = []
    for opener in openers:
        try:
            status = opener.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            continue
        if status:
            failed.append(status)
    if not failed:
        return None
    which = "the image" if len(paths) == 1 else f"{len(failed)} of the images"
    return (
        f"Not opened: {program} could not open {which} "
        f"(exit status {failed[0]}); {saved}"
    )
