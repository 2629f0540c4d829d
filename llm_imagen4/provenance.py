"""How an image was made, written into the image itself.

A PNG gets three text chunks, inserted before ``IEND`` so that the image data
stays byte for byte as the API made it: ``parameters`` in the form AUTOMATIC1111
and the tools around it read, a JSON record of the generation, and an XMP
packet that marks the image as made by a trained algorithm (IPTC
DigitalSourceType). Other image types get the JSON record in a sidecar file."""

from __future__ import annotations

import functools
import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any

JSON_KEYWORD = "llm-imagen4"
XMP_KEYWORD = "XML:com.adobe.xmp"
PARAMETERS_KEYWORD = "parameters"
DIGITAL_SOURCE_TYPE = (
    "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
XMP = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
    '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description rdf:about=""'
    ' xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/">'
    f"<Iptc4xmpExt:DigitalSourceType>{DIGITAL_SOURCE_TYPE}"
    "</Iptc4xmpExt:DigitalSourceType>"
    "</rdf:Description></rdf:RDF></x:xmpmeta>"
    '<?xpacket end="r"?>'
)


@functools.cache
def plugin_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llm-imagen4")
    except PackageNotFoundError:  # pragma: no cover - running from a checkout
        return "unknown"


def build(
    *,
    model_id: str,
    request: dict[str, Any],
    seed: int,
    credits_used: float | None,
    turn_id: str,
    created_utc: str,
) -> dict[str, Any]:
    """The record written into each image of one generation. ``options`` with
    ``api_model`` and ``prompt`` make the request again."""
    return {
        "generator": "llm-imagen4",
        "version": plugin_version(),
        "model": model_id,
        "api_model": request["model"],
        "prompt": request["prompt"],
        "negative_prompt": request.get("negative_prompt"),
        "seed": seed,
        "options": {k: v for k, v in request.items() if k not in ("model", "prompt")},
        "turn_id": turn_id,
        "created_utc": created_utc,
        "credits_used": credits_used,
        "digital_source_type": DIGITAL_SOURCE_TYPE,
    }


def parameters(record: dict[str, Any], width: int, height: int) -> str:
    lines = [record["prompt"]]
    if record.get("negative_prompt"):
        lines.append(f"Negative prompt: {record['negative_prompt']}")
    lines.append(
        f"Seed: {record['seed']}, Size: {width}x{height}, Model: {record['model']}"
    )
    return "\n".join(lines)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data))
    )


def _text_chunk(keyword: str, text: str) -> bytes:
    """tEXt where the text is Latin-1, as readers of ``parameters`` expect;
    otherwise uncompressed iTXt, which holds UTF-8."""
    try:
        return _chunk(
            b"tEXt", keyword.encode("latin-1") + b"\0" + text.encode("latin-1")
        )
    except UnicodeEncodeError:
        return _itxt(keyword, text)


def _itxt(keyword: str, text: str) -> bytes:
    return _chunk(
        b"iTXt", keyword.encode("latin-1") + b"\0\0\0\0\0" + text.encode("utf-8")
    )


def png_chunks(record: dict[str, Any], width: int, height: int) -> bytes:
    return (
        _text_chunk(PARAMETERS_KEYWORD, parameters(record, width, height))
        + _itxt(JSON_KEYWORD, json.dumps(record, ensure_ascii=False, sort_keys=True))
        + _itxt(XMP_KEYWORD, XMP)
    )


def _chunks(path: Path) -> list[tuple[bytes, int, int]]:
    """(type, offset, data length) of each chunk, reading only their headers."""
    found = []
    with open(path, "rb") as f:
        if f.read(8) != PNG_SIGNATURE:
            return []
        while header := f.read(8):
            if len(header) < 8:
                break
            length, kind = struct.unpack(">I4s", header)
            found.append((kind, f.tell() - 8, length))
            if kind == b"IEND":
                break
            f.seek(length + 4, os.SEEK_CUR)
    return found


def embed_png(path: Path, extra: bytes) -> bool:
    """Insert chunks before IEND, leaving every other byte where it was."""
    iend = [offset for kind, offset, _ in _chunks(path) if kind == b"IEND"]
    if not iend:
        return False
    with open(path, "r+b") as f:
        f.seek(iend[0])
        f.truncate()
        f.write(extra + _chunk(b"IEND", b""))
    return True


def png_texts(path: Path) -> dict[str, str]:
    """Every tEXt, zTXt and iTXt chunk of a PNG, by keyword."""
    texts = {}
    with open(path, "rb") as f:
        for kind, offset, length in _chunks(path):
            if kind not in (b"tEXt", b"zTXt", b"iTXt"):
                continue
            f.seek(offset + 8)
            data = f.read(length)
            keyword, _, rest = data.partition(b"\0")
            if kind == b"tEXt":
                text = rest.decode("latin-1")
            elif kind == b"zTXt":
                text = zlib.decompress(rest[1:]).decode("latin-1")
            else:
                compressed, rest = rest[0], rest[2:]
                _language, _, rest = rest.partition(b"\0")
                _translated, _, rest = rest.partition(b"\0")
                text = (zlib.decompress(rest) if compressed else rest).decode("utf-8")
            texts[keyword.decode("latin-1")] = text
    return texts


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def write_sidecar(path: Path, record: dict[str, Any]) -> None:
    with open(sidecar(path), "x", encoding="utf-8") as f:
        json.dump(record, f, ensure_ascii=False, indent=2, sort_keys=True)


def read(path: Path) -> dict[str, Any] | None:
    """The record of an image, from its PNG chunks or its sidecar; None when
    it has none."""
    try:
        text = png_texts(path).get(JSON_KEYWORD)
        if text is None and sidecar(path).exists():
            text = sidecar(path).read_text(encoding="utf-8")
        record = json.loads(text) if text else None
    except (OSError, ValueError, zlib.error):
        return None
    if isinstance(record, dict) and record.get("generator") == "llm-imagen4":
        return record
    return None
