"""The AI/ML API client: one POST a generation, retried only while no image
can have been paid for, and the GET of the service endpoints (the API's
log, its model catalogue, the balance); every answer read within a cap,
decompressed here a piece at a time.

The key goes in the ``Authorization`` header to the base URL and nowhere
else: the API client never follows a redirect."""

from __future__ import annotations

import email.utils
import functools
import math
import os
import random
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2

from . import route, specs
from .answers import Answer, error_message, parse_answer, parse_json
from .errors import (
    KEY_HELP,
    ApiError,
    Declined,
    NotSent,
    Oversize,
    UnknownOutcome,
    WaitTooLong,
)
from .terminal import holds, notify, one_line, scrub

DEFAULT_BASE_URL = "https://api.aimlapi.com"
GENERATIONS_PATH = "/v1/images/generations"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
BACKOFF_BASE = 1.0
# The longest wait between two attempts. A server that asks for longer ends
# the attempt, with a message that says when to try again.
BACKOFF_CAP = 60.0
CONNECT_TIMEOUT = 10.0
MAX_IMAGE_BYTES = 64 * 1024 * 1024
# Four inline images of the largest size, base64, with room to spare.
MAX_ANSWER_BYTES = 4 * MAX_IMAGE_BYTES
# A page of the log, the model catalogue, the balance: a few kB each.
MAX_SERVICE_BYTES = 4 * 1024 * 1024
SERVICE_ATTEMPTS = 4


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


# -- reading answers ----------------------------------------------------------


def decoded(response: httpx2.Response, cap: int) -> Iterator[bytes]:
    """The body of ``response`` as it arrives, decompressed here rather than
    by httpx2, so that at most ``cap`` bytes are ever inflated however
    small the compressed answer (a gzip bomb). An encoding the plugin did
    not ask for is refused."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "", "gzip", "x-gzip", "deflate"):
        raise ApiError(
            f"an answer in an encoding not asked for ({one_line(encoding, 40)})"
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
    that they do not all wake at once; each success adds one back. A wait
    longer than ``cap``, which the request that was told it refuses, holds
    no other request back.

    Once stopped (the first Ctrl-C of a batch), a request waiting here, to
    be sent or sent again, is never sent: NotSent."""

    def __init__(
        self,
        most: int,
        *,
        cap: float = BACKOFF_CAP,
        now: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] | None = None,
        rng: Callable[[], float] = random.random,
        notify: Callable[[str], None] = notify,
    ):
        self.most = self.limit = most
        self.cap = cap
        self.not_before = 0.0
        self.spread = 0.0
        self._stopped = threading.Event()
        # By default a wait ends early when the pacer is stopped.
        self.sleep = sleep or self._stopped.wait
        self.now, self.rng, self.notify = now, rng, notify
        self._lock = threading.Lock()

    def stop(self) -> None:
        """Send nothing more: every request waiting here gives up."""
        self._stopped.set()

    def _wait_until(self, moment: float) -> None:
        while True:
            if self._stopped.is_set():
                raise NotSent("stopped before it was sent")
            wait = moment - self.now()
            if wait <= 0:
                return
            self.sleep(wait)

    def before_send(self) -> None:
        self._wait_until(self.not_before + self.rng() * self.spread)

    def pause(self, seconds: float) -> None:
        """A request's own wait before it is sent again."""
        self._wait_until(self.now() + seconds)

    def slow_down(self, delay: float) -> None:
        with self._lock:
            if delay <= self.cap:
                self.not_before = max(self.not_before, self.now() + delay)
                self.spread = min(2.0, max(0.05, delay / 4))
            limit = max(1, self.limit // 2)
            if limit < self.limit:
                self.notify(f"Slowing down to {limit} requests in flight")
            self.limit = limit

    def succeeded(self) -> None:
        with self._lock:
            self.limit = min(self.most, self.limit + 1)


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

    def _without_key(self, answer: Answer) -> Answer:
        """An answer as it may be kept: whatever it echoes of the key
        replaced, and an image whose URL holds the key never fetched (the key
        goes to the API alone)."""
        for ref in answer.images:
            if ref.url and holds(ref.url, self.key):
                ref.problem = "its URL holds the API key, so it is not fetched"
            ref.url = scrub(ref.url, self.key) if ref.url else ref.url
            if ref.enhanced_prompt:
                ref.enhanced_prompt = scrub(ref.enhanced_prompt, self.key)
        if answer.inference_id:
            answer.inference_id = scrub(answer.inference_id, self.key)
        return answer

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
        pacer = route.current().pacer
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
            try:
                status, headers, content = self._attempt(
                    url, body, request_id, remaining, going
                )
            except _Unconnected as ex:
                if last:
                    raise ApiError(ex.reason[0].upper() + ex.reason[1:]) from None
                delay = retry_delay(attempt, {})
                self._wait(attempt, delay, ex.reason, deadline, pacer)
                continue
            if 200 <= status < 300:
                if pacer:
                    pacer.succeeded()
                return self._answer(status, headers, content, request_id)
            retryable = status in RETRY_STATUSES
            delay = retry_delay(attempt, headers) if retryable else 0.0
            if pacer and (status == 429 or "retry-after" in headers):
                pacer.slow_down(delay)
            message = self._error(
                error_message(httpx2.Response(status, headers=headers), content)
            )
            if retryable and not last:
                self._wait(attempt, delay, message, deadline, pacer)
                continue
            raise self._refusal(status, message, body["model"])
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(
        self,
        url: str,
        body: dict[str, Any],
        request_id: str,
        remaining: float,
        going: Callable[[], None],
    ) -> tuple[int, httpx2.Headers, bytes]:
        """One POST of the generation, its answer read whole by the deadline
        however slowly it arrives: its status, headers and body, or
        ``_Unconnected`` when nothing reached the server, or
        ``UnknownOutcome`` when it may have been paid for but no whole
        answer came back."""
        deadline = time.monotonic() + remaining
        timeout = httpx2.Timeout(remaining, connect=min(CONNECT_TIMEOUT, remaining))
        request = self.http.build_request(
            "POST", url, json=body, headers=self._headers(request_id), timeout=timeout
        )
        request.stream = _Announcing(request.content, going)
        inference_id = None
        try:
            response = self.http.send(request, stream=True, follow_redirects=False)
            try:
                # Known as soon as the headers come, to ask the log about.
                inference_id = response.headers.get("x-inference-id")
                content = bytearray()
                for chunk in decoded(response, MAX_ANSWER_BYTES):
                    content += chunk
                    if time.monotonic() > deadline:
                        raise Deadline
                return response.status_code, response.headers, bytes(content)
            finally:
                response.close()
        except (httpx2.ConnectError, httpx2.ConnectTimeout) as ex:
            raise _Unconnected(
                self._error(f"could not connect to {url}: {one_line(str(ex))}")
            ) from None
        except (httpx2.TimeoutException, Deadline):
            reason = (
                f"No whole answer from the API within {self.timeout:g} s "
                "after the request was sent"
            )
        except Oversize:
            reason = "The API's answer is larger than any answer can be"
        except (httpx2.HTTPError, ApiError) as ex:
            reason = self._error(
                "The connection to the API failed after the request was "
                f"sent ({one_line(str(ex)) or type(ex).__name__})"
            )
        raise UnknownOutcome(reason, request_id, inference_id)

    def _answer(
        self, status: int, headers: httpx2.Headers, content: bytes, request_id: str
    ) -> Answer:
        """A success's answer, without the key; one the plugin cannot read
        may still have been charged."""
        payload = parse_json(content)
        try:
            if payload is None:
                raise ApiError(
                    f"The API answered {status} with a body that is not JSON"
                )
            return self._without_key(parse_answer(payload, headers))
        except Declined as ex:
            raise Declined(self._error(str(ex))) from None
        except ApiError as ex:
            raise UnknownOutcome(
                self._error(str(ex)), request_id, headers.get("x-inference-id")
            ) from None

    @staticmethod
    def _refusal(status: int, message: str, model: str) -> ApiError:
        """The error for an answer the plugin does not retry: a 4xx is a
        refusal (nothing charged), with why when the schemas can tell."""
        if status == 400 and (why := specs.explain_refusal(model, message)):
            message += f" - {why}"
        if 400 <= status < 500:
            return Declined(message)
        return ApiError(message)

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
                    self._error(f"{path} could not be read: {one_line(str(ex))}")
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

    def _wait(
        self,
        attempt: int,
        delay: float,
        reason: str,
        deadline: float,
        pacer: Pacer | None,
    ) -> None:
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
        if pacer:
            pacer.pause(delay)
        else:
            self.sleep(delay)


class _Unconnected(Exception):
    """Nothing reached the server: safe to send again."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Deadline(Exception):
    """The answer did not arrive whole by the deadline."""
