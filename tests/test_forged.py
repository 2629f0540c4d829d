"""An image host that lies. Each test has the fake's image host serve a file
made to mislead and shows what the plugin keeps of it: a chunk named for
C2PA that holds no manifest store is no signature, and a header that gives a
size no image has is refused, never saved."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import pytest

from llm_imagen4 import images

from .conftest import history, journal_ids
from .fake_api import (
    C2PA_MANIFEST_UUID,
    C2PA_STORE_UUID,
    c2pa_store,
    jpeg,
    jpeg_app11,
    jumbf_box,
    jumbf_superbox,
    png,
)

TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


def sized(data: bytes, width: int, height: int) -> bytes:
    """A PNG whose header says ``width`` x ``height``, whatever its data is."""
    ihdr = images.png_chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    )
    return data[:8] + ihdr + data[33:]


def segment(marker: int, data: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(data) + 2) + data


def webp_canvas(width: int, height: int) -> bytes:
    """An extended WebP whose VP8X gives its canvas as ``width`` x ``height``."""
    bitstream = b"\x2f" + (7 | (7 << 14)).to_bytes(4, "little") + b"\0" * 6
    vp8x = b"\0\0\0\0" + (width - 1).to_bytes(3, "little")
    vp8x += (height - 1).to_bytes(3, "little")
    chunks = b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    chunks += b"VP8L" + struct.pack("<I", len(bitstream)) + bitstream + b"\0"
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks


# -- a header no image has -------------------------------------------------------

IMPOSSIBLE = {
    "a PNG of 4294967295x2147483647": (
        sized(png(8, 8), 4294967295, 2147483647),
        "4294967295x2147483647 pixels",
    ),
    "a PNG 0 wide": (sized(png(8, 8), 0, 8), "0x8 pixels"),
    "a PNG 16385 high": (sized(png(8, 8), 8, 16385), "8x16385 pixels"),
    "a JPEG with no frame header": (
        b"\xff\xd8" + segment(0xE0, b"JFIF\0" + bytes(9)) + b"\xff\xd9",
        "the JPEG has no frame header",
    ),
    "a JPEG 0 high": (jpeg(1024, 0), "1024x0 pixels"),
    "a WebP canvas of 16777216x1": (webp_canvas(1 << 24, 1), "16777216x1 pixels"),
}


@pytest.mark.parametrize("body,reason", list(IMPOSSIBLE.values()), ids=list(IMPOSSIBLE))
def test_an_impossible_image_from_a_url_is_refused_and_nothing_is_left(
    fake, llm_cli, body, reason
):
    assert len(body) < 2048
    fake.fail_downloads(3, body=body)
    result = llm_cli("imagen4", "a forged header")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    line, end = result.stderr.splitlines()
    assert line.startswith("Image 1 was not saved: ") and reason in line, line
    assert end == "Error: 1 of 1 images were not saved"
    assert "download" not in line
    assert list(fake.work.iterdir()) == []
    assert journal_ids(fake) == []
    # It will never be right: fetched once, not again.
    assert len(fake.downloads) == 1
    [row] = history(llm_cli)
    [image] = row["images"]
    assert image["status"] == "refused" and reason in image["error"]


def _inline(data: bytes):
    def reshape(answer):
        for item in answer["data"]:
            item["b64_json"] = base64.b64encode(data).decode()
        return answer

    return reshape


def test_an_impossible_image_inside_the_answer_is_refused_and_nothing_is_left(
    fake, llm_cli
):
    body, reason = IMPOSSIBLE["a PNG of 4294967295x2147483647"]
    fake.plan_api(generate=True, shape=_inline(body))
    result = llm_cli("imagen4", "a forged header", "-m", "imagen4-fast")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    line, end = result.stderr.splitlines()
    assert line.startswith("Image 1 was not saved: ") and reason in line, line
    assert end == "Error: 1 of 1 images were not saved"
    assert list(fake.work.iterdir()) == []
    assert journal_ids(fake) == []
    assert fake.downloads == []
    [row] = history(llm_cli)
    assert row["images"][0]["status"] == "refused"


def test_sizes_an_image_can_have_are_saved_as_they_are(fake, llm_cli, generate):
    # Not a documented size, but one an image can have: recorded as it is.
    fake.fail_downloads(body=png(16384, 2))
    [wide] = generate("as wide as may be")
    # A JPEG whose frame header comes after 128 KiB of other segments.
    icc = segment(0xE2, b"ICC_PROFILE\0" + bytes(65000))
    plain = jpeg(1408, 768)
    fake.replan_downloads()
    fake.fail_downloads(body=plain[:20] + icc + icc + plain[20:])
    [late] = generate("a late frame header")
    rows = {row["prompt"]: row["images"][0] for row in history(llm_cli)}
    wide_image, late_image = rows["as wide as may be"], rows["a late frame header"]
    assert wide_image["path"] == wide and late_image["path"] == late
    assert (wide_image["width"], wide_image["height"]) == (16384, 2)
    assert Path(late).suffix == ".jpg"
    assert (late_image["width"], late_image["height"]) == (1408, 768)


# -- a C2PA chunk that is no signature -------------------------------------------


def _overrunning_child() -> bytes:
    """A store whose manifest says it is a byte longer than the store holds."""
    store = bytearray(c2pa_store())
    manifest_at = store.index(b"jumb", 8) - 4
    (length,) = struct.unpack(">I", store[manifest_at : manifest_at + 4])
    store[manifest_at : manifest_at + 4] = struct.pack(">I", length + 1)
    return bytes(store)


NOT_A_STORE = {
    "words": b"jumb c2pa manifest",
    "empty": b"",
    "another JUMBF type": jumbf_superbox(C2PA_MANIFEST_UUID, "c2pa"),
    "another label": jumbf_superbox(C2PA_STORE_UUID, "c2pa.evil"),
    "no description first": jumbf_box(b"jumb", jumbf_box(b"json", b"{}")),
    "a box past its container": _overrunning_child(),
    "bytes after the store": c2pa_store() + b"\0" * 8,
    "a length shorter than its header": struct.pack(">I", 4) + c2pa_store()[4:],
    "a length past the chunk": struct.pack(">I", 1 << 20) + c2pa_store()[4:],
}


@pytest.mark.parametrize("junk", list(NOT_A_STORE.values()), ids=list(NOT_A_STORE))
def test_a_png_cabx_chunk_that_holds_no_manifest_store_is_no_signature(
    fake, generate, llm_cli, junk
):
    chunk = images.png_chunk(b"caBX", junk)
    fake.state.png_extra = chunk
    [path] = generate("not signed at all", "--seed", "11")
    saved = Path(path).read_bytes()
    # Kept byte for byte, as any chunk not the plugin's, beside its provenance.
    assert saved.count(chunk) == 1 and TRAINED.encode() in saved
    assert not Path(path + ".json").exists()
    [made] = json.loads(llm_cli("imagen4", "inspect", path, "--json").stdout)
    assert made["c2pa"] is False and made["source"] == "record"
    assert made["claims"]["seed"] == 11
    text = llm_cli("imagen4", "inspect", path).stdout
    assert "C2PA" not in text


def _webp_with(kind: bytes, data: bytes) -> bytes:
    bitstream = b"\x2f" + (7 | (7 << 14)).to_bytes(4, "little") + b"\0" * 6
    chunks = b"VP8L" + struct.pack("<I", len(bitstream)) + bitstream + b"\0"
    chunks += kind + struct.pack("<I", len(data)) + data + b"\0" * (len(data) & 1)
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks


def _jpeg_with(segments: bytes) -> bytes:
    plain = jpeg(1024, 1024)
    return plain[:20] + segments + plain[20:]


def _first_segment(segments: bytes) -> bytes:
    return segments[: 2 + struct.unpack(">H", segments[2:4])[0]]


SPLIT_STORE = jpeg_app11(c2pa_store(100_000))


JUNK_ELSEWHERE = {
    "a JPEG APP11 box of words": (
        _jpeg_with(segment(0xEB, b"JP\0\x01\0\0\0\x01\0\0\0\x1ajumbc2pa manifest")),
        segment(0xEB, b"JP\0\x01\0\0\0\x01\0\0\0\x1ajumbc2pa manifest"),
    ),
    "a JPEG store missing its second segment": (
        _jpeg_with(_first_segment(SPLIT_STORE)),
        _first_segment(SPLIT_STORE),
    ),
    "a JPEG store with its segments in the wrong order": (
        _jpeg_with(
            SPLIT_STORE[len(_first_segment(SPLIT_STORE)) :]
            + _first_segment(SPLIT_STORE)
        ),
        _first_segment(SPLIT_STORE),
    ),
    "a WebP C2PA chunk of words": (
        _webp_with(b"C2PA", b"jumb c2pa manifest"),
        b"C2PA" + struct.pack("<I", 18) + b"jumb c2pa manifest",
    ),
}


@pytest.mark.parametrize(
    "body,kept", list(JUNK_ELSEWHERE.values()), ids=list(JUNK_ELSEWHERE)
)
def test_a_jpeg_or_webp_c2pa_box_that_holds_no_manifest_store_is_no_signature(
    fake, generate, llm_cli, body, kept
):
    fake.fail_downloads(body=body)
    [path] = generate("not signed either")
    saved = Path(path).read_bytes()
    assert saved != body and kept in saved and TRAINED.encode() in saved
    [made] = json.loads(llm_cli("imagen4", "inspect", path, "--json").stdout)
    assert made["c2pa"] is False and made["source"] == "sidecar"
