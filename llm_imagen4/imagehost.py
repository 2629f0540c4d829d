"""The image host: images fetched by URL, streamed to whoever saves them,
within a deadline and a size cap, over https only (plain http only when the
API itself is plain http, a local server). The image client never has the
key, and every redirect it follows is checked."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import httpx2

from .api import (
    CONNECT_TIMEOUT,
    MAX_IMAGE_BYTES,
    RETRY_STATUSES,
    Deadline,
    base_url,
    decoded,
    retry_delay,
)
from .errors import ApiError, DownloadError, Oversize, Refused
from .terminal import one_line

DOWNLOAD_DEADLINE = 120.0  # each image's download, retries included
DOWNLOAD_ATTEMPTS = 3
# A cut-off download is fetched again at once, or nearly: the image host
# answered, and its connection is what broke.
DOWNLOAD_BACKOFF = 0.05
MAX_REDIRECTS = 5
T = TypeVar("T")


def check_image_url(url: str) -> None:
    """Images come over https; plain http only when the API itself is plain
    http (a local server)."""
    allowed = (
        ("https://",) if base_url().startswith("https://") else ("https://", "http://")
    )
    if not url.startswith(allowed):
        raise Refused(f"Refusing to fetch an image from {one_line(url, 100)}")


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
    error = DownloadError(f"the download took longer than {deadline:g} s")
    wait = 0.0
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        if attempt > 1:
            sleep(min(wait, max(0.0, end - time.monotonic())))
        remaining = end - time.monotonic()
        if remaining <= 0:
            break
        try:
            return _download(client, url, save, remaining, end, attempt, deadline)
        except _Again as again:
            error, wait = again.error, again.wait
    raise error


class _Again(Exception):
    """A download that another try may mend, after ``wait`` seconds."""

    def __init__(self, error: DownloadError, wait: float):
        super().__init__(str(error))
        self.error, self.wait = error, wait


def _download(
    client: httpx2.Client,
    url: str,
    save: Callable[[Iterator[bytes]], T],
    remaining: float,
    end: float,
    attempt: int,
    deadline: float,
) -> T:
    """One try: what ``save`` made of the image, or ``_Again``, or the
    DownloadError or Refused that ends the download."""
    wait = DOWNLOAD_BACKOFF * attempt
    timeout = httpx2.Timeout(remaining, connect=min(CONNECT_TIMEOUT, remaining))
    try:
        with client.stream("GET", url, timeout=timeout) as response:
            if response.is_success:
                return save(_until(decoded(response, MAX_IMAGE_BYTES), end))
            status, headers = response.status_code, response.headers
    except Refused:
        raise
    except Oversize:
        raise Refused(
            f"the image is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB"
        ) from None
    except httpx2.TooManyRedirects:
        raise DownloadError("the image host redirected in a loop") from None
    except httpx2.InvalidURL:
        raise Refused(f"not a valid URL: {one_line(url, 100)}") from None
    except DownloadError as ex:
        raise _Again(ex, wait) from None
    except ApiError as ex:
        raise _Again(DownloadError(f"the download failed: {ex}"), wait) from None
    except Deadline:
        raise DownloadError(f"the download took longer than {deadline:g} s") from None
    except httpx2.HTTPError as ex:
        why = one_line(str(ex)) or type(ex).__name__
        raise _Again(DownloadError(f"the download failed: {why}"), wait) from None
    error = DownloadError(f"the image host answered {status}")
    if status not in RETRY_STATUSES:
        raise error
    if "retry-after" in headers or "retry-after-ms" in headers:
        wait = retry_delay(attempt, headers, rng=lambda: 0.0)
    raise _Again(error, wait)


def _until(chunks: Iterator[bytes], end: float) -> Iterator[bytes]:
    for chunk in chunks:
        if time.monotonic() > end:
            raise Deadline
        yield chunk
