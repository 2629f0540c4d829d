"""The plugin's errors: each a one-line message for the user (never the
key), and what it means for what may have been paid for."""

from __future__ import annotations

import llm

KEY_HELP = "set one with 'llm keys set aimlapi' or the AIMLAPI_KEY environment variable"


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


class NotSent(ApiError):
    """Stopped before the request went out (or out again): nothing was made
    or charged."""


class WaitTooLong(ApiError):
    """The server asked to wait longer than the plugin will."""


class Oversize(ApiError):
    """An answer larger than any answer of its kind can be."""
