"""The AI/ML API client: one POST per generation, retried only while no image
can have been paid for, and both documented response shapes."""

from __future__ import annotations

import contextvars
import email.utils
import functools
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx2
import llm

DEFAULT_BASE_URL = "https://api.aimlapi.com"
GENERATIONS_PATH = "/v1/images/generations"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
DEFAULT_ATTEMPTS = 4
BACKOFF_BASE = 1.0
# The longest wait between two attempts. A server that asks for longer ends
# the attempt, with a message that says when to try again.
BACKOFF_CAP = 60.0
CONNECT_TIMEOUT = 10.0
# Generation can take a minute or more on the ultra model.
GENERATE_TIMEOUT = 300.0
DOWNLOAD_TIMEOUT = 120.0
DOWNLOAD_ATTEMPTS = 3
DOWNLOAD_BACKOFF = 0.5
T = TypeVar("T")
KEY_HELP = "set one with 'llm keys set aimlapi' or the AIMLAPI_KEY environment variable"


class ApiError(llm.ModelError):
    """A failure the user should read: one line, never the key."""


class UnknownOutcome(ApiError):
    """The request went out and no answer came back: the image may be paid for."""


@dataclass
class ImageRef:
    position: int
    url: str | None = None
    b64_json: str | None = None


@dataclass
class Generation:
    images: list[ImageRef]
    seed: int | None = None
    credits_used: float | None = None


class Pacer:
    """Pacing shared by the requests of a batch. A 429, or any answer with a
    Retry-After, halves how many requests may be in flight and holds every
    request back until the wait is over; each success adds one back, up to
    the most allowed."""

    def __init__(
        self,
        most: int,
        *,
        now: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        notify: Callable[[str], None] | None = None,
    ):
        self.most = self.limit = most
        self.not_before = 0.0
        self.now, self.sleep = now, sleep
        self.notify = notify or (lambda line: None)
        self._lock = threading.Lock()

    def before_send(self) -> None:
        while (wait := self.not_before - self.now()) > 0:
            self.sleep(wait)

    def slow_down(self, delay: float) -> None:
        with self._lock:
            self.not_before = max(self.not_before, self.now() + delay)
            limit = max(1, self.limit // 2)
            if limit < self.limit:
                self.notify(f"Slowing down to {limit} requests in flight")
            self.limit = limit

    def succeeded(self) -> None:
        with self._lock:
            self.limit = min(self.most, self.limit + 1)


# The pacer of the batch this thread's request belongs to, if any.
PACER: contextvars.ContextVar[Pacer | None] = contextvars.ContextVar(
    "imagen4_pacer", default=None
)


def base_url() -> str:
    url = (os.environ.get("AIMLAPI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    if not url.startswith(("https://", "http://")):
        raise ApiError(f"AIMLAPI_BASE_URL must start with https:// or http://: {url}")
    return url


def parse_generation(payload: Any) -> Generation:
    """Read either documented shape: ``images[]`` with a top-level ``seed``, or
    ``data[]`` with ``url``/``b64_json`` and ``meta.usage.credits_used``."""
    if not isinstance(payload, dict):
        raise ApiError("The API answered with something that is not a JSON object")
    images = payload.get("images")
    data = payload.get("data")
    if not images and not data:
        raise ApiError("The API answered without any image (was the prompt filtered?)")
    if isinstance(images, list):
        images = [
            ImageRef(i, url=item.get("url"))
            for i, item in enumerate(images)
            if isinstance(item, dict)
        ]
        seed = payload.get("seed")
        return Generation(images, seed=seed if isinstance(seed, int) else None)
    if isinstance(data, list):
        images = [
            ImageRef(i, url=item.get("url"), b64_json=item.get("b64_json"))
            for i, item in enumerate(data)
            if isinstance(item, dict)
        ]
        usage = (payload.get("meta") or {}).get("usage") or {}
        credits = usage.get("credits_used")
        return Generation(
            images,
            credits_used=credits if isinstance(credits, (int, float)) else None,
        )
    raise ApiError("The API answered in a shape this plugin does not know")


def retry_delay(
    attempt: int,
    headers: httpx2.Headers | dict[str, str],
    *,
    rng: Callable[[], float] = random.random,
    now: Callable[[], float] = time.time,
) -> float:
    """Seconds to wait before the next attempt: what the server asked for
    (``retry-after-ms``, ``Retry-After`` in seconds or as an HTTP date), or
    else capped exponential backoff with jitter."""
    headers = httpx2.Headers(headers)
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    if (value := headers.get("retry-after")) is not None:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                when = None
            if when is not None and when.tzinfo is not None:
                return max(0.0, when.timestamp() - now())
    backoff = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))
    return backoff * (0.5 + rng() / 2)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_message(response: httpx2.Response) -> str:
    """One line from an error answer: status, the server's message, requestId."""
    message, request_id = "", None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        raw = body.get("message") or body.get("error") or ""
        if isinstance(raw, dict):
            raw = raw.get("message") or ""
        message = raw if isinstance(raw, str) else str(raw)
        request_id = body.get("requestId")
    elif response.text:
        message = response.text
    line = f"AI/ML API error {response.status_code}"
    if message := _one_line(message):
        line += f": {message}"
    if request_id:
        line += f" (requestId {request_id})"
    if response.status_code == 401:
        line += f" - check your key: {KEY_HELP}"
    return line


def notify(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class ApiClient:
    """Sends a generation request to the AI/ML API. The key goes in the
    ``Authorization`` header to the base URL and nowhere else; redirects are
    not followed, so it cannot be carried to another host."""

    def __init__(
        self,
        key: str,
        *,
        attempts: int = DEFAULT_ATTEMPTS,
        timeout: float = GENERATE_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
        notify: Callable[[str], None] = notify,
    ):
        self.url = base_url() + GENERATIONS_PATH
        self.attempts = attempts
        self.sleep = sleep
        self.notify = notify
        self._headers = {"Authorization": f"Bearer {key}"}
        self._timeout = httpx2.Timeout(timeout, connect=CONNECT_TIMEOUT)

    def generate(self, body: dict[str, Any]) -> Generation:
        pacer = PACER.get()
        for attempt in range(1, self.attempts + 1):
            last = attempt == self.attempts
            if pacer:
                pacer.before_send()
            try:
                response = api_client().post(
                    self.url,
                    json=body,
                    headers=self._headers,
                    timeout=self._timeout,
                    follow_redirects=False,
                )
            except (httpx2.ConnectError, httpx2.ConnectTimeout) as ex:
                # Nothing reached the server: safe to send again.
                if last:
                    raise ApiError(
                        f"Could not connect to {self.url}: {_one_line(str(ex))}"
                    ) from None
                self._wait(
                    attempt,
                    retry_delay(attempt, {}),
                    f"could not connect ({type(ex).__name__})",
                )
                continue
            except httpx2.TimeoutException:
                raise UnknownOutcome(
                    f"No answer from {self.url} within the timeout; the image may "
                    "have been generated and charged. Check your AI/ML API account "
                    "before trying again, or raise --timeout"
                ) from None
            except httpx2.TransportError as ex:
                raise UnknownOutcome(
                    f"The connection to {self.url} failed after the request was "
                    f"sent ({_one_line(str(ex)) or type(ex).__name__}); the image "
                    "may have been charged. Check your account before trying again"
                ) from None
            if response.is_success:
                if pacer:
                    pacer.succeeded()
                try:
                    payload = response.json()
                except ValueError:
                    raise ApiError(
                        f"The API answered {response.status_code} with a body "
                        "that is not JSON"
                    ) from None
                return parse_generation(payload)
            retryable = response.status_code in RETRY_STATUSES
            delay = retry_delay(attempt, response.headers) if retryable else 0.0
            if pacer and (
                response.status_code == 429 or "retry-after" in response.headers
            ):
                pacer.slow_down(min(delay, BACKOFF_CAP))
            if retryable and not last:
                self._wait(attempt, delay, error_message(response))
                continue
            raise ApiError(error_message(response))
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, attempt: int, delay: float, reason: str) -> None:
        if delay > BACKOFF_CAP:
            raise ApiError(
                f"{reason}; the server asked to wait {delay:.0f} s: "
                f"try again after {time.strftime('%H:%M:%S', time.localtime(time.time() + delay))}"
            )
        self.notify(
            f"{reason}; retrying in {delay:.1f} s "
            f"(attempt {attempt + 1} of {self.attempts})"
        )
        self.sleep(delay)


def check_image_url(url: str) -> None:
    """Images come over https; plain http only when the API itself is plain
    http (a local server)."""
    allowed = (
        ("https://",) if base_url().startswith("https://") else ("https://", "http://")
    )
    if not url.startswith(allowed):
        raise ApiError(f"Refusing to fetch an image from {_one_line(url, 100)}")


def _check_scheme(request: httpx2.Request) -> None:
    check_image_url(str(request.url))


# One client a process for each host: a new client costs some 20 ms of loading
# certificates, and a shared one keeps its connections for the next request.
# Neither carries the key.


@functools.cache
def api_client() -> httpx2.Client:
    """The key is given per request, and redirects are never followed, so it
    cannot be carried to another host."""
    return httpx2.Client(follow_redirects=False)


@functools.cache
def image_client() -> httpx2.Client:
    """Every request, redirects included, is checked by check_image_url."""
    return httpx2.Client(
        timeout=httpx2.Timeout(DOWNLOAD_TIMEOUT, connect=CONNECT_TIMEOUT),
        follow_redirects=True,
        event_hooks={"request": [_check_scheme]},
    )


def fetch_image(
    client: httpx2.Client,
    url: str,
    save: Callable[[Iterator[bytes]], T],
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Stream one image to ``save``, trying again a few times when the
    download, not the generation, fails."""
    check_image_url(url)
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        if attempt > 1:
            sleep(DOWNLOAD_BACKOFF * (attempt - 1))
        last = attempt == DOWNLOAD_ATTEMPTS
        try:
            with client.stream("GET", url) as response:
                if response.status_code in RETRY_STATUSES and not last:
                    continue
                if not response.is_success:
                    raise ApiError(
                        f"The image host answered {response.status_code} for {url}"
                    )
                return save(response.iter_bytes(65536))
        except httpx2.TransportError as ex:
            if last:
                raise ApiError(
                    f"Download of {url} failed: {_one_line(str(ex)) or type(ex).__name__}"
                ) from None
    raise AssertionError("unreachable")  # pragma: no cover
