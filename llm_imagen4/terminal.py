"""What may be printed. Prompts, file contents and the API's answers are
untrusted text: they are shown with control characters escaped, so that
nothing they hold can retitle a terminal, clear it or write its clipboard.
Suggested commands are shell-quoted, JSON is strict, and notices go to
standard error."""

from __future__ import annotations

import json
import math
import re
import shlex
import sys
from typing import Any

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators,
# bidi overrides and isolates, which can all rearrange what a line shows.
_UNSAFE = {
    *range(0x00, 0x20),
    *range(0x7F, 0xA0),
    0x2028,
    0x2029,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
}
# Those that json.dumps leaves as they are (it escapes C0 controls itself).
_JSON_UNSAFE = re.compile(
    "[" + "".join(chr(c) for c in sorted(_UNSAFE) if c >= 0x7F) + "]"
)


# Each unsafe character as its escape, for str.translate.
_ESCAPES = {
    code: chr(code).encode("unicode_escape").decode("ascii") for code in _UNSAFE
}
_ESCAPES_KEEPING_NEWLINES = {k: v for k, v in _ESCAPES.items() if k != ord("\n")}


def printable(text: Any, *, newlines: bool = False) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``,
    ``\\n``); with ``newlines`` a line break stays a line break."""
    return str(text).translate(_ESCAPES_KEEPING_NEWLINES if newlines else _ESCAPES)


def one_line(text: str, limit: int = 300) -> str:
    """A server's text as one printable line, cut at ``limit``: it reaches
    terminals and chat models through llm, past the plugin's own commands."""
    text = printable(" ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def command(*words: str) -> str:
    """A command line the user can paste: every word shell-quoted, and shown
    only if it holds nothing a terminal would act on."""
    return printable(shlex.join(str(word) for word in words))


def counted(n: int, noun: str) -> str:
    """``1 row``, ``2 rows``: a number of a thing, in words."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def notify(line: str) -> None:
    """One line on standard error, escaped."""
    print(printable(line), file=sys.stderr, flush=True)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """Strict JSON: a number that JSON cannot hold (NaN, infinity) becomes
    null rather than invalid output. Control characters that JSON leaves as
    they are (C1, DEL, bidi overrides, even with ``ensure_ascii=False``)
    are written as ``\\uXXXX``, which reads back as the same string."""
    try:
        text = json.dumps(value, allow_nan=False, **kwargs)
    except ValueError:
        text = json.dumps(_finite(value), allow_nan=False, **kwargs)
    # json escapes C0 controls itself; outside strings it writes only ASCII.
    return _JSON_UNSAFE.sub(lambda match: f"\\u{ord(match[0]):04x}", text)


def secret_forms(secret: str) -> list[str]:
    """The ways a server may echo a key back: as it is, URL-encoded, and in
    base64 (standard or URL-safe, with or without its padding)."""
    import base64
    import urllib.parse

    data = secret.encode("utf-8")
    forms = {
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        base64.b64encode(data).decode("ascii"),
        base64.urlsafe_b64encode(data).decode("ascii"),
    }
    forms |= {form.rstrip("=") for form in forms}
    # The longest first, so that no shorter form is left half replaced.
    return sorted(forms, key=len, reverse=True)


def holds(text: str, secret: str | None) -> bool:
    """Whether ``text`` carries ``secret`` in any form a server may echo."""
    if not secret or len(secret) < 4:
        return False
    return any(form in text for form in secret_forms(secret))


def scrub(text: str, secret: str | None) -> str:
    """``text`` without ``secret`` in it, in any form a server may echo."""
    if secret and len(secret) >= 4:
        for form in secret_forms(secret):
            text = text.replace(form, "[key]")
    return text
