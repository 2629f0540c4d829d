"""Measure llm-imagen4 against the fake AI/ML API from the tests.

    python benchmarks/run.py            # prints a Markdown table
    python benchmarks/run.py --quick    # fewer repetitions

Run it in an environment where the plugin is installed (`pip install -e
'.[test]'`). Every number is measured here, on loopback: the fake API and its
image host add the latencies each row names, nothing else."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fake_api import KEY, FakeAPI  # noqa: E402

TARGETS = {
    "import": "≤ 5 %",
    "overhead": "≤ 50 ms",
    "four": "≤ 1.3 s",
    "batch": "≥ 90 %",
    "rss": "≤ 20 MB",
}


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
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data))
        )

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 4096, 4096, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", os.urandom(size))
        + chunk(b"IEND", b"")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    runs = 5 if args.quick else 15

    user = Path(tempfile.mkdtemp(prefix="imagen4-bench-"))
    folder = user / "images"
    folder.mkdir()
    fake = FakeAPI()
    os.environ.update(
        LLM_USER_PATH=str(user), AIMLAPI_BASE_URL=fake.base_url, AIMLAPI_KEY=KEY
    )
    import llm
    import sqlite_utils

    from llm_imagen4 import history

    db = sqlite_utils.Database(user / "logs.db")
    history.prepare(db)
    rows = []

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
    fake.close()

    from importlib.metadata import version

    print(
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.system()} "
        f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, llm {version('llm')}, {runs} runs a median"
    )
    print()
    print("| benchmark | measured | target |")
    print("| --- | --- | --- |")
    for name, measured, target in rows:
        print(f"| {name} | {measured} | {target} |")


if __name__ == "__main__":
    main()
