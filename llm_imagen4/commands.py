"""What each ``llm imagen4`` command does once its arguments are read, with
no click in it: each returns what it found or made, or raises
``llm.ModelError``, one line; ``cli`` turns that into output and an exit
status, and ``text`` into lines."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import llm

from . import engine, history, index, journal, route, specs, turns
from .record import GenerationRecord
from .terminal import command, counted, notify

ANOTHERS = "the record may be another image's"
NOT_ONE = "it is not evidence of one request"


def _given(options: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in options.items() if value is not None}


@dataclass(frozen=True)
class HowToRun:
    """How generate and rerun run a generation: the key, and where its turn
    is logged (``-d``, ``--no-log``)."""

    key: str | None
    database: Path | None
    no_log: bool


@dataclass
class Generated:
    response: llm.Response
    record: GenerationRecord
    # The saved images, and what keeps the command from a success.
    paths: list[str]
    problem: str | None = None


def _run(
    model: llm.Model, prompt: str, options: dict[str, Any], how: HowToRun
) -> Generated:
    """Check everything, generate, log."""
    log_to = turns.target(how.database, how.no_log)
    run_options, _ = engine.check(model, prompt, options, how.key)
    index.open_for_logging(log_to)
    response = engine.generate(
        model, prompt, run_options, how.key, route.Route.logged_to(log_to)
    )
    engine.log(response, log_to)
    record = engine.record_of(response)
    unsaved = record.unsaved()
    return Generated(
        response,
        record,
        [str(path) for path in record.saved_paths()],
        f"{len(unsaved)} of {len(record.images)} images were not saved"
        if unsaved
        else None,
    )


def read_prompt(prompt: str, stdin: IO[bytes]) -> str:
    """``prompt``, or the text on standard input for ``-``."""
    if prompt != "-":
        return prompt
    try:
        text = stdin.read().decode("utf-8")
    except UnicodeDecodeError:
        raise llm.ModelError("The prompt on standard input is not UTF-8") from None
    if not text.strip():
        raise llm.ModelError("The prompt on standard input is empty")
    return text.strip()


def generate(
    prompt: str, model_name: str, options: dict[str, Any], how: HowToRun
) -> Generated:
    return _run(engine.resolve(model_name), prompt, _given(options), how)


def rerun(
    source: str,
    model_name: str | None,
    vary: bool,
    as_made: bool,
    options: dict[str, Any],
    how: HowToRun,
) -> Generated:
    """The request of a generation from an image file's record (read as a
    request only) or from the history, then generated as ``generate``."""
    given = _given(options)
    if vary and "seed" in given:
        raise llm.ModelError("--vary and --seed cannot be used together")
    path = Path(source)
    made = _from_file(path) if path.exists() else _from_history(source, how.database)
    origin_model, prompt, enhanced, requested = made
    model = engine.resolve(model_name or origin_model)
    if as_made:
        if not enhanced:
            raise llm.ModelError(
                f"{source}: the API did not rewrite its prompt; rerun it as it is"
            )
        prompt = enhanced
        requested["enhance_prompt"] = False
    if vary:
        requested.pop("seed", None)
    return _run(model, prompt, {**requested, **given}, how)


def _from_file(path: Path) -> tuple[str, str, str | None, dict[str, Any]]:
    """The model, prompt, rewritten prompt and request options of an image
    file's record, read as a request only."""
    from . import provenance

    found = provenance.read(path)
    if found is None:
        raise llm.ModelError(f"{path} has no provenance from llm-imagen4")
    if found.conflicting_claims:
        raise llm.ModelError(f"{path}: {found.conflicting_claims}: {NOT_ONE}")
    if found.sidecar_mismatch:
        notify(f"{path}: {found.sidecar_mismatch}: {ANOTHERS}")
    record = found.record
    spec = specs.SPECS_BY_ID.get(record.model)
    if spec is None:
        raise llm.ModelError(f"{path}: its record names no Imagen 4 model")
    requested = provenance.rerun_options(record, spec, str(path))
    return record.model, record.prompt, record.enhanced_prompt, requested


def _from_history(
    generation_id: str, database: Path | None
) -> tuple[str, str, str | None, dict[str, Any]]:
    db = history.open_db(database)
    logged = history.turn(db, generation_id) if db else None
    if logged is None:
        raise _not_in_history(generation_id, "No image file or generation id")
    made = logged.record
    enhanced = next((i.enhanced_prompt for i in made.images if i.enhanced_prompt), None)
    spec = specs.SPECS_BY_ID[logged.model]
    requested = {
        name: made.request[name]
        for name in specs.request_options(spec)
        if name in made.request
    }
    return logged.model, made.request["prompt"], enhanced, requested


# -- reading the history -----------------------------------------------------------


def _open(database: Path | None) -> Any:
    """The history in ``database`` (``llm logs path`` when None, and None if
    llm has logged nothing yet). A database named with -d must exist."""
    if database is not None and not database.is_file():
        raise llm.ModelError(f"No logs database at {database}")
    try:
        return history.open_db(database)
    except Exception as ex:  # noqa: BLE001 - any database error is one line
        raise llm.ModelError(str(ex)) from None


def _not_in_history(
    generation_id: str, unknown: str = "No generation with id"
) -> llm.ModelError:
    """The error for an id the history does not have: one the recovery
    journal still holds is a generation not finished yet."""
    if journal.load(generation_id) is not None:
        return llm.ModelError(
            f"{generation_id} is not finished yet; finish it with: "
            + command("llm", "imagen4", "download", generation_id)
        )
    return llm.ModelError(f"{unknown} {generation_id}")


def _model_id(model_name: str | None) -> str | None:
    return engine.resolve(model_name).model_id if model_name else None


def history_list(
    limit: int,
    query: str | None,
    model_name: str | None,
    seed: int | None,
    since: Any,
    tool: bool,
    missing: bool,
    database: Path | None,
) -> list[history.HistoryEntry]:
    if seed is not None and not 0 <= seed <= specs.SEED_MAX:
        raise llm.ModelError(
            f"--seed {seed} is not a seed: seeds are 0 to {specs.SEED_MAX}"
        )
    db = _open(database)
    if db is None:
        return []
    return history.generations(
        db,
        limit=limit or None,
        query=query,
        model=_model_id(model_name),
        seed=seed,
        since=since.isoformat() if since else None,
        tool=tool,
        missing=missing,
    )


@dataclass
class Shown:
    """One generation in full: its entry, and every field as --json has it."""

    entry: history.HistoryEntry
    data: dict[str, Any]


def show(generation_id: str, database: Path | None) -> Shown:
    import dataclasses

    db = _open(database)
    entry = history.generation(db, generation_id) if db else None
    if entry is None:
        raise _not_in_history(generation_id)
    logged = history.turn(db, generation_id)
    record = logged.record if logged else None
    data = dataclasses.asdict(entry)
    data["options"] = logged.options if logged else {}
    data["provenance"] = record.provenance if record else None
    data["client_request_id"] = record.client_request_id if record else None
    data["inference_id"] = record.inference_id if record else None
    return Shown(entry, data)


@dataclass
class Inspected:
    # What each file claims, as --json has it.
    items: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None


def inspect(files: tuple[Path, ...]) -> Inspected:
    """What each file claims of how it was made; a line on standard error
    for each one with none, or with a claim that is not its own."""
    from . import provenance

    inspected, unreadable = Inspected(), 0
    for path in files:
        try:
            found = provenance.read(path)
        except provenance.ProvenanceError as ex:
            notify(str(ex))
            unreadable += 1
            continue
        if found is None:
            notify(f"{path}: no provenance from llm-imagen4")
            unreadable += 1
            continue
        if found.conflicting_claims:
            notify(f"{path}: {found.conflicting_claims}: {NOT_ONE}")
        if found.sidecar_mismatch:
            notify(f"{path}: {found.sidecar_mismatch}: {ANOTHERS}")
        inspected.items.append(
            {
                "file": str(path.resolve()),
                "source": found.source,
                "c2pa": found.c2pa,
                "sidecar_mismatch": found.sidecar_mismatch,
                "conflicting_claims": found.conflicting_claims,
                "claims": found.record.model_dump(),
            }
        )
    if unreadable:
        inspected.problem = (
            f"{unreadable} of {len(files)} files have no readable provenance"
        )
    return inspected


# -- finishing ----------------------------------------------------------------------


def download(
    generation_id: str | None, output: Path | None, database: Path | None
) -> Iterator[Any]:
    """Finish the journal's generations, or restore one's deleted files:
    each ``finishing.Recovered`` as it is done. ModelError at the end when
    anything is left, saying what."""
    from . import finishing

    if generation_id is None:
        journal.sweep()
    ids = [generation_id] if generation_id else journal.ids()
    if not ids:
        notify("Nothing to finish: every generation's images are saved")
        return
    destination = output.absolute() if output else None
    if destination:
        try:
            destination.mkdir(parents=True, exist_ok=True)
        except OSError as ex:
            raise llm.ModelError(f"Cannot create {output}: {ex.strerror}") from None
    failed = left = 0
    opener = _LogOpener(database)
    for one in ids:
        tracked, restoring = _take(
            one, generation_id is not None, database, destination
        )
        if tracked is None:
            failed += restoring
            continue
        opener.before(tracked)
        result = finishing.finish(tracked, destination, opener.path, restoring)
        failed += len(result.failed) + result.lost
        left += result.left
        yield result
    problems = []
    if failed:
        problems.append(f"{counted(failed, 'image')} could not be saved")
    if left:
        problems.append(
            f"{counted(left, 'generation')} not finished yet: run "
            + command("llm", "imagen4", "download")
            + " again later"
        )
    if problems:
        raise llm.ModelError("; ".join(problems))


def _take(
    generation_id: str, named: bool, database: Path | None, output: Path | None
) -> tuple[Any, bool]:
    """The generation to finish: from the journal, or (when ``named``) from
    the history, to restore its deleted files; whether it is restored. None
    when there is nothing to do: it is said why, and the restoring flag
    then says whether that counts as a failure."""
    from . import finishing, recovery

    try:
        tracked = recovery.Tracked.take(generation_id)
        if tracked is not None or not named:
            return tracked, False
        entry = finishing.from_history(generation_id, database, output)
        if entry is None:
            notify(f"Every saved image of {generation_id} is on disk")
            return None, False
        return recovery.Tracked.restore(entry), True
    except recovery.Busy as ex:
        notify(str(ex))
        return None, named


class _LogOpener:
    """``download -d DB`` opens DB for logging before anything is fetched,
    as a generation does, once."""

    def __init__(self, database: Path | None):
        self.path = database.absolute() if database else None
        self._opened = False

    def before(self, tracked: Any) -> None:
        if self.path and tracked.entry.log_to and not self._opened:
            try:
                index.open_for_logging(self.path)
            except llm.ModelError:
                tracked.keep()
                raise
            self._opened = True


def status(generation_id: str, key: str | None, database: Path | None) -> str:
    from . import finishing

    if database is not None and not database.is_file():
        raise llm.ModelError(f"No logs database at {database}")
    return finishing.status(generation_id, key, database)


# -- the API's catalogue and balance ----------------------------------------------


@dataclass
class ModelRow:
    spec: specs.Spec
    price: str
    # Whether the API serves it, when asked.
    served: bool | None = None


def models(check: bool) -> tuple[list[ModelRow], str | None]:
    """Each model with its price an image (and, with ``check``, whether the
    API serves it); what keeps the command from a success."""
    from . import catalogue

    listed, why = None, None
    try:
        listed = catalogue.listings(fresh=check)
    except llm.ModelError as ex:
        if check:
            raise
        why = f"the API's model list could not be read: {ex}"
    rows = []
    for spec in specs.SPECS:
        listing = listed[spec.api_id] if listed else None
        price = listing.price_line() if listing else f"unknown ({why})"
        served = listing.served if check and listing is not None else None
        rows.append(ModelRow(spec, price, served))
    gone = sum(row.served is False for row in rows)
    problem = f"{gone} of the models are no longer served by the API" if gone else None
    return rows, problem


def balance(key: str | None) -> float:
    from . import api, ledger

    return ledger.balance(api.ApiClient(engine.api_key(key)))


# -- the gallery and Datasette ----------------------------------------------------


def gallery(
    output: Path,
    limit: int,
    query: str | None,
    model_name: str | None,
    database: Path | None,
) -> Path:
    from . import files
    from .gallery import is_gallery, render

    page = output.expanduser().absolute()
    if (page.exists() or page.is_symlink()) and not is_gallery(page):
        raise llm.ModelError(
            f"{output} exists and is not a gallery; it will not be overwritten"
        )
    db = _open(database)
    entries = (
        history.generations(
            db, limit=limit or None, query=query, model=_model_id(model_name)
        )
        if db is not None
        else []
    )
    try:
        page.parent.mkdir(parents=True, exist_ok=True)
    except OSError as ex:
        raise llm.ModelError(f"Cannot create {page.parent}: {ex.strerror}") from None
    tmp, out = files.new_file(page.parent, suffix=".html")
    with out:
        out.write(render(entries, page.parent).encode("utf-8"))
    os.replace(tmp, page)
    return page


def datasette(database: Path | None) -> dict[str, Any]:
    path = (database or index.default_path()).absolute()
    return history.datasette_metadata(path)
