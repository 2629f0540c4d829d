"""The AI/ML API client: one POST a generation, retried only while no image
can have been paid for; every shape of answer the API is documented to give;
the image host; and the GET of the service endpoints (the API's log, its
model catalogue, the balance), each answer read within a cap.

The key goes in the ``Authorization`` header to the base URL and nowhere
else: the API client never follows a redirect, and the image client never
has the key."""

from __future__ import annotations

import contextvars
import email.utils
import functools
import json
import math
import os
import random
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx2
import llm
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from . import specs
from .terminal import notify, printable, scrub

DEFAULT_BASE_URL = "https://api.aimlapi.com"
GENERATIONS_PATH = "/v1/images/generations"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
BACKOFF_BASE = 1.0
# The longest wait between two attempts. A server that asks for longer ends
# the attempt, with a message that says when to try again.
BACKOFF_CAP = 60.0
CONNECT_TIMEOUT = 10.0
# Each image's download, retries included.
DOWNLOAD_DEADLINE = 120.0
DOWNLOAD_ATTEMPTS = 3
DOWNLOAD_BACKOFF = 0.2
MAX_REDIRECTS = 5
MAX_IMAGE_BYTES = 64 * 1024 * 1024
# Four inline images of the largest size, base64, with room to spare.
MAX_ANSWER_BYTES = 4 * MAX_IMAGE_BYTES
# A page of the log, the model catalogue, the balance: a few kB each.
MAX_SERVICE_BYTES = 4 * 1024 * 1024
SERVICE_ATTEMPTS = 4
CHUNK = 65536
KEY_HELP = "set one with 'llm keys set aimlapi' or the AIMLAPI_KEY environment variable"
OUT_OF_CREDITS = "err_insufficent_credits"  # sic, as the API spells it
T = TypeVar("T")


class ApiError(llm.ModelError):
    """A failure the user should read: one line, never the key."""


class Declined(ApiError):
    """The API answered with an error: nothing was made, nothing charged."""


class UnknownOutcome(ApiError):
    """The request went out and no whole, readable answer came back: it may
    have been made and charged, which only the API's log can say."""

    def __init__(
        self, message: str, client_request_id: str, inference_id: str | None = None
    ):
        super().__init__(message)
        self.client_request_id = client_request_id
        # Set when the answer's headers arrived: the log's row has it too.
        self.inference_id = inference_id


class DownloadError(ApiError):
    """An image could not be fetched; another try may work."""


class Refused(DownloadError):
    """An image that will not be saved however often it is fetched."""


def base_url() -> str:
    url = (os.environ.get("AIMLAPI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    if not url.startswith(("https://", "http://")):
        raise ApiError(f"AIMLAPI_BASE_URL must start with https:// or http://: {url}")
    return url


def clean_key(key: str | None) -> str:
    """The key as it is sent: without surrounding whitespace, which a key
    read from a file often carries, and only printable ASCII, as a header
    can hold. A bad key is named, never shown."""
    if not key or not key.strip():
        raise ApiError(f"No AI/ML API key: {KEY_HELP}")
    key = key.strip()
    if not all(0x21 <= ord(char) <= 0x7E for char in key):
        raise ApiError(
            "The AI/ML API key has a character no key has (a space, a control "
            f"character or a non-ASCII letter): {KEY_HELP}"
        )
    return key


def client_request_id(generation_id: str) -> str:
    """The ``X-Client-Request-Id`` of a generation: 1 to 128 characters of
    ``[A-Za-z0-9._:-]``, or the API drops it."""
    return ("llm-imagen4:" + re.sub(r"[^A-Za-z0-9._:-]", "-", generation_id))[:128]


def _one_line(text: str, limit: int = 300) -> str:
    """The server's text as one printable line: it reaches terminals and
    chat models through llm, past the plugin's own commands."""
    text = printable(" ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- answers ------------------------------------------------------------------


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
        text = _one_line(str(message or self.name or "an error"))
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
    if message := _one_line(message):
        line += f": {message}"
    if isinstance(request_id, str):
        line += f" (requestId {_one_line(request_id, 80)})"
    if response.status_code == 401:
        line += f" - check your key: {KEY_HELP}"
    return line


# -- reading answers ----------------------------------------------------------


class Oversize(ApiError):
    """An answer larger than any answer of its kind can be."""


def decoded(response: httpx2.Response, cap: int) -> Iterator[bytes]:
    """The body of ``response`` as it arrives, decompressed here rather than
    by httpx2, so that at most ``cap`` bytes are ever inflated however
    small the compressed answer (a gzip bomb). An encoding the plugin did
    not ask for is refused."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "", "gzip", "x-gzip", "deflate"):
        raise ApiError(
            f"an answer in an encoding not asked for ({_one_line(encoding, 40)})"
        )
    inflate = None
    if encoding in ("gzip", "x-gzip"):
        inflate = zlib.decompressobj(wbits=31)
    elif encoding == "deflate":
        inflate = zlib.decompressobj()
    total = 0
    for raw in response.iter_raw():
        pending = raw
        while pending:
            if inflate is None:
                chunk, pending = pending, b""
            else:
                try:
                    chunk = inflate.decompress(pending, cap + 1 - total)
                except zlib.error:
                    raise ApiError("an answer whose compression is broken") from None
                pending = inflate.unconsumed_tail
            total += len(chunk)
            if total > cap:
                raise Oversize(f"an answer larger than {cap // 1024} kB")
            if chunk:
                yield chunk
            if inflate is not None and not chunk:
                break


class _Announcing(httpx2.SyncByteStream):
    """A request body that calls ``going`` just before its first byte is
    written, once the connection is made and the headers are out: the
    moment a request is on its way, which no event hook tells."""

    def __init__(self, body: bytes, going: Callable[[], None]):
        self.body, self.going = body, going

    def __iter__(self) -> Iterator[bytes]:
        self.going()
        yield self.body


# -- waiting ------------------------------------------------------------------


class WaitTooLong(ApiError):
    pass


def retry_delay(
    attempt: int,
    headers: httpx2.Headers | dict[str, str],
    *,
    rng: Callable[[], float] = random.random,
    now: Callable[[], float] = time.time,
) -> float:
    """Seconds to wait before the next attempt: what the server asked for
    (``retry-after-ms``, ``Retry-After`` in seconds or as an HTTP date), or
    else capped exponential backoff with jitter. A wait that is not a finite
    number of seconds counts as too long."""
    headers = httpx2.Headers(headers)
    asked = None
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            asked = float(ms) / 1000
        except ValueError:
            pass
    if asked is None and (value := headers.get("retry-after")) is not None:
        try:
            asked = float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError, OverflowError):
                when = None
            if when is not None and when.tzinfo is not None:
                asked = when.timestamp() - now()
    if asked is not None:
        return max(0.0, asked) if math.isfinite(asked) else math.inf
    backoff = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))
    return backoff * (0.5 + rng() / 2)


class Pacer:
    """Pacing shared by the requests of a batch. A 429, or any answer with a
    Retry-After, halves how many requests may be in flight and holds every
    request back until the wait is over, each with a jitter of its own so
    that they do not all wake at once; each success adds one back."""

    def __init__(
        self,
        most: int,
        *,
        now: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        notify: Callable[[str], None] = notify,
    ):
        self.most = self.limit = most
        self.not_before = 0.0
        self.spread = 0.0
        self.now, self.sleep, self.rng, self.notify = now, sleep, rng, notify
        self._lock = threading.Lock()

    def before_send(self) -> None:
        jitter = self.rng() * self.spread
        while (wait := self.not_before + jitter - self.now()) > 0:
            self.sleep(wait)

    def slow_down(self, delay: float) -> None:
        with self._lock:
            self.not_before = max(self.not_before, self.now() + delay)
            self.spread = min(2.0, max(0.05, delay / 4))
            limit = max(1, self.limit // 2)
            if limit < self.limit:
                self.notify(f"Slowing down to {limit} requests in flight")
            self.limit = limit

    def succeeded(self) -> None:
        with self._lock:
            self.limit = min(self.most, self.limit + 1)


# The pacer of the batch this request belongs to, if any.
PACER: contextvars.ContextVar[Pacer | None] = contextvars.ContextVar(
    "imagen4_pacer", default=None
)


# -- the API --------------------------------------------------------------------


@functools.cache
def api_client() -> httpx2.Client:
    """One client a process: a new one costs some 20 ms of loading
    certificates, and a shared one keeps its connections. The key is given
    per request, and redirects are never followed."""
    return httpx2.Client(
        follow_redirects=False, headers={"Accept-Encoding": "gzip, deflate"}
    )


@dataclass
class ApiClient:
    key: str
    attempts: int = specs.DEFAULT_ATTEMPTS
    # Seconds for the whole answer, retries and waits included.
    timeout: float = specs.DEFAULT_TIMEOUT
    sleep: Callable[[float], None] = time.sleep
    notify: Callable[[str], None] = notify
    http: httpx2.Client = field(default_factory=api_client)

    def _headers(self, request_id: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.key}"}
        if request_id:
            headers["X-Client-Request-Id"] = request_id
        return headers

    def _error(self, text: str) -> str:
        return scrub(text, self.key)

    def generate(
        self,
        body: dict[str, Any],
        request_id: str,
        going: Callable[[], None] = lambda: None,
    ) -> Answer:
        """Send one generation, retrying while nothing can have been paid for:
        a refused connection, or an answer of 429 or 5xx. Every attempt
        carries the same body and ``request_id``; ``going`` is called as
        each attempt goes out."""
        url = base_url() + GENERATIONS_PATH
        deadline = time.monotonic() + self.timeout
        pacer = PACER.get()
        for attempt in range(1, self.attempts + 1):
            last = attempt == self.attempts
            if pacer:
                pacer.before_send()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ApiError(
                    f"No answer from the API within {self.timeout:g} s "
                    "(--timeout); nothing more was sent"
                )
            seen: dict[str, str] = {}
            try:
                status, headers, content = self._post(
                    url, body, request_id, remaining, going, seen
                )
            except (httpx2.ConnectError, httpx2.ConnectTimeout) as ex:
                # Nothing reached the server: safe to send again.
                reason = self._error(
                    f"could not connect to {url}: {_one_line(str(ex))}"
                )
                if last:
                    raise ApiError(reason[0].upper() + reason[1:]) from None
                self._wait(attempt, retry_delay(attempt, {}), reason, deadline)
                continue
            except (httpx2.TimeoutException, _Deadline):
                raise UnknownOutcome(
                    f"No whole answer from the API within {self.timeout:g} s "
                    "after the request was sent",
                    request_id,
                    seen.get("inference_id"),
                ) from None
            except Oversize:
                raise UnknownOutcome(
                    "The API's answer is larger than any answer can be",
                    request_id,
                    seen.get("inference_id"),
                ) from None
            except (httpx2.HTTPError, ApiError) as ex:
                raise UnknownOutcome(
                    self._error(
                        "The connection to the API failed after the request was "
                        f"sent ({_one_line(str(ex)) or type(ex).__name__})"
                    ),
                    request_id,
                    seen.get("inference_id"),
                ) from None
            response = httpx2.Response(status, headers=headers)
            if 200 <= status < 300:
                if pacer:
                    pacer.succeeded()
                payload = parse_json(content)
                try:
                    if payload is None:
                        raise ApiError(
                            f"The API answered {status} with a body that is not JSON"
                        )
                    return parse_answer(payload, headers)
                except Declined as ex:
                    raise Declined(self._error(str(ex))) from None
                except ApiError as ex:
                    # A success the plugin cannot read may still be charged.
                    raise UnknownOutcome(
                        self._error(str(ex)), request_id, headers.get("x-inference-id")
                    ) from None
            retryable = status in RETRY_STATUSES
            delay = retry_delay(attempt, headers) if retryable else 0.0
            if pacer and (status == 429 or "retry-after" in headers):
                pacer.slow_down(min(delay, BACKOFF_CAP))
            message = self._error(error_message(response, content))
            if retryable and not last:
                self._wait(attempt, delay, message, deadline)
                continue
            if status == 400 and (why := specs.explain_refusal(body["model"], message)):
                message += f" - {why}"
            if 400 <= status < 500:
                raise Declined(message)
            raise ApiError(message)
        raise AssertionError("unreachable")  # pragma: no cover

    def _post(
        self,
        url: str,
        body: dict[str, Any],
        request_id: str,
        remaining: float,
        going: Callable[[], None],
        seen: dict[str, str],
    ) -> tuple[int, httpx2.Headers, bytes]:
        """POST and read the whole answer by the deadline, however slowly it
        arrives. ``seen`` gets the inference id as soon as the headers come."""
        deadline = time.monotonic() + remaining
        timeout = httpx2.Timeout(remaining, connect=min(CONNECT_TIMEOUT, remaining))
        request = self.http.build_request(
            "POST", url, json=body, headers=self._headers(request_id), timeout=timeout
        )
        request.stream = _Announcing(request.content, going)
        response = self.http.send(request, stream=True, follow_redirects=False)
        try:
            if "x-inference-id" in response.headers:
                seen["inference_id"] = response.headers["x-inference-id"]
            content = bytearray()
            for chunk in decoded(response, MAX_ANSWER_BYTES):
                content += chunk
                if time.monotonic() > deadline:
                    raise _Deadline
            return response.status_code, response.headers, bytes(content)
        finally:
            response.close()

    def get(
        self,
        path: str,
        params: list[tuple[str, str]],
        *,
        keyless: bool = False,
        headers: dict[str, str] | None = None,
    ) -> httpx2.Response:
        """GET a service endpoint (the log, the catalogue, the balance) and
        read its answer within MAX_SERVICE_BYTES, waiting out a 429 a few
        times as it asks (or with backoff). The answer's content is read;
        any status is returned as it is, but for a 429 to the last."""
        url = base_url() + path
        for attempt in range(1, SERVICE_ATTEMPTS + 1):
            request = self.http.build_request(
                "GET",
                url,
                params=params,
                headers={**({} if keyless else self._headers()), **(headers or {})},
                timeout=httpx2.Timeout(30, connect=CONNECT_TIMEOUT),
            )
            try:
                response = self.http.send(request, stream=True)
                try:
                    content = b"".join(decoded(response, MAX_SERVICE_BYTES))
                finally:
                    response.close()
            except (httpx2.HTTPError, ApiError) as ex:
                raise ApiError(
                    self._error(f"{path} could not be read: {_one_line(str(ex))}")
                ) from None
            answer = httpx2.Response(
                response.status_code, headers=response.headers, content=content
            )
            if answer.status_code != 429 or attempt == SERVICE_ATTEMPTS:
                return answer
            delay = retry_delay(attempt, answer.headers)
            if delay > BACKOFF_CAP:
                return answer
            self.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def get_json(
        self, path: str, params: list[tuple[str, str]], *, keyless: bool = False
    ) -> Any:
        """The JSON of a service endpoint's successful answer; ApiError, one
        line, for anything else."""
        response = self.get(path, params, keyless=keyless)
        if not response.is_success:
            raise ApiError(self._error(error_message(response, response.content)))
        payload = parse_json(response.content)
        if payload is None:
            raise ApiError(f"{path} answered with something that is not JSON")
        return payload

    def _wait(self, attempt: int, delay: float, reason: str, deadline: float) -> None:
        if delay > BACKOFF_CAP:
            when = (
                " after "
                + time.strftime("%H:%M:%S", time.localtime(time.time() + delay))
                if math.isfinite(delay) and delay < 86400 * 365
                else " much later"
            )
            raise WaitTooLong(
                f"{reason}; the server asked to wait too long: try again{when}"
            )
        if time.monotonic() + delay > deadline:
            raise ApiError(
                f"{reason}; no time left to try again within {self.timeout:g} s "
                "(--timeout)"
            )
        self.notify(
            f"{reason}; retrying in {delay:.1f} s "
            f"(attempt {attempt + 1} of {self.attempts})"
        )
        self.sleep(delay)


class _Deadline(Exception):
    """The answer did not arrive whole by the deadline."""


def describe_cost(credits: float | None, usd: float | None) -> str:
    parts = []
    if credits is not None:
        parts.append(f"{credits:g} credits")
    if usd is not None:
        parts.append(f"${usd:.4f}")
    return " / ".join(parts)


# -- the image host ---------------------------------------------------------------


def check_image_url(url: str) -> None:
    """Images come over https; plain http only when the API itself is plain
    http (a local server)."""
    allowed = (
        ("https://",) if base_url().startswith("https://") else ("https://", "http://")
    )
    if not url.startswith(allowed):
        raise Refused(f"Refusing to fetch an image from {_one_line(url, 100)}")


def _check_scheme(request: httpx2.Request) -> None:
    check_image_url(str(request.url))


@functools.cache
def image_client() -> httpx2.Client:
    """Every request, redirects included, is checked by check_image_url."""
    return httpx2.Client(
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        event_hooks={"request": [_check_scheme]},
        headers={"Accept-Encoding": "gzip, deflate"},
    )


def fetch_image(
    url: str,
    save: Callable[[Iterator[bytes]], T],
    *,
    deadline: float = DOWNLOAD_DEADLINE,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Stream one image to ``save``, trying again a few times when the
    download fails in a way another try may mend, all within ``deadline``
    seconds. ``save`` raises DownloadError for bytes worth another try (a
    cut-off image), Refused for bytes that never will be."""
    check_image_url(url)
    client = image_client()
    end = time.monotonic() + deadline
    error: DownloadError = DownloadError(
        f"the download took longer than {deadline:g} s"
    )
    wait = 0.0
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        if attempt > 1:
            sleep(min(wait, max(0.0, end - time.monotonic())))
        remaining = end - time.monotonic()
        if remaining <= 0:
            break
        retry, wait = True, DOWNLOAD_BACKOFF * attempt
        try:
            with client.stream(
                "GET",
                url,
                timeout=httpx2.Timeout(
                    remaining, connect=min(CONNECT_TIMEOUT, remaining)
                ),
            ) as response:
                if response.is_success:
                    return save(_until(decoded(response, MAX_IMAGE_BYTES), end))
                error = DownloadError(f"the image host answered {response.status_code}")
                retry = response.status_code in RETRY_STATUSES
                asked = retry_delay(attempt, response.headers, rng=lambda: 0.0)
                if (
                    "retry-after" in response.headers
                    or "retry-after-ms" in response.headers
                ):
                    wait = asked
        except Refused:
            raise
        except Oversize:
            raise Refused(
                f"the image is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB"
            ) from None
        except httpx2.TooManyRedirects:
            raise DownloadError("the image host redirected in a loop") from None
        except httpx2.InvalidURL:
            raise Refused(f"not a valid URL: {_one_line(url, 100)}") from None
        except DownloadError as ex:
            error = ex
        except ApiError as ex:
            error = DownloadError(f"the download failed: {ex}")
        except _Deadline:
            error = DownloadError(f"the download took longer than {deadline:g} s")
            break
        except httpx2.HTTPError as ex:
            error = DownloadError(
                f"the download failed: {_one_line(str(ex)) or type(ex).__name__}"
            )
        if not retry:
            break
    raise error


def _until(chunks: Iterator[bytes], end: float) -> Iterator[bytes]:
    for chunk in chunks:
        if time.monotonic() > end:
            raise _Deadline
        yield chunk
