"""A generation's life in the recovery journal, from the moment before its
request goes out to the moment nothing is left to finish. Every step of an
entry is a method of ``Tracked``, and only here does an entry end:

1. prepared: written before the request goes out, holding the request and
   where its images and turn go;
2. sent: an attempt went out (its first byte is on the wire), so only the
   API's log can say what became of it until an answer comes;
3. answered: the answer is kept (its URLs, and the bytes of images that
   came inline) before any image is fetched;
4. saved: each image, as it is named (the sha256 it is about to get) and
   once it is;
5. logged: the turn is in llm's database.

The entry ends (``end``) once its images are saved and its turn logged, or
once it is settled with a reason: refused by the API, never sent, or what
the API's log says of a lost answer. Otherwise it is kept (``keep``) for
``llm imagen4 download``.

What the API's log says of a lost answer, said plainly: listed as failed
(nothing charged); listed as succeeded, so charged though its images never
arrived (the generation goes into the history where its turn would have
gone, its images ``lost``, at the cost the log gives); not listed yet (the
log lists a request once its answer is delivered: not known yet, kept); and
never sent, decided only by the journal (still prepared)."""

from __future__ import annotations

import datetime
import threading
from dataclasses import dataclass
from pathlib import Path

import llm

from . import api, errors, journal, ledger
from .record import GenerationRecord, ImageRecord
from .terminal import command, notify

# A request the log still does not list this long after it was sent was
# never recorded, so nothing was charged for it.
UNLISTED_HORIZON = datetime.timedelta(days=1)
LOST = "its answer never arrived, and the API keeps no copy of its images to fetch"


class Busy(llm.ModelError):
    """The entry cannot be taken: another process holds it (it is working
    on that generation), or its lock is not a file the journal made."""


class LostAnswer(llm.ModelError):
    """A generation whose request went out and whose answer never arrived
    whole: what the API's log said of it, if it said anything."""

    def __init__(self, message: str, listed: ledger.Listed | None):
        super().__init__(message)
        self.listed = listed


@dataclass
class Settled:
    """What settling a sent entry did: a line to say, whether the entry is
    still in the journal for a later try, and what the log said (None when
    it was not asked, or does not list it)."""

    note: str
    left: bool = False
    listed: ledger.Listed | None = None


class Tracked:
    """A generation's entry while this process holds it. Without a claim
    (the journal cannot be written) each step does what it can and keeps
    nothing."""

    def __init__(
        self, entry: journal.Entry, claim: journal.Claim | None, resumed: bool = False
    ):
        self.entry = entry
        self._claim = claim
        # Taken up again from the journal (or the history): an earlier
        # process may have saved an image without the entry saying so.
        self.resumed = resumed
        self._lock = threading.Lock()
        # The journal's last failure, said once however often it recurs.
        self._failure: str | None = None

    @property
    def id(self) -> str:
        return self.entry.id

    @property
    def journaled(self) -> bool:
        return self._claim is not None

    @classmethod
    def prepare(cls, entry: journal.Entry) -> Tracked:
        """Step 1, before the request goes out. A journal that cannot be
        written stops nothing."""
        try:
            claim = journal.claim(entry.id)
            if claim is not None:
                claim.write(entry)
        except OSError:
            claim = None
        return cls(entry, claim)

    @classmethod
    def take(cls, generation_id: str) -> Tracked | None:
        """An entry to finish, from the journal: None when there is none.
        Busy while another process holds it."""
        if not journal.TURN_ID.fullmatch(generation_id):
            return None
        claim = _held(generation_id)
        entry = claim.load()
        if entry is None:
            claim.release(remove_lock=True)
            return None
        return cls(entry, claim, resumed=True)

    @classmethod
    def restore(cls, entry: journal.Entry) -> Tracked:
        """A finished generation whose deleted files are to be fetched again,
        held while that is done (a claim that may not keep an entry)."""
        return cls(entry, _held(entry.id), resumed=True)

    def sending(self) -> None:
        """Step 2: an attempt is going out. A journal that cannot say so
        forgets the generation rather than claim it was never sent."""
        now = journal.now_utc()
        entry = self.entry
        entry.outcome = "sent"
        entry.sent_utc = entry.sent_utc or now
        entry.last_sent_utc = now
        entry.attempts += 1
        if self._claim is None:
            return
        try:
            self._claim.write(entry)
        except OSError:
            self.end()

    def answered(self, record: GenerationRecord, inline: dict[int, bytes]) -> bool:
        """Step 3: the answer kept before any image is fetched, with the
        bytes of the images that came inline. False when the journal could
        not keep it: then nothing is kept."""
        self.entry.outcome, self.entry.record = "answered", record
        if self._claim is None:
            return False
        try:
            self._claim.write(self.entry)
            for position, data in inline.items():
                self._claim.stash(position, data)
        except OSError:
            self.end()
            return False
        return True

    def update(self) -> None:
        """Step 4: an image is about to be named, or is saved: the entry
        says so. A failure is said once, and stops nothing."""
        with self._lock:
            if self._claim is None:
                return
            try:
                self._claim.write(self.entry)
            except OSError as ex:
                failure = f"Could not update the recovery journal: {ex.strerror or ex}"
                if failure != self._failure:
                    notify(failure)
                self._failure = failure
            else:
                self._failure = None

    def stashed(self, position: int) -> Path | None:
        """The kept bytes of an image that came inline, if there are any."""
        if self._claim is None:
            return None
        path = self._claim.stashed(position)
        return path if path.exists() else None

    def unstash(self, position: int) -> None:
        if self._claim is not None:
            self._claim.stashed(position).unlink(missing_ok=True)

    def keep(self) -> None:
        """Left for ``download``: the entry stays, and this process lets go."""
        if self._claim is not None:
            self._claim.release()
            self._claim = None

    def end(self) -> None:
        """Nothing is left to finish: the entry, and what it kept, go."""
        if self._claim is not None:
            self._claim.remove()
            self._claim = None

    def stopped(self) -> None:
        """Stopped (Ctrl-C, SIGTERM) while the request was prepared or under
        way: said in one line, and kept if it may have been charged."""
        if self._claim is None:
            return
        if self.entry.outcome == "prepared":
            self.end()
            notify("Stopped before the request was sent; nothing was charged")
            return
        self.keep()
        notify(
            "Stopped while waiting for the API; it may still make the images "
            "and charge for them. See what became of them with: "
            + command("llm", "imagen4", "download", self.id)
        )

    def settle(self, client: api.ApiClient | None) -> Settled:
        """An entry that was never answered, settled by what is known of it:
        never sent (still prepared), or what the API's log says."""
        if self.entry.outcome == "prepared":
            self.end()
            return Settled("it was never sent, so nothing was made or charged")
        if client is None:
            self.keep()
            return Settled(
                "its answer was lost, and the API's log could not be asked "
                "without a key",
                True,
            )
        return _settle_sent(self, client)

    # -- after the generation ------------------------------------------------

    def over(self, record: GenerationRecord, logged_later: bool) -> None:
        """The generation is over. Its entry stays for ``download`` while an
        image is not saved; otherwise it goes at once, or, when
        ``logged_later``, once its turn is logged (see ``logged``), so that
        a process stopped first leaves ``download`` to log it."""
        if record.unfinished():
            self.keep()
        elif not logged_later:
            self.end()
        elif self._claim is not None:
            with _awaiting_lock:
                _awaiting[self.id] = self


def _held(generation_id: str) -> journal.Claim:
    try:
        claim = journal.claim(generation_id)
    except OSError as ex:
        raise Busy(f"{generation_id}: {ex.strerror or ex}; left as it is") from None
    if claim is None:
        raise Busy(f"{generation_id}: another process is saving it now")
    return claim


_awaiting: dict[str, Tracked] = {}
_awaiting_lock = threading.Lock()


def logged(generation_id: str, ok: bool = True) -> None:
    """Step 5: the turn is logged (``ok``), or could not be: the entry goes,
    or stays for ``download`` to log it later."""
    with _awaiting_lock:
        tracked = _awaiting.pop(generation_id, None)
    if tracked is None:
        return
    if ok:
        tracked.end()
    else:
        tracked.keep()


def logged_in(generation_id: str, path: Path) -> None:
    """A generation still in the journal that was not to be logged (the
    Python API) has now been logged, in ``path``: ``download`` records it
    there."""
    entry = journal.load(generation_id)
    if entry is None or entry.log_to is not None:
        return
    with journal.claimed(generation_id) as claim:
        entry = claim.load() if claim else None
        if claim is not None and entry is not None and entry.log_to is None:
            entry.log_to = str(path)
            claim.write(entry)


def keeps(generation_id: str) -> bool:
    """Whether the journal holds this generation."""
    return journal.load(generation_id) is not None


# -- a lost answer -------------------------------------------------------------


def moment(text: str | None) -> datetime.datetime | None:
    try:
        parsed = datetime.datetime.fromisoformat(text or "")
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def sent_of(entry: journal.Entry) -> ledger.Sent | None:
    """The request an entry is waiting on, as the log is asked about it."""
    if not entry.client_request_id:
        return None
    first = moment(entry.sent_utc) or moment(entry.created_utc)
    if first is None:
        return None
    api_model = entry.record.request.get("model") if entry.record else None
    if not isinstance(api_model, str):
        from . import specs

        spec = specs.SPECS_BY_ID.get(entry.model)
        if spec is None:
            return None
        api_model = spec.api_id
    return ledger.Sent(
        client_request_id=entry.client_request_id,
        api_model=api_model,
        first=first,
        last=moment(entry.last_sent_utc) or first,
        attempts=max(1, entry.attempts),
        inference_id=entry.inference_id,
    )


def lost_record(record: GenerationRecord, listed: ledger.Listed) -> GenerationRecord:
    """A generation the log says was charged, whose images never came: each
    image it asked for is lost, at the cost the log gives."""
    count = record.request.get("num_images", 1)
    return record.model_copy(
        update={
            "credits_used": listed.credits,
            "usd_spent": listed.usd,
            "inference_id": listed.inference_id,
            "images": [
                ImageRecord(position=position, status="lost", error=LOST)
                for position in range(count if isinstance(count, int) else 1)
            ],
        },
        deep=True,
    )


def lost(
    tracked: Tracked, client: api.ApiClient, ex: errors.UnknownOutcome
) -> LostAnswer:
    """An answer lost on the way: the log asked, the entry settled by it, and
    the error that says so."""
    tracked.entry.inference_id = ex.inference_id
    settled = _settle_sent(tracked, client)
    return LostAnswer(f"{ex}; {settled.note}. Nothing was sent again.", settled.listed)


def _settle_sent(tracked: Tracked, client: api.ApiClient) -> Settled:
    later = command("llm", "imagen4", "status", tracked.id)
    sent = sent_of(tracked.entry)
    if sent is None:
        tracked.end()
        return Settled(
            "the request's answer was lost, and what it became cannot be asked"
        )
    try:
        listed = ledger.find(client, sent)
    except errors.ApiError as ex:
        tracked.keep()
        return Settled(
            f"the API's log could not be asked ({ex}); ask later with: {later}", True
        )
    if listed is None:
        if datetime.datetime.now(datetime.UTC) - sent.last > UNLISTED_HORIZON:
            tracked.end()
            return Settled(
                "the API's log has not listed it a day after it was sent, so "
                "it recorded no charge for it; nothing to finish"
            )
        tracked.keep()
        return Settled(
            "the API's log does not list it yet, so whether it was charged is "
            f"not known yet; ask later with: {later}",
            True,
        )
    if not listed.charged:
        tracked.end()
        return Settled(listed.line(), listed=listed)
    return _record_lost(tracked, listed)


def _record_lost(tracked: Tracked, listed: ledger.Listed) -> Settled:
    entry = tracked.entry
    line = f"{listed.line()}, but its images never arrived and cannot be fetched"
    if entry.record is None or not entry.log_to:
        tracked.end()
        return Settled(line, listed=listed)
    from . import index

    lost = entry.model_copy(
        update={"record": lost_record(entry.record, listed)}, deep=True
    )
    try:
        index.record_finished(Path(entry.log_to), lost)
    except Exception as ex:  # noqa: BLE001 - the entry stays to record it later
        tracked.keep()
        return Settled(
            f"{line}; it could not be recorded in {entry.log_to}: {ex}", True, listed
        )
    tracked.end()
    return Settled(f"{line}; it is in the history as lost", listed=listed)


def not_logged_line(
    generation_id: str,
    record: GenerationRecord,
    ex: Exception,
    database: Path | None = None,
) -> str:
    """What a logs database that could not be written leaves: what is saved,
    and how to log it later: ``download`` from the journal, or else
    ``import`` from the record written into each saved image."""
    saved = len(record.images) - len(record.unsaved())
    line = f"Could not log the turn ({ex}); " + (
        "the images are saved"
        if saved == len(record.images)
        else f"{saved} of {len(record.images)} images are saved"
    )
    if not keeps(generation_id):
        line += ", and the recovery journal could not keep it to log later"
        if not saved:
            return line
        from llm.cli import logs_db_path

        elsewhere = database and database.absolute() != logs_db_path().absolute()
        folders = sorted({str(path.parent) for path in record.saved_paths()})
        return (
            line
            + "; to log it from the images: "
            + command(
                "llm",
                "imagen4",
                "import",
                *folders,
                *(["-d", str(database)] if elsewhere else []),
            )
        )
    return (
        line
        + ", and "
        + command("llm", "imagen4", "download", generation_id)
        + " logs it later"
    )
