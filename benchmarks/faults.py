"""Kill llm-imagen4 at random moments and count what the API sold against
what ended up on disk.

    python benchmarks/faults.py                      # 60 SIGKILLs, a random seed
    python benchmarks/faults.py --runs 200 --seed 7  # the same choices again
    python benchmarks/faults.py --signal mixed       # SIGKILL, SIGINT, SIGTERM, 2 x SIGINT
    python benchmarks/faults.py --kill-recovery      # and half the recoveries too
    python benchmarks/faults.py --disk full          # disks that fill up instead
    python benchmarks/faults.py --retry-after storm  # 429s with waits too long

Not part of the test suite. Run it in an environment where the plugin is
installed (`pip install -e '.[test]'`).

The fake AI/ML API from the tests runs in this process, with a generation
time and an image-host latency drawn for each run. Each run picks a route
(`llm imagen4 PROMPT`, `llm -m imagen4 PROMPT` or `llm imagen4 batch FILE`)
and a stage to stop it at (while it starts, while the POST waits, as the
answer arrives, mid-download, between two saves, around the logging, or at
any moment after the POST), starts it as a subprocess in a folder of its own,
and sends the signal. All runs share one LLM_USER_PATH, as on a user's
machine: one logs.db and one recovery journal, so every `download` also meets
what earlier runs left. Then it recovers the way the user is told to: `llm
imagen4 download` (for a batch also the batch again, in either order), with
no latency, and at the end one more `download`. With `--kill-recovery` the
first of those steps is itself SIGKILLed in half the runs, just after its
first request, before recovery starts over.

Two modes replace the signal by another fault:

- ``--disk full``: llm's user folder (logs.db and the journal) and the runs'
  output folders are small tmpfs disks (mounted in a mount namespace of
  their own, see ``tests/disks.py``; where the machine lets none be
  mounted, the script says so and runs nothing). At the run's stage one of
  them, or both, fills up but for a few kB (none, part of an image, an
  image and a half, ...); the process runs on to its end, the space is
  freed, and the user recovers as above. Nothing is signalled.
- ``--retry-after storm``: each run meets a few answers of 429 asking to
  wait as long as the plugin honours (0 to 1 s) or longer than it ever
  will (``inf``, ``99999999999``, a date centuries away), mostly on
  ``batch -j 4``; some runs are signalled at their stage as ``--signal``
  says, the others run to their end. A run that is not stopped must end
  within seconds (``longest run not stopped``), and after a first Ctrl-C or
  SIGTERM nothing may reach the API more than 1 s later (``sent > 1 s after
  the stop``).

Everything is counted from the API's side, per route:

- paid: images in the answers of generations that succeeded (the fake made
  them, whether or not the client lived to read the answer);
- saved: distinct paid images on disk after recovery (a saved PNG is matched
  to the image the API made by its IHDR and image data, which the plugin's
  metadata leaves alone);
- in flight: paid images whose answer the process did not live to keep (it
  died before the answer was read, or between reading it and writing it to the
  journal). No client can fetch those: `download` must report them from the
  API's log, and does, or they count as lost;
- lost: paid images neither saved nor in flight;
- bought twice: a request generated again by the API although an earlier
  answer to it had been kept;
- saved twice: a paid image saved in more than one file.

Anything else that goes wrong is listed as a problem, with the run, route,
stage and signal, and the script exits 1 keeping its work folder: a
traceback, a recovery step that fails, a process still running a minute
after SIGINT or SIGTERM, temporary files left by anything but a SIGKILL or a
second Ctrl-C, a request sent more than 1 s after a first Ctrl-C or SIGTERM,
a turn missing from logs.db or saying an image saved on disk is not, journal
entries or journal temporary files left at the end.

Kill timings depend on the machine's load, so the same seed makes the same
choices (routes, stages, latencies, delays after each stage), not the same
outcomes."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llm_imagen4 import images  # noqa: E402
from tests.disks import Namespace, Unavailable, small_disks  # noqa: E402
from tests.fake_api import KEY, SIZES, FakeAPI, png  # noqa: E402

ROUTES = ("llm imagen4", "llm -m imagen4", "batch")
STAGES = ("start", "post", "answer", "download", "between saves", "logging", "any")
SIGNALS = {
    "kill": [("KILL", [signal.SIGKILL])],
    "int": [("INT", [signal.SIGINT])],
    "term": [("TERM", [signal.SIGTERM])],
    "mixed": [
        ("KILL", [signal.SIGKILL]),
        ("INT", [signal.SIGINT]),
        ("TERM", [signal.SIGTERM]),
        ("INT x2", [signal.SIGINT, signal.SIGINT]),
    ],
}
# How long a stopped process may take to end before it counts as hung.
EXIT_GRACE = 60.0
LOST_MARK = "cannot be fetched"
# --disk full: the two disks' sizes, which fills, and the room it leaves (an
# image of the fake is some 6 kB, 8 with its provenance).
USER_DISK, OUTPUT_DISK = 8 * 1024 * 1024, 16 * 1024 * 1024
FULL = ("user folder", "output folder", "both")
LEAVES = (0, 2048, 6144, 12288, 24576)
# --retry-after storm: waits the plugin honours, and waits it refuses.
HONOURED_WAITS = ("0", "0.5", "1")
REFUSED_WAITS = ("inf", "99999999999", "Sat, 01 Jan 2500 00:00:00 GMT")
REFUSED_MARK = "the server asked to wait too long"
IMPORT_MARK = "to log it from the images: "
# How long a storm run that is not stopped may take.
STORM_LIMIT = 30.0
# After a first Ctrl-C or SIGTERM, nothing may reach the API later than this.
STOP_GRACE = 1.0


def image_key(data: bytes) -> str | None:
    """What identifies a PNG whatever metadata was added: its IHDR and image
    data. None when it is not a whole PNG."""
    f = io.BytesIO(data)
    parts, whole = [], False
    for chunk in images.png_chunks(f):
        if chunk.kind in (b"IHDR", b"IDAT"):
            f.seek(chunk.offset + 8)
            parts.append(f.read(chunk.length))
        whole = chunk.kind == b"IEND"
    return hashlib.sha256(b"".join(parts)).hexdigest() if whole else None


@dataclass
class Run:
    number: int
    route: str
    stage: str
    signal_name: str
    delay: float
    download_delay: float
    wait: float  # seconds after the stage's event
    expected_images: int
    folder: Path  # where its images go, as this process sees it
    cwd: Path  # the same folder, as the run sees it
    notes: Path  # its output and the recovery's, on this machine's disk
    command: list[str]
    fill: tuple[str, int] | None = None  # --disk full: which, and room left
    planned: list[dict[str, Any]] = field(default_factory=list)  # storm answers
    killed: bool = False  # the signal reached a running process
    hung: bool = False
    exit_code: int | None = None
    # Client request ids journaled as sent, without their answer, once the
    # process was gone.
    sent_only: set[str] = field(default_factory=set)
    killed_at: float = 0.0
    recovery: list[tuple[str, int, str]] = field(default_factory=list)
    recovery_killed: bool = False
    elapsed: float = 0.0
    late: int = 0  # requests that arrived STOP_GRACE after the stop
    # Generations whose images the printed curl commands fetched: neither
    # journal nor logs.db could keep them.
    fetched_by_hand: set[str] = field(default_factory=set)


class Campaign:
    def __init__(
        self,
        base: Path,
        rng: random.Random,
        kill_recovery: bool = False,
        namespace: Namespace | None = None,
        storm: bool = False,
    ):
        self.base = base
        self.rng = rng
        self.kill_recovery = kill_recovery
        self.namespace = namespace
        self.storm = storm
        if namespace:
            user_disk, self.output_disk = namespace.disks
            self.user, user_inside = user_disk.path, user_disk.inside
        else:
            self.user = user_inside = base / "llm-user"
            self.user.mkdir()
        self.fake = FakeAPI()
        self.answered: dict[str, tuple[float, bool]] = {}
        self._time_answers()
        self.env = dict(
            os.environ,
            LLM_USER_PATH=str(user_inside),
            AIMLAPI_BASE_URL=self.fake.base_url,
            AIMLAPI_KEY=KEY,
        )
        self.env.pop("LLM_RAISE_ERRORS", None)
        self.runs: list[Run] = []
        self.problems: list[str] = []
        self.never_sent = 0
        self.outside = 0
        self.final_output = ""

    def _time_answers(self) -> None:
        """Note when the fake finished writing each answer, and whether the
        write went through, by client request id."""
        answered = self.answered
        handler = self.fake.api.RequestHandlerClass

        class Timed(handler):  # type: ignore[misc, valid-type]
            def do_POST(self) -> None:
                ok = False
                try:
                    super().do_POST()
                    ok = True
                finally:
                    request_id = self.headers.get("X-Client-Request-Id")
                    if request_id:
                        answered[request_id] = (time.monotonic(), ok)

        self.fake.api.RequestHandlerClass = Timed

    def _llm(self, args: list[str], cwd: Path) -> list[str]:
        """The command line of ``llm ARGS`` run in ``cwd`` (as the run sees
        it): inside the disks' namespace when there is one."""
        argv = [sys.executable, "-m", "llm", *args]
        if not self.namespace:
            return argv
        # nsenter's --wd is looked up before the mounts: cd once inside.
        inside = ["sh", "-c", 'cd "$0" && exec "$@"', str(cwd), *argv]
        return self.namespace.command(inside, self.base)

    def _cwd(self, cwd: Path) -> Path:
        """Where to start the process: the namespace's command line moves it."""
        return self.base if self.namespace else cwd

    # -- one run -----------------------------------------------------------

    def plan(self, number: int, route: str, signal_name: str) -> Run:
        rng = self.rng
        stage = rng.choice(STAGES)
        delay = 0.0 if rng.random() < 0.2 else rng.uniform(0.05, 0.6)
        download_delay = 0.0 if rng.random() < 0.2 else rng.uniform(0.02, 0.4)
        tag = f"r{number:04d}"
        notes = self.base / tag
        notes.mkdir()
        folder = cwd = notes
        if self.namespace:
            folder = self.output_disk.path / tag
            folder.mkdir()
            cwd = self.output_disk.inside / tag
        if self.storm:
            stage = rng.choice(("post", "any", "waiting"))
        if route == "batch":
            rows = []
            for row in range(rng.randint(4, 8) if self.storm else rng.randint(2, 4)):
                fields: dict[str, Any] = {"prompt": f"{tag}b{row} a kite over hills"}
                if rng.random() < 0.5:
                    fields["seed"] = rng.randint(0, 2**31 - 1)
                if rng.random() < 0.4:
                    fields["num_images"] = rng.randint(2, 3)
                rows.append(fields)
            path = notes / "rows.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
            jobs = 4 if self.storm else rng.randint(1, 3)
            command = ["imagen4", "batch", str(path), "-j", str(jobs)]
            images = sum(r.get("num_images", 1) for r in rows)
        else:
            images = rng.randint(1, 4)
            prompt = f"{tag} a lighthouse at dusk"
            seed = ["--seed", str(rng.randint(0, 2**31 - 1))]
            if route == "llm imagen4":
                command = ["imagen4", prompt, "-n", str(images)]
                if rng.random() < 0.5:
                    command += seed
            else:
                command = ["-m", "imagen4", prompt, "-o", "num_images", str(images)]
                if rng.random() < 0.5:
                    command += ["-o", "seed", seed[1]]
        wait = rng.random()  # a fraction of the stage's window, drawn now
        fill = None
        if self.namespace:
            fill = (rng.choice(FULL), rng.choice(LEAVES))
        return Run(
            number=number,
            route=route,
            stage=stage,
            signal_name=signal_name,
            delay=delay,
            download_delay=download_delay,
            wait=wait,
            expected_images=images,
            folder=folder,
            cwd=cwd,
            notes=notes,
            command=command,
            fill=fill,
            planned=self._storm() if self.storm else [],
        )

    def _storm(self) -> list[dict[str, Any]]:
        """The first answers of a storm run, in the order they are given: a
        few 429s, each asking for a wait honoured or refused, among
        answers that make their images."""
        planned = []
        for _ in range(self.rng.randint(2, 6)):
            if self.rng.random() < 0.3:
                planned.append({"generate": True})
                continue
            waits = REFUSED_WAITS if self.rng.random() < 0.5 else HONOURED_WAITS
            planned.append(
                {
                    "status": 429,
                    "body": {"message": "Too Many Requests"},
                    "headers": {"Retry-After": self.rng.choice(waits)},
                }
            )
        return planned

    def _fill(self, run: Run) -> None:
        """Take the space of the run's disk (or both) away, but for its few kB."""
        assert self.namespace and run.fill
        which, leave = run.fill
        user_disk, output_disk = self.namespace.disks
        disks = {"user folder": [user_disk], "output folder": [output_disk]}
        for disk in disks.get(which, [user_disk, output_disk]):
            disk.fill(leave)

    def _counts(self) -> tuple[int, int, int]:
        state = self.fake.state
        return (
            len(self.fake.generations),
            len(state.service.log),
            len(self.fake.downloads),
        )

    def _images_on_disk(self, folder: Path) -> int:
        return sum(
            1
            for p in folder.iterdir()
            if p.suffix == ".png" and not p.name.startswith(".")
        )

    def _event(self, run: Run, before: tuple[int, int, int]) -> float | None:
        """The window to stop the run in, in seconds from now, once its
        stage's event happened; None if the process ended first."""
        posts, logs, downloads = before
        d, dd = run.delay, run.download_delay
        conditions = {
            "start": (lambda: True, 0.0 if self.namespace else 2.5),
            "post": (lambda: len(self.fake.generations) > posts, d),
            "answer": (lambda: len(self.fake.state.service.log) > logs, 0.015),
            "download": (lambda: len(self.fake.downloads) > downloads, dd + 0.02),
            "between saves": (lambda: self._images_on_disk(run.folder) >= 1, 0.03),
            "logging": (
                lambda: self._images_on_disk(run.folder) >= run.expected_images,
                0.4,
            ),
            "any": (
                lambda: len(self.fake.generations) > posts,
                d + dd * 2 + 0.6,
            ),
            # A storm's rows waiting on the pacer, or on their own retry.
            "waiting": (lambda: len(self.fake.generations) > posts, 3.0),
        }
        condition, window = conditions[run.stage]
        while not condition():
            if self.proc.poll() is not None:
                return None
            time.sleep(0.001)
        return window

    def execute(self, run: Run, signals: list[int]) -> None:
        fake = self.fake
        fake.state.delay, fake.state.download_delay = run.delay, run.download_delay
        fake.state.api_faults.clear()
        for answer in run.planned:
            fake.plan_api(**answer)
        before = self._counts()
        out = open(run.notes / "stdout", "wb")
        err = open(run.notes / "stderr", "wb")
        started = time.monotonic()
        self.proc = proc = subprocess.Popen(
            self._llm(run.command, run.cwd),
            cwd=self._cwd(run.cwd),
            env=self.env,
            stdout=out,
            stderr=err,
        )
        window = self._event(run, before)
        if window is not None:
            end = time.monotonic() + run.wait * window
            while time.monotonic() < end and proc.poll() is None:
                time.sleep(0.001)
        if proc.poll() is None and (signals or run.fill):
            run.killed = True
            run.killed_at = time.monotonic()
            if run.fill:
                self._fill(run)
            for n, sig in enumerate(signals):
                if n:
                    time.sleep(0.05)
                if proc.poll() is None:
                    proc.send_signal(sig)
        else:
            run.killed_at = time.monotonic() + 1e9
        try:
            proc.wait(EXIT_GRACE)
        except subprocess.TimeoutExpired:
            run.hung = True
            proc.kill()
            proc.wait()
        run.elapsed = time.monotonic() - started
        run.exit_code = proc.returncode
        out.close()
        err.close()
        if signals and signals[0] in (signal.SIGINT, signal.SIGTERM):
            run.late = sum(
                1
                for request in fake.generations[before[0] :]
                if request.at > run.killed_at + STOP_GRACE
            )
        fake.state.api_faults.clear()
        if self.namespace:
            for disk in self.namespace.disks:
                disk.free()
        self._quiesce()
        self._snapshot(run)
        # Recovery runs without latency: it is not what is measured.
        fake.state.delay = fake.state.download_delay = 0.0
        told = self._follow_hints(run)
        steps = [["imagen4", "download"]]
        if run.route == "batch":
            again = run.command
            steps = [steps[0], again] if self.rng.random() < 0.5 else [again, steps[0]]
        if self.kill_recovery and self.rng.random() < 0.5:
            self._killed_recovery(run, steps[0], self.rng.uniform(0.0, 0.15))
        for step in [*told, *steps]:
            result = subprocess.run(
                self._llm(step, run.cwd),
                cwd=self._cwd(run.cwd),
                env=self.env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            run.recovery.append((" ".join(step[:2]), result.returncode, result.stderr))
            n = len(run.recovery)
            (run.notes / f"recovery-{n}.txt").write_text(
                f"$ llm {' '.join(step)}\nexit {result.returncode}\n"
                f"{result.stdout}{result.stderr}"
            )
        self._quiesce()

    def _follow_hints(self, run: Run) -> list[list[str]]:
        """What the stopped run told the user to do beyond ``download``:
        the ``curl`` commands of images not saved whose journal could not
        be written are carried out here (with urllib), and the ``import``
        that logs images whose turn could not be logged is returned, to run
        first."""
        stderr = (run.notes / "stderr").read_text(errors="replace")
        unsaved = {
            word.strip("()")
            for line in stderr.splitlines()
            if "was not saved" in line
            for word in line.split()
            if "://" in word
        }
        for line in stderr.splitlines():
            if "curl -fL -o " not in line:
                continue
            words = shlex.split(line.split("curl ", 1)[1])
            if words[-1] not in unsaved:
                continue
            target = run.folder / Path(words[words.index("-o") + 1]).name
            if not target.exists():
                with urllib.request.urlopen(words[-1]) as answer:
                    target.write_bytes(answer.read())
                run.fetched_by_hand.add(target.stem.rsplit("-", 1)[-1])
        return [
            shlex.split(line.split(IMPORT_MARK, 1)[1])[1:]
            for line in stderr.splitlines()
            if IMPORT_MARK in line
        ][:1]

    def _killed_recovery(self, run: Run, step: list[str], after: float) -> None:
        """The first step of the recovery, SIGKILLed ``after`` seconds after
        its first request to the API or the image host (if it makes one);
        what it left is snapshot as the first stop's was."""
        before = len(self.fake.state.requests)
        out = open(run.notes / "recovery-killed.txt", "w")
        proc = subprocess.Popen(
            self._llm(step, run.cwd),
            cwd=self._cwd(run.cwd),
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        while len(self.fake.state.requests) == before and proc.poll() is None:
            time.sleep(0.001)
        try:
            proc.wait(after)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            run.recovery_killed = True
        out.close()
        text = (run.notes / "recovery-killed.txt").read_text()
        run.recovery.append(("stopped " + " ".join(step[:2]), 0, text))
        self._quiesce()
        self._snapshot(run)

    def _quiesce(self) -> None:
        """Wait until the fake has answered every POST it received (a killed
        client's generation still completes on the API's side). A POST cut
        short by the kill is answered 400 and never logged, as the API
        would."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.fake.state.in_flight == 0 and all(
                r.headers.get("X-Client-Request-Id") in self.answered
                for r in self.fake.generations
            ):
                return
            time.sleep(0.01)
        self.problems.append("the fake API did not settle within 60 s")

    def _snapshot(self, run: Run) -> None:
        """What the stopped process left: the requests it journaled as sent
        whose answer it did not journal."""
        folder = self.user / "imagen4" / "unfinished"
        for path in folder.glob("*.json") if folder.exists() else []:
            try:
                entry = json.loads(path.read_text())
            except (OSError, ValueError):
                self.problems.append(f"run {run.number}: unreadable journal {path}")
                continue
            if entry.get("outcome") == "sent":
                run.sent_only.add(entry.get("client_request_id"))

    # -- counting ------------------------------------------------------------

    def paid_generations(self) -> list[dict[str, Any]]:
        """Every generation the API sold, with its images' keys, in order."""
        status = {e["client_request_id"]: e["status"] for e in self.fake.log}
        sold, counted = [], set()
        for request in self.fake.generations:
            body = request.body
            request_id = request.headers.get("X-Client-Request-Id")
            # The attempts of one request (after a 429, say) are one sale.
            if status.get(request_id) != "succeeded" or request_id in counted:
                continue
            counted.add(request_id)
            width, height = SIZES[body.get("aspect_ratio", "1:1")]
            seed = body.get("seed", 1234)
            keys = []
            for i in range(int(body.get("num_images", 1))):
                data = png(
                    width,
                    height,
                    f"{body['prompt'][:20]}|{seed}|{i}".encode(),
                    self.fake.state.png_extra,
                )
                name = hashlib.sha256(data).hexdigest()[:16] + "_output.png"
                assert self.fake.state.files.get(name) == data, name
                keys.append(image_key(data))
            sold.append(
                {
                    "request_id": request_id,
                    "generation_id": request_id.split(":", 1)[1],
                    "prompt": body["prompt"],
                    "seed": seed,
                    "run": int(body["prompt"][1:5]),
                    "keys": keys,
                    "answered": self.answered.get(request_id, (None, False)),
                }
            )
        return sold

    def logged(self) -> dict[str, list[str]]:
        """The status of each image of every turn in logs.db, by turn id."""
        path = self.user / "logs.db"
        if not path.exists():
            return {}
        if self.namespace:
            # SQLite would resolve /proc/PID/root and miss the disk: a copy.
            for suffix in ("", "-wal"):
                if (self.user / f"logs.db{suffix}").exists():
                    shutil.copyfile(
                        self.user / f"logs.db{suffix}",
                        self.base / f"logs-copy.db{suffix}",
                    )
            path = self.base / "logs-copy.db"
        db = sqlite3.connect(path)
        try:
            rows = db.execute(
                "SELECT id, response_json FROM turns WHERE response_json IS NOT NULL"
            ).fetchall()
        finally:
            db.close()
        found = {}
        for turn_id, payload in rows:
            try:
                record = json.loads(payload)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("plugin") == "llm-imagen4":
                found[turn_id] = [i.get("status") for i in record.get("images", [])]
        return found

    def tally(self) -> dict[str, Counter]:
        runs = {run.number: run for run in self.runs}
        sold = self.paid_generations()
        for g in sold:
            run = runs[g["run"]]
            # In flight: the stopped process journaled the request (always
            # before sending it) and had not journaled its answer. Anything
            # else was kept: the answer was in the journal, or its images on
            # disk, or the request came later (a batch run again).
            g["kept"] = not run.killed or g["request_id"] not in run.sent_only
        known = {key for g in sold for key in g["keys"]}
        on_disk: Counter = Counter()
        for run in self.runs:
            for path in run.folder.rglob("*.png"):
                if path.name.startswith("."):
                    continue
                key = image_key(path.read_bytes())
                if key not in known:
                    self.problems.append(
                        f"{path}: not an image the API made, or cut off"
                    )
                    continue
                on_disk[key] += 1
                if on_disk[key] == 2:
                    self.problems.append(
                        f"run {self._run_of(path).number} "
                        f"({self._describe(self._run_of(path))}): an image saved "
                        f"twice, again as {path.name}"
                    )
        # A seeded request bought again after its first answer was lost
        # makes the same image: the file on disk is the kept generation's.
        owner: dict[str, str] = {}
        for g in sorted(sold, key=lambda g: not g["kept"]):
            for key in g["keys"]:
                if on_disk[key]:
                    owner.setdefault(key, g["request_id"])
        reports = (
            "\n".join(stderr for run in self.runs for _, _, stderr in run.recovery)
            + self.final_output
        )
        logged = self.logged()
        totals: dict[str, Counter] = defaultdict(Counter)
        for run in self.runs:
            row = totals[run.route]
            row["runs"] += 1
            row["stopped"] += run.killed
            row["sent > 1 s after the stop"] += run.late
            if not run.killed:
                row["longest run not stopped (s)"] = max(
                    row["longest run not stopped (s)"], round(run.elapsed, 1)
                )
            row["recovery kills"] += run.recovery_killed
            row["hung"] += run.hung
            row["temporary files left"] += len(list(run.folder.glob(".imagen4-*")))
        for key, count in on_disk.items():
            totals[runs[self._run_number(owner[key], sold)].route]["saved twice"] += (
                count - 1
            )
        earlier: dict[tuple[int, str], list[bool]] = defaultdict(list)
        for g in sold:
            run = runs[g["run"]]
            row = totals[run.route]
            keys = g["keys"]
            where = f"run {run.number} ({self._describe(run)})"
            row["paid"] += len(keys)
            saved = [k for k in keys if owner.get(k) == g["request_id"]]
            row["saved"] += len(saved)
            unsaved = len(keys) - len(saved)
            written_at, _ = g["answered"]
            if g["kept"]:
                row["lost"] += unsaved
                if unsaved:
                    self.problems.append(
                        f"{where}: {unsaved} of {len(keys)} images of "
                        f"{g['generation_id']} lost although the answer was kept"
                    )
            elif unsaved:
                reported = any(
                    g["generation_id"] in line and LOST_MARK in line
                    for line in reports.splitlines()
                )
                if reported:
                    row["in flight"] += unsaved
                    gap = run.killed_at - (written_at or run.killed_at)
                    row["answer written before the stop"] += gap > 0
                    row["ms from answer to stop (max)"] = max(
                        row["ms from answer to stop (max)"], round(gap * 1000)
                    )
                else:
                    row["lost"] += unsaved
                    self.problems.append(
                        f"{where}: {unsaved} images of {g['generation_id']} "
                        "lost, and download did not say so"
                    )
            request = (g["run"], g["prompt"])
            if any(earlier[request]):
                row["bought twice"] += len(keys)
                self.problems.append(
                    f"{where}: {g['prompt']!r} generated again after its answer "
                    "was kept"
                )
            elif earlier[request]:
                row["bought again after an answer in flight"] += len(keys)
            earlier[request].append(g["kept"])
            if g["generation_id"] in run.fetched_by_hand:
                row["fetched by the printed curl, not in the history"] += len(keys)
            elif g["kept"] and not unsaved:
                statuses = logged.get(g["generation_id"])
                if statuses is None or any(s != "saved" for s in statuses):
                    row["history behind"] += 1
                    self.problems.append(
                        f"{where}: {g['generation_id']} saved but "
                        + ("not logged" if statuses is None else f"logged {statuses}")
                    )
        return totals

    @staticmethod
    def _run_number(request_id: str, sold: list[dict[str, Any]]) -> int:
        return next(g["run"] for g in sold if g["request_id"] == request_id)

    def _run_of(self, path: Path) -> Run:
        return next(run for run in self.runs if path.is_relative_to(run.folder))

    @staticmethod
    def _describe(run: Run) -> str:
        return f"{run.route}, {run.stage}, {run.signal_name}"

    def check_outputs(self) -> None:
        for run in self.runs:
            stderr = (run.notes / "stderr").read_text(errors="replace")
            outputs = [("stopped run", run.exit_code or 0, stderr), *run.recovery]
            for name, code, text in outputs:
                last = text.strip().splitlines()[-1] if text.strip() else ""
                if (
                    "Traceback" in text
                    and last == "KeyboardInterrupt"
                    and "llm_imagen4" not in text
                ):
                    # Ctrl-C while llm itself starts, before the plugin runs.
                    self.outside += 1
                elif "Traceback" in text:
                    self.problems.append(
                        f"run {run.number} ({run.route}, {run.stage}, "
                        f"{run.signal_name}): traceback in {name}: "
                        + text.strip().splitlines()[-1]
                    )
                if name != "stopped run" and code != 0:
                    self.problems.append(
                        f"run {run.number} ({run.route}, {run.stage}, "
                        f"{run.signal_name}): {name} exited {code}: "
                        + " | ".join(text.strip().splitlines()[-3:])
                    )
            if run.hung:
                self.problems.append(
                    f"run {run.number} ({run.route}, {run.stage}, {run.signal_name}):"
                    f" still running {EXIT_GRACE:g} s after the signal"
                )
            if run.late:
                self.problems.append(
                    f"run {run.number} ({self._describe(run)}): {run.late} "
                    f"requests sent more than {STOP_GRACE:g} s after the stop"
                )
            if self.storm and not run.killed and run.elapsed > STORM_LIMIT:
                self.problems.append(
                    f"run {run.number} ({run.route}): took {run.elapsed:.0f} s"
                )
            refused = self.storm and REFUSED_MARK in stderr
            if not run.killed and run.exit_code and not refused:
                self.problems.append(
                    f"run {run.number} ({run.route}): exited {run.exit_code} "
                    "before it was stopped"
                )
        for run in self.runs:
            # A SIGKILL (or a second Ctrl-C: stop at once) leaves its
            # temporary files for a later run of the plugin in that folder
            # to remove once they are an hour old; anything else (a single
            # Ctrl-C or SIGTERM, a full disk, a storm) must remove them.
            outright = run.signal_name in ("KILL", "INT x2") or run.recovery_killed
            if not outright:
                for part in run.folder.glob(".imagen4-*"):
                    self.problems.append(f"left behind: {part}")
        journal = self.user / "imagen4" / "unfinished"
        if not journal.exists():
            return
        received = {r.headers.get("X-Client-Request-Id") for r in self.fake.generations}
        for path in sorted(journal.glob("*.json")):
            entry = json.loads(path.read_text())
            if entry.get("outcome") == "sent" and (
                entry.get("client_request_id") not in received
            ):
                # Stopped between noting the request and sending it: the
                # API's log never lists it, and download drops it an hour on.
                self.never_sent += 1
            else:
                self.problems.append(f"journal entry left at the end: {path.name}")
        for path in sorted(journal.glob(".*.tmp")):
            self.problems.append(f"journal temporary file left at the end: {path}")


COLUMNS = (
    "runs",
    "stopped",
    "paid",
    "saved",
    "in flight",
    "lost",
    "bought twice",
    "saved twice",
)
# Counted as the largest of the runs', not their sum.
LARGEST = ("ms from answer to stop (max)", "longest run not stopped (s)")
EXTRA = (
    "sent > 1 s after the stop",
    "fetched by the printed curl, not in the history",
    "longest run not stopped (s)",
    "recovery kills",
    "history behind",
    "hung",
    "temporary files left",
    "bought again after an answer in flight",
    "answer written before the stop",
    "ms from answer to stop (max)",
)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60, help="how many runs (60)")
    parser.add_argument("--seed", type=int, help="for the random choices")
    parser.add_argument(
        "--signal",
        choices=sorted(SIGNALS),
        default="kill",
        help="kill (default), int, term, or mixed: any of them, or Ctrl-C twice",
    )
    parser.add_argument("--routes", default=",".join(ROUTES), help="comma-separated")
    parser.add_argument(
        "--kill-recovery",
        action="store_true",
        help="also SIGKILL the first recovery step of half the runs",
    )
    parser.add_argument(
        "--disk",
        choices=["full"],
        help="full: disks that fill up at each run's stage, instead of a signal",
    )
    parser.add_argument(
        "--retry-after",
        choices=["storm"],
        help="storm: 429s asking for waits honoured and refused",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    routes = [r.strip() for r in args.routes.split(",")]
    base = Path(tempfile.mkdtemp(prefix="imagen4-faults-"))
    with contextlib.ExitStack() as stack:
        namespace = None
        if args.disk:
            try:
                namespace = stack.enter_context(
                    small_disks(base / "mounts", USER_DISK, OUTPUT_DISK)
                )
            except Unavailable as ex:
                print(f"--disk full: {ex}; nothing was run")
                shutil.rmtree(base, ignore_errors=True)
                return
        campaign = Campaign(
            base, rng, args.kill_recovery, namespace, args.retry_after == "storm"
        )
        started = time.monotonic()
        try:
            campaign_runs(campaign, args, routes)
            totals = campaign.tally()
        finally:
            campaign.fake.close()
        report(campaign, args, seed, totals, time.monotonic() - started)
        problems = campaign.problems
        if args.keep or problems:
            # The disks' files are copied out before the namespace ends.
            if namespace:
                for n, disk in enumerate(namespace.disks):
                    shutil.copytree(disk.path, base / f"disk{n}-copy", symlinks=True)
            print(f"\nwork folder kept: {base}")
    if not (args.keep or problems):
        shutil.rmtree(base, ignore_errors=True)
    if problems:
        sys.exit(1)


def campaign_runs(
    campaign: Campaign, args: argparse.Namespace, routes: list[str]
) -> None:
    """Every run, then the last ``download``, then the outputs checked."""
    rng = campaign.rng
    signals_of = SIGNALS[args.signal]
    if campaign.namespace:
        signals_of = [("disk full", [])]
    elif campaign.storm:
        signals_of = [*signals_of, ("none", [])]
    for number in range(1, args.runs + 1):
        route = rng.choice(routes)
        if campaign.storm and "batch" in routes and rng.random() < 0.5:
            route = "batch"
        name, signals = rng.choice(signals_of)
        run = campaign.plan(number, route, name)
        campaign.runs.append(run)
        campaign.execute(run, signals)
        print(
            f"run {number:3d}/{args.runs}: {route:15s} {run.stage:13s} {name:9s}"
            + (f" {run.fill[0]}, {run.fill[1]} B left" if run.fill else "")
            + (" stopped" if run.killed else " ended first")
            + f" (exit {run.exit_code}, {run.elapsed:.1f} s)",
            file=sys.stderr,
            flush=True,
        )
    final = subprocess.run(
        campaign._llm(["imagen4", "download"], campaign.base),
        cwd=campaign.base,
        env=campaign.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    campaign.final_output = final.stderr
    if final.returncode != 0 or "Traceback" in final.stderr:
        campaign.problems.append(f"final download: {final.stderr.strip()}")
    campaign.check_outputs()


def report(
    campaign: Campaign,
    args: argparse.Namespace,
    seed: int,
    totals: dict[str, Counter],
    seconds: float,
) -> None:
    """The table, the other counts, and the problems."""
    total: Counter = Counter()
    for row in totals.values():
        for name, value in row.items():
            if name in LARGEST:
                total[name] = max(total[name], value)
            else:
                total[name] += value
    mode = (
        "disk full"
        if args.disk
        else f"signal {args.signal}"
        + (", Retry-After storm" if args.retry_after else "")
    )
    flags = f"--runs {args.runs} --seed {seed}"
    flags += " --disk full" if args.disk else f" --signal {args.signal}"
    flags += " --retry-after storm" if args.retry_after else ""
    flags += " --kill-recovery" if args.kill_recovery else ""
    print(
        f"{args.runs} runs, {mode}, seed {seed}, {seconds:.0f} s; "
        f"python benchmarks/faults.py {flags}"
    )
    print()
    print("| route | " + " | ".join(COLUMNS) + " |")
    print("| --- |" + " ---: |" * len(COLUMNS))
    for route in ROUTES:
        if route in totals:
            row = totals[route]
            label = "llm imagen4 batch" if route == "batch" else route
            print(f"| `{label}` | " + " | ".join(str(row[c]) for c in COLUMNS) + " |")
    print("| total | " + " | ".join(str(total[c]) for c in COLUMNS) + " |")
    print()
    print(
        ", ".join(f"{name}: {total[name]}" for name in EXTRA)
        + f", requests never sent (in the journal for an hour): {campaign.never_sent}"
        + f", Ctrl-C tracebacks from llm's start-up: {campaign.outside}"
    )
    stages = Counter((run.stage, run.killed) for run in campaign.runs)
    print(
        "stopped at: "
        + ", ".join(
            f"{stage} {stages[(stage, True)]}/{stages[(stage, True)] + stages[(stage, False)]}"
            for stage in sorted({run.stage for run in campaign.runs})
        )
    )
    if campaign.problems:
        print()
        print(f"{len(campaign.problems)} problems:")
        for problem in campaign.problems:
            print(f"- {problem}")


if __name__ == "__main__":
    main()
