"""Provenance in every image, where every tool reads it, and the commands that
read it back: inspect, rerun, show, download."""

import hashlib
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from llm_imagen4 import images

from .conftest import history, journal_ids
from .fake_api import c2pa_store, jpeg, jpeg_app11, png

TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
EXIFTOOL = shutil.which("exiftool")
needs_exiftool = pytest.mark.skipif(
    not EXIFTOOL and not os.environ.get("CI"),
    reason="needs Debian's libimage-exiftool-perl (.ci/run installs it)",
)


def chunks(data):
    """(type, data) of every chunk of a PNG, and what follows IEND."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    found, i = [], 8
    while i < len(data):
        (length,) = struct.unpack(">I", data[i : i + 4])
        kind = data[i + 4 : i + 8]
        found.append((kind, data[i + 8 : i + 8 + length]))
        i += 12 + length
        if kind == b"IEND":
            return found, data[i:]
    return found, b""


def test_png_provenance_round_trips_through_inspect(fake, generate, llm_cli):
    [path] = generate(
        "Racoon eating ice-cream",
        "-r",
        "16:9",
        "--seed",
        "42",
        "--negative-prompt",
        "blur",
    )
    texts = images.png_texts(Path(path), ("parameters",)).first
    assert texts["parameters"] == (
        "Racoon eating ice-cream\nNegative prompt: blur\n"
        "Seed: 42, Size: 1408x768, Model: imagen4, Version: llm-imagen4 0.2.0"
    )
    [made] = json.loads(llm_cli("imagen4", "inspect", path, "--json").stdout)
    [row] = history(llm_cli)
    assert made["file"] == path and made["source"] == "record"
    assert made["conflicting_claims"] is None and made["sidecar_mismatch"] is None
    claims = made["claims"]
    assert (
        claims["model"] == "imagen4" and claims["api_model"] == "google/imagen4/preview"
    )
    assert claims["prompt"] == "Racoon eating ice-cream"
    assert claims["negative_prompt"] == "blur" and claims["seed"] == 42
    assert claims["options"] == {
        "aspect_ratio": "16:9",
        "num_images": 1,
        "seed": 42,
        "negative_prompt": "blur",
    }
    assert claims["turn_id"] == row["id"]
    assert claims["credits_used"] == 120000 and claims["usd_spent"] == 0.06
    text = llm_cli("imagen4", "inspect", path).stdout
    assert "seed: 42" in text and f"again: llm imagen4 rerun {path}" in text


def test_text_chunks_go_before_the_image_data_which_stays_as_sent(fake, generate):
    trailer = b"bytes after IEND"
    fake.fail_downloads(body=png(64, 64, b"sent") + trailer)
    [path] = generate("a cat")
    original, after = chunks(png(64, 64, b"sent") + trailer)
    saved, saved_after = chunks(Path(path).read_bytes())
    kinds = [kind for kind, _ in saved]
    assert kinds == [b"IHDR", b"tEXt", b"tEXt", b"iTXt", b"IDAT", b"IEND"]
    assert [c for c in saved if c[0] in (b"IHDR", b"IDAT", b"IEND")] == original
    assert saved_after == after == trailer


def test_every_reader_finds_it_without_decoding(fake, generate):
    from PIL import Image

    [path] = generate("a lighthouse", "--seed", "5")
    with Image.open(path) as image:
        # Read from the chunks before the image data: nothing decoded yet.
        assert image.info["parameters"].startswith("a lighthouse\nSeed: 5, ")
        xmp = image.getxmp()
    description = xmp["xmpmeta"]["RDF"]["Description"]
    assert description["DigitalSourceType"] == TRAINED
    assert description["AIPromptInformation"] == "a lighthouse"
    assert description["AISystemVersionUsed"] == "google/imagen4/preview"


@needs_exiftool
def test_exiftool_reads_it_without_a_warning(fake, generate):
    [path] = generate("a heron at dusk", "--seed", "77", "--negative-prompt", "fog")
    out = subprocess.run(
        [
            EXIFTOOL,
            "-j",
            "-a",
            "-warning",
            "-Parameters",
            "-DigitalSourceType",
            "-AIPromptInformation",
            path,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    [tags] = json.loads(out.stdout)
    assert "Warning" not in tags
    assert tags["DigitalSourceType"] == TRAINED
    assert tags["AIPromptInformation"] == "a heron at dusk"
    assert "a heron at dusk" in tags["Parameters"] and "Seed: 77" in tags["Parameters"]


def test_what_a1111_readers_recover(fake, generate):
    from sd_parsers import ParserManager
    from sd_prompt_reader.image_data_reader import ImageDataReader

    [plain] = generate("a red kite", "--seed", "3")
    [negative] = generate("a blue kite", "--seed", "4", "--negative-prompt", "clouds")
    settings = "Seed: {}, Size: 1024x1024, Model: imagen4, Version: llm-imagen4 0.2.0"
    # sd-prompt-reader takes it for AUTOMATIC1111's. With no "Steps:" it
    # finds no settings line: they stay with the last prompt it reads.
    reader = ImageDataReader(plain)
    assert reader.tool == "A1111 webUI"
    assert reader.positive == "a red kite\n" + settings.format(3)
    reader = ImageDataReader(negative)
    assert reader.positive == "a blue kite"
    assert reader.negative == "clouds\n" + settings.format(4)
    # sd-parsers wants a sampler line (Sampler and two of Steps, CFG scale,
    # Seed...), which Imagen has none of: it recognises nothing.
    assert ParserManager().parse(plain) is None


def test_a_c2pa_signed_image_is_left_as_received(fake, generate, llm_cli):
    fake.state.png_extra = images.png_chunk(b"caBX", c2pa_store())
    [path] = generate("signed by google", "--seed", "8")
    [sent] = fake.state.files.values()
    assert Path(path).read_bytes() == sent
    sidecar = json.loads(Path(path + ".json").read_text())
    assert sidecar["file"] == Path(path).name
    assert sidecar["sha256"] == hashlib.sha256(sent).hexdigest()
    assert sidecar["seed"] == 8
    text = llm_cli("imagen4", "inspect", path).stdout
    assert "left as received: it carries C2PA Content Credentials" in text
    [made] = json.loads(llm_cli("imagen4", "inspect", path, "--json").stdout)
    assert made["source"] == "sidecar"


def test_a_jpeg_gets_xmp_inside_and_a_sidecar_that_names_it(fake, generate, llm_cli):
    fake.fail_downloads(body=jpeg(1024, 1024))
    [path] = generate("a jpeg")
    assert path.endswith("a-jpeg.jpg")
    data = Path(path).read_bytes()
    assert images.JPEG_XMP_HEADER in data and TRAINED.encode() in data
    assert data.endswith(b"\xff\xd9")
    sidecar = json.loads(Path(path + ".json").read_text())
    assert sidecar["file"] == "a-jpeg.jpg"
    assert sidecar["sha256"] == hashlib.sha256(data).hexdigest()
    [made] = json.loads(llm_cli("imagen4", "inspect", path, "--json").stdout)
    assert made["claims"]["seed"] == sidecar["seed"]


def test_a_webp_gets_xmp_inside(fake, generate):
    bitstream = b"\x2f" + (7 | (7 << 14)).to_bytes(4, "little") + b"\0" * 6
    webp = b"RIFF" + struct.pack("<I", 4 + 8 + len(bitstream)) + b"WEBP"
    webp += b"VP8L" + struct.pack("<I", len(bitstream)) + bitstream
    fake.fail_downloads(body=webp)
    [path] = generate("a webp")
    data = Path(path).read_bytes()
    assert data[12:16] == b"VP8X" and data[20] & 0x04
    assert struct.unpack("<I", data[4:8])[0] + 8 == len(data)
    assert b"XMP " in data and TRAINED.encode() in data
    sidecar = json.loads(Path(path + ".json").read_text())
    assert sidecar["file"] == "a-webp.webp"
    assert sidecar["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_sidecar_from_another_image_is_flagged(fake, generate, llm_cli):
    fake.fail_downloads(body=jpeg(1024, 1024))
    [first] = generate("first", "--seed", "1")
    [second] = generate("second", "--seed", "2")
    [third] = generate("third", "--seed", "3")
    copied = Path(first + ".json").read_text()
    Path(second + ".json").write_text(copied)
    # Named for the third, but still the first's bytes.
    renamed = {**json.loads(copied), "file": Path(third).name}
    Path(third + ".json").write_text(json.dumps(renamed))
    result = llm_cli("imagen4", "inspect", first, second, third)
    assert result.exit_code == 0, result.output
    another = "the record may be another image's"
    assert result.stderr.splitlines() == [
        f"{second}: its sidecar names another file, first.jpg: {another}",
        f"{third}: its sidecar's sha256 is not this file's: {another}",
    ]
    again = [line for line in result.stdout.splitlines() if "again:" in line]
    assert again == [f"  again: llm imagen4 rerun {first}"]
    assert "  not this file's record: its sidecar names another file, first.jpg" in (
        result.stdout.splitlines()
    )
    found = json.loads(
        llm_cli("imagen4", "inspect", "--json", first, second, third).stdout
    )
    assert [item["sidecar_mismatch"] for item in found] == [
        None,
        "its sidecar names another file, first.jpg",
        "its sidecar's sha256 is not this file's",
    ]
    rerun = llm_cli("imagen4", "rerun", second)
    assert rerun.exit_code == 0, rerun.output
    assert rerun.stderr.splitlines() == [
        f"{second}: its sidecar names another file, first.jpg: {another}"
    ]


def _signed_jpeg(padding: int = 0) -> bytes:
    """A JPEG with C2PA Content Credentials: a JUMBF manifest store in APP11
    segments (two of them, with ``padding`` of 100 KB)."""
    plain = jpeg(1024, 1024)
    return plain[:20] + jpeg_app11(c2pa_store(padding)) + plain[20:]


def _signed_webp() -> bytes:
    """A WebP with a C2PA chunk after its image data."""
    bitstream = b"\x2f" + (7 | (7 << 14)).to_bytes(4, "little") + b"\0" * 6
    manifest = c2pa_store()
    chunks = b"VP8L" + struct.pack("<I", len(bitstream)) + bitstream + b"\0"
    chunks += b"C2PA" + struct.pack("<I", len(manifest)) + manifest
    chunks += b"\0" * (len(manifest) & 1)
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks


@pytest.mark.parametrize(
    "signed",
    [_signed_jpeg, lambda: _signed_jpeg(100_000), _signed_webp],
    ids=["jpeg", "jpeg in two segments", "webp"],
)
def test_a_c2pa_signed_jpeg_or_webp_is_left_as_received(
    fake, generate, llm_cli, signed
):
    body = signed()
    fake.fail_downloads(body=body)
    [path] = generate("signed by google")
    assert Path(path).read_bytes() == body
    sidecar = json.loads(Path(path + ".json").read_text())
    assert sidecar["sha256"] == hashlib.sha256(body).hexdigest()
    [made] = json.loads(llm_cli("imagen4", "inspect", path, "--json").stdout)
    assert made["c2pa"] is True and made["source"] == "sidecar"


def test_the_enhanced_prompt_round_trips(fake, generate, llm_cli):
    rewritten = (
        "A mischievous racoon, with beady eyes, eating a cone of pistachio ice-cream"
    )
    fake.state.enhanced_prompt = rewritten
    [path] = generate("racoon eating ice-cream", "-m", "imagen4-fast", "--seed", "9")
    [row] = history(llm_cli)
    assert row["images"][0]["enhanced_prompt"] == rewritten
    assert (
        f"enhanced_prompt: {rewritten}" in llm_cli("imagen4", "show", row["id"]).stdout
    )
    [made] = json.loads(llm_cli("imagen4", "inspect", path, "--json").stdout)
    assert made["claims"]["enhanced_prompt"] == rewritten
    parameters = images.png_texts(Path(path), ("parameters",)).first["parameters"]
    assert f'Enhanced prompt: "{rewritten}"' in parameters
    for source in (row["id"], path):
        assert llm_cli("imagen4", "rerun", source).exit_code == 0
        assert llm_cli("imagen4", "rerun", source, "--as-made").exit_code == 0
    original, *again = (g.body for g in fake.generations)
    assert again[0] == original and again[2] == original
    for as_made in (again[1], again[3]):
        assert as_made == {**original, "prompt": rewritten, "enhance_prompt": False}


def test_rerun_sends_the_identical_request(fake, generate, llm_cli):
    generate(
        "a portrait",
        "-m",
        "imagen4-ultra",
        "-r",
        "9:16",
        "-n",
        "2",
        "--no-enhance-prompt",
        "--safety-setting",
        "block_only_high",
    )
    turn_id = history(llm_cli)[0]["id"]
    by_id = llm_cli("imagen4", "rerun", turn_id)
    by_file = llm_cli("imagen4", "rerun", str(fake.work / "a-portrait.png"))
    assert by_id.exit_code == 0 and by_file.exit_code == 0, (
        by_id.output + by_file.output
    )
    original, again, from_file = (g.body for g in fake.generations)
    assert json.dumps(again) == json.dumps(original) == json.dumps(from_file)


def test_rerun_flags_override(fake, generate, llm_cli):
    [path] = generate("a boat", "--seed", "5", "--negative-prompt", "fog")
    assert llm_cli("imagen4", "rerun", path, "--vary", "-n", "3").exit_code == 0
    assert llm_cli("imagen4", "rerun", path, "--seed", "6", "-r", "4:3").exit_code == 0
    original, varied, other = (g.body for g in fake.generations)
    assert varied["seed"] != 5 and varied["num_images"] == 3
    assert {**varied, "seed": 5, "num_images": 1} == original
    assert other == {**original, "seed": 6, "aspect_ratio": "4:3"}
    switched = llm_cli("imagen4", "rerun", path, "-m", "imagen4-fast")
    assert switched.exit_code == 1
    assert "imagen4-fast does not take --negative-prompt" in switched.output
    both = llm_cli("imagen4", "rerun", path, "--vary", "--seed", "1")
    assert both.exit_code == 1 and "--vary and --seed" in both.output
    assert len(fake.generations) == 3


def test_rerun_of_something_unknown(fake, llm_cli):
    (fake.work / "plain.png").write_bytes(png(4, 4))
    result = llm_cli("imagen4", "rerun", "plain.png")
    assert result.exit_code == 1
    assert "plain.png has no provenance from llm-imagen4" in result.output
    result = llm_cli("imagen4", "rerun", "01nosuchgeneration")
    assert result.exit_code == 1
    assert "No image file or generation id 01nosuchgeneration" in result.output
    assert fake.state.requests == []


def test_download_restores_a_deleted_file_exactly(fake, generate, llm_cli):
    paths = generate("two owls", "-n", "2")
    turn_id = history(llm_cli)[0]["id"]
    before = hashlib.sha256(Path(paths[1]).read_bytes()).hexdigest()
    os.remove(paths[1])
    assert [m["id"] for m in history(llm_cli, "--missing")] == [turn_id]
    result = llm_cli("imagen4", "download", turn_id)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == paths[1]
    assert hashlib.sha256(Path(paths[1]).read_bytes()).hexdigest() == before
    assert len(fake.generations) == 1
    assert history(llm_cli, "--missing") == []


def test_a_deleted_image_that_came_inline_cannot_be_restored_and_harms_nothing(
    fake, generate, llm_cli
):
    [path] = generate("an inline owl", "-m", "imagen4-fast")
    turn_id = history(llm_cli)[0]["id"]
    os.remove(path)
    result = llm_cli("imagen4", "download", turn_id)
    assert result.exit_code == 1
    assert (
        "image 1: its file is gone, and it came inside the answer, so it cannot be"
        " fetched again" in result.stderr
    )
    [row] = history(llm_cli)
    assert row["images"][0]["status"] == "saved" and not row["images"][0]["exists"]
    assert journal_ids(fake) == []
    assert llm_cli("imagen4", "download").exit_code == 0


def _second_image_without_url(made):
    for key in ("images", "data"):
        if made.get(key):
            made[key][1]["url"] = None
    return made


def test_download_of_a_generation_with_a_refused_image_changes_nothing(fake, llm_cli):
    fake.plan_api(generate=True, shape=_second_image_without_url)
    result = llm_cli("imagen4", "two, one refused", "-n", "2")
    assert result.exit_code == 1
    [row] = history(llm_cli)
    assert [i["status"] for i in row["images"]] == ["saved", "refused"]
    again = llm_cli("imagen4", "download", row["id"])
    assert again.exit_code == 0, again.output
    assert f"Every saved image of {row['id']} is on disk" in again.stderr
    [after] = history(llm_cli)
    assert [i["status"] for i in after["images"]] == ["saved", "refused"]
    assert journal_ids(fake) == []


def test_a_restore_that_fails_leaves_the_history_and_journal_as_they_were(
    fake, generate, llm_cli
):
    [path] = generate("an owl by url")
    turn_id = history(llm_cli)[0]["id"]
    os.remove(path)
    fake.replan_downloads(3, status=404)
    result = llm_cli("imagen4", "download", turn_id)
    assert result.exit_code == 1
    assert "image 1 could not be saved: the image host answered 404" in result.stderr
    [row] = history(llm_cli)
    assert row["images"][0]["status"] == "saved"
    assert journal_ids(fake) == []
    fake.replan_downloads()
    assert llm_cli("imagen4", "download", turn_id).stdout.strip() == path


def test_show_prints_every_field_and_whether_files_exist(fake, generate, llm_cli):
    paths = generate("a vase", "-n", "2", "--seed", "77")
    turn_id = history(llm_cli)[0]["id"]
    os.remove(paths[0])
    text = llm_cli("imagen4", "show", turn_id).stdout
    for expected in (
        f"id: {turn_id}",
        "model: imagen4",
        "prompt: a vase",
        "seed: 77",
        "option num_images: 2",
        "credits_used: 240000",
        "usd_spent: 0.12",
        f"client_request_id: llm-imagen4:{turn_id}",
        "inference_id: inf-",
        "image 1:",
        "exists: False",
        "image 2:",
        "exists: True",
        f"path: {paths[1]}",
        "width: 1024",
    ):
        assert expected in text, expected
    # Nothing without a value: no negative prompt was given.
    assert "None" not in text and "negative_prompt" not in text
    data = json.loads(llm_cli("imagen4", "show", turn_id, "--json").stdout)
    assert data["negative_prompt"] is None
    assert [i["exists"] for i in data["images"]] == [False, True]
    assert data["provenance"]["seed"] == 77
    unknown = llm_cli("imagen4", "show", "nope")
    assert unknown.exit_code == 1 and "No generation with id nope" in unknown.output


def test_history_since_seed_and_paths(fake, generate, llm_cli, logs_db):
    generate("old one", "--seed", "1")
    generate("new one", "--seed", "2", "-n", "2")
    db = logs_db()
    with db.conn:
        db.execute(
            "update turns set datetime_utc = '2020-01-01T00:00:00+00:00'"
            " where id = (select turn_id from imagen4_images where prompt = 'old one')"
        )
    # A turn edited by hand: dropping the index has it made again from turns.
    db["imagen4_sync"].drop()
    assert [r["prompt"] for r in history(llm_cli, "--since", "2021-06-01")] == [
        "new one"
    ]
    assert [r["prompt"] for r in history(llm_cli, "--seed", "1")] == ["old one"]
    paths = llm_cli("imagen4", "history", "--paths").stdout.splitlines()
    assert [Path(p).name for p in paths] == [
        "new-one.png",
        "new-one-2.png",
        "old-one.png",
    ]
    # Only files that are there, for xargs.
    Path(paths[1]).unlink()
    kept = llm_cli("imagen4", "history", "--paths").stdout.splitlines()
    assert kept == [paths[0], paths[2]]
    bad = llm_cli("imagen4", "history", "--since", "yesterday")
    assert bad.exit_code == 2 and "'yesterday' does not match the formats" in bad.output


@pytest.mark.parametrize("command", ["show", "download", "rerun"])
def test_commands_on_a_new_machine(new_machine, llm_cli, command):
    result = llm_cli("imagen4", command, "01abc")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert not new_machine.logs.exists()
