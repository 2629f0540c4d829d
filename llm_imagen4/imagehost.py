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
            raise Refused(f"not a valid URL: {one_line(url, 100)}") from None
        except DownloadError as ex:
            error = ex
        except ApiError as ex:
            error = DownloadError(f"the download failed: {ex}")
        except Deadline:
            error = DownloadError(f"the download took longer than {deadline:g} s")
            break
        except httpx2.HTTPError as ex:
            error = DownloadError(
                f"the download failed: {one_line(str(ex)) or type(ex).__name__}"
            )
        if not retry:
            break
    raise error


def _until(chunks: Iterator[bytes], end: float) -> Iterator[bytes]:
    for chunk in chunks:
        if time.monotonic() > end:
            raise Deadline
        yield chunk
