"""What the API itself recorded: its log of requests (``GET /v2/logs``),
which tells what became of a request whose answer was lost, and the
account's balance (``GET /v2/billing``).

The log has no filter by client request id, and it needs a window. A
request is found by reading a narrow window around the moments it was sent,
for its model only, a hundred rows a page (newest first) until it is found
or the log has no more, and matching its ``client_request_id`` here (or its
``inference_id``, when the answer's headers arrived). A lookup reads at most
MOST_PAGES pages.

The log lists a request once its answer has been delivered, so a request
that has just ended may not be listed yet: that says nothing about its
cost. Every attempt that went out is a row; the attempts the API answered
with an error (a 429, a 5xx) are rows that failed and cost nothing."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from . import answers, api, errors

LOGS_PATH = "/v2/logs"
BILLING_PATH = "/v2/billing"
PAGE = 100  # the most the log gives a page
MOST_PAGES = 20
# Room on either side of the moments a request was sent, for the clocks of
# this machine and the API's.
MARGIN = datetime.timedelta(minutes=10)


class _Row(BaseModel):
    """One request in the log, read tolerantly: a field of the wrong type
    is as good as absent."""

    model_config = ConfigDict(extra="ignore")

    status: Any = None
    client_request_id: Any = None
    inference_id: Any = None
    cost: Any = None


@dataclass(frozen=True)
class Sent:
    """A request to look for, as the recovery journal knows it."""

    client_request_id: str
    api_model: str
    # When the first and the last attempt went out.
    first: datetime.datetime
    last: datetime.datetime
    # How many attempts went out: all but the last were answered with an
    # error, and each of those is a failed row.
    attempts: int = 1
    inference_id: str | None = None


@dataclass(frozen=True)
class Listed:
    """What the log says of a request."""

    status: str  # succeeded or failed
    credits: float | None
    usd: float | None
    inference_id: str | None

    @property
    def charged(self) -> bool:
        return self.status == "succeeded"

    def line(self) -> str:
        if not self.charged:
            return "the API's log says it failed, and failed requests cost nothing"
        cost = describe_cost(self.credits, self.usd)
        return "the API's log says it succeeded" + (f", costing {cost}" if cost else "")


def describe_cost(credits: float | None, usd: float | None) -> str:
    parts = []
    if credits is not None:
        parts.append(f"{credits:g} credits")
    if usd is not None:
        parts.append(f"${usd:.4f}")
    return " / ".join(parts)


def _utc(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _listed(row: _Row) -> Listed:
    cost = row.cost if isinstance(row.cost, dict) else {}
    return Listed(
        status="succeeded" if row.status == "succeeded" else "failed",
        credits=answers.amount(cost.get("credits")),
        usd=answers.amount(cost.get("usd")),
        inference_id=row.inference_id if isinstance(row.inference_id, str) else None,
    )


def find(client: api.ApiClient, sent: Sent) -> Listed | None:
    """What the log says of ``sent``; None while it does not list it.
    ApiError when the log cannot be asked, or lists more requests of that
    model around then than a lookup reads."""
    window = [
        ("start", _utc(sent.first - MARGIN)),
        ("end", _utc(sent.last + MARGIN)),
        ("model", sent.api_model),
        ("limit", str(PAGE)),
    ]
    failed: list[Listed] = []
    for page in range(MOST_PAGES):
        payload = client.get_json(LOGS_PATH, [*window, ("offset", str(page * PAGE))])
        data = payload.get("data") if isinstance(payload, dict) else None
        pagination = payload.get("pagination") if isinstance(payload, dict) else None
        for item in data if isinstance(data, list) else []:
            row = _Row.model_validate(item) if isinstance(item, dict) else _Row()
            if sent.inference_id is not None:
                if row.inference_id == sent.inference_id:
                    return _listed(row)
            elif row.client_request_id == sent.client_request_id:
                if row.status == "succeeded":
                    return _listed(row)
                failed.append(_listed(row))
        if not (isinstance(pagination, dict) and pagination.get("has_more") is True):
            break
    else:
        raise errors.ApiError(
            f"the API's log lists more than {MOST_PAGES * PAGE} requests of "
            f"{sent.api_model} around then; read it at the API's dashboard"
        )
    # Rows for every attempt, none of them charged: the last one failed too.
    if sent.inference_id is None and len(failed) >= sent.attempts:
        return failed[0]
    return None


def balance(client: api.ApiClient) -> float:
    """The account's balance in dollars."""
    payload = client.get_json(BILLING_PATH, [])
    amount = payload.get("current_balance") if isinstance(payload, dict) else None
    currency = payload.get("currency", "USD") if isinstance(payload, dict) else None
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise errors.ApiError("The API's billing answer has no balance")
    if currency != "USD":
        raise errors.ApiError("The API's billing answer is not in dollars")
    return float(amount)
