"""The fake AI/ML API's service endpoints, as the vendor's OpenAPI documents
publish them (tests/openapi.py): its log of requests (``GET /v2/logs``), its
model catalogue with prices (``GET /v1/models``, keyless, with an ETag) and
the account's balance (``GET /v2/billing``).

Each takes exactly the documented query parameters (anything else is a 400,
so that nothing the plugin sends can be outside the documents), answers the
documented errors, and has every answer checked against the document's
schema before it goes out."""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from . import openapi

CREDITS_PER_USD = 2_000_000  # published
LOG_WINDOW_MAX = datetime.timedelta(days=92)
LOG_RATE = (200, 60.0)  # requests per seconds, published
# The published ids of the Imagen 4 models, with the aliases the catalogue
# gives them.
CATALOGUE = {
    "google/imagen4/preview": ["imagen4/preview"],
    "google/imagen-4.0-generate-001": ["imagen-4.0-generate-001"],
    "google/imagen-4.0-fast-generate-001": ["imagen-4.0-fast-generate-001"],
    "google/imagen-4.0-ultra-generate-001": ["imagen-4.0-ultra-generate-001"],
}


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def iso(moment: datetime.datetime) -> str:
    """A time as the log writes it: ``2026-07-02T03:04:05.000Z``."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class LogRow:
    created: datetime.datetime
    status: str
    model: str
    credits: int
    client_request_id: str | None
    inference_id: str
    request_id: str | None = None
    # Not listed yet: the ledger records a request after its answer.
    hidden: bool = False

    def published(self) -> dict[str, Any]:
        return {
            "created": iso(self.created),
            "status": self.status,
            "origin": "api",
            "model": self.model,
            "cost": {"usd": self.credits / CREDITS_PER_USD, "credits": self.credits},
            "tokens": {"input": 0, "output": 0, "total": 0},
            "request_id": self.request_id,
            "inference_id": self.inference_id,
            "client_request_id": self.client_request_id,
        }


@dataclass
class Service:
    """What the service endpoints hold, and what tests plan for them."""

    log: list[LogRow] = field(default_factory=list)
    # New rows are not listed until ``publish`` (the ledger lags).
    lagging: bool = False
    # By API model: its ``pricing`` section, or None for none. Models not
    # here are priced at the fake's charge per image.
    pricing: dict[str, Any] = field(default_factory=dict)
    balance: float = 123.45
    # By path: answers to give instead of the normal one, first planned
    # first (``status``, ``headers``, ``body`` as bytes).
    faults: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    rate: tuple[int, float] = LOG_RATE
    log_requests: list[float] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def add(self, row: LogRow) -> None:
        row.hidden = self.lagging
        self.log.append(row)

    def publish(self) -> None:
        for row in self.log:
            row.hidden = False


class Refusal(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def _when(name: str, text: str) -> datetime.datetime:
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Refusal(400, f"{name} is not an ISO-8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment


def _window(query: dict[str, Any]) -> tuple[datetime.datetime, datetime.datetime]:
    period, start, end = query.get("period"), query.get("start"), query.get("end")
    if period is not None and (start is not None or end is not None):
        raise Refusal(400, "Give either period or start and end, not both")
    if period is not None:
        match = re.fullmatch(r"([1-9][0-9]*)([hd])", period)
        if not match:
            raise Refusal(400, "period must be a number of hours or days, like 24h")
        unit = "hours" if match[2] == "h" else "days"
        span = datetime.timedelta(**{unit: int(match[1])})
        if span > LOG_WINDOW_MAX:
            raise Refusal(400, "The window is longer than 92 days")
        now = utc_now()
        return now - span, now
    if start is None and end is None:
        raise Refusal(400, "Neither period nor start and end given")
    if start is None or end is None:
        raise Refusal(400, "start and end must be given together")
    since, until = _when("start", start), _when("end", end)
    if until < since:
        raise Refusal(400, "end is earlier than start")
    if until - since > LOG_WINDOW_MAX:
        raise Refusal(400, "The window is longer than 92 days")
    return since, until


def _matches_model(row: LogRow, wanted: list[str]) -> bool:
    bare = row.model.split("/", 1)[-1]
    return any(name in (row.model, bare) for name in wanted)


def logs(service: Service, query: dict[str, list[str]]) -> dict[str, Any]:
    values = _read("/v2/logs", query, service=service)
    since, until = _window(values)
    models = values.get("model") or []
    if len(models) > 50:
        raise Refusal(400, "At most 50 models")
    statuses = values.get("status") or []
    limit, offset = values.get("limit", 50), values.get("offset", 0)
    rows = [
        row
        for row in service.log
        if not row.hidden
        and since <= row.created <= until
        and (not models or _matches_model(row, models))
        and (not statuses or row.status in statuses)
    ]
    # Newest first; rows made in the same instant, the last made first.
    rows = [
        row for _, row in sorted(enumerate(rows), key=lambda p: (p[1].created, p[0]))
    ]
    rows.reverse()
    page = rows[offset : offset + limit]
    return {
        "data": [row.published() for row in page],
        "pagination": {
            "limit": limit,
            "offset": offset,
            "total": len(rows),
            "has_more": offset + len(page) < len(rows),
        },
    }


def billing(service: Service, query: dict[str, list[str]]) -> dict[str, Any]:
    _read("/v2/billing", query, service=service)
    return {"current_balance": service.balance, "currency": "USD"}


def _listed(values: list[str] | None) -> set[str]:
    """A parameter given comma-separated, repeated, or both."""
    return {part for value in values or [] for part in value.split(",") if part}


def models(
    service: Service, query: dict[str, list[str]], served: list[str], usd: float
) -> dict[str, Any]:
    """The catalogue of ``served`` models, each charged ``usd`` an image
    unless ``service.pricing`` says otherwise."""
    values = _read("/v1/models", query, service=service)
    include = _listed(values.get("include"))
    if values.get("details") or "all" in include:
        include = {"pricing", "modalities", "capabilities"}
    wanted = _listed(values.get("id"))
    entries = []
    for model in served:
        aliases = CATALOGUE.get(model, [])
        if wanted and not ({model, *aliases} & wanted):
            continue
        if values.get("type") not in (None, "images"):
            continue
        entry: dict[str, Any] = {
            "id": model,
            "aliases": aliases,
            "type": "images",
            "info": {"name": model.split("/", 1)[-1], "developer": "Google"},
            "tags": ["playground:image"],
        }
        if "modalities" in include:
            entry["modalities"] = {"input": ["text"], "output": ["image"]}
        if "capabilities" in include:
            entry["capabilities"] = []
        if "pricing" in include:
            pricing = service.pricing.get(model, _fixed(usd))
            if pricing is not None:
                entry["pricing"] = pricing
        entries.append(entry)
    return {"object": "list", "data": entries}


def _fixed(usd: float) -> dict[str, Any]:
    return {
        "kind": "fixed",
        "currency": "USD",
        "units": [{"unit": "image", "price": usd, "per": 1}],
    }


def _read(
    path: str, query: dict[str, list[str]], *, service: Service
) -> dict[str, Any]:
    if path == "/v2/logs":
        _rate_limit(service)
    try:
        return openapi.operation(path).read_query(query, openapi.REPEATABLE[path])
    except openapi.BadQuery as ex:
        raise Refusal(400, str(ex)) from None


def _rate_limit(service: Service) -> None:
    most, seconds = service.rate
    now = time.monotonic()
    service.log_requests = [t for t in service.log_requests if now - t < seconds]
    if len(service.log_requests) >= most:
        raise Refusal(429, "Too Many Requests")
    service.log_requests.append(now)


def answer(path: str, body: dict[str, Any], service: Service) -> bytes:
    """The JSON of an answer, once the published schema has checked it."""
    try:
        openapi.operation(path).check_answer(body)
    except Exception as ex:  # noqa: BLE001 - every violation is recorded
        service.violations.append(f"{path}: {ex}")
        raise Refusal(500, "the fake's answer breaks the published schema") from ex
    return json.dumps(body).encode()


def etag(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
