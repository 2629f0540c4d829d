"""Measure llm-imagen4 against the fake AI/ML API from the tests.

    python benchmarks/run.py                   # prints a Markdown table
    python benchmarks/run.py --quick           # fewer repetitions
    python benchmarks/run.py --history-only    # the 100,000-image rows alone

Run it in an environment where the plugin is installed (`pip install -e
'.[test]'`). Every number is measured here, on loopback: the fake API and its
image host add the latencies each row names, nothing else. The history rows
(``history_reads.py``) read a logs database of 100,000 images made by
``big_history.py`` in a few seconds. Everything is made in a temporary
folder, removed at the end."""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import history_reads  # noqa: E402
from benchmarks.timing import Row, median_time, print_table  # noqa: E402
from llm_imagen4 import images  # noqa: E402
from tests.fake_api import KEY, FakeAPI  # noqa: E402


@dataclass
class Bench:
    """What the plugin's rows share: the fake API, a logs database, the
    folder the images go to, and how many runs make a median."""

    fake: FakeAPI
    db: Any
    folder: Path
    user: Path
    runs: int


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


def import_row(bench: Bench) -> Row:
    """What the plugin's import adds to every llm command."""
    bare, loaded = import_overhead(bench.runs)
    share = (loaded - bare) / bare * 100
    return (
        "Plugin import, `llm --version`",
        f"{bare * 1000:.0f} ms without, {loaded * 1000:.0f} ms with "
        f"(+{(loaded - bare) * 1000:.0f} ms, {share:+.1f} %)",
        "≤ 5 %",
    )


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


def overhead_row(bench: Bench) -> Row:
    """One generation (generate, download, save, log) over a bare request."""
    import httpx2
    import llm

    model = llm.get_model("imagen4")
    body = {
        "model": "google/imagen4/preview",
        "prompt": "a benchmark",
        "aspect_ratio": "1:1",
        "num_images": 1,
        "seed": 7,
    }
    bare_client = httpx2.Client()
    for _ in range(3):  # warm up both
        bare_generation(bare_client, bench.fake, bench.folder, body)
        plugin_generation(model, bench.db, bench.folder)
    bare_s = median_time(
        lambda: bare_generation(bare_client, bench.fake, bench.folder, body),
        bench.runs * 2,
    )
    ours_s = median_time(
        lambda: plugin_generation(model, bench.db, bench.folder), bench.runs * 2
    )
    return (
        "One generation over a bare httpx2 request + download",
        f"{ours_s * 1000:.1f} ms vs {bare_s * 1000:.1f} ms "
        f"(+{(ours_s - bare_s) * 1000:.1f} ms)",
        "≤ 50 ms",
    )


def inline_row(bench: Bench) -> Row:
    """Inline images against URLs, with a CDN round trip of 100 ms."""
    import llm

    bench.fake.state.download_delay = 0.1
    fast = llm.get_model("imagen4-fast")
    inline_s = median_time(
        lambda: plugin_generation(fast, bench.db, bench.folder), bench.runs
    )
    bench.fake.state.response_shape = "images"  # the same model, answering with URLs
    url_s = median_time(
        lambda: plugin_generation(fast, bench.db, bench.folder), bench.runs
    )
    bench.fake.reset()
    return (
        "Inline image vs URL (imagen4-fast, 100 ms image host)",
        f"{inline_s * 1000:.0f} ms inline vs {url_s * 1000:.0f} ms by URL",
        "inline faster",
    )


def four_row(bench: Bench) -> Row:
    """Four images whose downloads take 1 s each, against one."""
    import llm

    model = llm.get_model("imagen4")
    bench.fake.state.download_delay = 1.0
    one_s = median_time(lambda: plugin_generation(model, bench.db, bench.folder), 2)
    four_s = median_time(
        lambda: plugin_generation(model, bench.db, bench.folder, num_images=4), 2
    )
    bench.fake.reset()
    return (
        "4 images, 1 s download each",
        f"{four_s:.2f} s (1 image: {one_s:.2f} s)",
        "≤ 1.3 s",
    )


def batch_row(bench: Bench) -> Row:
    """A 64-prompt batch, 8 in flight, 1 s per generation."""
    bench.fake.state.delay = 1.0
    prompts = bench.user / "prompts.txt"
    prompts.write_text("\n".join(f"batch prompt {i}" for i in range(64)))
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "llm", "imagen4", "batch", str(prompts), "-j", "8"]
        + ["-o", str(bench.folder / "batch")],
        check=True,
        capture_output=True,
    )
    wall_s = time.perf_counter() - start
    # From the first request to the last image fetched, as the API saw it.
    seen = bench.fake.state.requests
    batch_s = max(r.at for r in seen) - min(r.at for r in seen)
    bench.fake.reset()
    return (
        "64-prompt batch, `-j 8`, 1 s per generation",
        f"{batch_s:.2f} s vs ideal 8 s ({8 / batch_s * 100:.0f} % of ideal); "
        f"{wall_s:.2f} s with the process's start",
        "≥ 90 %",
    )


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


def rss_row(bench: Bench) -> Row:
    """Peak memory while a 50 MB image downloads, against a small one."""
    small = peak_rss_kb(bench.fake, bench.folder, None)
    large = peak_rss_kb(bench.fake, bench.folder, big_png(50 * 1024 * 1024))
    bench.fake.reset()
    return (
        "Peak RSS, 50 MB download vs a small one",
        f"+{(large - small) / 1024:.1f} MB ({small / 1024:.0f} → {large / 1024:.0f} MB)",
        "≤ 20 MB",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument(
        "--history-only",
        action="store_true",
        help=f"only the rows of the history of {history_reads.IMAGES}",
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
    bench = Bench(fake, db, folder, user, runs)
    plugin_rows = (import_row, overhead_row, inline_row, four_row, batch_row, rss_row)
    rows = [] if args.history_only else [row(bench) for row in plugin_rows]
    rows += history_reads.rows(llm.get_model("imagen4"), template, user, runs)
    fake.close()
    print_table(rows, runs)


if __name__ == "__main__":
    main()
