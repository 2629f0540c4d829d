"""A logs database is input: it may be shared, copied from elsewhere, or
crafted. Each test writes turns into a real logs.db directly with
sqlite-utils, as such a database would have them, then runs the commands
that read the history: what is read is checked, a value of the wrong type
is shown as null (or "not valid"), text is printed escaped and written
escaped into the gallery, and nothing ends in a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from .conftest import history, journal_ids
from .test_gallery import WebDriver, needs_chromium

FIXTURES = Path(__file__).parent / "fixtures"
ESC = "\x1b"
# A clipboard write (OSC 52), and markup that runs where it is not escaped.
CLIPBOARD = f"{ESC}]52;c;ZXZpbA=={chr(7)}"
IMG = "<img src=x onerror=window.pwned=1>"
SVG = "<svg onload=window.pwned=2>"


def crafted(logs_db, turn_id: str, change: Any) -> str:
    """A turn copied from the first one llm logged, under ``turn_id``, with
    its record changed by ``change(record)``."""
    db = logs_db()
    turn = next(db.query("select * from turns order by rowid limit 1"))
    record = json.loads(turn["response_json"])
    change(record)
    turn.update(id=turn_id, response_json=json.dumps(record))
    db["turns"].insert(turn)
    return turn_id


def hostile(record: dict) -> None:
    record["seed"] = IMG
    record["credits_used"] = "lots"
    record["request"]["aspect_ratio"] = CLIPBOARD
    record["images"][0].update(width=SVG, height=7, status="<b>saved</b>")


def shapeless(record: dict) -> None:
    """Parts that are not of the shape the plugin writes."""
    record["request"] = "not an object"
    record["images"] = {"0": record["images"][0]}


def twice(record: dict) -> None:
    """Two images that claim one position, and no prompt."""
    record["request"]["prompt"] = None
    record["images"] = [record["images"][0], dict(record["images"][0])]


def assert_safe(result) -> None:
    assert result.exit_code == 0, result.output
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    for char in (ESC, chr(7)):
        assert char not in output, output


def strict(text: str) -> Any:
    def refuse(name: str) -> None:
        raise AssertionError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_crafted_turns_are_read_checked_and_printed_escaped(
    fake, generate, llm_cli, logs_db
):
    generate("a real heron", "--seed", "9")
    evil = crafted(logs_db, f"01evil{CLIPBOARD}", hostile)
    crafted(logs_db, "01shapeless", shapeless)
    crafted(logs_db, "01twice", twice)
    # A number too large for a float, which SQLite reads as infinity.
    crafted(logs_db, "01infinite", lambda record: record.update(usd_spent="HUGE"))
    db = logs_db()
    with db.conn:
        db.execute(
            "update turns set response_json = replace(response_json,"
            " '\"HUGE\"', '1e999') where id = '01infinite'"
        )
        db.execute("update turns set datetime_utc = 12345 where id = '01twice'")

    listing = strict(llm_cli("imagen4", "history", "--json").stdout)
    rows = {row["id"]: row for row in listing}
    assert len(rows) == 5 and listing[-1]["prompt"] == "a real heron"
    bad = rows[evil]
    assert bad["seed"] is None and bad["credits_used"] is None
    assert bad["aspect_ratio"] is None
    assert bad["images"][0]["width"] is None and bad["images"][0]["status"] is None
    assert bad["images"][0]["height"] == 7
    assert rows["01infinite"]["usd_spent"] is None
    assert rows["01twice"]["prompt"] is None and rows["01twice"]["datetime_utc"] is None
    assert [image["position"] for image in rows["01twice"]["images"]] == [0, 1]
    assert rows["01shapeless"]["images"] == []
    assert rows["01shapeless"]["prompt"] is None

    for args in (
        ["history"],
        ["history", "-d", str(fake.logs)],
        ["history", "--json"],
        ["history", "--paths"],
        ["show", evil],
        ["show", evil, "--json"],
        ["show", "01twice"],
        ["show", "01shapeless", "--json"],
    ):
        result = llm_cli("imagen4", *args)
        assert_safe(result)
        if "--json" in args:
            strict(result.stdout)
    listed = llm_cli("imagen4", "history").stdout
    assert "01evil\\x1b]52;c;ZXZpbA==\\x07" in listed
    assert "seed not valid" in listed and "a real heron" in listed
    shown = llm_cli("imagen4", "show", evil).stdout
    assert "seed: not valid" in shown and "  status: not valid" in shown
    assert "lots" not in shown and SVG not in shown


def test_crafted_options_of_a_turn_are_not_shown(fake, generate, llm_cli, logs_db):
    generate("an owl")
    db = logs_db()
    with db.conn:
        db.execute("update turns set options_json = 'not json'")
    [row] = history(llm_cli)
    for json_ in ([], ["--json"]):
        result = llm_cli("imagen4", "show", row["id"], *json_)
        assert_safe(result)
    assert (
        strict(llm_cli("imagen4", "show", row["id"], "--json").stdout)["options"] == {}
    )


def test_numbers_too_large_for_sqlite_are_one_line(fake, generate, llm_cli):
    generate("a heron", "--seed", "9")
    seed = llm_cli("imagen4", "history", "--seed", "9223372036854775808")
    assert seed.exit_code == 1
    assert seed.output == (
        "Error: --seed 9223372036854775808 is not a seed: seeds are 0 to 4294967295\n"
    )
    many = llm_cli("imagen4", "history", "-n", "99999999999999999999", "--json")
    assert many.exit_code == 0, many.output
    assert [r["prompt"] for r in json.loads(many.stdout)] == ["a heron"]
    gallery = llm_cli("imagen4", "gallery", "-n", "99999999999999999999")
    assert gallery.exit_code == 0, gallery.output


@needs_chromium
def test_the_gallery_of_a_crafted_history_runs_nothing(
    fake, generate, llm_cli, logs_db, tmp_path
):
    generate("a real heron")
    crafted(logs_db, f"01evil{CLIPBOARD}", hostile)
    crafted(logs_db, "01svg", lambda r: r["images"][0].update(height=SVG, width=8))
    crafted(logs_db, "01twice", twice)
    result = llm_cli("imagen4", "gallery", "-o", "gallery.html")
    assert_safe(result)
    page = fake.work / "gallery.html"
    source = page.read_text()
    assert IMG not in source and SVG not in source and ESC not in source
    browser = WebDriver(tmp_path)
    try:
        browser.call("POST", "/url", {"url": page.as_uri()})
        assert browser.run("return window.pwned === undefined") is True
        assert browser.run("return document.querySelectorAll('svg').length") == 0
        metas = browser.run(
            "return Array.from(document.querySelectorAll('.meta'), m => m.textContent)"
        )
        assert len(metas) == 5
        assert sum("seed not valid" in meta for meta in metas) == 1
        assert sum(" · ? · " in meta for meta in metas) == 2
    finally:
        browser.close()


def test_a_crafted_table_of_0_1_is_left_as_it_is(fake, llm_cli, logs_db):
    """The 0.1 rescue reads the old table: rows it cannot read are left,
    and the upgrade goes on."""
    shutil.copy(FIXTURES / "logs-0.1.db", fake.logs)
    db = logs_db()
    with db.conn:
        db.execute(
            "update imagen4_images set width = ? where prompt = 'a restored crane'",
            [SVG],
        )
        db.execute(
            "update imagen4_images set provenance = 'not json'"
            " where prompt = 'an unfinished stork'"
        )
    rows = history(llm_cli)
    assert [r["prompt"] for r in rows] == ["a restored crane", "a saved heron"]
    assert rows[0]["images"][0]["status"] != "saved"
    assert journal_ids(fake) == []
    assert db["imagen4_images"].count == 2
