"""Naming and writing image files."""

import threading

import pytest

from llm_imagen4.files import (
    SLUG_MAX_BYTES,
    Destination,
    NotAnImage,
    image_info,
    slugify,
)

from .fake_api import jpeg, png


@pytest.mark.parametrize(
    "prompt,slug",
    [
        ("Racoon eating ice-cream", "racoon-eating-ice-cream"),
        ("lighthouse: at dawn/dusk", "lighthouse-at-dawn-dusk"),
        ("../../etc/passwd", "etc-passwd"),
        ("C:\\Windows\\system32", "c-windows-system32"),
        ("Ünïcödé café 東京の夜", "ünïcödé-café-東京の夜"),
        ("🦝🍦", "image"),
        ("   ", "image"),
        ("a\x00b\nc\td", "a-b-c-d"),
        ("Ｆｕｌｌｗｉｄｔｈ", "fullwidth"),
    ],
)
def test_slugify(prompt, slug):
    assert slugify(prompt) == slug


def test_slug_of_a_4000_character_prompt_fits_any_file_system():
    for prompt in ("word " * 800, "x" * 4000, "東京" * 2000):
        slug = slugify(prompt)
        assert 0 < len(slug.encode()) <= SLUG_MAX_BYTES
        assert "/" not in slug and "\\" not in slug


def test_image_info_reads_png_jpeg_and_webp():
    assert image_info(png(1408, 768)) == ("image/png", ".png", 1408, 768)
    assert image_info(jpeg(1408, 768)) == ("image/jpeg", ".jpg", 1408, 768)
    webp = b"RIFF\x00\x00\x00\x00WEBPVP8X" + b"\x00" * 8
    webp += (1023).to_bytes(3, "little") + (767).to_bytes(3, "little")
    assert image_info(webp) == ("image/webp", ".webp", 1024, 768)
    for junk in (b"", b"GIF89a", b"<html>", b"\x89PNG\r\n\x1a\n"):
        with pytest.raises(NotAnImage):
            image_info(junk)


def test_names_count_on_and_nothing_is_overwritten(tmp_path):
    (tmp_path / "a-cat.png").write_bytes(b"mine")
    (tmp_path / "a-cat-3.png").write_bytes(b"mine too")
    destination = Destination.into(tmp_path, "A cat")
    first = destination.save([png(8, 8, b"1")], 0).path
    second = destination.save([png(8, 8, b"2")], 1).path
    assert [first.name, second.name] == ["a-cat-2.png", "a-cat-4.png"]
    assert (tmp_path / "a-cat.png").read_bytes() == b"mine"
    assert (tmp_path / "a-cat-3.png").read_bytes() == b"mine too"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_many_saves_at_once_never_share_a_name(tmp_path):
    destination = Destination.into(tmp_path, "same prompt")
    paths = []

    def save(i):
        paths.append(destination.save([png(8, 8, f"{i:03d}|".encode())], 0).path)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(paths)) == 16
    assert len({p.read_bytes() for p in paths}) == 16


def test_the_extension_follows_the_real_type(tmp_path):
    destination = Destination.plan(str(tmp_path / "photo.jpg"), "x", 1)
    saved = destination.save([png(8, 8)], 0)
    assert saved.path == tmp_path / "photo.png"
    assert saved.content_type == "image/png"


def test_a_failed_save_leaves_no_temporary_file(tmp_path):
    destination = Destination.into(tmp_path, "x")
    with pytest.raises(NotAnImage):
        destination.save([b"<html>nope</html>"], 0)
    with pytest.raises(OSError):
        destination.save(iter_then_fail(), 0)
    assert list(tmp_path.iterdir()) == []


def iter_then_fail():
    yield png(8, 8)[:20]
    raise OSError(28, "No space left on device")
