"""The Datasette plugin: thumbnails in the history's pages, the images
served by their row's key alone, and the canned queries without a metadata
file. Driven through Datasette's own client, and once in a true Datasette
server looked at by headless Chromium."""

import asyncio
import hashlib
import http.client
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path

import httpx2
import pytest

from .conftest import poll
from .webdriver import WebDriver, free_port, needs_chromium

CSP = "default-src 'none'; sandbox"


class Thumbnails(HTMLParser):
    """The links and images in a page's ``path`` cells."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[dict[str, dict[str, str]]] = []
        self.in_path = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "td":
            self.in_path = "col-path" in (attributes.get("class") or "").split()
            if self.in_path:
                self.cells.append({})
        elif self.in_path and tag in ("a", "img"):
            self.cells[-1][tag] = attributes

    def handle_endtag(self, tag):
        if tag == "td":
            self.in_path = False


def thumbnails(html: str) -> list[dict[str, dict[str, str]]]:
    parser = Thumbnails()
    parser.feed(html)
    return parser.cells


def get(db_path: Path, *paths: str, **options):
    """Each path's answer from Datasette, in-process, over that database;
    redirects followed (Datasette sends ``%2F`` to its own ``~2F``)."""
    from datasette.app import Datasette

    async def run():
        datasette = Datasette([str(db_path)], **options)
        return [
            await datasette.client.get(path, follow_redirects=True) for path in paths
        ]

    return asyncio.run(run())


def image_rows(db_path: Path) -> list[dict]:
    (answer,) = get(db_path, "/logs/imagen4_images.json?_shape=array")
    return answer.json()


def url_of(row: dict) -> str:
    return f"/-/imagen4/logs/{row['turn_id']}/{row['position']}"


def assert_not_served(answer):
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"
    assert answer.text == "Image not found"
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_each_image_is_a_thumbnail_that_serves_its_saved_file(fake, generate):
    generate("a red fox", "-r", "16:9")
    generate("a tall tower", "-r", "9:16", "-n", "2")
    generate("a square", "-m", "imagen4-fast")
    rows = image_rows(fake.logs)
    (page,) = get(fake.logs, "/logs/imagen4_images")
    cells = thumbnails(page.text)
    assert len(cells) == len(rows) == 4
    by_url = {url_of(row): row for row in rows}
    for cell in cells:
        link, image = cell["a"], cell["img"]
        assert link["href"] == image["src"] and image["src"] in by_url
        assert image["loading"] == "lazy"
        row = by_url.pop(image["src"])
        assert image["alt"] == row["path"]
        assert max(int(image["width"]), int(image["height"])) == 160
        assert (int(image["width"]) > int(image["height"])) == (
            row["width"] > row["height"]
        )
    assert by_url == {}
    answers = get(fake.logs, *(url_of(row) for row in rows))
    for row, answer in zip(rows, answers, strict=True):
        assert answer.status_code == 200
        assert answer.content == Path(row["path"]).read_bytes()
        assert answer.headers["content-type"] == "image/png"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["content-security-policy"] == CSP


def test_a_query_with_the_key_shows_thumbnails_and_one_without_it_does_not(
    fake, generate
):
    generate("a heron")
    with_key, without_key = get(
        fake.logs,
        "/logs?sql=select+turn_id,+position,+path+from+imagen4_images",
        "/logs?sql=select+turn_id,+path+from+imagen4_images",
    )
    (cell,) = thumbnails(with_key.text)
    assert cell["img"]["src"].startswith("/-/imagen4/logs/")
    assert cell["img"]["width"] == cell["img"]["height"] == "160"
    assert thumbnails(without_key.text) == [{}]


def test_the_readmes_narrower_table_keeps_the_thumbnails(fake, generate):
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    (path,) = re.findall(r"http://127\.0\.0\.1:8001(/logs/imagen4_images\?\S+)", readme)
    generate("a heron", "-r", "16:9")
    generate("a crane", "-r", "9:16")
    (page,) = get(fake.logs, path)
    cells = thumbnails(page.text)
    assert [(c["img"]["width"], c["img"]["height"]) for c in cells] == [
        ("87", "160"),
        ("160", "87"),
    ]


def test_the_type_comes_from_the_bytes_and_the_request_names_no_file(
    fake, generate, logs_db
):
    (path,) = generate("a moth")
    other = fake.work / "secret.txt"
    other.write_text("not for the web")
    db = logs_db()
    db.execute("UPDATE imagen4_image_files SET content_type = 'text/html'")
    db.conn.commit()
    (row,) = image_rows(fake.logs)
    turn = row["turn_id"]
    (served,) = get(fake.logs, url_of(row) + f"?path={other}")
    assert served.content == Path(path).read_bytes()
    assert served.headers["content-type"] == "image/png"
    # No route takes a file name, a folder, or a position that is not one.
    for answer in get(
        fake.logs,
        url_of(row) + "/a-moth.png",
        "/-/imagen4/logs/a-moth.png",
        f"/-/imagen4/logs/{turn}/0%2F..%2F..%2Fsecret.txt",
        f"/-/imagen4/logs/{turn}/99999999999999999999",
    ):
        assert answer.status_code == 404
        assert b"not for the web" not in answer.content
    # Keys that are no image's find nothing.
    for answer in get(
        fake.logs,
        "/-/imagen4/logs/..%2F..%2Fwork%2Fsecret.txt/0",
        "/-/imagen4/logs/%2E%2E/0",
        f"/-/imagen4/logs/{turn}/1",
        "/-/imagen4/logs/01nosuchturn/0",
        f"/-/imagen4/nosuchdb/{turn}/0",
    ):
        assert_not_served(answer)


def test_a_record_pointed_at_another_file_serves_nothing(fake, generate, logs_db):
    (first,) = generate("a first image")
    (second,) = generate("a second image")
    text = fake.work / "notes.txt"
    text.write_text("plain text")
    rows = image_rows(fake.logs)
    db = logs_db()
    # As a crafted database would: the index says the first image is
    # another file: another image, a file that is not one, or the very
    # bytes, but at a path relative to wherever Datasette was started.
    shutil.copy(first, fake.work / "copy.png")
    for crafted in (second, str(text), "copy.png"):
        db.execute(
            "UPDATE imagen4_image_files SET path = ? WHERE turn_id = ?",
            [crafted, rows[0]["turn_id"]],
        )
        db.conn.commit()
        assert image_rows(fake.logs)[0]["path"] == crafted
        assert_not_served(get(fake.logs, url_of(rows[0]))[0])
    # And with the record's hash made the other file's too: still not an image.
    db.execute(
        "UPDATE imagen4_image_files SET path = ?, sha256 = ?, bytes = ?"
        " WHERE turn_id = ?",
        [
            str(text),
            hashlib.sha256(text.read_bytes()).hexdigest(),
            text.stat().st_size,
            rows[0]["turn_id"],
        ],
    )
    db.conn.commit()
    assert_not_served(get(fake.logs, url_of(rows[0]))[0])
    # The turn's own record, read while the index has not read it: its
    # folder pointed elsewhere, where a file of that name is another image.
    elsewhere = fake.work / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(second, elsewhere / Path(first).name)
    db.execute("DELETE FROM imagen4_image_files")
    db.execute("DELETE FROM imagen4_generations")
    db.execute("UPDATE imagen4_sync SET turns_rowid = 0")
    db.execute(
        "UPDATE turns SET response_json = json_set(response_json, '$.directory', ?)"
        " WHERE id = ?",
        [f"{elsewhere}/", rows[0]["turn_id"]],
    )
    db.conn.commit()
    live = image_rows(fake.logs)
    assert live[0]["path"] == str(elsewhere / Path(first).name)
    first_answer, second_answer = get(fake.logs, url_of(live[0]), url_of(live[1]))
    assert_not_served(first_answer)
    assert second_answer.content == Path(second).read_bytes()


def test_a_file_whose_bytes_changed_serves_nothing(fake, generate):
    (path,) = generate("a lighthouse")
    (row,) = image_rows(fake.logs)
    original = Path(path).read_bytes()
    changed = bytearray(original)
    changed[-20] ^= 0xFF
    for data in (bytes(changed), original + b"\0", original[:-1]):
        Path(path).write_bytes(data)
        assert_not_served(get(fake.logs, url_of(row))[0])
    Path(path).write_bytes(original)
    assert get(fake.logs, url_of(row))[0].content == original


def test_a_symlink_a_fifo_or_a_folder_in_the_files_place_serves_nothing(
    fake, generate, tmp_path
):
    (path,) = generate("a kestrel")
    (row,) = image_rows(fake.logs)
    copy = tmp_path / "copy.png"
    os.replace(path, copy)
    # The very bytes recorded, but through a symlink: refused.
    os.symlink(copy, path)
    assert_not_served(get(fake.logs, url_of(row))[0])
    os.remove(path)
    os.mkfifo(path)
    answers = []
    # A thread of its own, so that a read that waited for a writer would
    # fail the test rather than hang it.
    reading = threading.Thread(
        target=lambda: answers.extend(get(fake.logs, url_of(row))), daemon=True
    )
    reading.start()
    reading.join(10)
    if reading.is_alive():
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))  # let it go
        pytest.fail("the FIFO was waited on")
    assert_not_served(answers[0])
    os.remove(path)
    os.mkdir(path)
    assert_not_served(get(fake.logs, url_of(row))[0])


def test_a_crafted_path_stays_text_in_the_page(fake, generate, logs_db):
    generate("a wren")
    crafted = '/tmp/"><script>document.title="pwned"</script>.png'
    db = logs_db()
    db.execute("UPDATE imagen4_image_files SET path = ?", [crafted])
    db.conn.commit()
    (page,) = get(fake.logs, "/logs/imagen4_images")
    (cell,) = thumbnails(page.text)
    assert cell["img"]["alt"] == cell["a"]["title"] == crafted
    assert "<script>document" not in page.text


def test_the_images_keep_datasettes_permissions(fake, generate):
    from datasette.app import Datasette

    generate("a private image")
    (row,) = image_rows(fake.logs)

    async def run():
        datasette = Datasette(
            [str(fake.logs)], metadata={"databases": {"logs": {"allow": {"id": "me"}}}}
        )
        me = {"ds_actor": datasette.sign({"a": {"id": "me"}}, "actor")}
        anyone = await datasette.client.get(url_of(row))
        mine = await datasette.client.get(url_of(row), cookies=me)
        return anyone, mine

    anyone, mine = asyncio.run(run())
    assert anyone.status_code == 403
    assert mine.status_code == 200 and mine.headers["content-type"] == "image/png"


def test_the_canned_queries_need_no_metadata_file(fake, generate, tmp_path):
    generate("a heron at dusk", "--seed", "10")
    generate("a heron at dawn", "--seed", "20")
    listed, seeds = get(
        fake.logs,
        "/logs.json",
        "/logs/seeds_for_prompt.json?_shape=array&prompt=heron",
    )
    assert [query["name"] for query in listed.json()["queries"]] == [
        "generations_by_day",
        "seeds_for_prompt",
        "missing_images",
    ]
    assert [row["seed"] for row in seeds.json()] == [20, 10]
    # A database without the history has neither queries nor thumbnails.
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (turn_id, position, path)")
        conn.execute("INSERT INTO t VALUES ('01abc', 0, '/tmp/x.png')")
    conn.close()
    listed, table = get(other, "/other.json", "/other/t")
    assert listed.json()["queries"] == []
    assert thumbnails(table.text) == [{}]


@needs_chromium
def test_a_datasette_server_shows_every_thumbnail_and_runs_nothing(
    fake, generate, tmp_path
):
    generate("a red fox", "-r", "16:9")
    generate("<img src=x onerror=\"document.title='pwned'\">", "-r", "3:4")
    generate("a tower", "-r", "9:16", "-o", "<img src=x onerror=pwned=1>")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "datasette", str(fake.logs), "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx2.get(f"{base}/-/versions.json").status_code == 200
        except httpx2.TransportError:
            return False

    browser = None
    try:
        poll(up)
        # Paths sent as they are, dot segments and all, as no browser would.
        for raw in ("/-/imagen4/logs/../../../etc/passwd", "/-/imagen4/logs/../0"):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", raw)
            answer = conn.getresponse()
            assert answer.status == 404 and b"root:" not in answer.read()
            conn.close()
        browser = WebDriver(tmp_path)
        browser.call("POST", "/url", {"url": f"{base}/logs/imagen4_images"})
        # The path column is to the right of a wide table; lazy images load
        # once scrolled to, as a reader would.
        browser.run(
            "document.querySelectorAll('td.col-path img')"
            ".forEach(i => i.scrollIntoView())"
        )
        poll(
            lambda: browser.run(
                "return Array.from(document.querySelectorAll('td.col-path img'))"
                ".every(i => i.complete)"
            ),
            timeout=10,
        )
        widths = browser.run(
            "return Array.from(document.querySelectorAll('td.col-path img'),"
            " i => i.naturalWidth)"
        )
        assert sorted(widths) == [768, 896, 1408]
        assert "pwned" not in browser.run("return document.title")
        assert browser.run("return typeof window.pwned") == "undefined"
        prompts = browser.run(
            "return Array.from(document.querySelectorAll('td.col-prompt'),"
            " c => c.textContent.trim())"
        )
        assert "<img src=x onerror=\"document.title='pwned'\">" in prompts
    finally:
        if browser is not None:
            browser.close()
        server.terminate()
        server.wait(10)
