"""An image host that lies. Each test has the fake's image host serve a file
made to mislead and shows what the plugin keeps of it: provenance it arrived
with gives way to the plugin's own, and its XMP to XMP built as XML and read
back with an XML parser; a chunk named for C2PA that holds no manifest store
is no signature; and a header that gives a size no image has is refused,
never saved."""

from __future__ import annotations

import base64
import json
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from defusedxml import ElementTree

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
EXIFTOOL = shutil.which("exiftool")


def exiftool(path: str, *tags: str) -> dict | None:
    """What exiftool reads of ``tags``, with its warnings; None where it is
    not installed (CI installs it, and there it must run)."""
    if not EXIFTOOL and not os.environ.get("CI"):
        return None
    out = subprocess.run(
        [EXIFTOOL or "exiftool", "-j", "-warning", *(f"-{tag}" for tag in tags), path],
        capture_output=True,
        text=True,
        check=True,
    )
    [found] = json.loads(out.stdout)
    return found


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


def webp_with(*extra: tuple[bytes, bytes]) -> bytes:
    """A simple WebP with ``extra`` (FourCC, data) chunks after its image."""
    bitstream = b"\x2f" + (7 | (7 << 14)).to_bytes(4, "little") + b"\0" * 6
    chunks = b"VP8L" + struct.pack("<I", len(bitstream)) + bitstream + b"\0"
    for kind, data in extra:
        chunks += kind + struct.pack("<I", len(data)) + data + b"\0" * (len(data) & 1)
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks


def jpeg_with(segments: bytes) -> bytes:
    """A JPEG with ``segments`` after its JFIF segment."""
    plain = jpeg(1024, 1024)
    return plain[:20] + segments + plain[20:]


def first_segment(segments: bytes) -> bytes:
    return segments[: 2 + struct.unpack(">H", segments[2:4])[0]]


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk of a PNG up to IEND."""
    found, i = [], 8
    while i + 8 <= len(data):
        (length,) = struct.unpack(">I", data[i : i + 4])
        found.append((data[i + 4 : i + 8], data[i + 8 : i + 8 + length]))
        if data[i + 4 : i + 8] == b"IEND":
            break
        i += 12 + length
    return found


def jpeg_segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, contents) of every segment of a JPEG before its scan."""
    found, i = [], 2
    while data[i + 1] not in (0xDA, 0xD9):
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        found.append((data[i + 1], data[i + 4 : i + 2 + length]))
        i += 2 + length
    return found


def webp_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    found, i = [], 12
    while i + 8 <= len(data):
        (length,) = struct.unpack("<I", data[i + 4 : i + 8])
        found.append((data[i : i + 4], data[i + 8 : i + 8 + length]))
        i += 8 + length + (length & 1)
    return found


XMP_KEYWORD = b"XML:com.adobe.xmp"
XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\0"


def xmp_packets(data: bytes) -> list[bytes]:
    """Every XMP packet of a PNG (its text chunks of XMP's keyword, as the
    plugin writes them: uncompressed iTXt), JPEG (APP1) or WebP (XMP )."""
    if data.startswith(b"\x89PNG"):
        texts = [d for k, d in png_chunks(data) if k in (b"tEXt", b"zTXt", b"iTXt")]
        return [
            d.split(b"\0", 1)[1][4:] for d in texts if d.startswith(XMP_KEYWORD + b"\0")
        ]
    if data.startswith(b"\xff\xd8"):
        return [
            c[len(XMP_HEADER) :]
            for m, c in jpeg_segments(data)
            if m == 0xE1 and c.startswith(XMP_HEADER)
        ]
    return [d for k, d in webp_chunks(data) if k == b"XMP "]


RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
IPTC = "{http://iptc.org/std/Iptc4xmpExt/2008-02-29/}"


def xmp_fields(data: bytes) -> dict[str, str]:
    """What an XML parser finds in the file's one XMP packet: the fields of
    its one rdf:Description."""
    [packet] = xmp_packets(data)
    root = ElementTree.fromstring(packet)
    assert root.tag == "{adobe:ns:meta/}xmpmeta"
    [description] = root.findall(f"{RDF}RDF/{RDF}Description")
    assert description.get(f"{RDF}about") == ""
    return {child.tag: child.text for child in description}


def ours(prompt: str) -> dict[str, str]:
    return {
        f"{IPTC}DigitalSourceType": TRAINED,
        f"{IPTC}AISystemUsed": "Google Imagen 4 (imagen4)",
        f"{IPTC}AISystemVersionUsed": "google/imagen4/preview",
        f"{IPTC}AIPromptInformation": prompt,
    }


# -- provenance that arrived with the image -----------------------------------

FORGED_RECORD = {
    "generator": "llm-imagen4",
    "version": "0.2.0",
    "model": "imagen4-ultra",
    "api_model": "google/imagen-4.0-ultra-generate-001",
    "prompt": "FORGED PROMPT",
    "negative_prompt": None,
    "enhanced_prompt": None,
    "seed": 7,
    "options": {"aspect_ratio": "1:1", "num_images": 4, "seed": 7},
    "turn_id": "01forgedturn",
    "created_utc": "2020-01-01T00:00:00+00:00",
    "credits_used": 1,
    "usd_spent": 0.0,
}
FORGED_PARAMETERS = (
    "FORGED PROMPT\nSeed: 7, Size: 1024x1024, Model: imagen4-ultra,"
    " Version: llm-imagen4 0.2.0"
)


def text(kind: bytes, keyword: bytes, value: str) -> bytes:
    data = value.encode()
    if kind == b"zTXt":
        return images.png_chunk(kind, keyword + b"\0\0" + zlib.compress(data))
    if kind == b"iTXt":
        return images.png_chunk(kind, keyword + b"\0\0\0\0\0" + data)
    return images.png_chunk(kind, keyword + b"\0" + data)


def test_provenance_an_image_arrived_with_gives_way_to_ours(fake, generate, llm_cli):
    forged = json.dumps(FORGED_RECORD)
    before = (
        text(b"tEXt", b"parameters", FORGED_PARAMETERS)
        + text(b"iTXt", b"llm-imagen4", forged)
        + text(b"zTXt", b"llm-imagen4", forged)
        + text(b"iTXt", XMP_KEYWORD, CAMERA.decode())
    )
    # After the image data, and in another case, as exiftool reads them.
    after = text(b"tEXt", b"Parameters", FORGED_PARAMETERS) + text(
        b"zTXt", b"LLM-Imagen4", forged
    )
    kept = text(b"tEXt", b"Comment", "kept as sent") + images.png_chunk(
        b"tIME", bytes.fromhex("07e9010203040506")
    )
    sent = png(1024, 1024, b"forged", extra=before + kept)
    iend = len(sent) - 12
    fake.fail_downloads(body=sent[:iend] + after + sent[iend:] + b"after IEND")
    [path] = generate("the real prompt", "--seed", "42")
    data = Path(path).read_bytes()
    assert b"FORGED" not in data and b"digitalCapture" not in data
    assert data.count(kept) == 1 and data.endswith(b"IEND\xaeB`\x82after IEND")
    sent_chunks = png_chunks(sent)
    assert [c for c in png_chunks(data) if c[0] in (b"IHDR", b"IDAT", b"IEND")] == [
        c for c in sent_chunks if c[0] in (b"IHDR", b"IDAT", b"IEND")
    ]
    [made] = json.loads(llm_cli("imagen4", "inspect", path, "--json").stdout)
    [row] = history(llm_cli)
    claims = made["claims"]
    assert claims["prompt"] == "the real prompt" and claims["seed"] == 42
    assert claims["model"] == "imagen4" and claims["turn_id"] == row["id"]
    assert claims["options"]["num_images"] == 1
    assert xmp_fields(data) == ours("the real prompt")
    # Making it again sends the request that made it.
    again = llm_cli("imagen4", "rerun", path)
    assert again.exit_code == 0, again.output
    made_it, rerun = fake.generations
    assert rerun.body == made_it.body
    assert rerun.body["prompt"] == "the real prompt" and rerun.body["seed"] == 42
    tags = exiftool(path, "Parameters")
    if tags is not None:
        assert tags["Parameters"].startswith("the real prompt\nSeed: 42, ")


def test_a_signed_image_that_arrived_with_a_record_is_not_evidence_of_one_request(
    fake, generate, llm_cli
):
    """Its signature forbids dropping the record it arrived with, so the
    file holds two: that one, and the plugin's in its sidecar."""
    forged = text(b"iTXt", b"llm-imagen4", json.dumps(FORGED_RECORD))
    fake.state.png_extra = images.png_chunk(b"caBX", c2pa_store()) + forged
    [path] = generate("the real prompt", "--seed", "42")
    [sent] = fake.state.files.values()
    assert Path(path).read_bytes() == sent
    [made] = json.loads(llm_cli("imagen4", "inspect", path, "--json").stdout)
    assert made["c2pa"] is True
    assert made["conflicting_claims"] == "a sidecar lies beside the record inside it"
    rerun = llm_cli("imagen4", "rerun", path)
    assert rerun.exit_code == 1
    assert rerun.stderr.splitlines() == [
        f"Error: {path}: a sidecar lies beside the record inside it:"
        " it is not evidence of one request"
    ]
    assert len(fake.generations) == 1


# -- XMP that arrived with the image -------------------------------------------

# A camera photo to a parser, with a second </rdf:RDF> inside a comment, where
# text splicing would have put the plugin's fields.
CAMERA = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
    '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description rdf:about=""'
    ' xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/">'
    "<Iptc4xmpExt:DigitalSourceType>"
    "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"
    "</Iptc4xmpExt:DigitalSourceType></rdf:Description>"
    "<!-- </rdf:RDF> -->"
    "</rdf:RDF></x:xmpmeta>"
    '<?xpacket end="w"?>'
).encode()


def _png_with_camera_xmp(fake) -> None:
    fake.state.png_extra = images.png_chunk(
        b"iTXt", XMP_KEYWORD + b"\0\0\0\0\0" + CAMERA
    ) + images.png_chunk(b"zTXt", XMP_KEYWORD + b"\0\0" + zlib.compress(CAMERA))


def _jpeg_with_camera_xmp(fake) -> None:
    extended = b"http://ns.adobe.com/xmp/extension/\0" + bytes(40) + CAMERA
    fake.fail_downloads(
        body=jpeg_with(
            segment(0xE1, XMP_HEADER + CAMERA)
            + segment(0xE1, extended)
            + segment(0xE1, XMP_HEADER + CAMERA)
        )
    )


def _webp_with_camera_xmp(fake) -> None:
    fake.fail_downloads(body=webp_with((b"XMP ", CAMERA), (b"XMP ", CAMERA)))


@pytest.mark.parametrize(
    "serve",
    [_png_with_camera_xmp, _jpeg_with_camera_xmp, _webp_with_camera_xmp],
    ids=["png", "jpeg", "webp"],
)
def test_xmp_an_image_arrived_with_gives_way_to_ours(fake, generate, serve):
    serve(fake)
    [path] = generate("not a photograph")
    data = Path(path).read_bytes()
    assert xmp_fields(data) == ours("not a photograph")
    assert b"digitalCapture" not in data and b"</rdf:RDF> -->" not in data
    tags = exiftool(path, "DigitalSourceType")
    if tags is not None:
        assert tags["DigitalSourceType"] == TRAINED and "Warning" not in tags


def test_every_xmp_chunk_a_png_arrived_with_is_dropped_unread(fake, generate):
    """As many as a hostile image host likes, none of them inflated: a zTXt
    that is not zlib data would fail to."""
    not_zlib = images.png_chunk(b"zTXt", XMP_KEYWORD + b"\0\0not zlib")
    fake.state.png_extra = not_zlib * 1000
    [path] = generate("many packets")
    data = Path(path).read_bytes()
    assert not_zlib not in data
    assert xmp_fields(data) == ours("many packets")


def test_a_prompt_xml_would_misread_is_text_in_the_xmp(fake, generate, llm_cli):
    markup = 'a <b>bold</b> & "quoted" ]]> --> <!-- x --> <![CDATA[ y ]]> &amp;'
    controls = "tab\tnew\nline \x7f\x85 \x1b[2J\x07 \r \ufffe end"
    prompt = markup + " " + controls
    [path] = generate(prompt, "--seed", "3")
    data = Path(path).read_bytes()
    # What XML can hold comes back as it was; what it cannot (most C0
    # controls, a carriage return it would read as a line feed, U+FFFE) is
    # written as its escape.
    written = markup + " tab\tnew\nline \x7f\x85 \\x1b[2J\\x07 \\r \\ufffe end"
    assert xmp_fields(data) == ours(written)
    [made] = json.loads(llm_cli("imagen4", "inspect", path, "--json").stdout)
    assert made["claims"]["prompt"] == prompt


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


SPLIT_STORE = jpeg_app11(c2pa_store(100_000))


WORDS_IN_APP11 = segment(0xEB, b"JP\0\x01\0\0\0\x01\0\0\0\x1ajumbc2pa manifest")
JUNK_ELSEWHERE = {
    "a JPEG APP11 box of words": (jpeg_with(WORDS_IN_APP11), WORDS_IN_APP11),
    "a JPEG store missing its second segment": (
        jpeg_with(first_segment(SPLIT_STORE)),
        first_segment(SPLIT_STORE),
    ),
    "a JPEG store with its segments in the wrong order": (
        jpeg_with(
            SPLIT_STORE[len(first_segment(SPLIT_STORE)) :] + first_segment(SPLIT_STORE)
        ),
        first_segment(SPLIT_STORE),
    ),
    "a WebP C2PA chunk of words": (
        webp_with((b"C2PA", b"jumb c2pa manifest")),
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
