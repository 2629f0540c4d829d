"""The API's model catalogue (``GET /v1/models``, keyless): which of the
Imagen 4 models it serves, and what each costs an image, as published.

The catalogue is asked once for the four models (``id=`` each, with
``include=pricing``), kept in llm's user folder with the answer's ETag, and
asked again at most once a day, with ``If-None-Match`` (a 304 keeps what is
kept). ``fresh`` asks now, as ``models --check`` does.

A price an image is read only from a ``fixed`` price with one unit named
``image``: its ``price`` for ``per`` images, the two always read together.
The published documents show no image model's units, so that shape is an
assumption until a real answer shows otherwise. Any other shape (a
``variants`` or ``variable`` price, another unit, a price that cannot be
read, or none) is unknown, never zero."""

from __future__ import annotations

import datetime
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llm
from pydantic import BaseModel, ConfigDict, ValidationError

from . import answers, api, errors, specs

MODELS_PATH = "/v1/models"
CREDITS_PER_USD = 2_000_000  # published: $1 is 2,000,000 credits
REFRESH = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Listing:
    """One model as the catalogue lists it."""

    api_id: str
    served: bool
    usd_per_image: float | None
    # Why the price an image is not known, when it is not.
    unknown: str | None = None

    def price_line(self) -> str:
        if self.usd_per_image is None:
            return f"unknown ({self.unknown})"
        return f"{usd_text(self.usd_per_image)} an image"


def usd_text(usd: float) -> str:
    """Dollars as a price is read: cents, or the fraction of a cent there is."""
    if round(usd, 2) == round(usd, 8):
        return f"${usd:.2f}"
    return "$" + f"{usd:.8f}".rstrip("0")


def credits(usd: float) -> float:
    return usd * CREDITS_PER_USD


class _Kept(BaseModel):
    """What is kept of the last answer."""

    model_config = ConfigDict(extra="ignore")

    base_url: str
    etag: str | None = None
    checked_utc: str
    entries: list[dict[str, Any]]


def _path() -> Path:
    return llm.user_dir() / "imagen4" / "catalogue.json"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _load() -> _Kept | None:
    try:
        with open(_path(), "rb") as f:
            kept = _Kept.model_validate_json(f.read(api.MAX_SERVICE_BYTES))
    except (OSError, ValidationError, ValueError):
        return None
    return kept if kept.base_url == api.base_url() else None


def _keep(kept: _Kept) -> None:
    """Written whole or not at all; a catalogue that cannot be kept is asked
    for again next time."""
    path = _path()
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(kept.model_dump_json())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


def _age(kept: _Kept) -> datetime.timedelta:
    try:
        checked = datetime.datetime.fromisoformat(kept.checked_utc)
    except ValueError:
        return REFRESH
    return _now() - checked if checked.tzinfo else REFRESH


def _ask(kept: _Kept | None) -> _Kept:
    params = [("include", "pricing")] + [("id", spec.api_id) for spec in specs.SPECS]
    client = api.ApiClient("")
    headers = {"If-None-Match": kept.etag} if kept and kept.etag else {}
    response = client.get(MODELS_PATH, params, keyless=True, headers=headers)
    now = _now().isoformat()
    if response.status_code == 304 and kept is not None:
        return kept.model_copy(update={"checked_utc": now})
    if not response.is_success:
        raise errors.ApiError(answers.error_message(response, response.content))
    payload = answers.parse_json(response.content)
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        raise errors.ApiError("The API's model list is not a list of models")
    return _Kept(
        base_url=api.base_url(),
        etag=response.headers.get("etag"),
        checked_utc=now,
        entries=[
            {key: entry.get(key) for key in ("id", "aliases", "pricing")}
            for entry in data
            if isinstance(entry, dict)
        ],
    )


def listings(*, fresh: bool = False) -> dict[str, Listing]:
    """Each model's listing, by its API id: from what is kept while it is
    less than a day old (unless ``fresh``), else from the API. ApiError
    when the catalogue cannot be read and nothing is kept."""
    kept = _load()
    if kept is None or fresh or _age(kept) >= REFRESH:
        try:
            kept = _ask(kept)
        except errors.ApiError:
            if kept is None or fresh:
                raise
        else:
            _keep(kept)
    return {spec.api_id: _listing(spec.api_id, kept.entries) for spec in specs.SPECS}


def _listing(api_id: str, entries: list[dict[str, Any]]) -> Listing:
    for entry in entries:
        aliases = entry.get("aliases")
        names = {entry.get("id"), *(aliases if isinstance(aliases, list) else [])}
        if api_id in names:
            usd, unknown = per_image(entry.get("pricing"))
            return Listing(api_id, True, usd, unknown)
    return Listing(api_id, False, None, "not served")


def per_image(pricing: Any) -> tuple[float | None, str | None]:
    """The price an image a ``pricing`` section gives, or None and why."""
    if not isinstance(pricing, dict):
        return None, "none is published"
    kind = pricing.get("kind")
    if kind == "variants":
        return None, "it depends on the request's parameters"
    if kind == "variable":
        return None, "it is known only after the request"
    if kind != "fixed" or pricing.get("currency", "USD") != "USD":
        return None, "it is not in a form the plugin reads"
    units = pricing.get("units")
    images = [
        unit
        for unit in (units if isinstance(units, list) else [])
        if isinstance(unit, dict) and "image" in (unit.get("unit"), unit.get("name"))
    ]
    if len(images) != 1:
        return None, "it is not given per image"
    price, per = (
        answers.amount(images[0].get("price")),
        answers.amount(images[0].get("per")),
    )
    if not price or not per:
        return None, "it is not in a form the plugin reads"
    return price / per, None


def prices() -> dict[str, float | None]:
    """Each model's price an image in dollars, by llm model id, None where
    it is not known (nor when the catalogue cannot be read)."""
    try:
        listed = listings()
    except errors.ApiError:
        return {spec.model_id: None for spec in specs.SPECS}
    return {spec.model_id: listed[spec.api_id].usd_per_image for spec in specs.SPECS}
