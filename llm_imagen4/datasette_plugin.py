"""The history in Datasette: each image's path shown as its thumbnail, the
images served, and the history's canned queries offered, with no metadata
file.

Datasette loads this module through the ``datasette`` entry point; llm never
does. An image is found by its row's key alone (the database, the turn id,
the position) and served only when that row of ``imagen4_images`` is saved,
its file is a regular file and its bytes are the ones the row records. No
path, name or folder from a request is ever used to find a file, so a record
pointed at any other file serves nothing.

The history module and the API client (with httpx2) are imported by the
hooks when Datasette first calls one, not when it loads the plugin."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from datasette import hookimpl
from datasette.utils import tilde_decode, tilde_encode
from datasette.utils.asgi import Response
from markupsafe import Markup

if TYPE_CHECKING:
    from datasette.app import Datasette
    from datasette.database import Database
    from datasette.utils.asgi import Request

ROUTE = "/-/imagen4/"
# The longest side of a thumbnail, in CSS pixels.
THUMBNAIL = 160
# An image is shown as an image and nothing else: the browser may not guess
# another type, and nothing in the answer may run.
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
}
SNIFF_BYTES = 65536
# Datasette shows an image in a link as a block: the link is made a block
# of its own, at the top of its cell, so that no line is added around it.
THUMBNAIL_HTML = Markup(
    '<a href="{url}" title="{path}" style="display: inline-block; vertical-align: top">'
    '<img src="{url}" alt="{path}" loading="lazy" width="{width}" height="{height}"'
    ' style="max-width: {box}px; max-height: {box}px; object-fit: contain;'
    ' object-position: top"></a>'
)


@hookimpl
def render_cell(
    row: Any, value: Any, column: str, database: str, datasette: Datasette
) -> Callable[[], Awaitable[Markup | None]] | None:
    """A ``path`` in a row that also has the image's key (``turn_id`` and
    ``position``), from a database with the history: its thumbnail, linked
    to the image."""
    if column != "path" or not isinstance(value, str) or not value:
        return None
    cells = {name: row[name] for name in row.keys()}
    turn_id, position = cells.get("turn_id"), cells.get("position")
    if not isinstance(turn_id, str) or not _whole(position):
        return None
    if cells.get("status", "saved") != "saved":
        return None
    width, height = _thumbnail_size(cells.get("width"), cells.get("height"))

    async def thumbnail() -> Markup | None:
        if not await _has_history(datasette.get_database(database)):
            return None
        url = image_url(datasette, database, turn_id, position)
        return THUMBNAIL_HTML.format(
            url=url, path=value, width=width, height=height, box=THUMBNAIL
        )

    return thumbnail


def image_url(datasette: Datasette, database: str, turn_id: str, position: int) -> str:
    """Where the plugin serves an image: the row's key, and nothing else."""
    return datasette.urls.path(
        f"{ROUTE}{tilde_encode(database)}/{tilde_encode(turn_id)}/{position}"
    )


def _whole(value: Any) -> bool:
    """A whole number, as a position or a size is."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _thumbnail_size(width: Any, height: Any) -> tuple[int, int]:
    """The image's size scaled into the thumbnail's square, so that the page
    keeps its layout while the images load; the square when it is not known."""
    if not (_whole(width) and _whole(height) and width and height):
        return THUMBNAIL, THUMBNAIL
    scale = min(1.0, THUMBNAIL / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


async def _has_history(db: Database) -> bool:
    from .index import VIEW

    found = await db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'view' AND name = ?", [VIEW]
    )
    return bool(found.rows)


@hookimpl
def register_routes() -> list[tuple[str, Callable[..., Awaitable[Response]]]]:
    return [
        (
            rf"^{ROUTE}(?P<database>[^/]+)/(?P<turn_id>[^/]+)/(?P<position>[0-9]{{1,9}})$",
            serve_image,
        )
    ]


async def serve_image(datasette: Datasette, request: Request) -> Response:
    """The image at the row ``(turn_id, position)`` of the database's
    history, as its file holds it, if that file is still the one recorded."""
    from .index import VIEW

    name = tilde_decode(request.url_vars["database"])
    turn_id = tilde_decode(request.url_vars["turn_id"])
    position = int(request.url_vars["position"])
    await datasette.ensure_permissions(
        request.actor,
        [("view-table", (name, VIEW)), ("view-database", name), "view-instance"],
    )
    try:
        db = datasette.get_database(name)
    except KeyError:
        return _not_found()
    if not await _has_history(db):
        return _not_found()
    rows = (
        await db.execute(
            f"SELECT path, sha256 FROM [{VIEW}]"
            " WHERE turn_id = ? AND position = ? AND status = 'saved' LIMIT 2",
            [turn_id, position],
        )
    ).rows
    if len(rows) != 1:
        return _not_found()
    path, sha256 = rows[0]
    if not (isinstance(path, str) and isinstance(sha256, str)):
        return _not_found()
    image = await asyncio.to_thread(read_recorded, path, sha256)
    if image is None:
        return _not_found()
    data, content_type = image
    return Response(data, headers=dict(HEADERS), content_type=content_type)


def _not_found() -> Response:
    return Response.text("Image not found", status=404, headers=dict(HEADERS))


def read_recorded(path: str, sha256: str) -> tuple[bytes, str] | None:
    """The bytes of the file at ``path`` and their type, if it is a regular
    file (not a symlink) at an absolute path, an image within the plugin's
    cap, whose bytes are the recorded ``sha256``; None otherwise. What is
    hashed is exactly what is returned."""
    from .api import MAX_IMAGE_BYTES
    from .images import NotAnImage, sniff

    if not os.path.isabs(path):
        return None
    # O_NOFOLLOW: a symlink put in the file's place is refused, not followed;
    # O_NONBLOCK: a FIFO is opened without waiting for a writer, then refused.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except (OSError, ValueError):
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with open(fd, "rb", closefd=False) as file:
            data = file.read(MAX_IMAGE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_IMAGE_BYTES or hashlib.sha256(data).hexdigest() != sha256:
        return None
    try:
        return data, sniff(data[:SNIFF_BYTES]).content_type
    except NotAnImage:
        return None


@hookimpl
def canned_queries(
    datasette: Datasette, database: str
) -> Callable[[], Awaitable[dict[str, Any] | None]]:
    """The history's canned queries, for a database that has the history."""

    async def queries() -> dict[str, Any] | None:
        from .history import CANNED_QUERIES

        if not await _has_history(datasette.get_database(database)):
            return None
        # Copies: Datasette adds to each query it is given.
        return {name: dict(query) for name, query in CANNED_QUERIES.items()}

    return queries
