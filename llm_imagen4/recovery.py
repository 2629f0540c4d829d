"""What became of a request whose answer never arrived, and settling its
journal entry by it.

Only the API's log can tell: ``ledger.find`` looks the request up. Three
outcomes, said plainly:

- listed: it failed (nothing was charged, and the entry goes), or it
  succeeded, so it was charged though its images never arrived: the
  generation goes into the history where its turn would have gone, its
  images marked ``lost``, with the cost the log gives, and the entry goes;
- not listed yet: the log lists a request once its answer is delivered, so
  whether it was charged is not known yet, and the entry stays;
- never sent: decided only by the journal, when the entry is still
  ``prepared`` (the process stopped before the request went out)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import llm

from . import api, errors, journal, ledger
from .record import GenerationRecord, ImageRecord
from .terminal import command

# A request the log still does not list this long after it was sent was
# never recorded, so nothing was charged for it.
UNLISTED_HORIZON = datetime.timedelta(days=1)
LOST = "its answer never arrived, and the API keeps no copy of its images to fetch"


@dataclass
class Settled:
    """What settling a sent entry did: a line to say, whether the entry is
    still in the journal for a later try, and what the log said (None when
    it was not asked, or does not list it)."""

    note: str
    left: bool = False
    listed: ledger.Listed | None = None


class LostAnswer(llm.ModelError):
    """A generation whose request went out and whose answer never arrived
    whole: what the API's log said of it, if it said anything."""

    def __init__(self, message: str, listed: ledger.Listed | None):
        super().__init__(message)
        self.listed = listed


def moment(text: str | None) -> datetime.datetime | None:
    try:
        moment = datetime.datetime.fromisoformat(text or "")
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


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


def _drop(claim: journal.Claim | None) -> None:
    if claim is not None:
        claim.remove()


def _keep(claim: journal.Claim | None) -> None:
    if claim is not None:
        claim.release()


def settle_sent(
    claim: journal.Claim | None, entry: journal.Entry, client: api.ApiClient
) -> Settled:
    """Ask the API's log about a sent entry, and settle the entry by what it
    says: the entry goes, or stays (its claim released). Without a claim
    (the journal could not be written) the same is said and recorded."""
    later = command("llm", "imagen4", "status", entry.id)
    sent = sent_of(entry)
    if sent is None:
        _drop(claim)
        return Settled(
            "the request's answer was lost, and what it became cannot be asked"
        )
    try:
        listed = ledger.find(client, sent)
    except errors.ApiError as ex:
        _keep(claim)
        return Settled(
            f"the API's log could not be asked ({ex}); ask later with: {later}", True
        )
    if listed is None:
        if datetime.datetime.now(datetime.UTC) - sent.last > UNLISTED_HORIZON:
            _drop(claim)
            return Settled(
                "the API's log has not listed it a day after it was sent, so "
                "it recorded no charge for it; nothing to finish"
            )
        _keep(claim)
        return Settled(
            "the API's log does not list it yet, so whether it was charged is "
            f"not known yet; ask later with: {later}",
            True,
        )
    if not listed.charged:
        _drop(claim)
        return Settled(listed.line(), listed=listed)
    return _record_lost(claim, entry, listed)


def _record_lost(
    claim: journal.Claim | None, entry: journal.Entry, listed: ledger.Listed
) -> Settled:
    line = f"{listed.line()}, but its images never arrived and cannot be fetched"
    if entry.record is None or not entry.log_to:
        _drop(claim)
        return Settled(line, listed=listed)
    from . import history

    lost = entry.model_copy(
        update={"record": lost_record(entry.record, listed)}, deep=True
    )
    try:
        history.record_finished(Path(entry.log_to), lost)
    except Exception as ex:  # noqa: BLE001 - the entry stays to record it later
        _keep(claim)
        return Settled(
            f"{line}; it could not be recorded in {entry.log_to}: {ex}", True, listed
        )
    _drop(claim)
    return Settled(f"{line}; it is in the history as lost", listed=listed)


def never_sent(claim: journal.Claim) -> Settled:
    """A prepared entry whose process is gone: nothing went out."""
    claim.remove()
    return Settled("it was never sent, so nothing was made or charged")
