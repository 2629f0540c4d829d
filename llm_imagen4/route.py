"""The route a generation runs on, as the route that starts it says: where
its turn is logged, which tool call it answers, and the pacing of the batch
it belongs to. It reaches the generation through llm's ``model.prompt``,
which has no room for it, so it travels in one context variable, set by
``on`` alone. A generation that finds none is on llm's own route (``llm
prompt`` or the Python API), where llm or the caller logs the response."""

from __future__ import annotations

import contextlib
import contextvars
import enum
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .api import Pacer


class Logging(enum.Enum):
    # llm (``llm prompt``) or the caller (the Python API) logs the response.
    BY_LLM = "by llm"
    # The route logs the turn itself, in ``Route.database``.
    BY_ROUTE = "by the route"
    # Nothing is logged (``-n``, ``llm logs off``).
    NOT_LOGGED = "not logged"


@dataclass(frozen=True)
class Route:
    logging: Logging = Logging.BY_LLM
    database: Path | None = None
    tool_call_id: str | None = None
    pacer: Pacer | None = None

    @classmethod
    def logged_to(cls, database: Path | None, **more: object) -> Route:
        """A route of the plugin's that logs to ``database`` (None: not at
        all)."""
        logging = Logging.BY_ROUTE if database else Logging.NOT_LOGGED
        return cls(logging, database, **more)  # type: ignore[arg-type]


# llm's own route: where nothing else is set.
LLM = Route()
_ROUTE: contextvars.ContextVar[Route | None] = contextvars.ContextVar(
    "imagen4_route", default=None
)


def current() -> Route:
    return _ROUTE.get() or LLM


@contextlib.contextmanager
def on(route: Route) -> Iterator[Route]:
    """Generations started inside run on ``route``."""
    token = _ROUTE.set(route)
    try:
        yield route
    finally:
        _ROUTE.reset(token)
