"""Image files: recognising PNG, JPEG and WebP from their bytes, telling
whether one arrived whole and with a size an image can have, reading and
writing PNG text chunks, building XMP and putting it into each format. One
implementation, used by the plugin, the tests' fake server and the
benchmarks.

Everything here reads files it did not make, so every length is checked
against the file before it is used, and nothing is read or decompressed past
a cap."""

from __future__ import annotations

import dataclasses
import io
import os
import stat
import struct
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
XMP_KEYWORD = "XML:com.adobe.xmp"
JPEG_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
# The most of any one text this module will read or inflate.
TEXT_CAP = 1024 * 1024
# The most chunks (PNG, WebP) or segments (JPEG) of one file this module will
# walk: far more than any image has (libpng writes 8 KiB of image data a
# chunk), far fewer than the empty chunks a crafted file of a few GiB holds.
CHUNK_CAP = 100_000
COPY_BLOCK = 1024 * 1024
# The most pixels a side of an image this module takes as one: far more than
# any Imagen size, and past what readers such as Pillow agree to open.
MAX_SIDE = 16384


class NotAnImage(ValueError):
    """Bytes that are not a PNG, JPEG or WebP image, or not a whole one."""


class Impossible(ValueError):
    """An image whose header gives a size no image has: it will never be
    right, however often it is fetched."""


@dataclass(frozen=True)
class ImageType:
    content_type: str
    suffix: str
    width: int
    height: int


def sniff(head: bytes) -> ImageType:
    """What an image is from its first bytes (64 KiB are plenty)."""
    if head.startswith(PNG_SIGNATURE) and head[12:16] == b"IHDR" and len(head) >= 24:
        width, height = struct.unpack(">II", head[16:24])
        return ImageType("image/png", ".png", width, height)
    if head.startswith(b"\xff\xd8\xff"):
        return ImageType(
            "image/jpeg", ".jpg", *(_jpeg_size(io.BytesIO(head)) or (0, 0))
        )
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ImageType("image/webp", ".webp", *_webp_size(head))
    raise NotAnImage("The bytes are not a PNG, JPEG or WebP image")


def _webp_size(data: bytes) -> tuple[int, int]:
    kind = data[12:16]
    if kind == b"VP8X" and len(data) >= 30:
        return (
            int.from_bytes(data[24:27], "little") + 1,
            int.from_bytes(data[27:30], "little") + 1,
        )
    if kind == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if kind == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return 0, 0


def measured(path: Path, kind: ImageType) -> ImageType:
    """``kind`` of the whole image at ``path``, once its size is one an image
    can have: a JPEG's from its frame header wherever it is (past the first
    64 KiB that ``sniff`` reads, too). Impossible otherwise."""
    if kind.content_type == "image/jpeg":
        with open(path, "rb") as f:
            size = _jpeg_size(f)
        if size is None:
            raise Impossible("the JPEG has no frame header, so no size")
        kind = dataclasses.replace(kind, width=size[0], height=size[1])
    if not (0 < kind.width <= MAX_SIDE and 0 < kind.height <= MAX_SIDE):
        raise Impossible(
            f"its header says {kind.width}x{kind.height} pixels, a size no image"
            f" has (1 to {MAX_SIDE} a side)"
        )
    return kind


def open_regular(path: Path) -> int:
    """A descriptor for reading ``path``, which must be a regular file: a
    FIFO or a device is refused without blocking on it."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    return fd


# -- PNG chunks -------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    kind: bytes
    offset: int  # of its length field
    length: int  # of its data

    @property
    def end(self) -> int:
        return self.offset + 12 + self.length


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data))
    )


def png_chunks(f) -> Iterator[Chunk]:
    """The chunks of the PNG open as ``f``, up to and with IEND, read from
    their headers only. Stops at the first chunk that would run past the
    end of the file; NotAnImage past CHUNK_CAP chunks. ``f`` is any
    seekable binary file: a file on disk or ``io.BytesIO``."""
    size = f.seek(0, os.SEEK_END)
    f.seek(0)
    if f.read(8) != PNG_SIGNATURE:
        return
    offset = 8
    for _ in range(CHUNK_CAP):
        if offset + 12 > size:
            return
        f.seek(offset)
        length, kind = struct.unpack(">I4s", f.read(8))
        chunk = Chunk(kind, offset, length)
        if length > 0x7FFFFFFF or chunk.end > size:
            return
        yield chunk
        if kind == b"IEND":
            return
        offset = chunk.end
    raise NotAnImage(f"a PNG of more than {CHUNK_CAP} chunks")


TEXT_KINDS = (b"tEXt", b"zTXt", b"iTXt")


def _keyword(f, chunk: Chunk) -> bytes:
    """The keyword of a text chunk, read alone: at most 79 bytes."""
    f.seek(chunk.offset + 8)
    return f.read(min(chunk.length, 80)).partition(b"\0")[0]


def text_chunk(keyword: str, text: str) -> bytes:
    """tEXt where the text is Latin-1, which every reader takes; otherwise
    uncompressed iTXt, which holds UTF-8."""
    try:
        return png_chunk(
            b"tEXt", keyword.encode("latin-1") + b"\0" + text.encode("latin-1")
        )
    except UnicodeEncodeError:
        return itxt_chunk(keyword, text)


def itxt_chunk(keyword: str, text: str) -> bytes:
    return png_chunk(
        b"iTXt", keyword.encode("latin-1") + b"\0\0\0\0\0" + text.encode("utf-8")
    )


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(data, TEXT_CAP)
    except zlib.error as ex:
        raise ValueError(f"a compressed text that is not zlib data: {ex}") from None
    if inflater.unconsumed_tail:
        raise ValueError(f"a compressed text of more than {TEXT_CAP} bytes")
    return text


def decode_text_chunk(kind: bytes, data: bytes) -> tuple[str, str]:
    """(keyword, text) of a tEXt, zTXt or iTXt chunk; ValueError when it is
    malformed or inflates past the cap."""
    keyword, sep, rest = data.partition(b"\0")
    if not sep or not keyword:
        raise ValueError("a text chunk without a keyword")
    if kind == b"tEXt":
        text = rest
    elif kind == b"zTXt":
        if not rest or rest[0] != 0:
            raise ValueError("a zTXt chunk with an unknown compression")
        text = _inflate(rest[1:])
    else:
        if len(rest) < 2:
            raise ValueError("an iTXt chunk cut short")
        compressed, rest = rest[0], rest[2:]
        _language, sep1, rest = rest.partition(b"\0")
        _translated, sep2, rest = rest.partition(b"\0")
        if not (sep1 and sep2):
            raise ValueError("an iTXt chunk cut short")
        text = _inflate(rest) if compressed else rest
        return keyword.decode("latin-1"), text.decode("utf-8")
    return keyword.decode("latin-1"), text.decode("latin-1")


@dataclass(frozen=True)
class PngTexts:
    """What a PNG's text chunks hold under some keywords: the first text of
    each, and how many chunks bear each keyword in any case (as exiftool,
    which reads keywords without case, would show them)."""

    first: dict[str, str]
    count: dict[str, int]


def png_texts(path: Path, keywords: tuple[str, ...]) -> PngTexts:
    """The first text of a PNG under each of ``keywords``, read only if its
    chunk is at most TEXT_CAP bytes and inflates to at most TEXT_CAP, and
    how many chunks each keyword has. Other texts, and later chunks of a
    keyword already read, are never read past their keyword: at most one
    chunk a keyword is inflated, however many the file holds. ValueError
    for a malformed one."""
    wanted = {keyword.encode("latin-1"): keyword for keyword in keywords}
    by_case = {keyword.lower(): name for keyword, name in wanted.items()}
    first: dict[str, str] = {}
    count = dict.fromkeys(keywords, 0)
    with os.fdopen(open_regular(path), "rb") as f:
        for chunk in png_chunks(f):
            if chunk.kind not in TEXT_KINDS:
                continue
            keyword = _keyword(f, chunk)
            if keyword.lower() in by_case:
                count[by_case[keyword.lower()]] += 1
            if keyword not in wanted or wanted[keyword] in first:
                continue
            if chunk.length > TEXT_CAP:
                raise ValueError(f"a text chunk of {chunk.length} bytes")
            f.seek(chunk.offset + 8)
            _, first[wanted[keyword]] = decode_text_chunk(
                chunk.kind, f.read(chunk.length)
            )
    return PngTexts(first, count)


def is_complete(path: Path, content_type: str) -> bool:
    """Whether an image file arrived whole: a PNG up to its IEND, a JPEG to
    its EOI, a WebP to the length its RIFF header gives."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if content_type == "image/png":
            return any(chunk.kind == b"IEND" for chunk in png_chunks(f))
        if content_type == "image/jpeg":
            f.seek(max(0, size - 2))
            return f.read(2) == b"\xff\xd9"
        f.seek(4)
        (riff_size,) = struct.unpack("<I", f.read(4))
        return size >= riff_size + 8


# -- XMP ----------------------------------------------------------------------

XMP_META_NS = "adobe:ns:meta/"
RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
JPEG_XMP_EXTENSION_HEADER = b"http://ns.adobe.com/xmp/extension/\x00"
XMP_PACKET_ID = "W5M0MpCehiHzreSzNTczkc9d"


def _xml_holds(char: str) -> bool:
    """Whether an XML 1.0 parser reads ``char`` back as it was written: a
    carriage return it reads as a line feed."""
    code = ord(char)
    return (
        code in (0x09, 0x0A)
        or 0x20 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or 0x10000 <= code <= 0x10FFFF
    )


def xml_text(text: str) -> str:
    """``text`` as XML can hold it: each character an XML parser would not
    read back as it was (most C0 controls, a carriage return, U+FFFE, a
    lone surrogate) written as its escape, ``\\x1b``."""
    return "".join(
        char if _xml_holds(char) else char.encode("unicode_escape").decode("ascii")
        for char in text
    )


def xmp_packet(prefix: str, namespace: str, properties: dict[str, str]) -> str:
    """A whole XMP packet of one ``rdf:Description``: ``properties`` (name
    to text) in ``namespace``, written with ``prefix``. Built as XML by
    ElementTree, which escapes every text, and parsed back to be sure that
    an XML parser finds these fields and nothing else. The prefixes are
    declared on the elements, so no global namespace map is changed."""
    meta = ET.Element("x:xmpmeta", {"xmlns:x": XMP_META_NS})
    rdf = ET.SubElement(meta, "rdf:RDF", {"xmlns:rdf": RDF_NS})
    description = ET.SubElement(
        rdf, "rdf:Description", {"rdf:about": "", f"xmlns:{prefix}": namespace}
    )
    for name, text in properties.items():
        ET.SubElement(description, f"{prefix}:{name}").text = xml_text(text)
    begin = ET.ProcessingInstruction("xpacket", f'begin="\ufeff" id="{XMP_PACKET_ID}"')
    end = ET.ProcessingInstruction("xpacket", 'end="w"')
    packet = "".join(
        ET.tostring(node, encoding="unicode") for node in (begin, meta, end)
    )
    expected = {
        f"{{{namespace}}}{name}": xml_text(text) for name, text in properties.items()
    }
    if _xmp_fields(packet) != expected:
        raise ValueError("the XMP packet does not read back as it was built")
    return packet


def _xmp_fields(packet: str) -> dict[str, str] | None:
    """The fields of a packet's one ``rdf:Description``, as a parser reads
    them; None when it has not exactly one."""
    root = ET.fromstring(packet)
    descriptions = root.findall(f"{{{RDF_NS}}}RDF/{{{RDF_NS}}}Description")
    if root.tag != f"{{{XMP_META_NS}}}xmpmeta" or len(descriptions) != 1:
        return None
    return {child.tag: child.text or "" for child in descriptions[0]}


# -- writing provenance into a copy -----------------------------------------


def copy_range(src, dst, start: int, end: int) -> None:
    src.seek(start)
    remaining = end - start
    while remaining > 0:
        block = src.read(min(COPY_BLOCK, remaining))
        if not block:
            raise NotAnImage("The image ended early")
        dst.write(block)
        remaining -= len(block)


def _copy_edited(
    f, out, size: int, drop: list[tuple[int, int]], at: int, insert: bytes
) -> None:
    """Copy ``f`` to ``out`` without the byte ranges in ``drop`` (whole
    chunks or segments), with ``insert`` written at offset ``at``."""
    position = 0
    for start, end in sorted([*drop, (at, at)]):
        copy_range(f, out, position, start)
        if start == end:
            out.write(insert)
        position = end
    copy_range(f, out, position, size)


def embed_png(src: Path, dst: Path, texts: list[tuple[str, str]], xmp: str) -> None:
    """Copy a PNG with ``texts`` and the XMP packet ``xmp`` in text chunks
    before its first IDAT, where every reader finds them without decoding
    the image. Every text chunk the image arrived with under one of those
    keywords, in any case (as exiftool reads them), is dropped, read no
    further than its keyword: what the file says of how it was made is the
    plugin's alone. Every other byte is copied as it is, those after IEND
    too."""
    replaced = {keyword.encode("latin-1").lower() for keyword, _ in texts}
    replaced.add(XMP_KEYWORD.encode("latin-1").lower())
    size = src.stat().st_size
    with open(src, "rb") as f, open(dst, "wb") as out:
        chunks = list(png_chunks(f))
        first_idat = next((c for c in chunks if c.kind == b"IDAT"), None)
        if first_idat is None:
            raise NotAnImage("The PNG has no image data")
        drop = [
            (chunk.offset, chunk.end)
            for chunk in chunks
            if chunk.kind in TEXT_KINDS and _keyword(f, chunk).lower() in replaced
        ]
        added = b"".join(text_chunk(keyword, text) for keyword, text in texts)
        added += itxt_chunk(XMP_KEYWORD, xmp)
        _copy_edited(f, out, size, drop, first_idat.offset, added)


def jpeg_segments(f) -> Iterator[tuple[int, int, int]]:
    """(marker, offset, length) of each segment before the image data, past
    fill bytes and markers that stand alone. ``f`` is any seekable binary
    file."""
    size = f.seek(0, os.SEEK_END)
    offset = 2
    for _ in range(CHUNK_CAP):
        if offset + 4 > size:
            return
        f.seek(offset)
        head = f.read(4)
        if head[0] != 0xFF or head[1] in (0xDA, 0xD9):
            return
        if head[1] == 0xFF:  # a fill byte before the marker
            offset += 1
            continue
        if head[1] == 0x01 or 0xD0 <= head[1] <= 0xD7:
            offset += 2
            continue
        (length,) = struct.unpack(">H", head[2:4])
        if length < 2 or offset + 2 + length > size:
            return
        yield head[1], offset, length
        offset += 2 + length
    raise NotAnImage(f"a JPEG of more than {CHUNK_CAP} segments")


def _jpeg_size(f) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header, None when the segments
    before its image data have none."""
    for marker, offset, length in jpeg_segments(f):
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and length >= 7:
            f.seek(offset + 5)
            height, width = struct.unpack(">HH", f.read(4))
            return width, height
    return None


def embed_jpeg(src: Path, dst: Path, xmp: str) -> None:
    """Copy a JPEG with the XMP packet ``xmp`` in an APP1 segment after its
    leading APP0 and APP1 ones (JFIF, Exif). Every XMP segment it arrived
    with, extended XMP too, is dropped."""
    payload = JPEG_XMP_HEADER + xmp.encode("utf-8")
    if len(payload) + 2 > 0xFFFF:
        raise ValueError("the XMP packet is too large for a JPEG segment")
    size = src.stat().st_size
    with open(src, "rb") as f, open(dst, "wb") as out:
        drop, insert_at, leading = [], 2, True
        for marker, offset, length in jpeg_segments(f):
            end = offset + 2 + length
            if marker == 0xE1:
                f.seek(offset + 4)
                start = f.read(len(JPEG_XMP_EXTENSION_HEADER))
                if start.startswith((JPEG_XMP_HEADER, JPEG_XMP_EXTENSION_HEADER)):
                    drop.append((offset, end))
            leading = leading and marker in (0xE0, 0xE1)
            if leading:
                insert_at = end
        segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
        _copy_edited(f, out, size, drop, insert_at, segment)


def webp_chunks(f) -> Iterator[tuple[bytes, int, int]]:
    """(FourCC, offset, data length) of each chunk of a WebP."""
    size = os.fstat(f.fileno()).st_size
    offset = 12
    for _ in range(CHUNK_CAP):
        if offset + 8 > size:
            return
        f.seek(offset)
        kind, length = struct.unpack("<4sI", f.read(8))
        if offset + 8 + length > size:
            return
        yield kind, offset, length
        offset += 8 + length + (length & 1)
    raise NotAnImage(f"a WebP of more than {CHUNK_CAP} chunks")


def _riff_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        kind + struct.pack("<I", len(data)) + data + (b"\0" if len(data) & 1 else b"")
    )


def embed_webp(src: Path, dst: Path, xmp: str) -> None:
    """Copy a WebP with the XMP packet ``xmp`` in an XMP chunk at its end,
    turning a simple WebP into the extended format that holds one. Every
    XMP chunk it arrived with is dropped."""
    with open(src, "rb") as f:
        chunks = list(webp_chunks(f))
        parts: list[bytes] = []
        vp8x = None
        for kind, offset, length in chunks:
            if kind == b"XMP ":
                continue
            f.seek(offset + 8)
            data = f.read(length)
            if kind == b"VP8X":
                vp8x = bytearray(data)
                continue
            parts.append(_riff_chunk(kind, data))
        if vp8x is None:
            width, height = _webp_size(_head(src))
            alpha = any(
                kind == b"VP8L" and _vp8l_alpha(f, offset) for kind, offset, _ in chunks
            )
            vp8x = bytearray(
                bytes([0x10 if alpha else 0])
                + b"\0\0\0"
                + (width - 1).to_bytes(3, "little")
                + (height - 1).to_bytes(3, "little")
            )
    vp8x[0] |= 0x04  # XMP present
    body = (
        _riff_chunk(b"VP8X", bytes(vp8x))
        + b"".join(parts)
        + _riff_chunk(b"XMP ", xmp.encode("utf-8"))
    )
    dst.write_bytes(b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body)


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(64)


def _vp8l_alpha(f, offset: int) -> bool:
    f.seek(offset + 9)
    bits = int.from_bytes(f.read(4), "little")
    return bool((bits >> 28) & 1)
