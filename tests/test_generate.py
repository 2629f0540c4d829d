"""Generating through `llm imagen4` and `llm -m imagen4`, against the fake API."""

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from .fake_api import KEY

MODELS = {
    "imagen4": "google/imagen4/preview",
    "imagen4-generate": "google/imagen-4.0-generate-001",
    "imagen4-fast": "google/imagen-4.0-fast-generate-001",
    "imagen4-ultra": "google/imagen-4.0-ultra-generate-001",
}


def png_size(path):
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_racoon_16_9_saves_a_1408x768_png(fake, llm_cli, logs_db):
    result = llm_cli("imagen4", "Racoon eating ice-cream", "-r", "16:9")
    assert result.exit_code == 0, result.output
    path = result.stdout.strip()
    assert path == str(fake.work / "racoon-eating-ice-cream.png")
    assert png_size(path) == (1408, 768)
    [request] = fake.generations
    assert request.body["aspect_ratio"] == "16:9"
    assert request.body["model"] == "google/imagen4/preview"
    seed = request.body["seed"]
    assert 1 <= seed <= 4294967295
    # The prompt and seed are in llm logs, the history and the table.
    logs = llm_cli("logs", "-n", "1").stdout
    assert "Racoon eating ice-cream" in logs and f"seed: {seed}" in logs
    history = llm_cli("imagen4", "history").stdout
    assert "Racoon eating ice-cream" in history and f"seed {seed}" in history
    [row] = logs_db().query("select * from imagen4_images")
    assert row["prompt"] == "Racoon eating ice-cream"
    assert row["seed"] == seed
    assert row["path"] == path
    assert (row["width"], row["height"]) == (1408, 768)


def test_llm_prompt_with_options_does_the_same(fake, llm_cli, logs_db):
    result = llm_cli(
        "-m", "imagen4", "Racoon eating ice-cream", "-o", "aspect_ratio", "16:9"
    )
    assert result.exit_code == 0, result.output
    path = result.stdout.strip()
    assert png_size(path) == (1408, 768)
    seed = fake.generations[0].body["seed"]
    db = logs_db()
    [turn] = db.query("select * from turns")
    options = json.loads(turn["options_json"])
    assert options == {"aspect_ratio": "16:9", "seed": seed}
    record = json.loads(turn["response_json"])
    assert record["request"]["seed"] == seed
    assert record["images"][0]["name"] == Path(path).name
    [row] = db.query("select * from imagen4_images")
    assert row["turn_id"] == turn["id"]
    assert row["seed"] == seed
    assert "Racoon eating ice-cream" in llm_cli("imagen4", "history").stdout


def test_response_json_keeps_urls_and_records_never_base64_or_key(
    fake, llm_cli, logs_db
):
    result = llm_cli("imagen4", "a cat", "-m", "imagen4-fast", "-n", "2")
    assert result.exit_code == 0, result.output
    fake.state.response_shape = "images"
    assert llm_cli("imagen4", "a dog").exit_code == 0
    dump = (
        b"".join(line.encode() for line in logs_db().conn.iterdump())
        + (fake.user_path / "logs.db").read_bytes()
    )
    assert KEY.encode() not in dump
    assert b"iVBORw0KGgo" not in dump  # base64 of a PNG signature
    rows = list(logs_db().query("select * from imagen4_images order by id"))
    assert [r["position"] for r in rows] == [0, 1, 0]
    assert rows[2]["url"].startswith(fake.cdn_url)
    assert all(r["status"] == "saved" and len(r["sha256"]) == 64 for r in rows)


@pytest.mark.parametrize("model_id", list(MODELS))
def test_every_model_sends_its_api_id_and_saves(fake, llm_cli, model_id):
    result = llm_cli("imagen4", "a red kite", "-m", model_id, "--seed", "7")
    assert result.exit_code == 0, result.output
    [request] = fake.generations
    assert request.body["model"] == MODELS[model_id]
    assert request.body["seed"] == 7
    assert png_size(result.stdout.strip()) == (1024, 1024)
    inline = model_id != "imagen4"
    assert request.body.get("convert_base64_to_url") is (False if inline else None)
    # Inline models need no second round trip to the image host.
    assert len(fake.downloads) == (0 if inline else 1)


def test_newer_model_flags_reach_the_request(fake, llm_cli):
    result = llm_cli(
        "imagen4",
        "a portrait",
        "-m",
        "imagen4-ultra",
        "--no-enhance-prompt",
        "--person-generation",
        "dont_allow",
        "--safety-setting",
        "block_only_high",
        "--watermark",
        "-r",
        "3:4",
    )
    assert result.exit_code == 0, result.output
    body = fake.generations[0].body
    assert body["enhance_prompt"] is False
    assert body["person_generation"] == "dont_allow"
    assert body["safety_setting"] == "block_only_high"
    assert body["add_watermark"] is True
    assert png_size(result.stdout.strip()) == (896, 1280)


def test_negative_prompt_and_several_images_on_preview(fake, llm_cli):
    result = llm_cli(
        "imagen4", "a beach", "--negative-prompt", "people", "-n", "3", "-r", "4:3"
    )
    assert result.exit_code == 0, result.output
    assert fake.generations[0].body["negative_prompt"] == "people"
    paths = result.stdout.splitlines()
    assert [Path(p).name for p in paths] == [
        "a-beach.png",
        "a-beach-2.png",
        "a-beach-3.png",
    ]
    assert all(png_size(p) == (1280, 896) for p in paths)
    assert len({Path(p).read_bytes() for p in paths}) == 3


def test_both_response_shapes_are_read(fake, llm_cli):
    fake.state.response_shape = "images"
    older = llm_cli("imagen4", "shape one", "-m", "imagen4-fast")
    assert older.exit_code == 0, older.output
    fake.state.response_shape = "data"
    newer = llm_cli("imagen4", "shape two", "-m", "imagen4")
    assert newer.exit_code == 0, newer.output
    assert png_size(older.stdout.strip()) == png_size(newer.stdout.strip())
    # The older shape always, the newer one here, by URL.
    assert [d.path.split("/")[1] for d in fake.downloads] == ["files", "generations"]


def test_json_output(fake, llm_cli):
    result = llm_cli("imagen4", "a fox", "--json", "-n", "2", "--seed", "99")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["seed"] == 99
    assert data["model"] == "imagen4"
    assert data["api_model"] == "google/imagen4/preview"
    assert data["options"] == {"num_images": 2, "seed": 99}
    assert len(data["paths"]) == 2 and all(Path(p).exists() for p in data["paths"])
    assert data["images"][0]["width"] == 1024
    assert data["images"][0]["path"] == data["paths"][0]
    assert len(data["id"]) == 26


def test_prompt_from_stdin(fake, llm_cli):
    result = llm_cli("imagen4", "-", input="a quiet harbour\n")
    assert result.exit_code == 0, result.output
    assert fake.generations[0].body["prompt"] == "a quiet harbour"


def test_async_model_shares_the_implementation(fake, llm_cli):
    result = llm_cli("-m", "imagen4-fast", "an owl", "--async")
    assert result.exit_code == 0, result.output
    assert png_size(result.stdout.strip()) == (1024, 1024)
    assert fake.generations[0].body["model"] == MODELS["imagen4-fast"]


def test_python_api_sync_and_async(fake):
    import asyncio

    import llm

    response = llm.get_model("imagen4-generate").prompt("a bee", seed=5)
    assert Path(response.text()).exists()
    assert response.response_json["seed"] == 5

    async def run():
        model = llm.get_async_model("imagen4-generate")
        return await model.prompt("a wasp", seed=6).text()

    assert Path(asyncio.run(run())).exists()
    assert [r.body["seed"] for r in fake.generations] == [5, 6]


def test_a_true_subprocess_generates_and_pipes_paths(fake, llm_process):
    proc = llm_process("imagen4", "lighthouse: at dawn/dusk", "-n", "2", cwd=fake.work)
    assert proc.returncode == 0, proc.stderr
    paths = proc.stdout.decode().splitlines()
    assert [Path(p).name for p in paths] == [
        "lighthouse-at-dawn-dusk.png",
        "lighthouse-at-dawn-dusk-2.png",
    ]
    assert proc.stderr == b""


def test_the_plugin_imports_next_to_nothing_for_other_commands(fake, llm_process):
    code = (
        "import sys, llm, llm.cli; llm.get_models();"
        "print(sorted(m for m in sys.modules if m.startswith('llm_imagen4')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert (
        proc.stdout.strip()
        == "['llm_imagen4', 'llm_imagen4.cli', 'llm_imagen4.models']"
    )
    assert not (fake.user_path / "logs.db").exists()


def test_options_are_listed(fake, llm_cli):
    preview = llm_cli("models", "--options", "-m", "imagen4").stdout
    fast = llm_cli("models", "--options", "-m", "imagen4-fast").stdout
    for name in ("aspect_ratio", "num_images", "seed", "output", "negative_prompt"):
        assert f"{name}:" in preview
    assert "negative_prompt" not in fast
    for name in (
        "enhance_prompt",
        "person_generation",
        "safety_setting",
        "add_watermark",
    ):
        assert f"{name}:" in fast and name not in preview
    listed = llm_cli("imagen4", "models").stdout
    assert "imagen4: google/imagen4/preview (default)" in listed
    assert "imagen4-ultra: google/imagen-4.0-ultra-generate-001" in listed
    assert "prompt: up to 400 characters" in listed


def test_open_shows_the_saved_images(fake, llm_cli, monkeypatch):
    import click

    opened = []
    monkeypatch.setattr(click, "launch", lambda path: opened.append(path))
    result = llm_cli("imagen4", "two", "-n", "2", "--open")
    assert result.exit_code == 0
    assert opened == result.stdout.splitlines()


@pytest.mark.parametrize("status", [200, 201, 202, 299])
def test_any_2xx_is_success(fake, llm_cli, status):
    import base64

    from .fake_api import png

    image = base64.b64encode(png(1024, 1024)).decode()
    fake.plan_api(status=status, body={"data": [{"url": None, "b64_json": image}]})
    result = llm_cli("imagen4", "any success")
    assert result.exit_code == 0, result.output
    assert png_size(result.stdout.strip()) == (1024, 1024)
