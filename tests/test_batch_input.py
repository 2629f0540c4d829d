"""`llm imagen4 batch FILE` reads untrusted input: its rows, numbered as the
file has them."""

import json


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
