"""The recovery journal: generations the API has answered whose images are
not all saved yet, kept outside the logs database, one small file per
generation in a folder of llm's user directory.

An entry is written before the request goes out (so that a lost answer can
be asked about), again the moment the answer arrives, before the first byte
of any image is fetched, and again just before each image is named and once
it is, so that a crash, a Ctrl-C or a full disk leaves what ``llm imagen4
download`` needs to finish the job without paying again or saving twice. It
holds the image URLs (images that came inline are kept beside it until
saved), the request, and where llm logs the turn; never the key. It is
removed when every image is saved and the turn logged, so the prompt stays
there only while the images download.

Each entry has a lock file: the process working on a generation holds it,
so that two processes never save the same image twice. Whoever takes the
lock removes the temporary files a process killed while writing the entry
left behind.

What the folder holds is read as untrusted: an entry's id must be a turn id
as llm makes them (a ULID), every file is opened without following a
symlink and must be a regular file, and no file name is ever a pattern
made from an id."""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import llm
from pydantic import BaseModel, ConfigDict, ValidationError

from .record import GenerationRecord

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locks between processes
    fcntl = None  # type: ignore[assignment]

SUFFIX = ".json"
# A turn id as llm makes them: a ULID, 26 letters of Crockford's base 32.
TURN_ID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}", re.IGNORECASE)
# What ``_write_private`` writes before renaming: ``.ID.json.HEX.tmp`` and
# ``.ID-N.img.HEX.tmp``.
TEMPORARY = re.compile(
    r"^\.(?P<id>[0-9a-z]{26})(?:-\d+\.img|\.json)\.[0-9a-f]+\.tmp$", re.IGNORECASE
)
# An image that came inline, kept until it is saved: ``ID-N.img``.
STASHED = re.compile(r"^(?P<id>[0-9a-z]{26})-(?P<position>\d+)\.img$", re.IGNORECASE)
# The most an entry may hold: a record of four images is a few kB.
ENTRY_CAP = 1024 * 1024
NO_FOLLOW = os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0)


class NotATurnId(llm.ModelError):
    """A name that is no turn id: no entry of the journal has it."""


def turn_id(text: str) -> str:
    """``text`` if it is a turn id as llm makes them; NotATurnId if not."""
    if not TURN_ID.fullmatch(text):
        raise NotATurnId(f"{text!r} is not a generation id")
    return text


class Entry(BaseModel):
    """One unfinished generation."""

    model_config = ConfigDict(extra="ignore")

    id: str
    model: str
    # prepared: about to be sent, and nothing has gone out. sent: an
    # attempt went out and no answer has come back (yet), so only the
    # API's log can tell what became of it. answered: the API's answer
    # is here.
    outcome: Literal["prepared", "sent", "answered"] = "answered"
    # The request and where its images go (no images yet until answered).
    record: GenerationRecord | None = None
    client_request_id: str | None = None
    # The logs database llm logs this generation's turn to; None for none.
    log_to: str | None = None
    created_utc: str
    # When the first and the last attempt went out, and how many did.
    sent_utc: str | None = None
    last_sent_utc: str | None = None
    attempts: int = 0
    # The API's id of the answer, once its headers arrived.
    inference_id: str | None = None


def folder() -> Path:
    return llm.user_dir() / "imagen4" / "unfinished"


def now_utc() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


def _write_private(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: a temporary file readable by the
    user alone, synced, then renamed over it."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class Claim:
    """An entry this process holds the lock of: it alone may save its images,
    rewrite it or remove it."""

    def __init__(self, generation_id: str, lock_fd: int | None):
        self.id = turn_id(generation_id)
        self._lock_fd = lock_fd
        self.path = folder() / f"{generation_id}{SUFFIX}"

    def load(self) -> Entry | None:
        """The entry, if there is one that is whole and its own: a file that
        is not a regular one, is too large, or names another id is none."""
        try:
            data = _read_regular(self.path, ENTRY_CAP)
            entry = Entry.model_validate_json(data)
        except (OSError, ValueError, ValidationError):
            return None
        return entry if entry.id == self.id else None

    def write(self, entry: Entry) -> None:
        _write_private(self.path, entry.model_dump_json().encode("utf-8"))

    def stash(self, position: int, data: bytes) -> Path:
        """Keep an image that came inline until it is saved."""
        path = self.stashed(position)
        _write_private(path, data)
        return path

    def stashed(self, position: int) -> Path:
        return folder() / f"{self.id}-{position}.img"

    def remove(self) -> None:
        """The generation is finished: forget it, and the images kept for it
        (found by their names' id, compared, never by a pattern)."""
        with contextlib.suppress(OSError):
            for path in folder().iterdir():
                kept = STASHED.match(path.name)
                if kept and kept["id"] == self.id:
                    path.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)
        self.release(remove_lock=True)

    def release(self, remove_lock: bool = False) -> None:
        if remove_lock:
            (folder() / f"{self.id}.lock").unlink(missing_ok=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _read_regular(path: Path, cap: int) -> bytes:
    """At most ``cap`` bytes of ``path``, a regular file opened without
    following a symlink or waiting on a FIFO; ValueError past the cap."""
    fd = os.open(path, os.O_RDONLY | NO_FOLLOW)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError(f"{path.name} is not a regular file")
        data = f.read(cap + 1)
    if len(data) > cap:
        raise ValueError(f"{path.name} is larger than any entry")
    return data


def claim(generation_id: str) -> Claim | None:
    """The lock of an entry, or None while another process holds it.
    NotATurnId for a name that is no turn id; OSError for a lock that is
    not a regular file (a symlink is never followed)."""
    turn_id(generation_id)
    if fcntl is None:  # pragma: no cover
        return Claim(generation_id, None)
    folder().mkdir(parents=True, exist_ok=True)
    fd = os.open(
        folder() / f"{generation_id}.lock",
        os.O_RDWR | os.O_CREAT | NO_FOLLOW,
        0o600,
    )
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{generation_id}.lock is not a regular file")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    _drop_temporary(generation_id)
    return Claim(generation_id, fd)


def _drop_temporary(generation_id: str) -> None:
    """Remove what a process killed while writing this entry left: only the
    holder of its lock writes it, and that is now the caller."""
    with contextlib.suppress(OSError):
        for path in folder().iterdir():
            temporary = TEMPORARY.match(path.name)
            if temporary and temporary["id"] == generation_id:
                path.unlink(missing_ok=True)


def sweep() -> None:
    """Remove the temporary files of entries that were never written whole
    (a process killed while writing the first), which no claim would
    otherwise come back to."""
    with contextlib.suppress(OSError):
        for path in folder().iterdir():
            temporary = TEMPORARY.match(path.name)
            if not temporary or (folder() / f"{temporary['id']}{SUFFIX}").exists():
                continue
            held = claim(temporary["id"])
            if held is not None:
                held.release(
                    remove_lock=not (folder() / f"{temporary['id']}{SUFFIX}").exists()
                )


def ids() -> list[str]:
    """The unfinished generations, oldest first: the entries named by a
    turn id (a file of any other name is not the journal's)."""
    with contextlib.suppress(OSError):
        return sorted(
            path.name.removesuffix(SUFFIX)
            for path in folder().iterdir()
            if path.name.endswith(SUFFIX)
            and TURN_ID.fullmatch(path.name.removesuffix(SUFFIX))
        )
    return []


def load(generation_id: str) -> Entry | None:
    """An entry as it is now, without taking its lock; None for a name that
    is no turn id."""
    if not TURN_ID.fullmatch(generation_id):
        return None
    return Claim(generation_id, None).load()


@contextlib.contextmanager
def claimed(generation_id: str) -> Iterator[Claim | None]:
    held = claim(generation_id)
    try:
        yield held
    finally:
        if held is not None:
            held.release()
