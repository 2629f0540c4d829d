"""Rebuilding the history from the images themselves: ``llm imagen4 import``.

Every image the plugin saved carries its generation's record (a PNG's
``llm-imagen4`` text, or the sidecar beside a JPEG, a WebP or a signed
image). Read by the rules ``inspect`` reads by (``provenance.read``) and
checked further as a turn of llm's, the images of one generation (one turn
id) become that turn again, logged as llm logs one and marked ``imported``.

A file is evidence, not instructions: every field of its record is checked,
a file of more than one claim or with another image's sidecar is never
imported, and only what the file itself shows is taken for its image (the
sha256, size, type and dimensions of its bytes). A turn id already in the
logs database is never touched. Nothing is sent."""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import sqlite3
import stat
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import llm
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import files, images, index, journal, provenance, specs, turns
from .api import MAX_IMAGE_BYTES
from .record import GenerationRecord, ImageRecord, folder_text
from .terminal import counted, notify, printable

# At most this many files and folders are looked at under the folders given.
MAX_ENTRIES = 100_000
# An id as llm makes one: a ULID in lower case.
LLM_ID = re.compile(r"[0-7][0-9a-hjkmnp-tv-z]{25}")

# Why files were skipped, in the order the summary gives them.
NO_RECORD = "without the plugin's record"
UNREADABLE = "unreadable"
CLAIMS = "of more than one claim"
ANOTHERS = "with another image's sidecar"
REFUSED = "refused"
DUPLICATE = "duplicate"
NOT_REGULAR = "not regular"
REASONS = (NO_RECORD, UNREADABLE, CLAIMS, ANOTHERS, REFUSED, DUPLICATE, NOT_REGULAR)
# What leaves an image of the plugin's out of the history: the exit is 1.
FAILING = {UNREADABLE, CLAIMS, ANOTHERS, REFUSED}
NOT_IMPORTED = "not imported"


class BadInput(llm.ModelError):
    """Paths or a database the command cannot take: one line, and nothing
    imported."""


@dataclass
class Report:
    """The files skipped, counted by reason, each said as it is met."""

    skipped: Counter[str] = field(default_factory=Counter)

    def skip(self, reason: str, line: str | None = None) -> None:
        self.skipped[reason] += 1
        if line:
            notify(line)

    @property
    def failed(self) -> bool:
        return any(self.skipped[reason] for reason in FAILING)


# -- finding the files ------------------------------------------------------------


def collect(paths: Iterable[Path], report: Report) -> list[Path]:
    """The files to read, each once: those named (a symlink named is read
    as its target), and under each folder named, every regular file with
    an image's suffix. Symlinks inside folders are not followed, and no
    FIFO or device is opened. BadInput for a path that is neither a file
    nor a folder, or folders of more than MAX_ENTRIES files and folders."""
    named: list[Path] = []
    folders: list[Path] = []
    for given in paths:
        try:
            mode = os.stat(given).st_mode
        except OSError as ex:
            raise BadInput(f"{given}: {ex.strerror or ex}") from None
        if stat.S_ISDIR(mode):
            folders.append(given.resolve())
        elif stat.S_ISREG(mode):
            named.append(given.resolve())
        else:
            raise BadInput(f"{given} is neither a file nor a folder")
    budget = [MAX_ENTRIES]
    for folder in folders:
        named.extend(_walk(folder, report, budget))
    return list(dict.fromkeys(named))


def _walk(root: Path, report: Report, budget: list[int]) -> list[Path]:
    """The image files under ``root``, folder by folder in name order,
    without recursion and without following symlinks."""
    found: list[Path] = []
    folders = [root]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as ex:
            report.skip(UNREADABLE, f"{folder}: {ex.strerror or ex}")
            continue
        budget[0] -= len(entries)
        if budget[0] < 0:
            raise BadInput(
                f"More than {MAX_ENTRIES:,} files and folders under {root}:"
                " import fewer at a time"
            )
        inner = []
        for entry in entries:
            if _is(entry, "dir"):
                inner.append(Path(entry.path))
            elif Path(entry.name).suffix.lower() in files.IMAGE_SUFFIXES:
                if _is(entry, "file"):
                    found.append(Path(entry.path))
                else:
                    report.skip(NOT_REGULAR)
        folders.extend(reversed(inner))
    return found


def _is(entry: os.DirEntry, kind: str) -> bool:
    try:
        if kind == "dir":
            return entry.is_dir(follow_symlinks=False)
        return entry.is_file(follow_symlinks=False)
    except OSError:
        return False


# -- reading one file -------------------------------------------------------------


class _Claimed(BaseModel):
    """The fields of a record beyond the request that its turn is made of,
    read strictly: ``true`` is not a number, nor ``"7"``."""

    model_config = ConfigDict(strict=True, extra="ignore")

    turn_id: str
    api_model: str
    created_utc: str
    credits_used: float | None = Field(None, ge=0, allow_inf_nan=False)
    usd_spent: float | None = Field(None, ge=0, allow_inf_nan=False)
    version: str | None = Field(None, max_length=64)


@dataclass(frozen=True)
class Claim:
    """What a file's record says of its generation: every image of one
    generation must say the same."""

    turn_id: str
    model_id: str
    request: dict
    created_utc: str
    credits_used: float | None
    usd_spent: float | None
    version: str | None


@dataclass(frozen=True)
class Found:
    """An image file of the plugin's: its claim, and the file as measured."""

    claim: Claim
    file: files.SavedFile
    enhanced_prompt: str | None


def _refused(shown: str, where: str, why: str) -> provenance.ProvenanceError:
    return provenance.ProvenanceError(f"{shown}: its record's {where}: {why}")


def _quoted(text: str) -> str:
    """A claimed value for a message, cut short: it may be of any length."""
    return repr(text if len(text) <= 40 else text[:40] + "…")


def read(path: Path, report: Report) -> Found | None:
    """The image at ``path`` with its record, checked; None when it is
    skipped (and counted, and said when it is an image of the plugin's)."""
    shown = str(path)
    try:
        if path.stat().st_size > MAX_IMAGE_BYTES:
            # Larger than any image the plugin saves: not one of them.
            report.skip(NO_RECORD)
            return None
        found = provenance.read(path)
    except OSError as ex:
        report.skip(UNREADABLE, f"{shown}: {ex.strerror or ex}")
        return None
    except provenance.ProvenanceError as ex:
        report.skip(UNREADABLE, f"{ex}: {NOT_IMPORTED}")
        return None
    if found is None:
        report.skip(NO_RECORD)
        return None
    if found.conflicting_claims:
        line = f"{shown}: {found.conflicting_claims}: it is not evidence of one request"
        report.skip(CLAIMS, f"{line}; {NOT_IMPORTED}")
        return None
    if found.sidecar_mismatch:
        line = f"{shown}: {found.sidecar_mismatch}: the record may be another image's"
        report.skip(ANOTHERS, f"{line}; {NOT_IMPORTED}")
        return None
    try:
        claim = _claim(found.record, shown)
        measured = _measure(path, found)
    except provenance.ProvenanceError as ex:
        report.skip(REFUSED, f"{ex}: {NOT_IMPORTED}")
        return None
    except (OSError, ValueError) as ex:
        report.skip(UNREADABLE, f"{shown}: {ex}: {NOT_IMPORTED}")
        return None
    return Found(claim, measured, found.record.enhanced_prompt)


def _claim(record: provenance.FileRecord, shown: str) -> Claim:
    """The generation a record describes, every field checked, its request
    made again as the plugin makes one. ProvenanceError naming the field."""
    spec = specs.SPECS_BY_ID.get(record.model)
    if spec is None:
        raise _refused(shown, "model", f"{_quoted(record.model)} is no Imagen 4 model")
    try:
        claimed = _Claimed.model_validate(record.model_extra or {})
    except ValidationError as ex:
        error = ex.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise _refused(shown, where, error["msg"]) from None
    if not LLM_ID.fullmatch(claimed.turn_id):
        why = f"{_quoted(claimed.turn_id)} is not an id llm makes (a ULID)"
        raise _refused(shown, "turn_id", why)
    if claimed.api_model != spec.api_id:
        why = f"{_quoted(claimed.api_model)} is not the API model of {spec.model_id}"
        raise _refused(shown, "api_model", why)
    options = provenance.rerun_options(record, spec, shown)
    if "seed" not in options:
        raise _refused(shown, "seed", "there is none")
    inline = record.options.get("convert_base64_to_url") is False
    request = specs.build_request(
        spec, record.prompt, spec.options.model_validate({**options, "inline": inline})
    )
    return Claim(
        turn_id=claimed.turn_id,
        model_id=spec.model_id,
        request=request,
        created_utc=_utc(claimed.created_utc, shown),
        credits_used=claimed.credits_used,
        usd_spent=claimed.usd_spent,
        version=claimed.version,
    )


def _utc(text: str, shown: str) -> str:
    """A claimed time, in UTC as llm logs one."""
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise _refused(shown, "created_utc", "not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise _refused(shown, "created_utc", "a time without its zone")
    return moment.astimezone(datetime.UTC).isoformat()


def _measure(path: Path, found: provenance.FileProvenance) -> files.SavedFile:
    """The image as its bytes show it, all read through one descriptor of a
    regular file. ValueError when it is not a whole image of a size an
    image can have, OSError when it changed while it was read."""
    with os.fdopen(images.open_regular(path), "rb") as f:
        before = os.fstat(f.fileno())
        if before.st_size > MAX_IMAGE_BYTES:
            raise OSError(f"over {MAX_IMAGE_BYTES >> 20} MB")
        sha256 = hashlib.file_digest(f, "sha256").hexdigest()
        f.seek(0)
        kind = images.sniff(f.read(65536))
        same = _same_file(path, f.fileno())
        if not images.is_complete(same, kind.content_type):
            raise images.NotAnImage("not a whole image")
        kind = images.measured(same, kind)
        after = os.fstat(f.fileno())
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise OSError("it changed while it was read")
    sidecar = files.sidecar_of(path) if found.source == "sidecar" else None
    return files.SavedFile.of(path, sha256, before.st_size, kind, sidecar, found.c2pa)


def _same_file(path: Path, fd: int) -> Path:
    """A name that opens the file behind ``fd`` again, where the system has
    one: a file swapped for a FIFO under ``path`` since is never opened."""
    by_descriptor = Path(f"/dev/fd/{fd}")
    return by_descriptor if by_descriptor.exists() else path


# -- one generation of many files -------------------------------------------------


@dataclass(frozen=True)
class Generation:
    claim: Claim
    # Its images by position, in order, and the name their names start with.
    images: list[tuple[int, Found]]
    stem: str


def generations(found: list[Found], report: Report) -> list[Generation]:
    """The images found, as generations (one turn id each), oldest first
    so that the history lists the newest first."""
    by_id: dict[str, list[Found]] = {}
    for one in found:
        by_id.setdefault(one.claim.turn_id, []).append(one)
    made = [
        generation
        for group in by_id.values()
        if (generation := _generation(group, report))
    ]
    return sorted(
        made,
        key=lambda g: (
            datetime.datetime.fromisoformat(g.claim.created_utc),
            g.claim.turn_id,
        ),
    )


def _generation(group: list[Found], report: Report) -> Generation | None:
    """One generation's images: all of the same claim, each once (a copy of
    an image counts as a duplicate), no more of them than it made."""
    claim = group[0].claim
    if any(one.claim != claim for one in group):
        for one in group:
            report.skip(
                REFUSED,
                f"{one.file.path}: the images of generation {claim.turn_id}"
                f" disagree on how it was made: {NOT_IMPORTED}",
            )
        return None
    distinct: dict[str, Found] = {}
    for one in group:
        if one.file.sha256 in distinct:
            report.skip(DUPLICATE)
        else:
            distinct[one.file.sha256] = one
    made = claim.request["num_images"]
    if len(distinct) > made:
        for one in distinct.values():
            report.skip(
                REFUSED,
                f"{one.file.path}: {len(distinct)} images claim generation"
                f" {claim.turn_id}, which made {made}: {NOT_IMPORTED}",
            )
        return None
    return _in_order(claim, list(distinct.values()))


def _in_order(claim: Claim, found: list[Found]) -> Generation:
    """Each image's position from its name (``stem``, ``stem-2``, …) when
    the names tell them; otherwise in the order of their names."""
    stem = files.slugify(claim.request["prompt"])
    numbers = [_number(one.file.path, stem) for one in found]
    told = [n for n in numbers if n is not None]
    if len(set(told)) == len(found) and max(told) <= claim.request["num_images"]:
        positions = [n - 1 for n in told]
    else:
        order = sorted(
            range(len(found)), key=lambda i: (numbers[i] or 1, str(found[i].file.path))
        )
        positions = [order.index(i) for i in range(len(found))]
    ordered = sorted(zip(positions, found, strict=True), key=lambda pair: pair[0])
    if len(told) < len(found):
        stem = ordered[0][1].file.path.stem
    return Generation(claim, ordered, stem)


def _number(path: Path, stem: str) -> int | None:
    """Which image of its generation a file's name says it is: 1 for
    ``stem.png``, N for ``stem-N.png``; None for a name of another kind."""
    if path.stem == stem:
        return 1
    match = re.fullmatch(re.escape(stem) + r"-([1-9][0-9]{0,2})", path.stem)
    return int(match[1]) if match and int(match[1]) >= 2 else None


def _record(generation: Generation, now: str) -> GenerationRecord:
    claim = generation.claim
    folder = generation.images[0][1].file.path.parent
    made = provenance.build(
        model_id=claim.model_id,
        request=claim.request,
        turn_id=claim.turn_id,
        created_utc=claim.created_utc,
        credits_used=claim.credits_used,
        usd_spent=claim.usd_spent,
    )
    return GenerationRecord(
        request=claim.request,
        seed=claim.request["seed"],
        credits_used=claim.credits_used,
        usd_spent=claim.usd_spent,
        directory=folder_text(folder),
        stem=generation.stem,
        provenance={**made, "version": claim.version},
        images=[_image(position, one, folder) for position, one in generation.images],
        imported=now,
    )


def _image(position: int, found: Found, folder: Path) -> ImageRecord:
    saved = found.file
    return ImageRecord(
        position=position,
        status="saved",
        name=saved.path.name,
        directory=None
        if saved.path.parent == folder
        else folder_text(saved.path.parent),
        sidecar=saved.sidecar.name if saved.sidecar else None,
        sha256=saved.sha256,
        bytes=saved.bytes,
        width=saved.width,
        height=saved.height,
        content_type=saved.content_type,
        enhanced_prompt=found.enhanced_prompt,
        c2pa=saved.c2pa,
    )


# -- logging ------------------------------------------------------------------------


def log(
    found: list[Generation], target: Path, report: Report
) -> tuple[list[Generation], int]:
    """Log each generation whose turn id the logs database at ``target``
    has not got (made if missing, as ``llm prompt`` makes it), printing its
    paths. Returns those logged, and how many were there already."""
    index.open_for_logging(target)
    db = index.connect(target)
    logged, already = [], 0
    now = journal.now_utc()
    try:
        index.prepare(db)
        for generation in found:
            with index.transaction(db):
                ours = _logged(db, generation.claim.turn_id)
                if ours is None:
                    turns.log_new(db, _entry(generation, now))
                    logged.append(generation)
                elif ours:
                    already += 1
            if ours is None:
                for _, one in generation.images:
                    print(printable(one.file.path), flush=True)
            elif not ours:
                _another_turn(generation, report)
        index.refresh(db)
    except (sqlite3.Error, OSError) as ex:
        raise BadInput(f"Cannot log to {target}: {ex}") from None
    finally:
        db.close()
    return logged, already


def _logged(db, turn_id: str) -> bool | None:
    """Whether the turn ``turn_id`` is a generation of the plugin's; None
    when there is no such turn."""
    row = db.execute(
        f"SELECT {index.OURS} FROM turns t WHERE t.id = ?", [turn_id]
    ).fetchone()
    return None if row is None else bool(row[0])


def _another_turn(generation: Generation, report: Report) -> None:
    for _, one in generation.images:
        report.skip(
            REFUSED,
            f"{one.file.path}: its turn id {generation.claim.turn_id} is another"
            f" turn's in the logs database: {NOT_IMPORTED}",
        )


def _entry(generation: Generation, now: str) -> journal.Entry:
    """The generation as ``turns.log_new`` logs one: a turn of its model,
    at the time its record gives."""
    claim = generation.claim
    return journal.Entry(
        id=claim.turn_id,
        model=claim.model_id,
        record=_record(generation, now),
        created_utc=claim.created_utc,
    )


# -- the command ----------------------------------------------------------------------


def summary(logged: list[Generation], already: int, report: Report) -> str:
    images = sum(len(generation.images) for generation in logged)
    skipped = sum(report.skipped.values())
    line = (
        f"{counted(len(logged), 'generation')} ({counted(images, 'image')}) imported,"
        f" {already} already in the history, {counted(skipped, 'file')} skipped"
    )
    reasons = [
        f"{report.skipped[reason]} {reason}"
        for reason in REASONS
        if report.skipped[reason]
    ]
    return line + (f" ({', '.join(reasons)})" if reasons else "")


def run(paths: Iterable[Path], database: Path | None) -> int:
    """``llm imagen4 import``: the exit status, 1 when an image of the
    plugin's was left out. BadInput (a ModelError) for paths it cannot
    take, before anything is read, or a logs database it cannot write."""
    report = Report()
    found = [one for path in collect(paths, report) if (one := read(path, report))]
    rebuilt = generations(found, report)
    logged, already = [], 0
    if rebuilt:
        target = (database or index.default_path()).absolute()
        logged, already = log(rebuilt, target, report)
    notify(summary(logged, already, report))
    return 1 if report.failed else 0
