"""Saving images: where they go, what they are called, and how they are written
(to a temporary file in the target folder, then linked into a name that is
free, so no file is ever overwritten or left half-written)."""

from __future__ import annotations

import hashlib
import os
import re
import struct
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llm

from . import provenance

# A name that fits in any file system's 255-byte limit with room for a suffix.
SLUG_MAX_BYTES = 80
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


class SaveError(llm.ModelError):
    pass


class NotAnImage(SaveError):
    pass


@dataclass(frozen=True)
class SavedFile:
    path: Path
    sha256: str
    bytes: int
    width: int
    height: int
    content_type: str


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


def image_info(head: bytes) -> tuple[str, str, int, int]:
    """(content type, suffix, width, height) from an image's first bytes, or
    NotAnImage. PNG, JPEG and WebP are recognised by their magic bytes."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return "image/png", ".png", width, height
    if head.startswith(b"\xff\xd8\xff"):
        width, height = _jpeg_size(head)
        return "image/jpeg", ".jpg", width, height
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        width, height = _webp_size(head)
        return "image/webp", ".webp", width, height
    raise NotAnImage("The downloaded bytes are not a PNG, JPEG or WebP image")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + length
    return 0, 0


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return 0, 0


def _digest(path: Path) -> tuple[str, int]:
    """The sha256 and size of a file, synced to disk on the way."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(1024 * 1024):
            digest.update(block)
            size += len(block)
        os.fsync(f.fileno())
    return digest.hexdigest(), size


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
        tempfile.TemporaryFile(dir=existing, prefix=".imagen4-").close()
    except OSError:
        raise SaveError(f"Cannot save to {shown}: {existing} is not writable") from None


@dataclass
class Destination:
    """Where one generation's images go: a folder and a name stem. ``plan``
    only checks; nothing is created until there are images to save."""

    folder: Path
    stem: str
    # The provenance written into each image, or None for none.
    record: dict[str, Any] | None = None
    # Temporary files being written now, removed if the process is stopped.
    _partial: set[Path] = field(default_factory=set, repr=False)

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
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> SavedFile:
        """Stream chunks to a temporary file beside the target, check that they
        are an image, add the provenance record (in a PNG, or a sidecar), then
        link it into the first free name."""
        record = self.record
        size = 0
        head = b""
        fd, tmp_name = tempfile.mkstemp(
            prefix=".imagen4-", suffix=".part", dir=self.folder
        )
        tmp = Path(tmp_name)
        self._partial.add(tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise SaveError(
                            f"The image is larger than {max_bytes // (1024 * 1024)} MB; "
                            "refused"
                        )
                    if len(head) < 65536:
                        head += chunk[: 65536 - len(head)]
                    out.write(chunk)
            content_type, suffix, width, height = image_info(head)
            in_png = record is not None and provenance.embed_png(
                tmp, provenance.png_chunks(record, width, height)
            )
            digest, size = _digest(tmp)
            path = self._place(tmp, position, suffix)
        finally:
            tmp.unlink(missing_ok=True)
            self._partial.discard(tmp)
        if record is not None and not in_png:
            provenance.write_sidecar(path, record)
        return SavedFile(path, digest, size, width, height, content_type)

    def discard_partial(self) -> None:
        for tmp in list(self._partial):
            tmp.unlink(missing_ok=True)

    def _place(self, tmp: Path, position: int, suffix: str) -> Path:
        for candidate in self._names(position, suffix):
            try:
                os.link(tmp, candidate)
                return candidate
            except FileExistsError:
                continue
            except OSError:
                # No hard links here (some file systems): reserve the name with
                # an exclusive create, then move the finished file over it.
                try:
                    os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    continue
                os.replace(tmp, candidate)
                return candidate
        raise AssertionError("unreachable")  # pragma: no cover
