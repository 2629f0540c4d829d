"""Small disks that fill up: tmpfs mounts of a few MiB, made in a mount
namespace of their own (``unshare -rm``, which needs no root).

A process that is to write to them runs inside the namespace (``command``
wraps its command line in ``nsenter``), where each disk is mounted at its
``inside`` path. The test itself reads and fills them from outside, through
``/proc/PID/root`` (``Disk.path``). SQLite resolves that link and would
miss the disk, so a logs database on one is read from a copy (``copy_of``).

Used by the tests and by ``benchmarks/faults.py``."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PAGE = 4096


class Unavailable(Exception):
    """This machine lets no tmpfs be mounted here: why, in a line."""


@dataclass
class Disk:
    """One tmpfs: ``inside`` is where the namespace's processes find it,
    ``path`` where this process does. ``fill`` takes its free space away
    but for ``leave`` bytes (in whole pages, as tmpfs counts them); ``free``
    gives it back."""

    inside: Path
    path: Path

    @property
    def _filler(self) -> Path:
        return self.path / ".filler"

    def available(self) -> int:
        stat = os.statvfs(self.path)
        return stat.f_bavail * stat.f_frsize

    def fill(self, leave: int = 0) -> None:
        fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            block = b"\0" * PAGE
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, block)
            size = os.fstat(fd).st_size
            os.ftruncate(fd, max(0, size - -(-leave // PAGE) * PAGE))
        finally:
            os.close(fd)

    def free(self) -> None:
        self._filler.unlink(missing_ok=True)

    def seen(self, inside: str | Path) -> Path:
        """A path inside the namespace, as this process reaches it."""
        return self.path / Path(inside).relative_to(self.inside)

    def copy_of(self, name: str, to: Path) -> Path:
        """A file of this disk copied out, for SQLite to read."""
        shutil.copyfile(self.path / name, to)
        return to


@dataclass
class Namespace:
    """The mount namespace the disks are mounted in, held open by a process
    of its own."""

    pid: int
    disks: list[Disk]

    def command(self, argv: list[str], cwd: Path) -> list[str]:
        """``argv`` run inside the namespace, in ``cwd`` (a path inside)."""
        return ["nsenter", "-t", str(self.pid), "-U", "-m", f"--wd={cwd}", *argv]


@contextlib.contextmanager
def small_disks(where: Path, *sizes: int) -> Iterator[Namespace]:
    """tmpfs mounts of these sizes (bytes) on new folders in ``where``, for
    as long as the context lasts. Unavailable where no mount can be made."""
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        raise Unavailable("no unshare and nsenter commands to mount a tmpfs with")
    points = [where / f"disk{n}" for n in range(len(sizes))]
    for point in points:
        point.mkdir(parents=True)
    mounts = " && ".join(
        f"mount -t tmpfs -o size={size},mode=0700 tmpfs {point}"
        for point, size in zip(points, sizes, strict=True)
    )
    holder = subprocess.Popen(
        ["unshare", "-rm", "sh", "-c", f"{mounts} && echo mounted && exec cat"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stderr is not None
        if holder.stdout.readline() != b"mounted\n":
            holder.wait(10)
            why = " ".join(holder.stderr.read().decode(errors="replace").split())
            raise Unavailable(f"a tmpfs cannot be mounted here: {why}")
        yield Namespace(
            holder.pid,
            [Disk(point, Path(f"/proc/{holder.pid}/root{point}")) for point in points],
        )
    finally:
        if holder.stdin:
            holder.stdin.close()
        holder.wait(10)
