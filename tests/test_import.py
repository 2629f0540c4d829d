"""``llm imagen4 import``: a history lost with its logs.db, rebuilt from the
images' own records. Each test makes its images through the fake API, loses
or sets aside the history, imports the folder, and shows what came back, and
that the import itself sent nothing; crafted files are skipped, said and
counted, never imported."""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
from pathlib import Path

from llm_imagen4 import files, images, provenance

from .conftest import history
from .fake_api import jpeg, png

ESC = "\x1b"
# An id as llm makes them, for the records crafted here.
CRAFTED_ID = "01m8zz0000crafted000000000"


def importing(llm_cli, *args):
    return llm_cli("imagen4", "import", *args)


def summary(result) -> str:
    return result.stderr.splitlines()[-1]


def turns_of(db) -> list[dict]:
    return list(db.query("select * from turns order by id"))


def without(entries: list[dict], *keys: str) -> list[dict]:
    """History entries without the fields an image's record cannot bring
    back: when the request was sent (the record says when it was answered)
    and the image host's URL."""
    return [
        {
            **{k: v for k, v in entry.items() if k not in keys},
            "images": [
                {k: v for k, v in image.items() if k != "url"}
                for image in entry["images"]
            ],
        }
        for entry in entries
    ]


def crafted_record(**changes) -> dict:
    """A record the plugin could have written, with ``changes``."""
    record = provenance.build(
        model_id="imagen4",
        request={
            "model": "google/imagen4/preview",
            "prompt": "a crafted teapot",
            "seed": 7,
            "aspect_ratio": "1:1",
            "num_images": 1,
        },
        turn_id=CRAFTED_ID,
        created_utc="2026-01-01T00:00:00+00:00",
        credits_used=120000,
        usd_spent=0.06,
    )
    record.update(changes)
    return record


def crafted(path: Path, **changes) -> Path:
    """A small PNG with a crafted record inside."""
    text = images.text_chunk(
        provenance.JSON_KEYWORD, json.dumps(crafted_record(**changes))
    )
    path.write_bytes(png(8, 8, salt=path.name.encode(), extra=text))
    return path


def make_library(fake, generate) -> list[str]:
    """Four generations of three models, one of two images, one a JPEG with
    its sidecar, one in a folder below; the paths in the order made."""
    made = generate(
        "a lighthouse at dawn",
        *("-n", "2", "-r", "16:9", "--seed", "42", "-o", "lib"),
        *("--negative-prompt", "boats"),
    )
    made += generate(
        "a koi pond",
        *("-m", "imagen4-fast", "-o", "lib/ponds", "--no-enhance-prompt"),
        *("--person-generation", "dont_allow"),
    )
    made += generate("a red kite", "-m", "imagen4-ultra", "-r", "3:4", "-o", "lib")
    fake.fail_downloads(body=jpeg(1024, 1024))
    made += generate("a fox in snow", "-o", "lib")
    fake.replan_downloads()
    assert made[-1].endswith("a-fox-in-snow.jpg")
    assert Path(made[-1] + ".json").is_file()
    return made


def test_a_lost_history_comes_back_from_the_images(fake, generate, llm_cli, logs_db):
    made = make_library(fake, generate)
    before = history(llm_cli, "-n", "0")
    options = {
        turn["id"]: json.loads(turn["options_json"]) for turn in turns_of(logs_db())
    }
    records = {
        turn["id"]: json.loads(turn["response_json"]) for turn in turns_of(logs_db())
    }
    fake.logs.unlink()
    sent = len(fake.state.requests)

    result = importing(llm_cli, str(fake.work / "lib"))

    assert result.exit_code == 0, result.output
    assert sorted(result.stdout.splitlines()) == sorted(made)
    assert result.stderr.splitlines() == [
        "4 generations (5 images) imported, 0 already in the history, 0 files skipped"
    ]
    assert len(fake.state.requests) == sent
    after = history(llm_cli, "-n", "0")
    # The same generations, newest first: ids, models, prompts, seeds,
    # options, costs, each image's path, sha256, size and dimensions.
    assert without(after, "datetime_utc") == without(before, "datetime_utc")
    for old, new in zip(before, after, strict=True):
        sent_at = datetime.datetime.fromisoformat(old["datetime_utc"])
        answered_at = datetime.datetime.fromisoformat(new["datetime_utc"])
        assert datetime.timedelta(0) <= answered_at - sent_at < datetime.timedelta(5)
    for turn in turns_of(logs_db()):
        record = json.loads(turn["response_json"])
        assert datetime.datetime.fromisoformat(record["imported"]).tzinfo
        # The record as logged when the images were made, but for what no
        # image holds: the image host's URLs and the ids of the request.
        lost = {"imported", "client_request_id", "inference_id", "images"}
        logged = records[turn["id"]]
        assert logged["imported"] is None and logged["inference_id"]
        assert {k: v for k, v in record.items() if k not in lost} == {
            k: v for k, v in logged.items() if k not in lost
        }
        assert [{**i, "url": None} for i in logged["images"]] == record["images"]
        # The request's options, seed included; not where the images went.
        given = {k: v for k, v in options[turn["id"]].items() if k != "output"}
        imported = json.loads(turn["options_json"])
        assert given.items() <= imported.items()
        assert imported.items() - given.items() <= {
            ("aspect_ratio", "1:1"),
            ("num_images", 1),
        }
        assert json.loads(turn["token_details"]) == {
            "credits_used": record["credits_used"],
            "usd_spent": record["usd_spent"],
        }
    [fox] = [turn for turn in after if turn["prompt"] == "a fox in snow"]
    assert fox["images"][0]["content_type"] == "image/jpeg"
    rows = list(logs_db().query("select turn_id, position, path from imagen4_images"))
    assert sorted(row["path"] for row in rows) == sorted(made)


def test_show_and_rerun_work_again_after_an_import(fake, generate, llm_cli):
    [first, second] = generate(
        "a paper boat",
        "-m",
        "imagen4-generate",
        "-n",
        "2",
        "--seed",
        "9",
        "-o",
        "boats",
    )
    [turn] = history(llm_cli)
    request = fake.generations[-1].body
    fake.logs.unlink()
    assert importing(llm_cli, "boats").exit_code == 0
    sent = len(fake.state.requests)

    shown = llm_cli("imagen4", "show", turn["id"], "--json")
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert [image["path"] for image in data["images"]] == [first, second]
    assert data["options"]["seed"] == 9 and data["prompt"] == "a paper boat"
    assert len(fake.state.requests) == sent

    again = llm_cli("imagen4", "rerun", turn["id"], "-o", "again")
    assert again.exit_code == 0, again.output
    assert fake.generations[-1].body == request
    assert len(fake.generations) == 2


def test_importing_twice_adds_nothing_and_leaves_llms_turns_alone(
    fake, generate, llm_cli, logs_db, tmp_path
):
    generate("a lighthouse", "-n", "2", "-o", "lib")
    turns = turns_of(logs_db())
    again = importing(llm_cli, "lib")
    assert again.exit_code == 0 and again.stdout == ""
    assert summary(again).startswith("0 generations (0 images) imported, 1 already")
    assert turns_of(logs_db()) == turns

    rebuilt = tmp_path / "rebuilt.db"
    once = importing(llm_cli, "lib", "-d", str(rebuilt))
    assert summary(once).startswith("1 generation (2 images) imported, 0 already")
    first = turns_of(logs_db(rebuilt))
    twice = importing(llm_cli, "lib", "lib/a-lighthouse.png", "-d", str(rebuilt))
    assert twice.exit_code == 0 and twice.stdout == ""
    assert summary(twice) == (
        "0 generations (0 images) imported, 1 already in the history, 0 files skipped"
    )
    assert turns_of(logs_db(rebuilt)) == first


def test_files_without_the_record_are_counted_and_copies_are_one(
    fake, generate, llm_cli
):
    [kept] = generate("a teapot", "-o", "lib")
    generate("a plain cup", "--no-metadata", "-o", "lib")
    (fake.work / "lib" / "photo.png").write_bytes(png(8, 8))
    (fake.work / "lib" / "notes.txt").write_text("not an image")
    (fake.work / "lib" / "backup").mkdir()
    shutil.copy(kept, fake.work / "lib" / "backup" / "a-teapot.png")
    fake.logs.unlink()

    result = importing(llm_cli, "lib")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [kept]
    assert result.stderr.splitlines() == [
        "1 generation (1 image) imported, 0 already in the history, 3 files skipped"
        " (2 without the plugin's record, 1 duplicate)"
    ]


def test_images_named_past_their_positions_are_one_generation_in_order(
    fake, generate, llm_cli
):
    generate("a lighthouse", "-n", "2", "-o", "lib")
    later = generate("a lighthouse", "-n", "2", "-o", "lib")
    assert {Path(p).name for p in later} == {"a-lighthouse-3.png", "a-lighthouse-4.png"}
    fake.logs.unlink()
    assert importing(llm_cli, "lib").exit_code == 0
    newest = history(llm_cli)[0]
    assert [image["position"] for image in newest["images"]] == [0, 1]
    assert sorted(image["path"] for image in newest["images"]) == sorted(later)


def two_records(path: Path) -> Path:
    texts = b"".join(
        images.text_chunk("llm-imagen4", json.dumps(crafted_record(**claim)))
        for claim in ({}, {"prompt": "FORGED"})
    )
    path.write_bytes(png(8, 8, extra=texts))
    return path


def with_another_sidecar(path: Path) -> Path:
    path.write_bytes(jpeg(64, 64))
    files.sidecar_of(path).write_text(json.dumps(crafted_record(file="cat.jpg")))
    return path


def forge(folder: Path, other_turn: str) -> dict[Path, str]:
    """Crafted files in ``folder``, each with what its line says."""
    folder.mkdir()
    malformed = folder / f"evil{ESC}[2J.png"
    malformed.write_bytes(
        png(8, 8, extra=images.text_chunk("llm-imagen4", '{"generator": "llm-imagen4"'))
    )
    return {
        two_records(folder / "two.png"): "it holds 2 llm-imagen4 records",
        crafted(folder / "bad-id.png", turn_id=f"01evil{ESC}]0;pwned"): (
            "its record's turn_id: '01evil\\x1b]0;pwned' is not an id llm makes"
        ),
        crafted(folder / "bad-model.png", api_model="google/another"): (
            "its record's api_model: 'google/another' is not the API model of imagen4"
        ),
        malformed: "unreadable provenance",
        crafted(folder / "cup.png", prompt="a crafted cup"): (
            f"the images of generation {CRAFTED_ID} disagree"
        ),
        crafted(folder / "cup-2.png", prompt="another crafted cup"): (
            f"the images of generation {CRAFTED_ID} disagree"
        ),
        with_another_sidecar(folder / "fox.jpg"): "its sidecar names another file",
        crafted(folder / "theirs.png", turn_id=other_turn): (
            f"its turn id {other_turn} is another turn's"
        ),
    }


def test_crafted_files_are_skipped_said_and_never_imported(
    fake, generate, llm_cli, logs_db
):
    [real] = generate("a teapot", "-o", "lib")
    assert llm_cli("-m", "echo", "hello").exit_code == 0
    [echo] = [turn for turn in turns_of(logs_db()) if turn["model"] == "echo"]
    forged = forge(fake.work / "lib" / "forged", echo["id"])
    os.mkfifo(fake.work / "lib" / "forged" / "pipe.png")
    (fake.work / "lib" / "forged" / "link.png").symlink_to(real)
    turns, sent = turns_of(logs_db()), len(fake.state.requests)

    result = importing(llm_cli, "lib")

    assert result.exit_code == 1
    assert "Traceback" not in result.output and ESC not in result.output
    assert result.stdout == ""  # the real one is in the history already
    *lines, last = result.stderr.splitlines()
    assert last == (
        "0 generations (0 images) imported, 1 already in the history, 10 files"
        " skipped (1 unreadable, 1 of more than one claim, 1 with another image's"
        " sidecar, 5 refused, 2 not regular)"
    )
    assert len(lines) == len(forged)
    for path, why in forged.items():
        shown = str(path).replace(ESC, "\\x1b")
        assert [line for line in lines if line.startswith(f"{shown}: {why}")], why
    assert len(fake.state.requests) == sent
    assert turns_of(logs_db()) == turns


def test_bad_paths_are_one_line_and_nothing_is_made(fake, llm_cli, tmp_path):
    target = tmp_path / "new" / "logs.db"
    os.mkfifo(tmp_path / "pipe.png")
    for given, line in (
        ("nowhere", "Error: nowhere: No such file or directory"),
        (
            str(tmp_path / "pipe.png"),
            f"Error: {tmp_path / 'pipe.png'} is neither a file nor a folder",
        ),
    ):
        result = importing(llm_cli, given, "-d", str(target))
        assert result.exit_code == 1
        assert result.stderr.splitlines() == [line]
    assert not target.parent.exists()


def test_the_readme_query_finds_the_imported_images_alone(
    fake, generate, llm_cli, logs_db
):
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    [query] = re.findall(
        r'sqlite-utils "\$\(llm logs path\)" --csv "(.*?)"\n', readme, re.S
    )
    made = generate("a lighthouse", "-n", "2", "-o", "lib")
    fake.logs.unlink()
    assert importing(llm_cli, "lib").exit_code == 0
    generate("a koi pond", "-o", "ponds")
    rows = list(logs_db().query(query))
    assert sorted(row["path"] for row in rows) == sorted(made)
    assert all(datetime.datetime.fromisoformat(row["imported"]) for row in rows)


def test_import_in_a_process_makes_its_database_as_llm_does(
    fake, generate, llm_cli, llm_process, tmp_path
):
    made = generate("a lighthouse", "-o", "lib")
    # Importing is asking for the history to be written.
    assert llm_cli("logs", "off").exit_code == 0
    target = tmp_path / "somewhere" / "rebuilt.db"
    result = llm_process("imagen4", "import", "lib", "-d", str(target), cwd=fake.work)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == made
    shown = llm_cli("imagen4", "history", "--json", "-d", str(target))
    assert [e["prompt"] for e in json.loads(shown.stdout)] == ["a lighthouse"]
    logged = llm_cli("logs", "-d", str(target), "--json")
    [turn] = json.loads(logged.stdout)
    assert turn["model"] == "imagen4"
