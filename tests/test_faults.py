"""Faults of the machine the plugin runs on: a disk that fills up under llm's
user folder or the output folder while images download. Whatever fails
after an image is on disk, it is on disk once, recorded once, and no
temporary file is left behind."""

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys

import pytest

from .conftest import journal_ids, poll
from .disks import Unavailable, small_disks

MIB = 1024 * 1024


@pytest.fixture
def space(fake, tmp_path, monkeypatch):
    """Two small tmpfs, seen by the processes the test starts in their
    namespace: llm's user folder (with logs.db) and an output folder.
    Skipped where the machine lets no tmpfs be mounted."""
    try:
        with small_disks(tmp_path / "mounts", 4 * MIB, 8 * MIB) as namespace:
            user, _ = namespace.disks
            shutil.copy(fake.logs, user.path / "logs.db")
            monkeypatch.setenv("LLM_USER_PATH", str(user.inside))
            fake.user_path = user.path
            yield namespace
    except Unavailable as ex:
        pytest.skip(str(ex))


def start(namespace, *args):
    return subprocess.Popen(
        namespace.command([sys.executable, "-m", "llm", *map(str, args)], os.getcwd()),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(namespace, *args):
    proc = start(namespace, *args)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def turns(disk, tmp_path):
    db = sqlite3.connect(disk.copy_of("logs.db", tmp_path / "copy.db"))
    try:
        rows = db.execute("select id, response_json from turns").fetchall()
    finally:
        db.close()
    return {turn_id: json.loads(record) for turn_id, record in rows}


def images_in(folder):
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".png")


def temporaries(*folders):
    return [p.name for folder in folders for p in folder.rglob("*.part*")]


def test_a_full_disk_under_the_user_folder_never_saves_an_image_twice(
    fake, space, tmp_path
):
    user, out = space.disks
    fake.fail_downloads(hold=True)
    proc = start(space, "imagen4", "three herons", "-n", "3", "-o", out.inside)
    try:
        poll(lambda: len(fake.downloads) == 3)
        # The answer is journaled; the disk fills while the images download.
        user.fill()
        fake.release.set()
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert "Traceback" not in stderr
    saved = images_in(out.path)
    assert saved == ["three-herons-2.png", "three-herons-3.png", "three-herons.png"]
    # One line for the journal, however often it could not be written.
    assert stderr.count("Could not update the recovery journal") == 1, stderr
    assert "Could not log the turn" in stderr
    [generation_id] = journal_ids(fake)
    user.free()
    code, _, err = run(space, "imagen4", "download")
    assert code == 0, err
    assert images_in(out.path) == saved
    assert journal_ids(fake) == []
    record = turns(user, tmp_path)[generation_id]
    assert sorted(image["name"] for image in record["images"]) == saved
    for image in record["images"]:
        data = (out.path / image["name"]).read_bytes()
        assert image["sha256"] == hashlib.sha256(data).hexdigest()
    assert temporaries(out.path, user.path) == []
    assert len(fake.generations) == 1


def test_a_full_output_folder_leaves_no_temporary_file(fake, space, tmp_path):
    user, out = space.disks
    fake.fail_downloads(hold=True)
    proc = start(space, "imagen4", "a heron", "-o", out.inside)
    try:
        poll(lambda: fake.downloads)
        # Room for the image as it arrives, none for its provenance.
        [data] = fake.state.files.values()
        out.fill(leave=len(data))
        fake.release.set()
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert "Traceback" not in stderr
    [line] = [line for line in stderr.splitlines() if line.startswith("Image 1")]
    assert "could not write the file: No space left on device" in line
    assert "finish it with: llm imagen4 download" in line
    assert images_in(out.path) == [] and temporaries(out.path) == []
    # A download on a disk still full fails the same way, and leaves nothing.
    code, _, err = run(space, "imagen4", "download")
    assert code == 1 and "No space left on device" in err, err
    assert images_in(out.path) == [] and temporaries(out.path) == []
    out.free()
    code, stdout, err = run(space, "imagen4", "download")
    assert code == 0, err
    assert images_in(out.path) == ["a-heron.png"]
    assert temporaries(out.path, user.path) == []
    assert journal_ids(fake) == []
    [record] = turns(user, tmp_path).values()
    assert [image["status"] for image in record["images"]] == ["saved"]


def test_a_user_folder_full_from_the_start_is_logged_by_import_and_bought_once(
    fake, space, tmp_path, llm_cli
):
    # Room for logs.db to be opened, not for the journal or the turn: the
    # images are saved with their records, and the one line says how to
    # log them from those.
    user, out = space.disks
    assert llm_cli("imagen4", "history", "-d", str(fake.logs)).exit_code == 0
    shutil.copy(fake.logs, user.path / "logs.db")  # with its index made
    user.fill(leave=4096)
    code, stdout, stderr = run(
        space, "imagen4", "two herons", "-n", "2", "--seed", "7", "-o", out.inside
    )
    assert "Traceback" not in stderr
    assert len(stdout.splitlines()) == 2, stderr
    [hint] = [
        line.split("to log it from the images: ", 1)[1]
        for line in stderr.splitlines()
        if "to log it from the images: " in line
    ]
    assert hint == f"llm imagen4 import {out.inside}"
    user.free()
    code, _, err = run(space, *hint.split()[1:])
    assert code == 0, err
    [record] = turns(user, tmp_path).values()
    assert record["request"]["prompt"] == "two herons" and record["seed"] == 7
    # A batch of the same request finds it done, and buys nothing.
    (out.path / "rows.jsonl").write_text(
        '{"prompt": "two herons", "num_images": 2, "seed": 7}\n'
    )
    code, _, err = run(
        space, "imagen4", "batch", out.inside / "rows.jsonl", "-o", out.inside
    )
    assert code == 0, err
    assert "0 generated, 0 recovered, 1 skipped (already done)" in err
    assert len(fake.generations) == 1
    assert images_in(out.path) == ["two-herons-2.png", "two-herons.png"]
