"""Saving images: where they go, what they are called, and how they are
written. Each image is streamed to a temporary file in its folder, checked to
be a whole image of a size an image can have, given its provenance, and only
then linked into the first free name, so no file is ever overwritten or left
half-written under a real name. Files get the mode any new file gets (0666 less the umask)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import tempfile
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import llm

from . import images

# A name that fits in any file system's 255-byte limit with room for a suffix.
SLUG_MAX_BYTES = 80
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
PART_PREFIX = ".imagen4-"
PART_SUFFIX = ".part"
# Temporary files older than this were left by a process that was killed.
STALE_PART_SECONDS = 3600


class SaveError(llm.ModelError):
    pass


class TooLarge(ValueError):
    """An image over the size cap: refused whenever it is fetched."""


@dataclass(frozen=True)
class SavedFile:
    path: Path
    sha256: str
    bytes: int
    width: int
    height: int
    content_type: str
    sidecar: Path | None = None
    c2pa: bool = False

    @classmethod
    def of(
        cls,
        path: Path,
        sha256: str,
        size: int,
        kind: images.ImageType,
        sidecar: Path | None,
        c2pa: bool,
    ) -> SavedFile:
        return cls(
            path,
            sha256,
            size,
            kind.width,
            kind.height,
            kind.content_type,
            sidecar,
            c2pa,
        )


def sidecar_of(image: Path) -> Path:
    """Where an image's record goes when the image cannot hold it."""
    return image.with_name(image.name + ".json")


@dataclass(frozen=True)
class Ready:
    """A temporary image made ready to be named: the file to link, and the
    sidecar to write beside it (a function of the image's final path)."""

    path: Path
    sidecar: Callable[[Path, str], bytes] | None = None
    c2pa: bool = False


def meta_of(tmp: Path) -> Path:
    """The temporary file an image's provenance is written into, beside the
    temporary file it arrived in."""
    return tmp.with_name(tmp.name + ".meta" + tmp.suffix)


def _stream(chunks: Iterable[bytes], out, max_bytes: int) -> bytes:
    """Write ``chunks`` to ``out`` within ``max_bytes``; the first 64 KiB,
    which tell what the image is."""
    size, head = 0, b""
    for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge(f"the image is larger than {max_bytes // (1024 * 1024)} MB")
        if len(head) < 65536:
            head += chunk[: 65536 - len(head)]
        out.write(chunk)
    return head


def slugify(text: str) -> str:
    """A readable file name stem from any prompt: words joined by hyphens,
    lower case, no separators or control characters, at most SLUG_MAX_BYTES."""
    words = re.findall(r"\w+", unicodedata.normalize("NFKC", text).lower())
    slug = ""
    for word in words:
        candidate = f"{slug}-{word}" if slug else word
        if len(candidate.encode("utf-8")) > SLUG_MAX_BYTES:
            if not slug:
                # One very long word: cut it by characters.
                while len(candidate.encode("utf-8")) > SLUG_MAX_BYTES:
                    candidate = candidate[:-1]
                slug = candidate
            break
        slug = candidate
    slug = slug.strip("_")
    return slug or "image"


def new_file(folder: Path, prefix: str = PART_PREFIX, suffix: str = PART_SUFFIX):
    """A new temporary file in ``folder``, open for writing, made with the
    mode any new file gets. Its name carries the writing process's id, so
    that a sweep can tell a killed writer's file from a running one's."""
    while True:
        path = folder / f"{prefix}{os.getpid()}-{secrets.token_hex(8)}{suffix}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        return path, os.fdopen(fd, "wb")


def write_new(path: Path, data: bytes) -> None:
    """Write a file that must not exist yet."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def digest(path: Path, sync: bool = True) -> tuple[str, int]:
    """The sha256 and size of a file, synced to disk on the way unless
    ``sync`` is false."""
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(1024 * 1024):
            sha.update(block)
            size += len(block)
        if sync:
            os.fsync(f.fileno())
    return sha.hexdigest(), size


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable(folder: Path, shown: str) -> None:
    """Check that the folder, or the nearest one of its parents that exists,
    takes a new file: by making one, at once removed, as permissions alone
    do not tell (a read-only or special file system, root)."""
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise SaveError(f"Cannot save to {shown}: {existing} is not a folder")
    try:
        tempfile.TemporaryFile(dir=existing, prefix=PART_PREFIX).close()
    except OSError:
        raise SaveError(f"Cannot save to {shown}: {existing} is not writable") from None


def remove_stale_parts(folder: Path, now: float | None = None) -> None:
    """Remove temporary files that a killed process left in ``folder``: any
    older than an hour, and at once those of an image that already has its
    name (its temporary file is a second hard link of it) whose writer is
    no longer running: that file, and the one the image arrived in."""
    cutoff = (now or time.time()) - STALE_PART_SECONDS
    try:
        found = list(folder.glob(f"{PART_PREFIX}*{PART_SUFFIX}"))
    except OSError:
        return
    leftovers = {path: stat for path in found if (stat := _lstat(path)) is not None}
    named = {
        path
        for path, stat in leftovers.items()
        if stat.st_nlink > 1 and _orphaned(path)
    }
    for path, stat in leftovers.items():
        if stat.st_mtime < cutoff or path in named or meta_of(path) in named:
            with contextlib.suppress(OSError):
                path.unlink()


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return path.lstat()
    except OSError:
        return None


def _orphaned(part: Path) -> bool:
    """Whether the process named in a temporary file's name has ended."""
    pid = part.name[len(PART_PREFIX) :].partition("-")[0]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


@dataclass
class Destination:
    """Where one generation's images go: a folder and a name stem. ``plan``
    only checks; nothing is created until there are images to save."""

    folder: Path
    stem: str
    # Temporary files being written now, dropped if the process is stopped.
    _partial: set[Path] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # Set once the process is stopping: no new file is started, none named.
    _stopped: bool = field(default=False, repr=False)

    @classmethod
    def into(cls, folder: Path, prompt: str, shown: str | None = None) -> Destination:
        _check_writable(folder, shown or str(folder))
        return cls(folder, slugify(prompt))

    @classmethod
    def plan(cls, output: str | None, prompt: str, count: int) -> Destination:
        if not output:
            return cls.into(Path.cwd(), prompt)
        path = Path(output).expanduser().absolute()
        if path.is_dir():
            return cls.into(path, prompt, output)
        if path.exists():
            if count > 1:
                raise SaveError(
                    f"{output} is a file; give a folder to save {count} images"
                )
            raise SaveError(f"{output} already exists; it will not be overwritten")
        if path.suffix.lower() in IMAGE_SUFFIXES:
            if count > 1:
                raise SaveError(
                    f"{output} names one file; give a folder to save {count} images"
                )
            _check_writable(path.parent, output)
            return cls(path.parent, path.stem)
        return cls.into(path, prompt, output)

    def create(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as ex:
            raise SaveError(f"Cannot create {self.folder}: {ex.strerror}") from None
        remove_stale_parts(self.folder)

    def discard_partial(self) -> None:
        """Remove the temporary files being written now, and start no more:
        the process is stopping, and a thread still saving must not leave a
        file the stop has already swept past."""
        with self._lock:
            self._stopped = True
            for tmp in self._partial:
                tmp.unlink(missing_ok=True)
                meta_of(tmp).unlink(missing_ok=True)

    def find(self, sha256: str, size: int | None = None) -> Path | None:
        """An image file of this destination (its stem, any image suffix)
        whose sha256 is ``sha256`` (and whose size is ``size``, which spares
        hashing the others): one named by a process that could not say so,
        stopped or unable to write its journal."""
        try:
            candidates = sorted(
                path
                for path in self.folder.iterdir()
                if path.name.startswith(self.stem)
                and path.suffix.lower() in IMAGE_SUFFIXES
                and (size is None or _size(path) == size)
            )
        except OSError:
            return None
        return next((path for path in candidates if same_bytes(path, sha256)), None)

    def _going(self) -> None:
        if self._stopped:
            raise SaveError("stopped before the image was saved")

    def _names(self, position: int, suffix: str) -> Iterator[Path]:
        if position == 0:
            yield self.folder / f"{self.stem}{suffix}"
        n = max(2, position + 1)
        while True:
            yield self.folder / f"{self.stem}-{n}{suffix}"
            n += 1

    def save(
        self,
        chunks: Iterable[bytes],
        position: int,
        finish: Callable[[Path, images.ImageType], Ready],
        max_bytes: int,
        naming: Callable[[str], None] | None = None,
        known: Callable[[str, int], SavedFile | None] | None = None,
    ) -> SavedFile:
        """Stream chunks to a temporary file, check that they are one whole
        image, let ``finish`` add its provenance, then link it into the
        first free name (with its sidecar, if any, claimed the same way).
        ``naming`` hears the finished file's sha256 just before it gets a
        name, so that a process stopped right after can be found out by
        ``find``. ``known`` may answer with a file already holding these
        very bytes: that file is the image, and no other is made. Every
        temporary file is gone when this returns or raises."""
        with self._lock:
            self._going()
            tmp, out = new_file(self.folder)
            self._partial.add(tmp)
        try:
            with out:
                head = _stream(chunks, out, max_bytes)
            kind = images.sniff(head)
            if not images.is_complete(tmp, kind.content_type):
                raise images.NotAnImage("the image arrived cut off")
            kind = images.measured(tmp, kind)
            finished = finish(tmp, kind)
            sha256, size = digest(finished.path)
            if known and (found := known(sha256, size)) is not None:
                return found
            if naming:
                naming(sha256)
            with self._lock:
                self._going()
            path, sidecar = self._place(finished, position, kind.suffix, sha256)
        finally:
            tmp.unlink(missing_ok=True)
            meta_of(tmp).unlink(missing_ok=True)
            with self._lock:
                self._partial.discard(tmp)
        return SavedFile.of(path, sha256, size, kind, sidecar, finished.c2pa)

    def _place(
        self,
        finished: Ready,
        position: int,
        suffix: str,
        sha256: str,
    ) -> tuple[Path, Path | None]:
        for candidate in self._names(position, suffix):
            if not _claim(finished.path, candidate):
                continue
            if finished.sidecar is None:
                return candidate, None
            sidecar = sidecar_of(candidate)
            try:
                write_new(sidecar, finished.sidecar(candidate, sha256))
            except FileExistsError:
                # The sidecar's name is taken: the image moves on with it.
                candidate.unlink()
                continue
            return candidate, sidecar
        raise AssertionError("unreachable")  # pragma: no cover


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def same_bytes(path: Path, sha256: str) -> bool:
    """Whether ``path`` is a file with these bytes."""
    try:
        return path.is_file() and digest(path, sync=False)[0] == sha256
    except OSError:
        return False


# What os.link raises where a file system has no hard links.
NO_LINKS = {errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}


def _claim(tmp: Path, candidate: Path) -> bool:
    """Give ``tmp`` the name ``candidate`` if that name is free."""
    try:
        os.link(tmp, candidate)
        return True
    except FileExistsError:
        return False
    except OSError as ex:
        if ex.errno not in NO_LINKS:
            raise
    # No hard links here: reserve the name with an exclusive create, then
    # move a copy of the finished file over it. A failure on the way gives
    # the name back.
    try:
        os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except FileExistsError:
        return False
    copy, out = new_file(candidate.parent)
    try:
        with open(tmp, "rb") as src, out:
            while block := src.read(1024 * 1024):
                out.write(block)
        os.replace(copy, candidate)
    except BaseException:
        copy.unlink(missing_ok=True)
        candidate.unlink(missing_ok=True)
        raise
    return True
