"""The history: a guest beside llm's tables that llm logs into, never inside
them. imagen4_images, the commands that read it, -d, privacy, and the
upgrade from the trigger of 0.1."""

import asyncio
import hashlib
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlite_utils

from llm_imagen4 import history as history_module

from .conftest import history, journal_ids, poll, start_llm
from .fake_api import KEY, png

FIXTURES = Path(__file__).parent / "fixtures"


def has_trigrams() -> bool:
    """Whether this SQLite has FTS5 with the trigram tokenizer, which the
    prompt search needs."""
    try:
        sqlite3.connect(":memory:").execute(
            "create virtual table t using fts5(x, tokenize = 'trigram')"
        )
    except sqlite3.Error:
        return False
    return True


def test_history_lists_newest_first_with_filters(fake, generate, llm_cli):
    generate("a red fox", "--seed", "11")
    generate("a blue whale", "-m", "imagen4-fast", "-n", "2", "--seed", "22")
    generate("a red panda", "--seed", "33")
    rows = history(llm_cli)
    assert [r["seed"] for r in rows] == [33, 22, 11]
    assert [len(r["images"]) for r in rows] == [1, 2, 1]
    assert rows[1]["images"][1]["path"].endswith("a-blue-whale-2.png")
    assert [r["prompt"] for r in history(llm_cli, "-q", "red")] == [
        "a red panda",
        "a red fox",
    ]
    assert [r["seed"] for r in history(llm_cli, "-m", "imagen4-fast")] == [22]
    assert [r["seed"] for r in history(llm_cli, "--seed", "11")] == [11]
    assert [r["seed"] for r in history(llm_cli, "-n", "1")] == [33]
    text = llm_cli("imagen4", "history", "-n", "2").stdout
    assert text.index("a red panda") < text.index("a blue whale")
    assert "a red fox" not in text and "seed 22" in text and "240000 credits" in text


def test_query_text_is_matched_literally(fake, generate, llm_cli):
    generate("100% cotton")
    generate("snake_case name")
    generate("plain words")
    assert [r["prompt"] for r in history(llm_cli, "-q", "_")] == ["snake_case name"]
    assert [r["prompt"] for r in history(llm_cli, "-q", "%")] == ["100% cotton"]


def test_history_ids_are_llm_turns(fake, generate, llm_cli, logs_db):
    generate("a kettle")
    [row] = history(llm_cli)
    [turn] = logs_db().query("select * from turns")
    assert turn["id"] == row["id"] and turn["model"] == "imagen4"
    logged = json.loads(llm_cli("logs", "--json", "-n", "1").stdout)
    assert logged[0]["id"] == row["id"]


def test_a_new_machine_has_an_empty_history_and_no_logs_db(new_machine, llm_cli):
    for args in (["history", "--json"], ["gallery", "-o", "g.html"], ["datasette"]):
        result = llm_cli("imagen4", *args)
        assert result.exit_code == 0, result.output
    assert json.loads(llm_cli("imagen4", "history", "--json").stdout) == []
    assert not new_machine.logs.exists()


def test_the_plugin_puts_nothing_in_llms_tables(fake, generate, migrated_logs_db):
    def llms_objects(path):
        return {
            (row["type"], row["name"], row["tbl_name"], row["sql"])
            for row in sqlite_utils.Database(path).query("select * from sqlite_master")
            if not row["tbl_name"].startswith("imagen4")
            and row["tbl_name"] != "_sqlite_migrations"
        }

    generate("a kettle")
    assert llms_objects(fake.logs) == llms_objects(migrated_logs_db)
    ours = {
        row["name"]
        for row in sqlite_utils.Database(fake.logs).query(
            "select name from sqlite_master where type in ('table', 'view', 'trigger')"
        )
    } - {row[1] for row in llms_objects(migrated_logs_db)}
    search = {
        "imagen4_prompt_search",
        *(
            f"imagen4_prompt_search_{part}"
            for part in ("config", "data", "docsize", "idx")
        ),
    }
    assert ours == {
        "imagen4_images",
        "imagen4_generations",
        "imagen4_image_files",
        "imagen4_sync",
        "_sqlite_migrations",
    } | (search if has_trigrams() else set())


def test_dropping_the_plugins_objects_leaves_llm_working(
    fake, generate, llm_cli, logs_db
):
    generate("before the drop")
    for name in ("imagen4_generations", "imagen4_image_files", "imagen4_sync"):
        assert (
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "sqlite_utils",
                    "drop-table",
                    str(fake.logs),
                    name,
                ],
                capture_output=True,
            ).returncode
            == 0
        )
    logs_db().execute("drop view imagen4_images")
    logs_db().execute("drop table if exists imagen4_prompt_search")
    result = llm_cli("-m", "echo", "hi")
    assert result.exit_code == 0, result.output
    assert logs_db()["turns"].count == 2
    # The next read makes them again, from turns.
    assert [r["prompt"] for r in history(llm_cli)] == ["before the drop"]
    assert [r["prompt"] for r in history(llm_cli, "-q", "the drop")] == [
        "before the drop"
    ]
    assert logs_db()["imagen4_images"].count == 1


def test_images_survive_llm_rebuilding_turns(fake, generate, llm_cli, logs_db):
    generate("before the rebuild")
    assert history(llm_cli)
    logs_db()["turns"].transform(types={"duration_ms": str})
    generate("after the rebuild")
    assert [r["prompt"] for r in history(llm_cli)] == [
        "after the rebuild",
        "before the rebuild",
    ]


def test_the_view_is_current_before_any_plugin_read(fake, generate, llm_cli, logs_db):
    generate("first")  # the plugin's objects exist from here on
    assert llm_cli("-m", "imagen4", "second").exit_code == 0
    import llm

    response = llm.get_model("imagen4").prompt("third")
    response.text()
    response.log_to_db(logs_db())
    prompts = [
        r["prompt"]
        for r in logs_db().query(
            "select prompt from imagen4_images order by datetime_utc"
        )
    ]
    assert prompts == ["first", "second", "third"]
    ids = [r["id"] for r in logs_db().query("select id, turn_id from imagen4_images")]
    assert len(set(ids)) == 3 and all(i.endswith(":0") for i in ids)


def test_a_python_generation_logged_by_its_caller_is_finished_there(
    fake, llm_cli, tmp_path
):
    import llm

    fake.fail_downloads(3, status=500)
    response = llm.get_model("imagen4").prompt("from python", key=KEY)
    assert "not saved" in response.text()
    [generation_id] = journal_ids(fake)
    own = tmp_path / "mine.db"
    response.log_to_db(sqlite_utils.Database(own))
    restored = llm_cli("imagen4", "download")
    assert restored.exit_code == 0, restored.output
    [row] = history(llm_cli, "-d", str(own))
    assert row["id"] == generation_id
    assert [i["status"] for i in row["images"]] == ["saved"]
    again = llm_cli("imagen4", "download", generation_id, "-d", str(own))
    assert again.exit_code == 0 and "Every saved image of" in again.stderr
    assert len([p for p in fake.work.iterdir() if p.suffix == ".png"]) == 1


def test_a_python_generation_logged_in_memory_leaves_download_working(fake, llm_cli):
    import llm

    fake.fail_downloads(3, status=500)
    response = llm.get_model("imagen4").prompt("to memory", key=KEY)
    assert "not saved" in response.text()
    response.log_to_db(sqlite_utils.Database(memory=True))
    restored = llm_cli("imagen4", "download")
    assert restored.exit_code == 0, restored.output
    assert restored.stdout.strip() == str(fake.work / "to-memory.png")
    assert journal_ids(fake) == []


def test_a_deleted_turn_is_gone_from_the_history(fake, generate, llm_cli, logs_db):
    generate("keep me")
    generate("delete me")
    assert len(history(llm_cli)) == 2
    db = sqlite_utils.Database(fake.logs)
    turn_id = next(
        db.query(
            "select id from turns where id in (select turn_id from imagen4_images where prompt = 'delete me')"
        )
    )["id"]
    db.execute("pragma foreign_keys = on")
    with db.conn:
        db.execute("delete from turn_search where turn_id = ?", [turn_id])
        db.execute("delete from turns where id = ?", [turn_id])
    assert [r["prompt"] for r in db.query("select prompt from imagen4_images")] == [
        "keep me"
    ]
    assert [r["prompt"] for r in history(llm_cli)] == ["keep me"]
    assert [r["prompt"] for r in history(llm_cli, "-q", "keep")] == ["keep me"]
    assert history(llm_cli, "-q", "delete") == []


QUERIES = {
    "red": ["a red panda", "a RED fox"],
    "Red Pan": ["a red panda"],
    "100%": ["100% cotton"],
    "snake_case": ["snake_case name"],
    "a r": ["a red panda", "a RED fox"],
    "d": ["a red panda", "a RED fox"],
    "e": ["snake case name", "snake_case name", "a red panda", "a RED fox"],
    "xylophone": [],
}


def test_query_reads_old_prompts_through_the_search_alike(fake, generate):
    for prompt in (
        "a RED fox",
        "a red panda",
        "100% cotton",
        "snake_case name",
        "snake case name",
    ):
        generate(prompt)
    db = history_module.open_db(None)

    def found(**arguments):
        return {
            text: [
                e.prompt
                for e in history_module.generations(db, query=text, **arguments)
            ]
            for text in QUERIES
        }

    assert found() == QUERIES
    assert found(limit=1) == {text: rows[:1] for text, rows in QUERIES.items()}
    assert found(missing=True) == {text: [] for text in QUERIES}
    if has_trigrams():
        (top,) = db.execute("select max(rowid) from imagen4_generations").fetchone()
        assert db.execute("select search_rowid from imagen4_sync").fetchone()[0] == top
        # The newest generations not in the search yet are read directly.
        db.execute("update imagen4_sync set search_rowid = ?", [top - 2])
        assert found() == QUERIES
        assert found(limit=1) == {text: rows[:1] for text, rows in QUERIES.items()}
        # The others come from the search: emptied, it finds none of them,
        # but text too short for it is still read directly.
        db.execute(
            "insert into imagen4_prompt_search (imagen4_prompt_search)"
            " values ('delete-all')"
        )
        db.execute("update imagen4_sync set search_rowid = ?", [top])
        assert found()["red"] == found()["xylophone"] == []
        assert found()["d"] == QUERIES["d"]


def test_a_dropped_prompt_search_is_made_again(fake, generate, llm_cli, logs_db):
    generate("a lighthouse at dawn")
    generate("a harbor at dusk")
    assert history(llm_cli, "-q", "harbor")
    db = logs_db()
    with db.conn:
        db.execute("drop table if exists imagen4_prompt_search")
    assert [r["prompt"] for r in history(llm_cli, "-q", "lighthouse")] == [
        "a lighthouse at dawn"
    ]
    if has_trigrams():
        db = logs_db()
        assert db["imagen4_prompt_search"].exists()
        assert db.execute("select search_rowid from imagen4_sync").fetchone()[0] == 2


def test_a_rowid_given_again_is_searched_by_its_new_prompt(
    fake, generate, llm_cli, logs_db
):
    """A deleted generation's place in the index given to a new one: the
    search is made again rather than trusted. A machine whose SQLite has no
    trigram tokenizer leaves the search this way when it rebuilds the index
    of a shared logs database."""
    generate("an old lighthouse")
    generate("a lighthouse to delete")
    assert len(history(llm_cli, "-q", "lighthouse")) == 2
    db = logs_db()
    with db.conn:
        db.execute("delete from turn_search")
        db.execute(
            "delete from turns where json_extract(response_json, '$.request.prompt') = ?",
            ["a lighthouse to delete"],
        )
    generate("a new harbour")
    assert db.execute(
        "select rowid from imagen4_generations where prompt = 'a new harbour'"
    ).fetchone() == (2,)
    assert [r["prompt"] for r in history(llm_cli, "-q", "lighthouse")] == [
        "an old lighthouse"
    ]
    assert [r["prompt"] for r in history(llm_cli, "-q", "harbour")] == ["a new harbour"]
    assert history(llm_cli, "-q", "to delete") == []
    if has_trigrams():
        db.execute(
            "insert into imagen4_prompt_search (imagen4_prompt_search)"
            " values ('integrity-check')"
        )


def copy_turns(db, count: int) -> None:
    """``count`` copies of the one turn in ``db``, logged after it in order,
    each with an id and a prompt of its own, as a long history has them."""
    columns = [name for name in db["turns"].columns_dict if name != "id"]
    chosen = ", ".join(
        "json_set(t.response_json, '$.request.prompt', 'copy ' || k.n)"
        if name == "response_json"
        else f"t.{name}"
        for name in columns
    )
    with db.conn:
        db.execute(
            "WITH RECURSIVE k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k"
            f" WHERE n < ?) INSERT INTO turns (id, {', '.join(columns)})"
            f" SELECT t.id || printf('%06d', k.n), {chosen} FROM turns t, k"
            " ORDER BY k.n",
            [count],
        )


def plugins_indexes(db) -> list[tuple[str, str]]:
    return list(
        db.execute(
            "select name, sql from sqlite_master where type = 'index'"
            " and tbl_name like 'imagen4%' order by name"
        )
    )


def test_a_history_longer_than_one_transaction_is_indexed_whole(
    fake, generate, llm_cli, logs_db
):
    """Catching up with many turns takes several short transactions; each
    goes on from the last, the index ends with every index it had, and a
    turn deleted since is seen."""
    generate("the original")
    made = plugins_indexes(logs_db())
    copy_turns(logs_db(), 6_000)
    rows = history(llm_cli, "-n", "0")
    assert plugins_indexes(logs_db()) == made
    assert len(rows) == 6_001
    assert [r["prompt"] for r in rows[:2]] == ["copy 6000", "copy 5999"]
    assert rows[-1]["prompt"] == "the original"
    db = logs_db()
    assert db.execute("select count(*) from imagen4_images").fetchone() == (6_001,)
    with db.conn:
        db.execute("delete from turns where id = ?", [rows[3_000]["id"]])
    generate("a new one")
    again = history(llm_cli, "-n", "0")
    assert len(again) == 6_001 and again[0]["prompt"] == "a new one"
    assert rows[3_000]["prompt"] not in {r["prompt"] for r in again}
    assert [r["prompt"] for r in history(llm_cli, "-q", "copy 3000")] == []
    assert [r["prompt"] for r in history(llm_cli, "-q", "copy 2999")] == ["copy 2999"]


def test_dropped_indexes_of_the_index_are_made_again(fake, generate, llm_cli, logs_db):
    generate("a heron", "--seed", "5")
    db = logs_db()
    made = plugins_indexes(db)
    assert len(made) == 7
    for name, _ in made[:4]:
        db.execute(f"drop index [{name}]")
    assert [r["seed"] for r in history(llm_cli, "--seed", "5")] == [5]
    assert plugins_indexes(logs_db()) == made


def test_only_a_search_for_text_brings_the_prompt_search_up_to_date(
    fake, generate, llm_cli, logs_db
):
    if not has_trigrams():
        pytest.skip("this SQLite has no trigram tokenizer")
    generate("a lighthouse at dawn")
    generate("a harbour at dusk")
    assert len(history(llm_cli)) == 2
    db = logs_db()

    def searched() -> int | None:
        return db.execute("select search_rowid from imagen4_sync").fetchone()[0]

    assert searched() is None
    assert [r["prompt"] for r in history(llm_cli, "-q", "harbour")] == [
        "a harbour at dusk"
    ]
    assert searched() == 2
    generate("another lighthouse")
    assert searched() == 2
    assert [r["prompt"] for r in history(llm_cli, "-q", "lighthouse")] == [
        "another lighthouse",
        "a lighthouse at dawn",
    ]
    assert searched() == 3


def test_no_log_and_logs_off_write_nothing(fake, generate, llm_cli, logs_db):
    generate("first")
    generate("second secret", "--no-log")
    assert llm_cli("-m", "imagen4", "third secret", "-n").exit_code == 0
    assert llm_cli("logs", "off").exit_code == 0
    generate("fourth secret")
    assert llm_cli("-m", "imagen4", "fifth secret").exit_code == 0
    assert llm_cli("logs", "on").exit_code == 0
    generate("sixth")
    assert [r["prompt"] for r in history(llm_cli, "-n", "0")] == ["sixth", "first"]
    assert b"secret" not in fake.logs.read_bytes()
    assert journal_ids(fake) == []


@pytest.mark.parametrize(
    "route,logs_off",
    [
        (["imagen4", "--no-log"], False),
        (["-m", "imagen4", "-n"], False),
        (["-m", "imagen4"], True),
    ],
    ids=["llm imagen4 --no-log", "llm -m -n", "llm -m with logs off"],
)
def test_ctrl_c_without_logging_leaves_no_trace_and_download_finishes(
    fake, llm_cli, route, logs_off
):
    if logs_off:
        assert llm_cli("logs", "off").exit_code == 0
    before = hashlib.sha256(fake.logs.read_bytes()).hexdigest()
    fake.fail_downloads(hold=True)
    *command, flag = route if route[-1].startswith("-") else [*route, ""]
    args = [*command, "a private stork"] + ([flag] if flag else [])
    proc = start_llm(fake.work, *args)
    try:
        poll(lambda: fake.downloads)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert b"Traceback" not in err
    assert b"llm imagen4 download" in err
    assert hashlib.sha256(fake.logs.read_bytes()).hexdigest() == before
    fake.release.set()
    result = llm_cli("imagen4", "download")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(fake.work / "a-private-stork.png")
    assert hashlib.sha256(fake.logs.read_bytes()).hexdigest() == before
    assert journal_ids(fake) == []
    assert len(fake.generations) == 1


def test_another_database_round_trip(fake, generate, llm_cli, tmp_path):
    other = tmp_path / "other.db"
    [first] = generate("in the other one", "-d", str(other))
    assert llm_cli("-m", "imagen4", "also there", "-d", str(other)).exit_code == 0
    assert history(llm_cli) == []
    rows = history(llm_cli, "-d", str(other))
    assert [r["prompt"] for r in rows] == ["also there", "in the other one"]
    Path(first).unlink()
    restored = llm_cli("imagen4", "download", rows[1]["id"], "-d", str(other))
    assert restored.exit_code == 0, restored.output
    assert restored.stdout.strip() == first
    assert history(llm_cli, "-d", str(other), "--missing") == []
    shown = llm_cli("imagen4", "show", rows[0]["id"], "-d", str(other))
    assert shown.exit_code == 0 and "also there" in shown.stdout
    assert json.loads(llm_cli("imagen4", "datasette", "-d", str(other)).stdout)[
        "databases"
    ]["other"]
    status = llm_cli("imagen4", "status", rows[0]["id"], "-d", str(other))
    assert status.exit_code == 0, status.output
    assert status.stdout.startswith(f"{rows[0]['id']}: the API's log says it succeeded")
    assert len(fake.generations) == 2


def test_async_cancel_keeps_the_paid_image_findable(fake, llm_cli):
    fake.fail_downloads(hold=True)
    # Cancelled once the API has answered and the download hangs.
    script = (
        "import asyncio, llm\n"
        "async def main():\n"
        "    response = llm.get_async_model('imagen4').prompt('a cancelled owl')\n"
        "    task = asyncio.ensure_future(response.text())\n"
        "    journal = llm.user_dir() / 'imagen4' / 'unfinished'\n"
        "    while not any('answered' in p.read_text() for p in journal.glob('*.json')):\n"
        "        await asyncio.sleep(0.02)\n"
        "    task.cancel()\n"
        "    try:\n"
        "        await task\n"
        "    except asyncio.CancelledError:\n"
        "        print(response.id)\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=fake.work, capture_output=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    generation_id = proc.stdout.decode().strip()
    assert b"llm imagen4 download" in proc.stderr
    assert journal_ids(fake) == [generation_id]
    fake.release.set()
    result = llm_cli("imagen4", "download")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(fake.work / "a-cancelled-owl.png")
    assert len(fake.generations) == 1


def test_missing_finds_files_deleted_since(fake, generate, llm_cli):
    paths = generate("two owls", "-n", "2")
    generate("one more")
    Path(paths[1]).unlink()
    [missing] = history(llm_cli, "--missing")
    assert missing["prompt"] == "two owls"
    assert [i["exists"] for i in missing["images"]] == [True, False]


def test_upgrade_from_the_trigger_of_0_1(fake, llm_cli):
    old = "/tmp/oldfix/work/"
    shutil.copy(FIXTURES / "logs-0.1.db", fake.logs)
    db = sqlite_utils.Database(fake.logs)
    [cdn] = {
        row["url"].rsplit("/files/", 1)[0]
        for row in db.query("select url from imagen4_images")
    }
    work = str(fake.work) + "/"
    with db.conn:
        db.execute(
            "update turns set response_json = replace(replace(response_json, ?, ?), ?, ?)",
            [old, work, cdn, fake.cdn_url],
        )
        db.execute(
            "update imagen4_images set path = replace(path, ?, ?), url = replace(url, ?, ?), folder = ?",
            [old, work, cdn, fake.cdn_url, work],
        )
    for name in ("a-saved-heron.png", "a-restored-crane.png"):
        (fake.work / name).write_bytes(png(8, 8))
    [stork_url] = [
        r["url"]
        for r in db.query("select url from imagen4_images where status = 'pending'")
    ]
    fake.state.files[stork_url.rsplit("/", 1)[-1]] = png(1024, 1024, b"stork")

    rows = history(llm_cli)
    assert [r["prompt"] for r in rows] == ["a restored crane", "a saved heron"]
    assert all(
        image["exists"] and image["status"] == "saved"
        for r in rows
        for image in r["images"]
    )
    db = sqlite_utils.Database(fake.logs)
    assert not list(
        db.query(
            "select name from sqlite_master where name in ('imagen4_images_from_turn', 'imagen4_migrations')"
        )
    )
    crane = json.loads(
        next(db.query("select response_json from turns where id = ?", [rows[0]["id"]]))[
            "response_json"
        ]
    )
    assert crane["images"][0]["status"] == "saved"
    assert "a-restored-crane.png" in llm_cli("logs", "-n", "1").stdout
    # The unfinished stork, never logged, is in the journal: download finishes it.
    assert len(journal_ids(fake)) == 1
    result = llm_cli("imagen4", "download")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(fake.work / "an-unfinished-stork.png")
    assert [r["prompt"] for r in history(llm_cli)][0] == "an unfinished stork"


def test_the_key_is_stored_nowhere(fake, generate, llm_cli, logs_db, monkeypatch):
    monkeypatch.delenv("AIMLAPI_KEY")
    generate("a secret", "--key", KEY)
    assert llm_cli("-m", "imagen4", "another", "--key", KEY).exit_code == 0
    everything = "\n".join(logs_db().conn.iterdump())
    assert "a secret" in everything and KEY not in everything
    assert KEY.encode() not in fake.logs.read_bytes()


def test_processes_at_once_on_a_new_logs_db(new_machine):
    procs = [
        start_llm(new_machine.work, "imagen4", f"parallel {i}", "--seed", str(i + 1))
        for i in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    db = sqlite_utils.Database(new_machine.logs)
    assert sorted(
        r["seed"] for r in db.query("select seed from imagen4_images")
    ) == list(range(1, 5))
    assert db["turns"].count == 4
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"


def test_a_database_that_cannot_be_opened_is_refused_before_sending(
    fake, llm_cli, tmp_path
):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for args in (
        ["imagen4", "a", "-d", str(blocker / "logs.db")],
        ["imagen4", "batch", "-", "-d", str(blocker / "logs.db")],
    ):
        result = llm_cli(*args, input="a\n")
        assert result.exit_code == 1
        assert result.stderr.startswith(f"Error: Cannot log to {blocker / 'logs.db'}:")
        assert len(result.stderr.strip().splitlines()) == 1
    assert fake.generations == [] and list(fake.work.iterdir()) == []
    assert journal_ids(fake) == []
    # As llm prompt does, a database in a new folder is made.
    made = tmp_path / "new" / "folder" / "logs.db"
    [path] = llm_cli("imagen4", "b", "-d", str(made)).stdout.splitlines()
    assert [r["prompt"] for r in history(llm_cli, "-d", str(made))] == ["b"]


def test_a_database_named_with_d_must_be_there_to_be_read(
    fake, generate, llm_cli, tmp_path
):
    generate("an owl")
    missing = tmp_path / "typo.db"
    for args in (
        ["history"],
        ["gallery"],
        ["show", "x"],
        ["download", "x"],
        ["status", "x"],
    ):
        result = llm_cli("imagen4", *args, "-d", str(missing))
        assert result.exit_code == 1, args
        assert result.output == f"Error: No logs database at {missing}\n", args
    assert not missing.exists()
    assert not (fake.work / "imagen4-gallery.html").exists()
    # download found nothing, and holds nothing: no lock is left behind.
    assert list((fake.user_path / "imagen4" / "unfinished").glob("x.*")) == []
    assert "another process" not in llm_cli("imagen4", "download", "x").output


def test_a_generation_its_database_lost_is_recorded_with_download_d(
    fake, llm_cli, tmp_path
):
    gone = tmp_path / "gone"
    gone.mkdir()
    fake.fail_downloads(3, status=500)
    assert llm_cli("imagen4", "a heron", "-d", str(gone / "logs.db")).exit_code == 1
    [turn_id] = journal_ids(fake)
    shutil.rmtree(gone)
    gone.write_text("the folder is now a file")
    tried = llm_cli("imagen4", "download")
    assert tried.exit_code == 1
    assert f"{turn_id}: could not record it in {gone / 'logs.db'}" in tried.stderr
    assert "(download -d DATABASE records it in another)" in tried.stderr
    assert "1 generation not finished yet" in tried.stderr
    assert journal_ids(fake) == [turn_id]
    [saved] = tried.stdout.splitlines()
    rescue = tmp_path / "rescue.db"
    rescued = llm_cli("imagen4", "download", "-d", str(rescue))
    assert rescued.exit_code == 0, rescued.output
    assert rescued.stdout == "" and journal_ids(fake) == []
    [row] = history(llm_cli, "-d", str(rescue))
    assert row["id"] == turn_id and row["images"][0]["path"] == saved
    assert len(fake.generations) == 1


def test_datasette_metadata_names_the_database(fake, llm_cli):
    data = json.loads(llm_cli("imagen4", "datasette").stdout)
    assert set(data["databases"]["logs"]["queries"]) == {
        "generations_by_day",
        "seeds_for_prompt",
        "missing_images",
    }


def test_async_in_process_cancel_stops_starting_downloads(fake):
    import llm

    fake.fail_downloads(hold=True)

    async def main():
        response = llm.get_async_model("imagen4").prompt("held", num_images=2)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(response.text(), 1)
        return response.id

    generation_id = asyncio.run(main())
    assert journal_ids(fake) == [generation_id]
    fake.release.set()


def test_the_readme_queries_run_and_count_each_generation_once(
    fake, generate, llm_cli, logs_db
):
    import re

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    queries = re.findall(
        r'sqlite-utils "\$\(llm logs path\)" "(.*?)" --table', readme, re.S
    )
    assert len(queries) == 3
    # Generations of one model with different numbers of images.
    generate("a racoon", "--seed", "5")
    generate("a racoon", "-m", "imagen4-fast")
    generate("three racoons", "-m", "imagen4-fast", "-n", "3")
    spent: dict[str, float] = {}
    for row in history(llm_cli):
        spent[row["model"]] = spent.get(row["model"], 0) + row["usd_spent"]
    db = logs_db()
    by_prompt, per_day, turns = (list(db.query(sql)) for sql in queries)
    assert len(by_prompt) == 5 and {r["seed"] for r in by_prompt} >= {5}
    assert len(turns) == 5
    assert sum(r["images"] for r in per_day) == 5
    assert {r["model"]: r["usd"] for r in per_day} == pytest.approx(spent)
