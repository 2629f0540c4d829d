"""The gallery in a real headless Chromium, and the canned queries in Datasette."""

import asyncio
import json
import os

from .webdriver import WebDriver, needs_chromium


def generate(llm_cli, *args):
    result = llm_cli("imagen4", *args)
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


@needs_chromium
def test_gallery_renders_in_chromium_with_a_working_filter(fake, llm_cli, tmp_path):
    generate(llm_cli, "a red fox in snow", "-r", "9:16")
    generate(llm_cli, "a blue whale", "-n", "2", "-m", "imagen4-fast")
    generate(llm_cli, "a red panda <b>bold</b>")
    os.remove(fake.work / "a-blue-whale-2.png")
    result = llm_cli("imagen4", "gallery", "-o", "gallery.html")
    assert result.exit_code == 0, result.output
    page = fake.work / "gallery.html"
    assert result.stdout.strip() == str(page)
    source = page.read_text()
    assert "http://" not in source and "https://" not in source
    assert "<b>bold</b>" not in source

    browser = WebDriver(tmp_path)
    try:
        browser.call("POST", "/url", {"url": page.as_uri()})
        cards = browser.run(
            "return Array.from(document.querySelectorAll('.card'),"
            " c => c.querySelector('.prompt').textContent)"
        )
        assert cards == [
            "a red panda <b>bold</b>",
            "a blue whale",
            "a blue whale",
            "a red fox in snow",
        ]
        loaded = browser.run(
            "return Array.from(document.images, i => i.complete && i.naturalWidth)"
        )
        assert sorted(loaded) == [768, 1024, 1024]  # the deleted one shows as missing
        assert browser.run("return document.querySelectorAll('.missing').length") == 1
        browser.type_into("#filter", "red")
        visible = browser.run(
            "return Array.from(document.querySelectorAll('.card'))"
            ".filter(c => c.offsetParent !== null)"
            ".map(c => c.querySelector('.prompt').textContent)"
        )
        assert visible == ["a red panda <b>bold</b>", "a red fox in snow"]
        assert browser.run("return document.getElementById('count').textContent") == (
            "2 of 4 images"
        )
        rerun = browser.run("return document.querySelector('.card code').textContent")
        assert rerun.startswith("llm imagen4 rerun 01")
    finally:
        browser.close()


def test_gallery_never_overwrites_a_file_it_did_not_write(fake, llm_cli):
    (fake.work / "index.html").write_text("<p>mine</p>")
    result = llm_cli("imagen4", "gallery", "-o", "index.html")
    assert result.exit_code == 1
    assert "index.html exists and is not a gallery" in result.output
    assert (fake.work / "index.html").read_text() == "<p>mine</p>"
    # Its own page is written again.
    assert llm_cli("imagen4", "gallery").exit_code == 0
    generate(llm_cli, "a moth")
    assert llm_cli("imagen4", "gallery").exit_code == 0
    assert "a moth" in (fake.work / "imagen4-gallery.html").read_text()


def test_gallery_makes_its_folder_as_generate_does(fake, llm_cli):
    generate(llm_cli, "a moth")
    result = llm_cli("imagen4", "gallery", "-o", "new/pages/moths.html")
    assert result.exit_code == 0, result.output
    page = fake.work / "new" / "pages" / "moths.html"
    assert result.stdout.strip() == str(page)
    assert 'src="../../a-moth.png"' in page.read_text()
    (fake.work / "a-file").write_text("")
    refused = llm_cli("imagen4", "gallery", "-o", "a-file/moths.html")
    assert refused.exit_code == 1
    assert refused.output.startswith("Error: Cannot create ")


def test_gallery_links_each_image_relative_to_the_page(tmp_path):
    """Without a browser: each image's link, from wherever the page is."""
    from llm_imagen4.gallery import render
    from llm_imagen4.history import HistoryEntry, HistoryImage

    def image(position, path, exists=True):
        return HistoryImage(
            position, path, "saved", None, None, None, 8, 8, None, None, None, exists
        )

    page = tmp_path / "site"
    entry = HistoryEntry(
        id="01abc",
        datetime_utc="2026-01-02T03:04:05+00:00",
        model="imagen4",
        api_model="google/imagen4/preview",
        prompt='a "cat" & <dog>',
        negative_prompt=None,
        aspect_ratio="1:1",
        seed=7,
        credits_used=None,
        usd_spent=None,
        folder=None,
        metadata=True,
        tool_call_id=None,
        images=[
            image(0, str(page / "here.png")),
            image(1, str(page / "shots" / "a b#1.png")),
            image(2, str(tmp_path / "other" / "x?.png")),
            image(3, str(page / "shots" / "second.png")),
            image(4, str(page / "gone.png"), exists=False),
        ],
    )
    html = render([entry], page)
    hrefs = [part.split('"', 1)[0] for part in html.split('<a href="')[1:]]
    assert hrefs == [
        "here.png",
        "shots/a%20b%231.png",
        "../other/x%3F.png",
        "shots/second.png",
    ]
    assert html.count("saved: file missing") == 1
    assert "a &quot;cat&quot; &amp; &lt;dog&gt;" in html
    assert "5 images" in html


def test_datasette_serves_the_canned_queries(fake, llm_cli, logs_db):
    from datasette.app import Datasette

    generate(llm_cli, "a heron at dusk", "--seed", "10")
    generate(llm_cli, "a heron at dawn", "--seed", "20", "-n", "2")
    generate(llm_cli, "a crane", "-m", "imagen4-fast")
    fake.fail_downloads(3, status=500)
    assert llm_cli("imagen4", "a heron lost").exit_code == 1
    metadata = json.loads(llm_cli("imagen4", "datasette").stdout)
    db_path = fake.user_path / "logs.db"

    async def query(path):
        datasette = Datasette([str(db_path)], metadata=metadata)
        response = await datasette.client.get(path)
        assert response.status_code == 200, response.text
        return response.json()

    by_day = asyncio.run(query("/logs/generations_by_day.json?_shape=array"))
    assert sorted((r["model"], r["generations"], r["images"]) for r in by_day) == [
        ("imagen4", 3, 4),
        ("imagen4-fast", 1, 1),
    ]
    seeds = asyncio.run(
        query("/logs/seeds_for_prompt.json?_shape=array&prompt=heron+at")
    )
    assert [r["seed"] for r in seeds] == [20, 10]
    # As -q and LIKE: case does not matter.
    shouted = asyncio.run(
        query("/logs/seeds_for_prompt.json?_shape=array&prompt=HERON+AT")
    )
    assert [r["seed"] for r in shouted] == [20, 10]
    for literal in ("_", "%25"):  # matched as text, not as LIKE patterns
        found = asyncio.run(
            query(f"/logs/seeds_for_prompt.json?_shape=array&prompt={literal}")
        )
        assert found == []
    missing = asyncio.run(query("/logs/missing_images.json?_shape=array"))
    assert [(r["prompt"], r["status"]) for r in missing] == [("a heron lost", "failed")]
    table = asyncio.run(query("/logs/imagen4_images.json?_shape=array"))
    assert len(table) == 5
