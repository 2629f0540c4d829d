"""C2PA Content Credentials: telling a manifest store (a JUMBF superbox
labelled ``c2pa`` with the C2PA store's type, every box within its
container) from a chunk that only bears its name, in a PNG's ``caBX``
chunk, a JPEG's APP11 segments or a WebP's ``C2PA`` chunk. A real store
means the file is left byte for byte as received; anything else is no
signature.

The file is someone else's: every length is checked before it is used."""

from __future__ import annotations

import bisect
import itertools
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import images

# The JUMBF type of a C2PA manifest store: "c2pa", then the suffix ISO gives
# such UUIDs.
C2PA_STORE_UUID = b"c2pa" + bytes.fromhex("00110010800000aa00389b71")
C2PA_STORE_LABEL = b"c2pa"
# The description box's toggles: what follows its type UUID.
_HAS_LABEL, _HAS_ID, _HAS_HASH, _HAS_PRIVATE = 0x02, 0x04, 0x08, 0x10


class _Run:
    """Bytes of a file read as one run, though they lie in pieces: the
    data of a PNG or WebP chunk (one piece), or a box a JPEG carries
    across APP11 segments."""

    def __init__(self, f, pieces: list[tuple[int, int]]) -> None:
        self.f = f
        self.pieces = pieces  # (offset in the file, length)
        self.starts = list(itertools.accumulate((n for _, n in pieces), initial=0))
        self.size = self.starts[-1]

    def read(self, start: int, n: int) -> bytes:
        """At most ``n`` bytes from ``start``: fewer at the end of the run."""
        out = b""
        i = bisect.bisect_right(self.starts, start) - 1
        while n > len(out) and 0 <= i < len(self.pieces):
            offset, length = self.pieces[i]
            skip = start + len(out) - self.starts[i]
            self.f.seek(offset + skip)
            out += self.f.read(min(length - skip, n - len(out)))
            i += 1
        return out


@dataclass(frozen=True)
class _Box:
    kind: bytes
    start: int  # of its header
    body: int  # where its payload starts
    end: int


def _box(run: _Run, start: int, limit: int) -> _Box | None:
    """The JUMBF box at ``start``, if its length keeps it within ``limit``
    (its container's end). A length of 0 is the rest of the container."""
    header = run.read(start, 16)
    if len(header) < 8:
        return None
    (length,), kind, body = struct.unpack(">I", header[:4]), header[4:8], start + 8
    if length == 1:
        if len(header) < 16:
            return None
        (length,) = struct.unpack(">Q", header[8:16])
        body += 8
    elif length == 0:
        length = limit - start
    end = start + length
    if end < body or end > limit:
        return None
    return _Box(kind, start, body, end)


def _description(run: _Run, box: _Box) -> tuple[bytes, bytes | None] | None:
    """(type UUID, label) of a superbox from its description box, the first
    of its children; None when there is none, or its fields run past it."""
    first = _box(run, box.body, box.end)
    if first is None or first.kind != b"jumd":
        return None
    data = run.read(first.body, min(first.end - first.body, images.TEXT_CAP))
    if len(data) < 17:
        return None
    uuid, toggles, position, label = data[:16], data[16], 17, None
    if toggles & _HAS_LABEL:
        end = data.find(b"\0", position)
        if end < 0:
            return None
        label, position = data[position:end], end + 1
    position += 4 * bool(toggles & _HAS_ID) + 32 * bool(toggles & _HAS_HASH)
    if first.body + position > first.end:
        return None
    if toggles & _HAS_PRIVATE and _box(run, first.body + position, first.end) is None:
        return None
    return uuid, label


def _is_c2pa_store(run: _Run) -> bool:
    """Whether ``run`` is one JUMBF superbox holding a C2PA manifest store:
    its description box gives the store's type and the label ``c2pa``, and
    every box inside it, superboxes in superboxes too, fits its container
    exactly, each superbox opening with a description box."""
    store = _box(run, 0, run.size)
    if store is None or store.end != run.size or store.kind != b"jumb":
        return False
    superboxes, walked = [store], 0
    while superboxes:
        superbox = superboxes.pop()
        description = _description(run, superbox)
        if description is None or (
            superbox is store and description != (C2PA_STORE_UUID, C2PA_STORE_LABEL)
        ):
            return False
        position = superbox.body
        while position < superbox.end:
            walked += 1
            child = _box(run, position, superbox.end)
            if child is None or walked > images.CHUNK_CAP:
                return False
            if child.kind == b"jumb":
                superboxes.append(child)
            position = child.end
    return True


def _jpeg_jumbf_runs(f) -> Iterator[_Run]:
    """Each JUMBF box of a JPEG, across its APP11 segments: each segment
    holds "JP", the box's instance number, its sequence number from 1, and,
    after the first, the box's header again. A box whose segments do not
    follow on is left out."""
    # By instance: the last sequence number, the box's header, its pieces.
    runs: dict[bytes, tuple[int, bytes, list[tuple[int, int]]]] = {}
    done: list[tuple[int, bytes, list[tuple[int, int]]]] = []
    for marker, offset, length in images.jpeg_segments(f):
        if marker != 0xEB or length < 2 + 16:
            continue
        f.seek(offset + 4)
        head = f.read(24)
        if head[:2] != b"JP":
            continue
        instance, (number,) = head[2:4], struct.unpack(">I", head[4:8])
        if number == 1:
            if instance in runs:
                done.append(runs.pop(instance))
            header = head[8:24] if head[8:12] == b"\0\0\0\x01" else head[8:16]
            runs[instance] = (1, header, [(offset + 12, length - 10)])
            continue
        if instance not in runs:
            continue
        last, header, pieces = runs[instance]
        skip = 10 + len(header)
        if number != last + 1 or head[8 : 8 + len(header)] != header or length < skip:
            del runs[instance]
            continue
        pieces.append((offset + 2 + skip, length - skip))
        runs[instance] = (number, header, pieces)
    for _, _, pieces in [*done, *runs.values()]:
        yield _Run(f, pieces)


def has_c2pa(path: Path, content_type: str) -> bool:
    """Whether the file carries C2PA Content Credentials, whose signature
    covers its bytes: a C2PA manifest store, as JUMBF, in a PNG caBX chunk,
    in JPEG APP11 segments, or in a WebP C2PA chunk. A chunk of that name
    that holds no manifest store is no signature."""
    with os.fdopen(images.open_regular(path), "rb") as f:
        if content_type == "image/png":
            runs: Iterable[_Run] = (
                _Run(f, [(chunk.offset + 8, chunk.length)])
                for chunk in images.png_chunks(f)
                if chunk.kind == b"caBX"
            )
        elif content_type == "image/jpeg":
            runs = _jpeg_jumbf_runs(f)
        else:
            runs = (
                _Run(f, [(offset + 8, length)])
                for kind, offset, length in images.webp_chunks(f)
                if kind == b"C2PA"
            )
        return any(_is_c2pa_store(run) for run in runs)
