"""The rows of the speed table about a history of 100,000 images: building
the plugin's index of it, the first read and the next ones, the queries,
and the commands that read it.

The history is a logs database of 100,000 images (50,000 generations of
two, among 20,000 turns of another model) made from one real generation by
``big_history.py`` in a few seconds, and a tenth of it to compare against;
only the newest generations' files exist (empty files), the others count
as deleted."""

from __future__ import annotations

import datetime
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import big_history
from benchmarks.timing import Row, median_time, ms
from tests.fake_api import KEY

GENERATIONS = 50_000
OTHER_TURNS = 20_000
SMALL_GENERATIONS = 5_000
SMALL_OTHER_TURNS = 2_000
# Only the newest generations' files are made (empty files): the rest are
# missing, as if deleted. Enough for the gallery and the history's pages.
FILES_FOR = 2_000
BATCH_ROWS = 2_000
IMAGES = f"{GENERATIONS * 2:,} images"
QUERY = "≤ 20 ms"


@dataclass
class Histories:
    """The two histories, where they are, and how they were made."""

    big_user: Path
    small_user: Path
    folder: Path
    # The big history before the plugin has read it, copied for each first read.
    pristine: Path
    plan: list[big_history.Generation]
    build_s: float
    runs: int

    @property
    def big(self) -> Path:
        return self.big_user / "logs.db"

    @property
    def small(self) -> Path:
        return self.small_user / "logs.db"

    @property
    def repeat(self) -> int:
        return self.runs * 2 + 1


def build(model: Any, template: Path, user: Path, runs: int) -> Histories:
    """A real turn of two images logged into ``template``, then the two
    histories made of copies of it."""
    big_user, small_user = user / "history-100k", user / "history-10k"
    folder = big_user / "images"
    folder.mkdir(parents=True)
    small_user.mkdir()
    big_history.genuine_turn(model, template, user / "images")
    start = time.perf_counter()
    plan = big_history.plan(GENERATIONS)
    big_history.build(template, big_user / "logs.db", plan, OTHER_TURNS, folder)
    built = Histories(
        big_user, small_user, folder, user / "pristine.db", plan, 0.0, runs
    )
    built.build_s = time.perf_counter() - start
    big_history.build(
        template, built.small, plan[:SMALL_GENERATIONS], SMALL_OTHER_TURNS, small_user
    )
    for path in big_history.image_paths(built.big, FILES_FOR):
        path.touch()
    shutil.copy(built.big, built.pristine)
    # Written out now, so that no measure waits for the disk to catch up.
    os.sync()
    return built


def first_prepare_row(built: Histories) -> Row:
    """The first ``index.prepare`` of each history, in-process."""
    from llm_imagen4 import index

    def first_prepare(path: Path) -> float:
        db = index.connect(path)
        start = time.perf_counter()
        index.prepare(db)
        seconds = time.perf_counter() - start
        db.close()
        return seconds

    big_s, small_s = first_prepare(built.big), first_prepare(built.small)
    size = built.big.stat().st_size / 1e6
    return (
        f"History of {IMAGES}: the first `index.prepare`"
        " (the plugin's index built from `turns`)",
        f"{big_s:.2f} s ({SMALL_GENERATIONS * 2:,} images: {small_s:.2f} s);"
        f" logs.db {size:.0f} MB, {GENERATIONS:,} image turns among"
        f" {GENERATIONS + OTHER_TURNS:,}, built in {built.build_s:.1f} s",
        "once, on the first command",
    )


def _cpu_of_children() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _history_process(built: Histories, path: Path, *args: str) -> tuple[float, float]:
    """Seconds a true ``llm imagen4 history`` process takes on ``path``, and
    the CPU seconds it uses, which other work on the machine changes less."""
    start, cpu = time.perf_counter(), _cpu_of_children()
    subprocess.run(
        [sys.executable, "-m", "llm", "imagen4", "history", "-d", str(path), *args],
        env=dict(os.environ, LLM_USER_PATH=str(built.big_user)),
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start, _cpu_of_children() - cpu


def _medians(measured: list[tuple[float, float]]) -> tuple[float, float]:
    return (
        statistics.median(wall for wall, _ in measured),
        statistics.median(cpu for _, cpu in measured),
    )


def first_read_row(built: Histories) -> Row:
    """The first ``history`` command, a true process, on a copy of the
    history whose turns the index has never read, against the same command
    again; and the first ``history -q`` after it, which makes the prompt
    search, against the next."""
    fresh = built.big_user / "fresh.db"
    firsts, steady, first_q, steady_q = [], [], [], []
    for _ in range(max(3, built.runs // 3)):
        shutil.copy(built.pristine, fresh)
        os.sync()
        firsts.append(_history_process(built, fresh))
        steady += [_history_process(built, fresh) for _ in range(2)]
        first_q.append(_history_process(built, fresh, "-q", big_history.RARE))
        steady_q.append(_history_process(built, fresh, "-q", big_history.RARE))
    fresh.unlink()
    (first_s, first_cpu), (steady_s, steady_cpu) = _medians(firsts), _medians(steady)
    return (
        f"History of {IMAGES}: the first `history`, a true process, after"
        f" {GENERATIONS:,} generations the index has not seen, against the next",
        f"{first_s:.2f} s against {steady_s:.2f} s ({first_s / steady_s:.1f}×;"
        f" CPU time {first_cpu:.2f} s against {steady_cpu:.2f} s,"
        f" {first_cpu / steady_cpu:.1f}×); the first `history -q"
        f" {big_history.RARE}` after it, which makes the prompt search,"
        f" {_medians(first_q)[0]:.2f} s against {_medians(steady_q)[0]:.2f} s",
        "≤ 3×",
    )


def query_rows(built: Histories, db: Any) -> list[Row]:
    """``history`` and its filters: the query alone."""
    from llm_imagen4 import history

    plan = built.plan
    count = sum(big_history.RARE in g.prompt for g in plan)
    since = (
        datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    ).strftime("%Y-%m-%dT00:00:00")
    queries = [
        ("`history` (the 20 newest)", {}),
        (
            f"`history -q {big_history.RARE}` ({count / len(plan):.1%} of prompts)",
            {"query": big_history.RARE},
        ),
        (
            f"`history -q {big_history.ABSENT}` (no prompt)",
            {"query": big_history.ABSENT},
        ),
        ("`history -m imagen4-ultra`", {"model": "imagen4-ultra"}),
        (f"`history --seed {plan[25_000].seed}`", {"seed": plan[25_000].seed}),
        (f"`history --since {since[:10]}` (30 days ago)", {"since": since}),
    ]
    rows = []
    for name, arguments in queries:
        found = history.generations(db, **arguments)
        assert bool(found) == (arguments.get("query") != big_history.ABSENT), name
        seconds = median_time(
            lambda a=arguments: history.generations(db, **a), built.repeat
        )
        rows.append((f"History of {IMAGES}: {name}, query time", ms(seconds), QUERY))
    return rows


def plain_row(db: Any) -> Row:
    """What the index saves: the newest 20 generations, and a prompt
    search, straight from turns.response_json as a plain view reads them."""
    from llm_imagen4 import columns, index

    prompt = next(c.sql for c in columns.COLUMNS if c.name == "prompt")
    plain = (
        f"SELECT t.id FROM turns t, {index.IMAGES_OF_T} WHERE {index.OURS}"
        " WHERE_MORE ORDER BY t.datetime_utc DESC LIMIT 40"
    )
    newest = plain.replace("WHERE_MORE", "")
    search = plain.replace("WHERE_MORE", f"AND instr({prompt}, ?) > 0")
    newest_s = median_time(lambda: db.execute(newest).fetchall(), 3)
    search_s = median_time(lambda: db.execute(search, [big_history.RARE]).fetchall(), 3)
    return (
        f"History of {IMAGES}: the same without the index (a plain view over `turns`)",
        f"{ms(newest_s)} for the 20 newest, {ms(search_s)} for `-q {big_history.RARE}`",
        "why the index",
    )


def command_row(built: Histories) -> Row:
    """The whole ``history`` command, in-process."""
    from click.testing import CliRunner
    from llm.cli import cli

    args = ["imagen4", "history", "-d", str(built.big)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    seconds = median_time(lambda: CliRunner().invoke(cli, args), built.repeat)
    return (
        f"History of {IMAGES}: `history`, the whole command"
        " in-process (opening, refreshing, printing)",
        ms(seconds),
        "",
    )


def refresh_row(built: Histories, db: Any) -> Row:
    """Bringing the index up to date: when nothing changed, and after one
    new turn (a copy of the newest generation, with files of its own)."""
    from llm_imagen4 import history, index

    unchanged_s = median_time(lambda: index.refresh(db), built.repeat)
    newest = db.execute(
        "SELECT * FROM turns WHERE model != ? ORDER BY rowid DESC LIMIT 1",
        [big_history.OTHER_MODEL],
    ).fetchone()
    names = [d[0] for d in db.execute("SELECT * FROM turns LIMIT 0").description]
    times = []
    for n in range(built.repeat):
        turn = dict(zip(names, newest, strict=True))
        now_ms = int(time.time() * 1000)
        turn["id"] = big_history.ulid_time(now_ms) + f"{random.getrandbits(64):016x}"
        record = json.loads(turn["response_json"])
        for image in record["images"]:
            image["name"] = f"new-{n}-{image['position']}.png"
            (built.folder / image["name"]).touch()
        turn["response_json"] = json.dumps(record)
        with index.transaction(db):
            db["turns"].insert(turn)
        start = time.perf_counter()
        index.refresh(db)
        times.append(time.perf_counter() - start)
    assert history.generation(db, turn["id"]) is not None
    return (
        f"History of {IMAGES}: `index.refresh`",
        f"{ms(unchanged_s)} when nothing changed, "
        f"{ms(statistics.median(times))} after one new turn",
        "",
    )


def missing_row(built: Histories, db: Any) -> Row:
    """``--missing``: five generations with a file deleted near the top,
    then none among the newest FILES_FOR (whose files exist), and the
    copies ``refresh_row`` made."""
    from llm_imagen4 import history

    def five_missing() -> list[Any]:
        return history.generations(db, limit=5, missing=True)

    newest = history.generations(db, limit=200)
    gone = [newest[i].images[0].path for i in (3, 40, 80, 120, 160)]
    for path in gone:
        os.rename(path, path + ".away")
    assert [e.images[0].path for e in five_missing()] == gone
    near_s = median_time(five_missing, built.repeat)
    for path in gone:
        os.rename(path + ".away", path)
    with_files = FILES_FOR + built.repeat
    depth = [e.id for e in history.generations(db, limit=with_files + 5)]
    assert [e.id for e in five_missing()] == depth[with_files:]
    far_s = median_time(five_missing, max(3, built.runs))
    return (
        f"History of {IMAGES}: `history --missing -n 5`",
        f"{ms(near_s)} with 5 missing among the newest 200; {ms(far_s)} when "
        f"the newest {with_files:,} have all their files (reads {with_files + 5:,}"
        f" generations, {(with_files + 5) * 2:,} file checks)",
        "the first N without reading every row",
    )


def _batch_lines(built: Histories) -> list[dict[str, Any]]:
    """BATCH_ROWS rows: half of them done in both histories, a quarter new
    with a seed, a quarter new without."""
    pick = random.Random(3)
    done_rows = pick.sample(built.plan[:SMALL_GENERATIONS], BATCH_ROWS // 2)
    lines = [
        {
            "prompt": g.prompt,
            "model": g.model,
            "seed": g.seed,
            "aspect_ratio": g.aspect_ratio,
            "num_images": 2,
        }
        for g in done_rows
    ]
    for i, g in enumerate(big_history.plan(BATCH_ROWS // 2, seed=5)):
        line = {"prompt": f"{g.prompt} again", "model": g.model, "num_images": 2}
        if i % 2:
            line["seed"] = g.seed
        lines.append(line)
    pick.shuffle(lines)
    return lines


def batch_row(built: Histories, user: Path) -> Row:
    """``batch --dry-run`` against both histories: the command, with the
    process's start, and the lookups of rows already done alone."""
    from llm_imagen4 import engine, history, index

    lines = _batch_lines(built)
    rows_file = user / "rows.jsonl"
    rows_file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    command = [sys.executable, "-m", "llm", "imagen4", "batch", str(rows_file)]
    checked = []
    for line in lines:
        options = {k: v for k, v in line.items() if k not in ("prompt", "model")}
        model = engine.resolve(line["model"])
        _, request = engine.check(model, line["prompt"], options, KEY)
        checked.append((request, "seed" in line))
    measured = {}
    for label, user_path in (("100k", built.big_user), ("10k", built.small_user)):
        times = []
        for _ in range(max(3, built.runs // 2)):
            start = time.perf_counter()
            out = subprocess.run(
                [*command, "--dry-run"],
                env=dict(os.environ, LLM_USER_PATH=str(user_path)),
                check=True,
                capture_output=True,
                text=True,
            )
            times.append(time.perf_counter() - start)
            assert f"{BATCH_ROWS // 2} rows already done" in out.stderr, out.stderr
        db = index.connect(user_path / "logs.db")
        assert sum(bool(history.done(db, *c)) for c in checked) == BATCH_ROWS // 2
        lookups_s = median_time(
            lambda d=db: [history.done(d, *c) for c in checked], built.repeat
        )
        db.close()
        measured[label] = statistics.median(times), lookups_s
    return (
        f"`batch --dry-run` of {BATCH_ROWS:,} rows ({BATCH_ROWS // 2:,} done)"
        f" against {GENERATIONS * 2:,} vs {SMALL_GENERATIONS * 2:,} images",
        f"{measured['100k'][0]:.2f} s vs {measured['10k'][0]:.2f} s for the "
        f"command, with the process's start; the done lookups alone "
        f"{ms(measured['100k'][1])} vs {ms(measured['10k'][1])}",
        "grows with the batch, not the history",
    )


def gallery_row(built: Histories, user: Path) -> Row:
    """``gallery -n 1000``, the command in-process."""
    from click.testing import CliRunner
    from llm.cli import cli

    page = user / "gallery.html"
    args = ["imagen4", "gallery", "-n", "1000", "-o", str(page), "-d", str(built.big)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert page.read_text().count('<article class="card"') == 2000
    seconds = median_time(lambda: CliRunner().invoke(cli, args), built.repeat)
    return (
        f"`gallery -n 1000` ({IMAGES}), the command in-process",
        ms(seconds),
        "≤ 300 ms",
    )


def rows(model: Any, template: Path, user: Path, runs: int) -> list[Row]:
    """Every row about the history, in the table's order."""
    from llm_imagen4 import index

    built = build(model, template, user, runs)
    measured = [first_prepare_row(built), first_read_row(built)]
    db = index.connect(built.big)
    index.prepare(db)
    measured += query_rows(built, db)
    measured += [plain_row(db), command_row(built), refresh_row(built, db)]
    measured.append(missing_row(built, db))
    db.close()
    measured += [batch_row(built, user), gallery_row(built, user)]
    return measured
