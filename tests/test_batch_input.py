"""`llm imagen4 batch FILE` reads untrusted input: its rows, numbered as the
file has them, crafted rows and files, only a regular file or standard input,
and the caps on its size and rows."""

import csv
import json
import os
import socket
import subprocess
import sys

import pytest

from .conftest import llm_command

MIB = 1024 * 1024
# A true llm that hangs fails its test after this many seconds.
DEADLINE = 30


def write(fake, name: str, data: str | bytes) -> str:
    path = fake.work / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def by_row(result) -> dict[int, dict]:
    """What ``batch --json`` said of each row, by the row's number."""
    return {r["row"]: r for r in map(json.loads, result.stdout.splitlines())}


def statuses(result) -> dict[int, str]:
    return {number: row["status"] for number, row in by_row(result).items()}


def prompts(fake) -> list[str]:
    return sorted(g.body["prompt"] for g in fake.generations)


def refusal(code: int, stdout: str | bytes, stderr: str | bytes) -> str:
    """The one line on stderr of a batch refused as a whole: exit 1, nothing
    on stdout, no traceback."""
    stderr = stderr.decode() if isinstance(stderr, bytes) else stderr
    assert code == 1, stderr
    assert not stdout
    [line] = stderr.splitlines()
    return line


def llm_batch(fake, *args: str, **run: object) -> subprocess.CompletedProcess:
    """A true ``llm imagen4 batch ARGS`` process, failed if it hangs."""
    return subprocess.run(
        llm_command("imagen4", "batch", *args),
        capture_output=True,
        cwd=fake.work,
        timeout=DEADLINE,
        **run,
    )


# -- rows numbered as the file has them ------------------------------------------


def test_a_row_is_numbered_by_its_line_or_record_as_the_file_has_them(fake, llm_cli):
    # JSON strings may hold U+2028 and U+0085 as they are: they break no line.
    jsonl = write(
        fake,
        "rows.jsonl",
        "\ufeff"
        + "\r\n".join(
            [
                json.dumps({"prompt": "one\u2028line"}, ensure_ascii=False),
                "",
                json.dumps({"prompt": "next\x85line"}, ensure_ascii=False),
                "{not json",
            ]
        ),
    )
    result = llm_cli("imagen4", "batch", jsonl, "--json")
    assert statuses(result) == {1: "done", 3: "done", 4: "failed"}
    assert by_row(result)[4]["error"] == "not valid JSON"
    text = write(
        fake, "p.txt", "\ufefftext\u2028prompt\r\n# a comment\r\n" + "x" * 4001
    )
    result = llm_cli("imagen4", "batch", text, "--json")
    assert statuses(result) == {1: "done", 3: "failed"}
    assert "4001 characters" in by_row(result)[3]["error"]
    # A CSV row is its record: the first spans two lines.
    csv_file = write(
        fake, "shots.csv", '\ufeffprompt,seed\r\n"two\r\nlines",1\r\n,2\r\nlast,3\r\n'
    )
    result = llm_cli("imagen4", "batch", csv_file, "--json")
    assert statuses(result) == {1: "done", 2: "failed", 3: "done"}
    assert by_row(result)[2]["error"] == "no prompt"
    assert prompts(fake) == sorted(
        ["one\u2028line", "next\x85line", "text\u2028prompt", "two\nlines", "last"]
    )


# -- crafted rows and files -----------------------------------------------------


def test_json_nested_100000_deep_is_a_row_that_fails_alone(fake, llm_cli):
    rows = [
        '{"prompt": "first"}',
        "[" * 100_000,
        '{"prompt": ' + "[" * 100_000,
        '{"prompt": "last"}',
    ]
    path = write(fake, "deep.jsonl", "\n".join(rows))
    result = llm_cli("imagen4", "batch", path, "--json")
    assert result.exit_code == 1
    assert statuses(result) == {1: "done", 2: "failed", 3: "failed", 4: "done"}
    assert by_row(result)[2]["error"] == "not valid JSON: nested too deeply"
    assert by_row(result)[3]["error"] == "not valid JSON: nested too deeply"
    assert prompts(fake) == ["first", "last"]


def test_a_csv_field_over_csvs_limit_is_a_row_refused_for_what_it_holds(fake, llm_cli):
    # csv reads no field over 131,072 characters; here it is a prompt too long.
    path = write(fake, "long.csv", f"prompt,seed\nfirst,1\n{'x' * 131_073},2\nlast,3\n")
    result = llm_cli("imagen4", "batch", path, "--json")
    assert result.exit_code == 1
    assert statuses(result) == {1: "done", 2: "failed", 3: "done"}
    assert by_row(result)[2]["error"] == (
        "The prompt is 131073 characters; imagen4 takes at most 4000"
    )
    assert prompts(fake) == ["first", "last"]
    # Left as it was in llm's process.
    assert csv.field_size_limit() == 131_072


def test_a_csv_record_with_more_values_than_its_header_fails_alone(fake, llm_cli):
    path = write(
        fake, "extra.csv", "prompt,seed\nfirst,1\nsecond,2,x\nthird,3,\nlast,4\n"
    )
    result = llm_cli("imagen4", "batch", path, "--json")
    assert result.exit_code == 1
    assert statuses(result) == {1: "done", 2: "failed", 3: "failed", 4: "done"}
    assert by_row(result)[2]["error"] == "more values than the header has columns"
    assert by_row(result)[3]["error"] == "more values than the header has columns"
    assert prompts(fake) == ["first", "last"]


@pytest.mark.parametrize(
    "record,problem",
    [
        ('"second,2\nthird,3\n', "record 2 is not CSV: unexpected end of data"),
        ('"second"x,2\nthird,3\n', "record 2 is not CSV: ',' expected after '\"'"),
    ],
    ids=["a quote never closed", "a quote closed mid-field"],
)
def test_csv_quoting_gone_wrong_sends_nothing(fake, llm_cli, record, problem):
    # Read on, the rest of the file would be one prompt, and sent.
    path = write(fake, "quotes.csv", "prompt,seed\nfirst,1\n" + record)
    result = llm_cli("imagen4", "batch", path)
    assert refusal(result.exit_code, result.stdout, result.stderr) == (
        f"Error: {path}: {problem}"
    )
    assert fake.state.requests == []


def test_a_row_whose_fields_no_request_can_carry_fails_alone(fake, llm_cli):
    rows = [
        {"prompt": "first"},
        {"prompt": "a", "model": 5},
        {"prompt": "b", "model": ["imagen4"]},
        {"prompt": "c\0d"},
        {"prompt": "e", "output": "out\0put"},
        {"prompt": "f", "negative_prompt": "half a pair: \ud800"},
        {"prompt": "last"},
    ]
    path = write(fake, "fields.jsonl", "\n".join(map(json.dumps, rows)))
    result = llm_cli("imagen4", "batch", path, "--json")
    assert result.exit_code == 1
    errors = {n: r.get("error") for n, r in by_row(result).items()}
    assert errors == {
        1: None,
        2: "model: not the name of a model",
        3: "model: not the name of a model",
        4: "prompt: holds a NUL character",
        5: "output: holds a NUL character",
        6: "negative_prompt: holds half of a surrogate pair, which is not text",
        7: None,
    }
    assert prompts(fake) == ["first", "last"]


# -- special files --------------------------------------------------------------


def test_a_fifo_nobody_writes_is_refused_at_once(fake):
    path = fake.work / "rows.txt"
    os.mkfifo(path)
    done = llm_batch(fake, str(path))
    assert refusal(done.returncode, done.stdout, done.stderr) == (
        f"Error: {path} is a pipe, not a regular file: give - and pipe it to"
        " standard input"
    )
    assert fake.state.requests == []


def unix_socket(path):
    # Its file stays once the socket is closed.
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))


@pytest.mark.parametrize(
    "make,refused",
    [
        (lambda path: path.symlink_to("/dev/null"), " is not a regular file"),
        (unix_socket, " is not a regular file"),
        (lambda path: path.mkdir(), " is not a regular file"),
        (lambda path: None, ": No such file or directory"),
    ],
    ids=["a device", "a socket", "a folder", "nothing"],
)
def test_only_a_regular_file_is_read(fake, llm_cli, make, refused):
    path = fake.work / "rows.txt"
    make(path)
    result = llm_cli("imagen4", "batch", str(path))
    assert refusal(result.exit_code, result.stdout, result.stderr) == (
        f"Error: {path}{refused}"
    )
    assert fake.state.requests == []


def test_standard_input_may_be_a_pipe(fake):
    done = llm_batch(fake, "-", input=b'{"prompt": "piped"}\n')
    assert done.returncode == 0, done.stderr
    assert prompts(fake) == ["piped"]


# -- caps -------------------------------------------------------------------------


def test_a_file_over_16_mib_is_refused(fake, llm_cli):
    path = fake.work / "big.txt"
    path.write_bytes(b"x" * 16 * MIB)
    # 16 MiB is read: one line, a prompt too long.
    result = llm_cli("imagen4", "batch", str(path))
    assert result.stderr.splitlines()[0] == (
        f"Row 1: The prompt is {16 * MIB} characters; imagen4 takes at most 4000"
    )
    with open(path, "ab") as f:
        f.write(b"\n")
    result = llm_cli("imagen4", "batch", str(path))
    assert refusal(result.exit_code, result.stdout, result.stderr) == (
        f"Error: {path} is over 16 MiB, the most a batch file may hold: split it"
    )
    assert fake.state.requests == []


PEAK = """\
import atexit, sys
def peak():
    with open('/proc/self/status') as f:
        sys.stderr.write([l for l in f if l.startswith('VmHWM')][0])
atexit.register(peak)
from llm.cli import cli
cli(sys.argv[1:], prog_name='llm')
"""


def test_standard_input_is_read_no_further_than_16_mib(fake, tmp_path):
    script = tmp_path / "peak.py"
    script.write_text(PEAK)
    done = subprocess.run(
        [sys.executable, str(script), "imagen4", "batch", "-"],
        input=b"x" * 64 * MIB,
        capture_output=True,
        cwd=fake.work,
        timeout=DEADLINE,
    )
    refused, peak = done.stderr.decode().splitlines()
    assert refusal(done.returncode, done.stdout, refused) == (
        "Error: <stdin> is over 16 MiB, the most a batch file may hold: split it"
    )
    label, kilobytes, unit = peak.split()
    assert label == "VmHWM:" and unit == "kB"
    assert int(kilobytes) < 100 * 1024, peak
    assert fake.state.requests == []


def test_more_than_10000_rows_are_refused(fake, llm_cli):
    # Rows that are no JSON object: each fails alone, and nothing is sent.
    path = write(fake, "many.jsonl", "[]\n" * 10_000)
    result = llm_cli("imagen4", "batch", path)
    assert result.exit_code == 1
    assert result.stderr.count("not a JSON object") == 10_000
    assert "10000 rows: 0 generated" in result.stderr
    write(fake, "many.jsonl", "[]\n" * 10_001)
    result = llm_cli("imagen4", "batch", path)
    assert refusal(result.exit_code, result.stdout, result.stderr) == (
        f"Error: {path} has more than 10,000 rows, the most a batch takes: split it"
    )
    assert fake.state.requests == []
