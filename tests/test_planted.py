"""What a hostile neighbour can plant in the recovery journal, and what a
server can echo back, steer nothing: every entry is read as untrusted, by
its id alone, and the key is kept out of everything stored."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess

from .conftest import history, journal_ids, llm_command
from .fake_api import KEY

ID = "01m8p1anted000000000000000"


def unfinished(fake):
    folder = fake.user_path / "imagen4" / "unfinished"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def cut_off_inline(answer):
    """An inline image that arrives cut off: kept by the journal."""
    whole = base64.b64decode(answer["data"][0]["b64_json"])
    half = base64.b64encode(whole[: len(whole) // 2]).decode()
    return {**answer, "data": [{**answer["data"][0], "b64_json": half}]}


def test_an_entry_named_like_a_pattern_removes_nothing(fake, llm_cli):
    fake.plan_api(generate=True, shape=cut_off_inline)
    assert llm_cli("imagen4", "kept", "-m", "imagen4-fast").exit_code == 1
    [kept_id] = journal_ids(fake)
    folder = unfinished(fake)
    [stash] = folder.glob("*.img")
    for name in ("*.json", "*-0.img", "*.lock", "[0-9]*.json"):
        (folder / name).write_text('{"id": "*", "model": "imagen4"}')
    result = llm_cli("imagen4", "download")
    assert "Traceback" not in result.output
    assert stash.exists(), "another generation's only copy of a paid image"
    assert (folder / f"{kept_id}.json").exists()
    assert all((folder / name).exists() for name in ("*.json", "*-0.img"))


def test_an_entry_that_names_another_id_is_not_taken(fake, llm_cli):
    folder = unfinished(fake)
    (folder / f"{ID}.json").write_text(
        json.dumps(
            {
                "id": "01m8other00000000000000000",
                "model": "imagen4",
                "outcome": "prepared",
                "created_utc": "2026-01-01T00:00:00",
            }
        )
    )
    result = llm_cli("imagen4", "download")
    assert result.exit_code == 0, result.output
    assert "never sent" not in result.stderr


def test_a_fifo_as_an_entry_and_a_symlinked_lock_hang_nothing(fake, tmp_path):
    folder = unfinished(fake)
    os.mkfifo(folder / f"{ID}.json")
    other = "01m8symd1nk000000000000000"
    (folder / f"{other}.json").write_text("{}")
    target = tmp_path / "not-the-journals.txt"
    target.write_text("untouched")
    os.symlink(target, folder / f"{other}.lock")
    done = subprocess.run(
        llm_command("imagen4", "download"),
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(os.environ),
    )
    assert "Traceback" not in done.stderr
    assert f"{other}: " in done.stderr and "left as it is" in done.stderr
    assert target.read_text() == "untouched"
    assert (folder / f"{other}.lock").is_symlink()


def test_an_entry_whose_names_lead_out_of_its_folder_is_not_followed(
    fake, llm_cli, tmp_path
):
    escaped = tmp_path / "escaped"
    entry = {
        "id": ID,
        "model": "imagen4",
        "outcome": "answered",
        "created_utc": "2026-01-01T00:00:00+00:00",
        "record": {
            "request": {"model": "google/imagen4/preview", "prompt": "x", "seed": 1},
            "seed": 1,
            "directory": str(fake.work) + os.sep,
            "stem": "../../../../" + str(escaped).lstrip("/") + "/x",
            "images": [{"position": 0, "url": f"{fake.cdn_url}/files/x.png"}],
        },
    }
    (unfinished(fake) / f"{ID}.json").write_text(json.dumps(entry))
    result = llm_cli("imagen4", "download")
    assert "Traceback" not in result.output
    assert not escaped.exists()
    assert fake.downloads == []


def test_a_prompt_that_is_not_utf8_is_one_line_and_nothing_is_sent(fake):
    done = subprocess.run(
        [*llm_command("imagen4"), b"bad \xff byte"],
        capture_output=True,
        timeout=60,
        env=dict(os.environ),
        cwd=fake.work,
    )
    assert done.returncode == 1
    assert done.stderr.decode().strip() == (
        "Error: The prompt is not UTF-8 text: character 5 is a byte that is no "
        "character"
    )
    assert fake.state.requests == [] and journal_ids(fake) == []


def echo_the_key(answer):
    data = answer["data"][0]
    return {
        **answer,
        "data": [
            {
                **data,
                "prompt": f"a fox ({KEY}, {base64.b64encode(KEY.encode()).decode()})",
            }
        ],
    }


def test_a_key_the_answer_echoes_is_stored_nowhere(fake, llm_cli):
    fake.plan_api(
        generate=True,
        shape=echo_the_key,
        headers={"x-inference-id": f"inf-{KEY}"},
    )
    assert llm_cli("imagen4", "a fox", "-m", "imagen4-fast").exit_code == 0
    fake.plan_api(
        generate=True,
        shape=lambda answer: {
            **answer,
            "images": [{"url": f"{fake.cdn_url}/files/{KEY}.png"}],
        },
    )
    leaked = llm_cli("imagen4", "a url")
    assert leaked.exit_code == 1
    assert "its URL holds the API key, so it is not fetched" in leaked.stderr
    assert not any(KEY in r.path for r in fake.downloads)
    forms = (KEY, base64.b64encode(KEY.encode()).decode().rstrip("="))
    dumped = sqlite3.connect(fake.logs).iterdump()
    stored = "\n".join(dumped)
    assert not any(form in stored for form in forms)
    for path in fake.work.iterdir():
        assert not any(form.encode() in path.read_bytes() for form in forms)
    assert "[key]" in json.dumps(history(llm_cli))
    assert KEY not in leaked.output


def crafted(fake, logs_db, turn_id, change):
    """The turn's record in logs.db, edited as a shared or crafted database
    would have it."""
    db = logs_db()
    record = json.loads(db["turns"].get(turn_id)["response_json"])
    change(record)
    db["turns"].update(turn_id, {"response_json": json.dumps(record)})


def test_a_crafted_database_chooses_no_folder_to_write_into(
    fake, llm_cli, logs_db, tmp_path
):
    assert llm_cli("imagen4", "a lark").exit_code == 0
    [turn] = history(llm_cli)
    (fake.work / "a-lark.png").unlink()
    elsewhere, hidden = tmp_path / "elsewhere", fake.work / ".config" / "autostart"
    for folder in (elsewhere, hidden):
        folder.mkdir(parents=True)
        crafted(
            fake,
            logs_db,
            turn["id"],
            lambda r, folder=folder: r.update(directory=f"{folder}/"),
        )
        result = llm_cli("imagen4", "download", turn["id"])
        assert result.exit_code == 1
        assert result.stderr == (
            f"Error: The history records the folder {folder}, which is not one to "
            "fetch into without asking: give -o FOLDER to choose where\n"
        )
        assert list(folder.iterdir()) == []
    chosen = fake.work / "restored"
    result = llm_cli("imagen4", "download", turn["id"], "-o", str(chosen))
    assert result.exit_code == 0, result.output
    assert [p.name for p in chosen.iterdir()] == ["a-lark.png"]


def test_a_crafted_name_that_leads_out_of_its_folder_is_one_line(
    fake, llm_cli, logs_db, tmp_path
):
    assert llm_cli("imagen4", "a wren").exit_code == 0
    [turn] = history(llm_cli)
    (fake.work / "a-wren.png").unlink()
    crafted(fake, logs_db, turn["id"], lambda r: r.update(stem="../../escaped"))
    result = llm_cli("imagen4", "download", turn["id"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and result.stderr.count("\n") == 1
    assert f"generation with id {turn['id']}" in result.stderr
    assert not (fake.work.parent.parent / "escaped.png").exists()


def test_an_entry_with_a_chat_turns_id_leaves_that_turn_alone(fake, llm_cli, logs_db):
    assert llm_cli("-m", "echo", "hello").exit_code == 0
    [chat] = list(logs_db().query("select id, response_json from turns"))
    entry = {
        "id": chat["id"],
        "model": "imagen4",
        "outcome": "answered",
        "created_utc": "2026-01-01T00:00:00+00:00",
        "log_to": str(fake.logs),
        "record": {
            "request": {"model": "google/imagen4/preview", "prompt": "x", "seed": 1},
            "seed": 1,
            "directory": str(fake.work) + os.sep,
            "images": [{"position": 0, "status": "refused", "error": "x"}],
        },
    }
    (unfinished(fake) / f"{chat['id']}.json").write_text(json.dumps(entry))
    result = llm_cli("imagen4", "download")
    assert result.exit_code == 1
    assert "is not a generation of the plugin's: it is left as it is" in result.stderr
    [after] = list(logs_db().query("select id, response_json from turns"))
    assert after == chat


def test_an_answer_with_more_images_than_asked_takes_only_those(fake, llm_cli):
    fake.plan_api(
        generate=True, shape=lambda answer: {**answer, "images": answer["images"] * 50}
    )
    result = llm_cli("imagen4", "one asked")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("The API answered with 50 images for 1 asked for") == 1
    assert [p.name for p in fake.work.iterdir()] == ["one-asked.png"]
    assert len(fake.downloads) == 1


def test_a_bomb_from_the_log_or_the_billing_endpoint_is_refused(fake, llm_cli):
    assert llm_cli("imagen4", "a").exit_code == 0
    [turn_id] = [r["id"] for r in history(llm_cli)]
    bomb = b'{"data": [' + b" " * (64 * 1024 * 1024) + b"]}"
    fake.plan_service("/v2/logs", body=bomb, gzip=True)
    status = llm_cli("imagen4", "status", turn_id)
    assert status.exit_code == 1
    assert "answer larger than 4096 kB" in status.stderr
    fake.plan_service("/v2/billing", body=bomb, gzip=True)
    balance = llm_cli("imagen4", "balance")
    assert balance.exit_code == 1
    assert balance.stderr.count("\n") == 1
    assert "answer larger than 4096 kB" in balance.stderr


def test_a_fifo_as_the_gallery_page_hangs_nothing(fake, llm_cli):
    assert llm_cli("imagen4", "a").exit_code == 0
    os.mkfifo(fake.work / "imagen4-gallery.html")
    done = subprocess.run(
        llm_command("imagen4", "gallery"),
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(os.environ),
        cwd=fake.work,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "imagen4-gallery.html exists and is not a gallery" in done.stderr
    assert (fake.work / "imagen4-gallery.html").is_fifo()
