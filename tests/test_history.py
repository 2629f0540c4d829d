"""The history: llm's turns, the imagen4_images table and `llm imagen4 history`."""

import json

from .fake_api import KEY


def generate(llm_cli, *args):
    result = llm_cli("imagen4", *args)
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_history_lists_newest_first_with_filters(fake, llm_cli):
    generate(llm_cli, "a red fox", "--seed", "11")
    generate(llm_cli, "a blue whale", "-m", "imagen4-fast", "-n", "2", "--seed", "22")
    generate(llm_cli, "a red panda", "--seed", "33")

    rows = json.loads(llm_cli("imagen4", "history", "--json").stdout)
    assert [r["seed"] for r in rows] == [33, 22, 11]
    assert all(len(r["id"]) == 26 for r in rows)
    assert [len(r["images"]) for r in rows] == [1, 2, 1]
    assert rows[1]["images"][1]["path"].endswith("a-blue-whale-2.png")

    red = json.loads(llm_cli("imagen4", "history", "-q", "red", "--json").stdout)
    assert [r["prompt"] for r in red] == ["a red panda", "a red fox"]
    fast = json.loads(
        llm_cli("imagen4", "history", "-m", "imagen4-fast", "--json").stdout
    )
    assert [r["seed"] for r in fast] == [22]
    one = json.loads(llm_cli("imagen4", "history", "-n", "1", "--json").stdout)
    assert [r["seed"] for r in one] == [33]

    text = llm_cli("imagen4", "history", "-n", "2").stdout
    assert text.index("a red panda") < text.index("a blue whale")
    assert "a red fox" not in text
    assert "seed 22" in text and "imagen4-fast" in text


def test_history_ids_join_llm_turns(fake, llm_cli, logs_db):
    generate(llm_cli, "a kettle")
    [row] = json.loads(llm_cli("imagen4", "history", "--json").stdout)
    [turn] = logs_db().query(
        "select turns.* from turns join imagen4_images on turns.id = turn_id"
    )
    assert turn["id"] == row["id"]
    assert turn["model"] == "imagen4"
    logged = llm_cli("logs", "--id-gte", row["id"], "--json").stdout
    assert json.loads(logged)[0]["prompt"] == "a kettle"


def test_history_on_a_new_machine_is_empty(fake, llm_cli):
    result = llm_cli("imagen4", "history", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == []
    assert not (fake.user_path / "logs.db").exists()


def test_no_log_writes_nothing_to_the_history(fake, llm_cli, logs_db):
    generate(llm_cli, "first")
    paths = generate(llm_cli, "second", "--no-log")
    assert len(paths) == 1
    assert llm_cli("-m", "imagen4", "third", "--no-log").exit_code == 0
    prompts = [r["prompt"] for r in logs_db().query("select * from imagen4_images")]
    assert prompts == ["first"]
    assert logs_db()["turns"].count == 1


def test_logs_off_is_honoured(fake, llm_cli, logs_db):
    generate(llm_cli, "before")
    assert llm_cli("logs", "off").exit_code == 0
    generate(llm_cli, "while off")
    assert llm_cli("-m", "imagen4", "while off too").exit_code == 0
    assert llm_cli("logs", "on").exit_code == 0
    generate(llm_cli, "after")
    prompts = [
        r["prompt"] for r in logs_db().query("select * from imagen4_images order by id")
    ]
    assert prompts == ["before", "after"]


def test_rows_appear_for_turns_logged_before_the_table_existed(
    fake, llm_cli, logs_db, monkeypatch
):
    # A turn logged by llm while the plugin's table did not exist yet.
    assert llm_cli("-m", "imagen4", "early bird").exit_code == 0
    db = logs_db()
    db.execute("drop trigger imagen4_images_from_turn")
    db["imagen4_images"].drop()
    db.execute("delete from imagen4_migrations")
    db.conn.commit()
    assert llm_cli("-m", "imagen4", "second bird").exit_code == 0
    prompts = {r["prompt"] for r in logs_db().query("select * from imagen4_images")}
    assert prompts == {"early bird", "second bird"}


def test_the_key_is_stored_nowhere(fake, llm_cli, logs_db, monkeypatch):
    monkeypatch.delenv("AIMLAPI_KEY")
    generate(llm_cli, "a secret", "--key", KEY)
    assert llm_cli("-m", "imagen4", "another", "--key", KEY).exit_code == 0
    everything = "\n".join(logs_db().conn.iterdump())
    assert "a secret" in everything
    assert KEY not in everything
    assert KEY.encode() not in (fake.user_path / "logs.db").read_bytes()
