"""Measure llm-imagen4 against the fake AI/ML API from the tests.

    python benchmarks/run.py                   # prints a Markdown table
    python benchmarks/run.py --quick           # fewer repetitions
    python benchmarks/run.py --history-only    # the 100,000-image rows alone

Run it in an environment where the plugin is installed (`pip install -e
'.[test]'`). Every number is measured here, on loopback: the fake API and its
image host add the latencies each row names, nothing else.

The history rows read a logs database of 100,000 images (50,000 generations
of two, among 20,000 turns of another model) made from one real generation
by `big_history.py` in a few seconds; only the newest generations' files
exist (empty files), the others count as deleted. Everything is made in a
temporary folder, removed at the end."""

from __future__ import annotations

import argparse
import atexit
import datetime
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import big_history  # noqa: E402
from llm_imagen4 import images  # noqa: E402
from tests.fake_api import KEY, FakeAPI  # noqa: E402

TARGETS = {
    "import": "≤ 5 %",
    "overhead": "≤ 50 ms",
    "four": "≤ 1.3 s",
    "batch": "≥ 90 %",
    "rss": "≤ 20 MB",
    "query": "≤ 20 ms",
    "missing": "the first N without reading every row",
    "batch_lookup": "grows with the batch, not the history",
    "gallery": "≤ 300 ms",
}
# The big history: generations of two images each, and turns of another
# model among them; the smaller one to compare the batch against.
GENERATIONS = 50_000
OTHER_TURNS = 20_000
SMALL_GENERATIONS = 5_000
SMALL_OTHER_TURNS = 2_000
# Only the newest generations' files are made (empty files): the rest are
# missing, as if deleted. Enough for the gallery and the history's pages.
FILES_FOR = 2_000
BATCH_ROWS = 2_000


def median_time(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def import_overhead(runs: int) -> tuple[float, float]:
    """Median seconds of `llm --version` loading no plugin, and loading only
    this one (both skip the entry point scan, so only the import differs)."""
    samples: dict[str, list[float]] = {"": [], "llm-imagen4": []}
    for _ in range(runs):
        for plugins in samples:
            env = dict(os.environ, LLM_LOAD_PLUGINS=plugins)
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "llm", "--version"],
                env=env,
                check=True,
                capture_output=True,
            )
            samples[plugins].append(time.perf_counter() - start)
    return statistics.median(samples[""]), statistics.median(samples["llm-imagen4"])


def bare_generation(client, fake: FakeAPI, folder: Path, body: dict) -> None:
    """What any client must do, on a warm client: one POST, one GET, a file."""
    answer = client.post(
        f"{fake.base_url}/v1/images/generations",
        json=body,
        headers={"Authorization": f"Bearer {KEY}"},
    ).json()
    data = client.get(answer["images"][0]["url"]).content
    with open(folder / f"bare-{time.perf_counter_ns()}.png", "wb") as f:
        f.write(data)


def plugin_generation(model, db, folder: Path, **options) -> None:
    response = model.prompt("a benchmark", seed=7, output=str(folder), **options)
    response.text()
    response.log_to_db(db)


def big_png(size: int) -> bytes:
    return (
        images.PNG_SIGNATURE
        + images.png_chunk(b"IHDR", struct.pack(">IIBBBBB", 4096, 4096, 8, 2, 0, 0, 0))
        + images.png_chunk(b"IDAT", os.urandom(size))
        + images.png_chunk(b"IEND", b"")
    )


# The peak resident size of this process alone: VmHWM starts again with the
# new program, where ru_maxrss on Linux carries the parent's across exec.
RSS_SCRIPT = """
import llm
llm.get_model("imagen4").prompt("a big one", output={folder!r}).text()
status = open("/proc/self/status").read()
print(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
"""


def peak_rss_kb(fake: FakeAPI, folder: Path, body: bytes | None) -> int:
    fake.reset()
    if body is not None:
        fake.fail_downloads(body=body)
    out = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT.format(folder=str(folder))],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(out.split()[-1])


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def history_rows(
    model, template: Path, user: Path, runs: int
) -> list[tuple[str, str, str]]:
    """The history at 100,000 images: building it, reading it, and the
    commands that read it."""
    from click.testing import CliRunner
    from llm.cli import cli

    from llm_imagen4 import columns, engine, history, index

    rows = []
    repeat = runs * 2 + 1
    big_user, small_user = user / "history-100k", user / "history-10k"
    folder = big_user / "images"
    folder.mkdir(parents=True)
    small_user.mkdir()
    big, small = big_user / "logs.db", small_user / "logs.db"

    # A real turn of two images, then copies of it.
    big_history.genuine_turn(model, template, user / "images")
    start = time.perf_counter()
    plan = big_history.plan(GENERATIONS)
    big_history.build(template, big, plan, OTHER_TURNS, folder)
    build_s = time.perf_counter() - start
    big_history.build(
        template, small, plan[:SMALL_GENERATIONS], SMALL_OTHER_TURNS, small_user
    )
    for path in big_history.image_paths(big, FILES_FOR):
        path.touch()

    def first_prepare(path: Path) -> float:
        db = index.connect(path)
        start = time.perf_counter()
        index.prepare(db)
        seconds = time.perf_counter() - start
        db.close()
        return seconds

    prepare_s, small_prepare_s = first_prepare(big), first_prepare(small)
    size = big.stat().st_size / 1e6
    rows.append(
        (
            f"History of {GENERATIONS * 2:,} images: the first `index.prepare`"
            " (the plugin's index built from `turns`)",
            f"{prepare_s:.2f} s ({SMALL_GENERATIONS * 2:,} images: "
            f"{small_prepare_s:.2f} s); logs.db {size:.0f} MB, {GENERATIONS:,} "
            f"image turns among {GENERATIONS + OTHER_TURNS:,}, built in {build_s:.1f} s",
            "once, on the first command",
        )
    )

    db = index.connect(big)
    index.prepare(db)
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
    for name, arguments in queries:
        found = history.generations(db, **arguments)
        assert bool(found) == (arguments.get("query") != big_history.ABSENT), name
        seconds = median_time(lambda a=arguments: history.generations(db, **a), repeat)
        rows.append(
            (
                f"History of {GENERATIONS * 2:,} images: {name}, query time",
                ms(seconds),
                TARGETS["query"],
            )
        )
    # What the index saves: the newest 20 generations, and a prompt search,
    # straight from turns.response_json as a plain view would read them.
    prompt = next(c.sql for c in columns.COLUMNS if c.name == "prompt")
    plain = (
        f"SELECT t.id FROM turns t, {index.IMAGES_OF_T} WHERE {index.OURS}"
        " WHERE_MORE ORDER BY t.datetime_utc DESC LIMIT 40"
    )
    newest_plain = plain.replace("WHERE_MORE", "")
    search_plain = plain.replace("WHERE_MORE", f"AND instr({prompt}, ?) > 0")
    plain_s = median_time(lambda: db.execute(newest_plain).fetchall(), 3)
    plain_q_s = median_time(
        lambda: db.execute(search_plain, [big_history.RARE]).fetchall(), 3
    )
    rows.append(
        (
            f"History of {GENERATIONS * 2:,} images: the same without the index"
            " (a plain view over `turns`)",
            f"{ms(plain_s)} for the 20 newest, {ms(plain_q_s)} for"
            f" `-q {big_history.RARE}`",
            "why the index",
        )
    )
    result = CliRunner().invoke(cli, ["imagen4", "history", "-d", str(big)])
    assert result.exit_code == 0, result.output
    whole_s = median_time(
        lambda: CliRunner().invoke(cli, ["imagen4", "history", "-d", str(big)]),
        repeat,
    )
    rows.append(
        (
            f"History of {GENERATIONS * 2:,} images: `history`, the whole command"
            " in-process (opening, refreshing, printing)",
            ms(whole_s),
            "",
        )
    )

    # Bringing the index up to date.
    unchanged_s = median_time(lambda: index.refresh(db), repeat)
    newest = db.execute(
        "SELECT * FROM turns WHERE model != ? ORDER BY rowid DESC LIMIT 1",
        [big_history.OTHER_MODEL],
    ).fetchone()
    columns = [d[0] for d in db.execute("SELECT * FROM turns LIMIT 0").description]
    times = []
    for n in range(repeat):
        # A copy of the newest generation, with files of its own.
        turn = dict(zip(columns, newest, strict=True))
        now_ms = int(time.time() * 1000)
        turn["id"] = big_history.ulid_time(now_ms) + f"{random.getrandbits(64):016x}"
        record = json.loads(turn["response_json"])
        for image in record["images"]:
            image["name"] = f"new-{n}-{image['position']}.png"
            (folder / image["name"]).touch()
        turn["response_json"] = json.dumps(record)
        with index.transaction(db):
            db["turns"].insert(turn)
        start = time.perf_counter()
        index.refresh(db)
        times.append(time.perf_counter() - start)
    assert history.generation(db, turn["id"]) is not None
    rows.append(
        (
            f"History of {GENERATIONS * 2:,} images: `index.refresh`",
            f"{ms(unchanged_s)} when nothing changed, "
            f"{ms(statistics.median(times))} after one new turn",
            "",
        )
    )

    # --missing: five generations with a file deleted near the top, then
    # none among the newest FILES_FOR (whose files exist).
    newest = history.generations(db, limit=200)
    gone = [newest[i].images[0].path for i in (3, 40, 80, 120, 160)]
    for path in gone:
        os.rename(path, path + ".away")
    found = history.generations(db, limit=5, missing=True)
    assert [e.images[0].path for e in found] == gone
    near_s = median_time(lambda: history.generations(db, limit=5, missing=True), repeat)
    for path in gone:
        os.rename(path + ".away", path)
    found = history.generations(db, limit=5, missing=True)
    # The newest with files: FILES_FOR, and the copies made above.
    with_files = FILES_FOR + repeat
    depth = [e.id for e in history.generations(db, limit=with_files + 5)]
    assert [e.id for e in found] == depth[with_files:]
    far_s = median_time(
        lambda: history.generations(db, limit=5, missing=True), max(3, runs)
    )
    rows.append(
        (
            f"History of {GENERATIONS * 2:,} images: `history --missing -n 5`",
            f"{ms(near_s)} with 5 missing among the newest 200; {ms(far_s)} when "
            f"the newest {with_files:,} have all their files (reads {with_files + 5:,}"
            f" generations, {(with_files + 5) * 2:,} file checks)",
            TARGETS["missing"],
        )
    )
    db.close()

    # batch --dry-run of BATCH_ROWS rows: half of them done in both
    # histories, a quarter new with a seed, a quarter new without.
    pick = random.Random(3)
    done_rows = pick.sample(plan[:SMALL_GENERATIONS], BATCH_ROWS // 2)
    fresh = big_history.plan(BATCH_ROWS // 2, seed=5)
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
    for i, g in enumerate(fresh):
        line = {"prompt": f"{g.prompt} again", "model": g.model, "num_images": 2}
        if i % 2:
            line["seed"] = g.seed
        lines.append(line)
    pick.shuffle(lines)
    rows_file = user / "rows.jsonl"
    rows_file.write_text("".join(json.dumps(line) + "\n" for line in lines))

    def dry_run(user_path: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "llm", "imagen4", "batch", str(rows_file)]
            + ["--dry-run"],
            env=dict(os.environ, LLM_USER_PATH=str(user_path)),
            check=True,
            capture_output=True,
            text=True,
        )

    checked = []
    for line in lines:
        options = {k: v for k, v in line.items() if k not in ("prompt", "model")}
        _, request = engine.check(
            engine.resolve(line["model"]), line["prompt"], options, KEY
        )
        checked.append((request, "seed" in line))
    measured = {}
    for label, user_path in (("100k", big_user), ("10k", small_user)):
        times = []
        for _ in range(max(3, runs // 2)):
            start = time.perf_counter()
            out = dry_run(user_path)
            times.append(time.perf_counter() - start)
            assert f"{BATCH_ROWS // 2} rows already done" in out.stderr, out.stderr
        command_s = statistics.median(times)
        db = index.connect(user_path / "logs.db")
        skipped = sum(bool(history.done(db, *c)) for c in checked)
        assert skipped == BATCH_ROWS // 2, skipped
        lookups_s = median_time(
            lambda d=db: [history.done(d, *c) for c in checked], repeat
        )
        db.close()
        measured[label] = command_s, lookups_s
    rows.append(
        (
            f"`batch --dry-run` of {BATCH_ROWS:,} rows ({BATCH_ROWS // 2:,} done)"
            f" against {GENERATIONS * 2:,} vs {SMALL_GENERATIONS * 2:,} images",
            f"{measured['100k'][0]:.2f} s vs {measured['10k'][0]:.2f} s for the "
            f"command, with the process's start; the done lookups alone "
            f"{ms(measured['100k'][1])} vs {ms(measured['10k'][1])}",
            TARGETS["batch_lookup"],
        )
    )

    # gallery -n 1000, the command in-process.
    page = user / "gallery.html"
    gallery = ["imagen4", "gallery", "-n", "1000", "-o", str(page), "-d", str(big)]
    result = CliRunner().invoke(cli, gallery)
    assert result.exit_code == 0, result.output
    assert page.read_text().count('<article class="card"') == 2000
    gallery_s = median_time(lambda: CliRunner().invoke(cli, gallery), repeat)
    rows.append(
        (
            f"`gallery -n 1000` ({GENERATIONS * 2:,} images), the command in-process",
            ms(gallery_s),
            TARGETS["gallery"],
        )
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument(
        "--history-only",
        action="store_true",
        help=f"only the rows of the history of {GENERATIONS * 2:,} images",
    )
    args = parser.parse_args()
    runs = 5 if args.quick else 15

    user = Path(tempfile.mkdtemp(prefix="imagen4-bench-"))
    atexit.register(shutil.rmtree, user, ignore_errors=True)
    folder = user / "images"
    folder.mkdir()
    fake = FakeAPI()
    os.environ.update(
        LLM_USER_PATH=str(user), AIMLAPI_BASE_URL=fake.base_url, AIMLAPI_KEY=KEY
    )
    import llm
    import sqlite_utils
    from llm.migrations import migrate

    from llm_imagen4 import index

    db = sqlite_utils.Database(user / "logs.db")
    migrate(db)
    # llm's tables alone, for the big history to start from.
    template = user / "template.db"
    copy = sqlite3.connect(template)
    db.conn.backup(copy)
    copy.close()
    index.prepare(db)
    rows = []
    if args.history_only:
        rows += history_rows(llm.get_model("imagen4"), template, user, runs)
        fake.close()
        print_table(rows, runs)
        return

    # 1. What the plugin's import adds to every llm command.
    bare, loaded = import_overhead(runs)
    share = (loaded - bare) / bare * 100
    rows.append(
        (
            "Plugin import, `llm --version`",
            f"{bare * 1000:.0f} ms without, {loaded * 1000:.0f} ms with "
            f"(+{(loaded - bare) * 1000:.0f} ms, {share:+.1f} %)",
            TARGETS["import"],
        )
    )

    # 2. One generation (generate, download, save, log) over a bare request.
    model = llm.get_model("imagen4")
    body = {
        "model": "google/imagen4/preview",
        "prompt": "a benchmark",
        "aspect_ratio": "1:1",
        "num_images": 1,
        "seed": 7,
    }
    import httpx2

    bare_client = httpx2.Client()
    for _ in range(3):  # warm up both
        bare_generation(bare_client, fake, folder, body)
        plugin_generation(model, db, folder)
    bare_s = median_time(
        lambda: bare_generation(bare_client, fake, folder, body), runs * 2
    )
    ours_s = median_time(lambda: plugin_generation(model, db, folder), runs * 2)
    rows.append(
        (
            "One generation over a bare httpx2 request + download",
            f"{ours_s * 1000:.1f} ms vs {bare_s * 1000:.1f} ms "
            f"(+{(ours_s - bare_s) * 1000:.1f} ms)",
            TARGETS["overhead"],
        )
    )

    # 3. Inline images against URLs, with a CDN round trip of 100 ms.
    fake.state.download_delay = 0.1
    fast = llm.get_model("imagen4-fast")
    inline_s = median_time(lambda: plugin_generation(fast, db, folder), runs)
    fake.state.response_shape = "images"  # the same model, answering with URLs
    url_s = median_time(lambda: plugin_generation(fast, db, folder), runs)
    fake.reset()
    rows.append(
        (
            "Inline image vs URL (imagen4-fast, 100 ms image host)",
            f"{inline_s * 1000:.0f} ms inline vs {url_s * 1000:.0f} ms by URL",
            "inline faster",
        )
    )

    # 4. Four images whose downloads take 1 s each, against one.
    fake.state.download_delay = 1.0
    one_s = median_time(lambda: plugin_generation(model, db, folder), 2)
    four_s = median_time(lambda: plugin_generation(model, db, folder, num_images=4), 2)
    fake.reset()
    rows.append(
        (
            "4 images, 1 s download each",
            f"{four_s:.2f} s (1 image: {one_s:.2f} s)",
            TARGETS["four"],
        )
    )

    # 5. A 64-prompt batch, 8 in flight, 1 s per generation.
    fake.state.delay = 1.0
    prompts = user / "prompts.txt"
    prompts.write_text("\n".join(f"batch prompt {i}" for i in range(64)))
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "llm",
            "imagen4",
            "batch",
            str(prompts),
            "-j",
            "8",
            "-o",
            str(folder / "batch"),
        ],
        check=True,
        capture_output=True,
    )
    wall_s = time.perf_counter() - start
    # From the first request to the last image fetched, as the API saw it.
    seen = fake.state.requests
    batch_s = max(r.at for r in seen) - min(r.at for r in seen)
    fake.reset()
    rows.append(
        (
            "64-prompt batch, `-j 8`, 1 s per generation",
            f"{batch_s:.2f} s vs ideal 8 s ({8 / batch_s * 100:.0f} % of ideal); "
            f"{wall_s:.2f} s with the process's start",
            TARGETS["batch"],
        )
    )

    # 6. Peak memory while a 50 MB image downloads, against a small one.
    small = peak_rss_kb(fake, folder, None)
    large = peak_rss_kb(fake, folder, big_png(50 * 1024 * 1024))
    fake.reset()
    rows.append(
        (
            "Peak RSS, 50 MB download vs a small one",
            f"+{(large - small) / 1024:.1f} MB ({small / 1024:.0f} → {large / 1024:.0f} MB)",
            TARGETS["rss"],
        )
    )
    rows += history_rows(model, template, user, runs)
    fake.close()
    print_table(rows, runs)


def print_table(rows: list[tuple[str, str, str]], runs: int) -> None:
    from importlib.metadata import version

    print(
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.system()} "
        f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, llm {version('llm')}, {runs} runs a median, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print()
    print("| benchmark | measured | target |")
    print("| --- | --- | --- |")
    for name, measured, target in rows:
        print(f"| {name} | {measured} | {target} |")


if __name__ == "__main__":
    main()
