"""Reading the API's answers: every documented shape of a generation's
answer (pydantic models that read an unexpected field as absent rather than
failing the whole answer), the cost in the body or the headers, and error
bodies as one line."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import httpx2
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from . import specs
from .errors import KEY_HELP, ApiError, Declined
from .terminal import one_line

OUT_OF_CREDITS = "err_insufficent_credits"  # sic, as the API spells it


def amount(value: Any) -> float | None:
    """A cost as the API gives it: a finite number, 0 or more; else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


class _Tolerant(BaseModel):
    """A part of an answer: unknown fields ignored, and a field of the wrong
    type read as absent rather than failing the whole answer."""

    model_config = ConfigDict(extra="ignore")


class ImageItem(_Tolerant):
    url: Any = None
    b64_json: Any = None
    # The prompt the image was made from, after enhance_prompt rewrote it.
    prompt: Any = None
    revised_prompt: Any = None


class Usage(_Tolerant):
    credits_used: Any = None
    tokens_used: Any = None
    usd_spent: Any = None


class ErrorObject(_Tolerant):
    name: Any = None
    message: Any = None
    data: Any = None

    def line(self) -> str:
        message = self.message
        if isinstance(message, list):
            message = "; ".join(str(item) for item in message)
        kind = self.data.get("kind") if isinstance(self.data, dict) else None
        text = one_line(str(message or self.name or "an error"))
        if kind == OUT_OF_CREDITS:
            return f"The AI/ML API account is out of credits ({text})"
        return text + (f" ({kind})" if isinstance(kind, str) else "")


class AnswerBody(_Tolerant):
    images: list[Any] | None = None
    data: list[Any] | None = None
    seed: Any = None
    meta: Any = None
    error: Any = None

    @field_validator("images", "data", mode="before")
    @classmethod
    def _list(cls, value: Any) -> Any:
        return value if isinstance(value, list) else None


@dataclass
class ImageRef:
    position: int
    url: str | None = None
    b64_json: str | None = None
    enhanced_prompt: str | None = None
    # Why the API's entry for this image cannot be used, if it cannot.
    problem: str | None = None


@dataclass
class Answer:
    images: list[ImageRef]
    seed: int | None = None
    credits_used: float | None = None
    usd_spent: float | None = None
    inference_id: str | None = None


def _image(position: int, item: Any) -> ImageRef:
    if not isinstance(item, dict):
        return ImageRef(position, problem="the API's entry for it is not an object")
    try:
        parsed = ImageItem.model_validate(item)
    except ValidationError:
        return ImageRef(position, problem="the API's entry for it is not readable")
    url = parsed.url if isinstance(parsed.url, str) and parsed.url else None
    b64 = (
        parsed.b64_json
        if isinstance(parsed.b64_json, str) and parsed.b64_json
        else None
    )
    enhanced = next(
        (p for p in (parsed.prompt, parsed.revised_prompt) if isinstance(p, str) and p),
        None,
    )
    problem = None
    if url is None and b64 is None:
        problem = (
            "the API gave no usable URL"
            if parsed.url is not None
            else "the API answered with no image"
        )
    return ImageRef(position, url, b64, enhanced, problem)


def parse_answer(payload: Any, headers: httpx2.Headers | dict[str, str]) -> Answer:
    """Read any documented answer: ``images[]`` with a top-level ``seed``, or
    ``data[]`` with ``url``/``b64_json`` (and the rewritten ``prompt``), or
    both with one empty; the cost from ``meta.usage`` (``credits_used``,
    ``tokens_used``, ``usd_spent``) or else the ``x-aimlapi-*`` headers. An
    ``error`` object, even in a 2xx answer, is an ApiError."""
    headers = httpx2.Headers(headers)
    if not isinstance(payload, dict):
        raise ApiError("The API answered with something that is not a JSON object")
    body = AnswerBody.model_validate(payload)
    error = _error_object(payload)
    if error is not None:
        raise Declined(f"The AI/ML API refused the request: {error.line()}")
    items = body.data or body.images or []
    if not items:
        raise ApiError("The API answered without any image (was the prompt filtered?)")
    usage = Usage()
    if isinstance(body.meta, dict) and isinstance(body.meta.get("usage"), dict):
        usage = Usage.model_validate(body.meta["usage"])
    credits = amount(usage.credits_used)
    if credits is None:
        credits = amount(usage.tokens_used)
    if credits is None:
        credits = amount(headers.get("x-aimlapi-credits-used"))
    usd = amount(usage.usd_spent)
    if usd is None:
        usd = amount(headers.get("x-aimlapi-usd-spent"))
    seed = body.seed
    valid_seed = (
        isinstance(seed, int)
        and not isinstance(seed, bool)
        and 0 <= seed <= specs.SEED_MAX
    )
    return Answer(
        images=[_image(position, item) for position, item in enumerate(items)],
        seed=seed if valid_seed else None,
        credits_used=credits,
        usd_spent=usd,
        inference_id=headers.get("x-inference-id"),
    )


def parse_json(content: bytes) -> Any:
    """The JSON value of a body, or None. A number JSON cannot hold (NaN,
    infinity) makes it not JSON."""
    try:
        return json.loads(
            content.decode("utf-8", "replace"), parse_constant=_no_constant
        )
    except (ValueError, RecursionError):
        return None


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def _error_object(payload: dict[str, Any]) -> ErrorObject | None:
    """The error an answer carries: an ``error`` object (or text), or the
    answer itself being one (``name``, ``message``, ``data.kind``)."""
    error = payload.get("error")
    if isinstance(error, dict):
        return ErrorObject.model_validate(error)
    if error is not None:
        return ErrorObject(message=error)
    data = payload.get("data")
    if isinstance(data, dict) and "kind" in data:
        return ErrorObject.model_validate(payload)
    return None


def error_message(response: httpx2.Response, body: bytes) -> str:
    """One line from an error answer: status, the server's message (a list
    of messages joined, with the error's kind), its requestId."""
    message, request_id = "", None
    payload = parse_json(body)
    if isinstance(payload, dict):
        error = _error_object(payload)
        if error is None:
            error = ErrorObject(message=payload.get("message"))
        message = error.line() if error.message or error.name or error.data else ""
        request_id = payload.get("requestId")
    else:
        message = body.decode("utf-8", "replace")
    line = f"AI/ML API error {response.status_code}"
    if message := one_line(message):
        line += f": {message}"
    if isinstance(request_id, str):
        line += f" (requestId {one_line(request_id, 80)})"
    if response.status_code == 401:
        line += f" - check your key: {KEY_HELP}"
    return line
