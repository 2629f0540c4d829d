"""Provenance in every image, and the commands that read it: inspect, rerun,
show, download and the history's filters."""

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest

from llm_imagen4 import provenance

from .fake_api import jpeg, png

TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


def chunks(data):
    """(type, data) of every chunk of a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    found, i = [], 8
    while i < len(data):
        (length,) = struct.unpack(">I", data[i : i + 4])
        found.append((data[i + 4 : i + 8], data[i + 8 : i + 8 + length]))
        i += 12 + length
    return found


def generate(llm_cli, *args):
    result = llm_cli("imagen4", *args)
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_png_provenance_round_trips_through_inspect(fake, llm_cli):
    [path] = generate(
        llm_cli,
        "Racoon eating ice-cream",
        "-r",
        "16:9",
        "--seed",
        "42",
        "--negative-prompt",
        "blur",
    )
    texts = provenance.png_texts(Path(path))
    assert texts["parameters"] == (
        "Racoon eating ice-cream\nNegative prompt: blur\n"
        "Seed: 42, Size: 1408x768, Model: imagen4"
    )
    assert TRAINED in texts["XML:com.adobe.xmp"]
    assert "Iptc4xmpExt:DigitalSourceType" in texts["XML:com.adobe.xmp"]

    [made] = json.loads(llm_cli("imagen4", "inspect", path, "--json").stdout)
    history = json.loads(llm_cli("imagen4", "history", "--json").stdout)[0]
    assert made["path"] == path
    assert made["model"] == "imagen4"
    assert made["api_model"] == "google/imagen4/preview"
    assert made["prompt"] == "Racoon eating ice-cream"
    assert made["negative_prompt"] == "blur"
    assert made["seed"] == 42
    assert made["options"] == {
        "aspect_ratio": "16:9",
        "num_images": 1,
        "seed": 42,
        "negative_prompt": "blur",
    }
    assert made["turn_id"] == history["id"]
    assert made["version"] == "0.1.0"
    assert made["digital_source_type"] == TRAINED
    text = llm_cli("imagen4", "inspect", path).stdout
    assert "seed: 42" in text and f"llm imagen4 rerun {path}" in text


def test_the_image_data_is_unchanged_by_the_metadata(fake, llm_cli):
    fake.state.response_shape = "images"
    [path] = generate(llm_cli, "a cat")
    [original] = fake.state.files.values()
    saved = Path(path).read_bytes()
    assert saved.startswith(original[:-12])  # every byte up to IEND
    added = [kind for kind, _ in chunks(saved)[len(chunks(original)) - 1 : -1]]
    assert added == [b"tEXt", b"iTXt", b"iTXt"]
    assert chunks(saved)[-1] == (b"IEND", b"")
    # The sha256 in the history is that of the file on disk.
    [row] = json.loads(llm_cli("imagen4", "history", "--json").stdout)
    assert row["images"][0]["sha256"] == hashlib.sha256(saved).hexdigest()


def test_unicode_prompts_go_in_itxt(fake, llm_cli):
    [path] = generate(llm_cli, "東京の夜 café", "-m", "imagen4-fast")
    data = Path(path).read_bytes()
    parameters = [d for kind, d in chunks(data) if d.startswith(b"parameters\0")]
    assert [kind for kind, d in chunks(data) if d.startswith(b"parameters\0")] == [
        b"iTXt"
    ]
    assert "東京の夜 café".encode() in parameters[0]
    assert provenance.read(Path(path))["prompt"] == "東京の夜 café"


def test_no_metadata_keeps_the_file_as_sent(fake, llm_cli):
    fake.state.response_shape = "images"
    [path] = generate(llm_cli, "plain", "--no-metadata")
    [original] = fake.state.files.values()
    assert Path(path).read_bytes() == original
    result = llm_cli("imagen4", "inspect", path)
    assert result.exit_code == 1
    assert "no provenance from llm-imagen4" in result.stderr
    assert (
        llm_cli("-m", "imagen4", "plain too", "-o", "metadata", "false").exit_code == 0
    )
    assert provenance.read(fake.work / "plain-too.png") is None


def test_inspect_says_clearly_when_a_file_has_none(fake, llm_cli):
    (fake.work / "other.png").write_bytes(png(4, 4))
    (fake.work / "notes.txt").write_text("hello")
    [ours] = generate(llm_cli, "ours")
    result = llm_cli("imagen4", "inspect", "other.png", "notes.txt", ours)
    assert result.exit_code == 1
    assert "other.png: no provenance from llm-imagen4" in result.stderr
    assert "notes.txt: no provenance from llm-imagen4" in result.stderr
    assert "2 of 3 files have no provenance" in result.stderr
    assert "prompt: ours" in result.stdout


def test_a_jpeg_gets_a_sidecar(fake, llm_cli):
    image = jpeg(1024, 1024)
    fake.fail_downloads(body=image)
    [path] = generate(llm_cli, "a jpeg")
    assert path.endswith("a-jpeg.jpg")
    assert Path(path).read_bytes() == image
    sidecar = json.loads(Path(path + ".json").read_text())
    assert sidecar["prompt"] == "a jpeg"
    [made] = json.loads(llm_cli("imagen4", "inspect", path, "--json").stdout)
    assert made["seed"] == sidecar["seed"]


def test_rerun_sends_the_identical_request(fake, llm_cli):
    generate(
        llm_cli,
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
    turn_id = json.loads(llm_cli("imagen4", "history", "--json").stdout)[0]["id"]
    first_path = fake.work / "a-portrait.png"
    by_id = llm_cli("imagen4", "rerun", turn_id)
    by_file = llm_cli("imagen4", "rerun", str(first_path))
    assert by_id.exit_code == 0 and by_file.exit_code == 0, (
        by_id.output + by_file.output
    )
    original, again, from_file = (g.body for g in fake.generations)
    assert again == original and from_file == original
    assert json.dumps(again) == json.dumps(original)  # the same bytes, too
    assert len(by_id.stdout.splitlines()) == 2


def test_rerun_flags_override(fake, llm_cli):
    [path] = generate(llm_cli, "a boat", "--seed", "5", "--negative-prompt", "fog")
    assert llm_cli("imagen4", "rerun", path, "--vary", "-n", "3").exit_code == 0
    assert llm_cli("imagen4", "rerun", path, "--seed", "6", "-r", "4:3").exit_code == 0
    original, varied, other = (g.body for g in fake.generations)
    assert varied["seed"] != 5 and varied["num_images"] == 3
    assert {**varied, "seed": 5, "num_images": 1} == original
    assert other == {**original, "seed": 6, "aspect_ratio": "4:3"}
    # A model that does not take an option the original used: an error.
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


def test_download_restores_a_deleted_file_exactly(fake, llm_cli):
    paths = generate(llm_cli, "two owls", "-n", "2")
    turn_id = json.loads(llm_cli("imagen4", "history", "--json").stdout)[0]["id"]
    before = hashlib.sha256(Path(paths[1]).read_bytes()).hexdigest()
    os.remove(paths[1])
    missing = json.loads(llm_cli("imagen4", "history", "--missing", "--json").stdout)
    assert [m["id"] for m in missing] == [turn_id]
    result = llm_cli("imagen4", "download", turn_id)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == paths[1]
    assert hashlib.sha256(Path(paths[1]).read_bytes()).hexdigest() == before
    assert len(fake.generations) == 1
    assert json.loads(llm_cli("imagen4", "history", "--missing", "--json").stdout) == []


def test_show_prints_every_field_and_whether_files_exist(fake, llm_cli):
    paths = generate(llm_cli, "a vase", "-n", "2", "--seed", "77")
    turn_id = json.loads(llm_cli("imagen4", "history", "--json").stdout)[0]["id"]
    os.remove(paths[0])
    text = llm_cli("imagen4", "show", turn_id).stdout
    for expected in (
        f"id: {turn_id}",
        "model: imagen4",
        "prompt: a vase",
        "seed: 77",
        "option num_images: 2",
        "image 1:",
        "exists: False",
        "image 2:",
        "exists: True",
        f"path: {paths[1]}",
        "sha256: ",
        "width: 1024",
    ):
        assert expected in text
    data = json.loads(llm_cli("imagen4", "show", turn_id, "--json").stdout)
    assert [i["exists"] for i in data["images"]] == [False, True]
    assert data["provenance"]["seed"] == 77
    unknown = llm_cli("imagen4", "show", "nope")
    assert unknown.exit_code == 1 and "No generation with id nope" in unknown.output


def test_history_since_seed_and_paths(fake, llm_cli, logs_db):
    generate(llm_cli, "old one", "--seed", "1")
    generate(llm_cli, "new one", "--seed", "2", "-n", "2")
    db = logs_db()
    with db.conn:
        db.execute(
            "update imagen4_images set datetime_utc = '2020-01-01T00:00:00+00:00'"
            " where prompt = 'old one'"
        )
    recent = json.loads(
        llm_cli("imagen4", "history", "--since", "2021-06-01", "--json").stdout
    )
    assert [r["prompt"] for r in recent] == ["new one"]
    seeded = json.loads(llm_cli("imagen4", "history", "--seed", "1", "--json").stdout)
    assert [r["prompt"] for r in seeded] == ["old one"]
    paths = llm_cli("imagen4", "history", "--paths").stdout.splitlines()
    assert [Path(p).name for p in paths] == [
        "new-one.png",
        "new-one-2.png",
        "old-one.png",
    ]
    bad = llm_cli("imagen4", "history", "--since", "yesterday")
    assert bad.exit_code == 2 and "'yesterday' does not match the formats" in bad.output


@pytest.mark.parametrize("command", ["show", "download", "rerun"])
def test_commands_on_a_new_machine(fake, llm_cli, command):
    result = llm_cli("imagen4", command, "01abc")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert not (fake.user_path / "logs.db").exists()
