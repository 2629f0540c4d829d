"""Naming and writing image files, and recognising their bytes."""

import os
import stat
import subprocess
import sys
import threading
import time

import pytest

from llm_imagen4 import images
from llm_imagen4.files import (
    SLUG_MAX_BYTES,
    Destination,
    Ready,
    SaveError,
    TooLarge,
    _claim,
    remove_stale_parts,
    slugify,
)

from .fake_api import jpeg, png


def plain(tmp, kind):
    return Ready(tmp)


def save(destination, data, position=0, finish=plain, max_bytes=64 * 1024 * 1024):
    return destination.save([data], position, finish, max_bytes)


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


def test_sniff_reads_png_jpeg_and_webp():
    assert images.sniff(png(1408, 768)) == images.ImageType(
        "image/png", ".png", 1408, 768
    )
    assert images.sniff(jpeg(1408, 768)).width == 1408
    webp = b"RIFF\x00\x00\x00\x00WEBPVP8X" + b"\x00" * 8
    webp += (1023).to_bytes(3, "little") + (767).to_bytes(3, "little")
    assert images.sniff(webp) == images.ImageType("image/webp", ".webp", 1024, 768)
    for junk in (b"", b"GIF89a", b"<html>", b"\x89PNG\r\n\x1a\n"):
        with pytest.raises(images.NotAnImage):
            images.sniff(junk)


def test_names_count_on_and_nothing_is_overwritten(tmp_path):
    (tmp_path / "a-cat.png").write_bytes(b"mine")
    (tmp_path / "a-cat-3.png").write_bytes(b"mine too")
    destination = Destination.into(tmp_path, "A cat")
    first = save(destination, png(8, 8, b"1")).path
    second = save(destination, png(8, 8, b"2"), position=1).path
    assert [first.name, second.name] == ["a-cat-2.png", "a-cat-4.png"]
    assert (tmp_path / "a-cat.png").read_bytes() == b"mine"
    assert (tmp_path / "a-cat-3.png").read_bytes() == b"mine too"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_many_saves_at_once_never_share_a_name(tmp_path):
    destination = Destination.into(tmp_path, "same prompt")
    paths = []

    def one(i):
        paths.append(save(destination, png(8, 8, f"{i:03d}|".encode())).path)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(paths)) == 16
    assert len({p.read_bytes() for p in paths}) == 16


def test_a_taken_sidecar_name_moves_the_image_on(tmp_path):
    (tmp_path / "card.jpg.json").write_text("planted")
    destination = Destination.into(tmp_path, "card")

    def with_sidecar(tmp, kind):
        return Ready(tmp, lambda path, sha: f'{{"file": "{path.name}"}}'.encode())

    saved = save(destination, jpeg(8, 8), finish=with_sidecar)
    assert saved.path.name == "card-2.jpg"
    assert saved.sidecar.name == "card-2.jpg.json"
    assert (tmp_path / "card.jpg.json").read_text() == "planted"
    assert not (tmp_path / "card.jpg").exists()


def test_the_extension_follows_the_real_type(tmp_path):
    destination = Destination.plan(str(tmp_path / "photo.jpg"), "x", 1)
    saved = save(destination, png(8, 8))
    assert saved.path == tmp_path / "photo.png"
    assert saved.content_type == "image/png"


def test_files_get_the_mode_any_new_file_gets(tmp_path):
    old = os.umask(0o027)
    try:
        saved = save(Destination.into(tmp_path, "x"), png(8, 8))
    finally:
        os.umask(old)
    assert stat.S_IMODE(saved.path.stat().st_mode) == 0o640


def test_a_failed_save_leaves_no_temporary_file(tmp_path):
    destination = Destination.into(tmp_path, "x")
    with pytest.raises(images.NotAnImage):
        save(destination, b"<html>nope</html>")
    with pytest.raises(images.NotAnImage, match="cut off"):
        whole = png(8, 8)
        save(destination, whole[: len(whole) - 12])
    with pytest.raises(TooLarge):
        save(destination, png(8, 8), max_bytes=10)
    with pytest.raises(OSError):
        destination.save(iter_then_fail(), 0, plain, 1 << 20)
    assert list(tmp_path.iterdir()) == []


def test_a_stop_that_removes_the_file_being_named_leaves_no_empty_image(tmp_path):
    destination = Destination.into(tmp_path, "x")
    # Ctrl-C removes the temporary files being written while a thread is
    # about to name one.
    with pytest.raises(SaveError, match="stopped"):
        destination.save(
            [png(8, 8)],
            0,
            plain,
            1 << 20,
            naming=lambda sha256: destination.discard_partial(),
        )
    assert list(tmp_path.iterdir()) == []
    # Nor when the stop comes as the name is claimed.
    with pytest.raises(FileNotFoundError):
        _claim(tmp_path / ".imagen4-gone.part", tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_a_stopped_destination_starts_no_new_file(tmp_path):
    destination = Destination.into(tmp_path, "x")
    destination.discard_partial()  # Ctrl-C, while a thread still waits
    with pytest.raises(SaveError, match="stopped"):
        save(destination, png(8, 8))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fails", [False, True])
def test_without_hard_links_a_name_is_reserved_then_filled(
    tmp_path, monkeypatch, fails
):
    destination = Destination.into(tmp_path, "x")

    def no_links(src, dst):
        raise PermissionError(1, "Operation not permitted")

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "link", no_links)
    if fails:
        monkeypatch.setattr(os, "replace", disk_full)
        with pytest.raises(OSError):
            save(destination, png(8, 8))
        assert list(tmp_path.iterdir()) == []
        return
    saved = save(destination, png(8, 8))
    assert saved.path == tmp_path / "x.png"
    assert saved.path.read_bytes() == png(8, 8)
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


def iter_then_fail():
    yield png(8, 8)[:20]
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize(
    "whole,cut",
    [
        (png(8, 8), lambda d: d[:-12]),
        (jpeg(8, 8), lambda d: d[:-2]),
        (
            b"RIFF" + (20).to_bytes(4, "little") + b"WEBPVP8L" + b"\0" * 12,
            lambda d: d[:-4],
        ),
    ],
    ids=["png", "jpeg", "webp"],
)
def test_only_whole_images_are_complete(tmp_path, whole, cut):
    kind = images.sniff(whole).content_type
    path = tmp_path / "x"
    path.write_bytes(whole)
    assert images.is_complete(path, kind)
    path.write_bytes(cut(whole))
    assert not images.is_complete(path, kind)


def test_stale_temporary_files_are_removed_when_writing_there(tmp_path):
    old = tmp_path / ".imagen4-0123456789abcdef.part"
    fresh = tmp_path / ".imagen4-fedcba9876543210.part"
    other = tmp_path / "notes.part"
    for path in (old, fresh, other):
        path.write_bytes(b"x")
    hours_ago = time.time() - 2 * 3600
    os.utime(old, (hours_ago, hours_ago))
    os.utime(other, (hours_ago, hours_ago))
    remove_stale_parts(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [fresh.name, other.name]
    )
    Destination(tmp_path / "sub", "x").create()  # a folder written to is cleaned


def test_a_named_temporary_of_a_killed_writer_is_removed_at_once(tmp_path):
    # Killed between naming an image (a hard link) and removing its
    # temporary: the temporary is the image under a second name, and goes
    # at the next sweep, however fresh. A running writer's is left alone.
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead, alive = int(ended.stdout), os.getppid()
    image = tmp_path / "x.png"
    image.write_bytes(b"image")
    named = {
        pid: tmp_path / f".imagen4-{pid}-0123456789abcdef.part.meta.part"
        for pid in (dead, alive)
    }
    for part in named.values():
        os.link(image, part)
    # The file the named image arrived in, before its provenance was added.
    arrived = tmp_path / f".imagen4-{dead}-0123456789abcdef.part"
    arrived.write_bytes(b"the image without its provenance")
    unnamed = tmp_path / f".imagen4-{dead}-fedcba9876543210.part"
    unnamed.write_bytes(b"half an image")
    remove_stale_parts(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [image.name, named[alive].name, unnamed.name]
    )
    assert image.read_bytes() == b"image"
