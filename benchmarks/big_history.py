"""A large logs database for the history benchmarks, built in seconds.

One real generation is made through the plugin against the fake API and
logged by llm; its turn is then copied in SQL with new ids, prompts, seeds,
models and dates, among turns of another model that the history must skip.
Only llm's migrations are applied: the plugin's objects are left for the
first ``history.prepare`` to make, as on a user's first command."""

from __future__ import annotations

import datetime
import json
import random
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_imagen4.specs import SIZES

# Words the prompts are made of. RARE and ABSENT are not among them, nor
# part of any of them.
WORDS = """
red blue green golden silver crimson violet amber misty foggy sunny rainy
snowy stormy quiet ancient modern tiny giant wooden glass paper neon
fox owl cat dog horse whale dragon robot astronaut knight wizard farmer
sailor dancer child teapot bicycle castle bridge forest river mountain
desert ocean island village city garden meadow canyon glacier volcano
market library kitchen train harbor tower temple cabin tent balloon
kite lantern clock mirror umbrella violin piano book candle map
sunset sunrise midnight dawn twilight autumn winter spring summer
watercolor oil-painting photograph sketch pixel-art isometric cinematic
portrait macro aerial panorama close-up wide-angle soft-light backlit
reading flying sleeping running floating dreaming singing painting
""".split()
RARE = "lighthouse"  # in about 1 % of the prompts
ABSENT = "xylophone"  # in none
OTHER_MODEL = "gpt-4.1-mini"
MODELS = ("imagen4", "imagen4-fast", "imagen4-ultra", "imagen4-generate")
RATIOS = ("1:1", "1:1", "16:9", "9:16", "4:3", "3:4")
SPAN = datetime.timedelta(days=180)
CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


@dataclass
class Generation:
    """What varies from one generated turn to the next."""

    model: str
    prompt: str
    seed: int
    aspect_ratio: str


def plan(count: int, seed: int = 4) -> list[Generation]:
    """``count`` generations, oldest first; the same for any ``count`` up to
    the same index, so a smaller history is the start of a larger one."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        words = rng.sample(WORDS, rng.randint(4, 9))
        if rng.random() < 0.01:
            words.insert(rng.randrange(len(words) + 1), RARE)
        out.append(
            Generation(
                model=rng.choice(MODELS),
                prompt=" ".join(words),
                seed=rng.randint(1, 4294967295),
                aspect_ratio=rng.choice(RATIOS),
            )
        )
    return out


def genuine_turn(model: Any, path: Path, folder: Path) -> None:
    """Log into the logs database at ``path`` (llm's tables only) one turn
    of two images, made by the plugin against the fake API and logged by
    llm through the Python API."""
    import sqlite_utils

    db = sqlite_utils.Database(path)
    response = model.prompt(
        "a lighthouse keeper's cat", seed=7, num_images=2, output=str(folder)
    )
    response.text()
    response.log_to_db(db)
    db.close()


def request_for(generation: Generation) -> dict[str, Any]:
    """The request the plugin sends for ``generation`` (two images)."""
    from llm_imagen4 import specs

    spec = specs.SPECS_BY_ID[generation.model]
    options = spec.options(
        num_images=2, seed=generation.seed, aspect_ratio=generation.aspect_ratio
    )
    return specs.build_request(spec, generation.prompt, options)


def ulid_time(ms: int) -> str:
    """The first 10 of an id's 26 lowercase Crockford base32 digits, as llm
    makes ids: the 48-bit time in milliseconds. The other 16 are random."""
    return "".join(CROCKFORD[(ms >> shift) & 31] for shift in range(45, -1, -5))


# An id's random digits in SQL: 64 bits as hexadecimal digits, which are
# Crockford base32 digits too.
ULID_RANDOM = "lower(hex(randomblob(8)))"


def build(
    template: Path,
    path: Path,
    generations: list[Generation],
    other_turns: int,
    folder: Path,
    seed: int = 9,
) -> None:
    """Write at ``path`` a copy of ``template`` whose only turns are one per
    generation (copies of the template's turn, in order) and ``other_turns``
    turns of another model among them, dated over the six months before
    now. The values of each generation come from ``generations``; its ids,
    hashes and sizes from SQLite's random()."""
    rng = random.Random(seed)
    shutil.copy(template, path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.row_factory = sqlite3.Row
    columns = _clear(conn)
    slots = _slots(len(generations), other_turns, rng)
    _plan_table(conn, generations, rng, folder)
    _timed_table(conn, slots, rng)
    chosen = ", ".join(
        f"CASE WHEN x.k IS NULL THEN {_OTHER_TURN.get(c, f't.{c}')}"
        f" ELSE {_generation_turn().get(c, f't.{c}')} END"
        for c in columns
    )
    conn.execute(
        f"INSERT INTO turns ({', '.join(columns)}) SELECT {chosen}"
        " FROM timed x LEFT JOIN plan p ON p.k = x.k, template t ORDER BY x.n",
        {"folder": str(folder)},
    )
    conn.execute(
        "INSERT INTO threads (id, name, tip_message_hash, forked_from, datetime_utc)"
        " SELECT x.thread_id, coalesce(p.prompt, 'a question'), t.tip_message_hash,"
        " t.forked_from, x.stamp FROM timed x LEFT JOIN plan p ON p.k = x.k,"
        " template_thread t ORDER BY x.n"
    )
    conn.commit()
    _check(conn, generations)
    conn.close()


def _clear(conn: sqlite3.Connection) -> list[str]:
    """Keep the template's turn and thread aside, for the copies to be
    made of, and empty ``turns``; its messages stay, for the copies'
    message hashes to point at. The columns of ``turns``."""
    (turn,) = conn.execute("SELECT * FROM turns").fetchall()
    base = json.loads(turn["response_json"])
    assert base["plugin"] == "llm-imagen4" and len(base["images"]) == 2
    conn.execute("CREATE TEMP TABLE template AS SELECT * FROM turns")
    conn.execute("CREATE TEMP TABLE template_thread AS SELECT * FROM threads")
    conn.execute("DELETE FROM turn_search")
    conn.execute("DELETE FROM turns")
    conn.execute("DELETE FROM threads")
    ours = conn.execute(
        "SELECT name FROM sqlite_master WHERE name LIKE 'imagen4%'"
    ).fetchall()
    assert not ours, "the template must have llm's tables only"
    return list(turn.keys())


def _slots(generations: int, other_turns: int, rng: random.Random) -> list[int | None]:
    """Which turns are generations (their number, in order) and which are
    another model's (None), in the order they are logged."""
    slots: list[int | None] = [*range(generations), *[None] * other_turns]
    rng.shuffle(slots)
    order = iter(range(len(slots)))
    return [k if k is None else next(order) for k in slots]


def _plan_table(
    conn: sqlite3.Connection,
    generations: list[Generation],
    rng: random.Random,
    folder: Path,
) -> None:
    """The temporary table ``plan``: what each generation is, with the
    request the plugin sends for it and the options llm logs."""
    from llm_imagen4 import specs

    conn.execute(
        "CREATE TEMP TABLE plan (k INTEGER PRIMARY KEY, model, api_model, inline,"
        " prompt, seed, ratio, width, height, tool)"
    )
    conn.executemany(
        "INSERT INTO plan VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            (
                k,
                g.model,
                specs.SPECS_BY_ID[g.model].api_id,
                specs.SPECS_BY_ID[g.model].inline,
                g.prompt,
                g.seed,
                g.aspect_ratio,
                *SIZES[g.aspect_ratio],
                rng.random() < 0.01,
            )
            for k, g in enumerate(generations)
        ),
    )
    request = (
        "json_object('model', p.api_model, 'prompt', p.prompt, 'aspect_ratio',"
        " p.ratio, 'num_images', 2, 'seed', p.seed)"
    )
    request = (
        f"CASE WHEN p.inline THEN json_set({request}, '$.convert_base64_to_url',"
        f" json('false')) ELSE {request} END"
    )
    options = (
        "json_object('seed', p.seed, 'num_images', 2, 'output', :folder)"
        " || ''"  # a text value, as llm writes it
    )
    options = (
        f"CASE WHEN p.ratio = '1:1' THEN {options} ELSE json_set({options},"
        " '$.aspect_ratio', p.ratio) END"
    )
    conn.execute("ALTER TABLE plan ADD COLUMN request")
    conn.execute("ALTER TABLE plan ADD COLUMN options")
    conn.execute(
        f"UPDATE plan AS p SET request = {request}, options = {options}",
        {"folder": str(folder)},
    )


def _timed_table(
    conn: sqlite3.Connection, slots: list[int | None], rng: random.Random
) -> None:
    """The temporary table ``timed``: each turn's place, its generation (if
    it is one), its id and thread's id, and when it was logged."""
    end = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    start_ms = int((end - SPAN).timestamp() * 1000)
    step_ms = SPAN.total_seconds() * 1000 / len(slots)
    times = [
        start_ms + int(n * step_ms) + rng.randrange(1000) for n in range(len(slots))
    ]
    conn.execute("CREATE TEMP TABLE slots (n INTEGER PRIMARY KEY, k, ms, prefix)")
    conn.executemany(
        "INSERT INTO slots VALUES (?, ?, ?, ?)",
        (
            (n, k, ms, ulid_time(ms))
            for n, (k, ms) in enumerate(zip(slots, times, strict=True))
        ),
    )
    conn.execute(
        "CREATE TEMP TABLE timed AS SELECT n, k,"
        f" prefix || {ULID_RANDOM} AS id, prefix || {ULID_RANDOM} AS thread_id,"
        " strftime('%Y-%m-%dT%H:%M:%S', ms / 1000, 'unixepoch')"
        " || printf('.%06d+00:00', ms % 1000 * 1000 + abs(random()) % 1000) AS stamp"
        " FROM slots ORDER BY n"
    )
    conn.execute("CREATE INDEX temp.timed_n ON timed (n)")


def _generation_turn() -> dict[str, str]:
    """Each column of a generation's turn that is not the template's, in
    SQL over its plan ``p``, its place ``x`` and the template's turn ``t``."""
    record = {
        "$.request": "json(p.request)",
        "$.seed": "p.seed",
        "$.client_request_id": "'llm-imagen4:' || x.id",
        "$.inference_id": "'inf-' || (p.k + 1)",
        "$.tool_call_id": "CASE WHEN p.tool THEN 'call_' || lower(hex(randomblob(8))) END",
        "$.directory": ":folder || '/'",
        "$.provenance.model": "p.model",
        "$.provenance.api_model": "p.api_model",
        "$.provenance.prompt": "p.prompt",
        "$.provenance.seed": "p.seed",
        "$.provenance.options": "json_remove(json(p.request), '$.model', '$.prompt')",
        "$.provenance.turn_id": "x.id",
        "$.provenance.created_utc": "x.stamp",
    }
    for position in (0, 1):
        image = f"$.images[{position}]"
        record |= {
            f"{image}.name": f"replace(p.prompt, ' ', '-') || '-{position}-' || (p.k + 1)"
            " || '.png'",
            f"{image}.url": "'https://cdn.example/files/' || lower(hex(randomblob(8)))"
            " || '.png'",
            f"{image}.sha256": "lower(hex(randomblob(32)))",
            f"{image}.bytes": "900000 + abs(random()) % 1500000",
            f"{image}.width": "p.width",
            f"{image}.height": "p.height",
        }
    changes = ", ".join(f"'{where}', {value}" for where, value in record.items())
    return {
        "id": "x.id",
        "thread_id": "x.thread_id",
        "model": "p.model",
        "resolved_model": "p.api_model",
        "options_json": "p.options",
        "duration_ms": "4000 + abs(random()) % 16000",
        "datetime_utc": "x.stamp",
        "response_json": f"json_set(t.response_json, {changes})",
    }


# Each column of another model's turn that is not the template's.
_OTHER_TURN = {
    "id": "x.id",
    "thread_id": "x.thread_id",
    "model": f"'{OTHER_MODEL}'",
    "resolved_model": f"'{OTHER_MODEL}'",
    "options_json": "'{}'",
    "input_tokens": "12",
    "output_tokens": "80",
    "token_details": "NULL",
    "duration_ms": "300 + abs(random()) % 3000",
    "datetime_utc": "x.stamp",
    "response_json": "CASE WHEN random() % 2 THEN json_object('id', 'chatcmpl-'"
    " || lower(hex(randomblob(8))), 'object', 'chat.completion', 'usage',"
    " json_object('prompt_tokens', 12, 'completion_tokens', 80)) END",
}


def _check(conn: sqlite3.Connection, generations: list[Generation]) -> None:
    """The plugin must see each generation's request as it sends it."""
    for k, direction in ((0, "ASC"), (len(generations) - 1, "DESC")):
        (logged,) = conn.execute(
            "SELECT json_extract(response_json, '$.request') FROM turns"
            f" WHERE model != ? ORDER BY rowid {direction} LIMIT 1",
            [OTHER_MODEL],
        ).fetchone()
        assert json.loads(logged) == request_for(generations[k]), logged


def image_paths(path: Path, newest: int) -> list[Path]:
    """The image files of the ``newest`` generations of a built database."""
    conn = sqlite3.connect(path)
    rows = conn.execute(
        "SELECT json_extract(response_json, '$.directory'),"
        " json_extract(response_json, '$.images')"
        " FROM turns WHERE model != ? ORDER BY rowid DESC LIMIT ?",
        [OTHER_MODEL, newest],
    ).fetchall()
    conn.close()
    return [
        Path(directory + image["name"])
        for directory, images in rows
        for image in json.loads(images)
    ]
