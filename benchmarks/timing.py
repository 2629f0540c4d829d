"""How the benchmarks time what they measure, and print the table."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

# A row of the speed table: what is measured, the measure, the target.
Row = tuple[str, str, str]


def median_time(fn: Callable[[], Any], runs: int) -> float:
    """The median of ``runs`` timings of ``fn()``, in seconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def print_table(rows: list[Row], runs: int) -> None:
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
