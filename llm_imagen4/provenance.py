"""How an image was made, written into the image itself and read back.

A PNG gets, before its image data where every reader finds them: a
``parameters`` text in the layout AUTOMATIC1111 and the tools around it read,
an ``llm-imagen4`` JSON record of the generation, and XMP with the IPTC
fields for AI-generated images. A JPEG or WebP gets the XMP inside, and the
record in a sidecar file (``name.jpg.json``) that names its image and its
sha256. A file signed with C2PA Content Credentials is left byte for byte as
received, and its record goes to the sidecar.

Reading treats a file as evidence, not instructions: only the plugin's own
record is read, within caps, and a malformed one is a one-line error. A file
that holds more than one claim of how it was made (two records, a
``parameters`` text that disagrees with the record, a sidecar beside the
record inside it) is said to, as it is not evidence of one request."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llm
from pydantic import BaseModel, ConfigDict, ValidationError

from . import files, images, specs
from .c2pa import has_c2pa
from .files import Ready

GENERATOR = "llm-imagen4"
JSON_KEYWORD = "llm-imagen4"
PARAMETERS_KEYWORD = "parameters"
DIGITAL_SOURCE_TYPE = (
    "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
)
IPTC_NAMESPACE = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
SIDECAR_CAP = images.TEXT_CAP
# The largest file whose bytes are checked against its sidecar's sha256: an
# Imagen image is a few MB.
HASH_CAP = 256 * 1024 * 1024
JSON_DEPTH_CAP = 16


class ProvenanceError(llm.ModelError):
    """A file whose provenance cannot be read: one line, naming the file."""


@functools.cache
def plugin_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llm-imagen4")
    except PackageNotFoundError:  # pragma: no cover - running from a checkout
        return "unknown"


def build(
    *,
    model_id: str,
    request: dict[str, Any],
    turn_id: str,
    created_utc: str,
    credits_used: float | None,
    usd_spent: float | None,
) -> dict[str, Any]:
    """The record written into each image of one generation: ``model``,
    ``prompt`` and ``options`` make the request again."""
    return {
        "generator": GENERATOR,
        "version": plugin_version(),
        "model": model_id,
        "api_model": request["model"],
        "prompt": request["prompt"],
        "negative_prompt": request.get("negative_prompt"),
        "seed": request["seed"],
        "options": {k: v for k, v in request.items() if k not in ("model", "prompt")},
        "turn_id": turn_id,
        "created_utc": created_utc,
        "credits_used": credits_used,
        "usd_spent": usd_spent,
        "digital_source_type": DIGITAL_SOURCE_TYPE,
    }


def _a1111_quote(text: str) -> str:
    """A value as AUTOMATIC1111 writes one that holds a comma or colon."""
    if any(char in text for char in ',:\n"'):
        return json.dumps(text, ensure_ascii=False)
    return text


def parameters(record: dict[str, Any], width: int, height: int) -> str:
    """The ``parameters`` text: the prompt, ``Negative prompt: …``, then one
    line of settings. Imagen has no sampler, step count or CFG scale, so
    there are none: only what is true of the image."""
    lines = [record["prompt"]]
    if record.get("negative_prompt"):
        lines.append(f"Negative prompt: {record['negative_prompt']}")
    settings = [
        f"Seed: {record['seed']}",
        f"Size: {width}x{height}",
        f"Model: {record['model']}",
    ]
    if record.get("enhanced_prompt"):
        settings.append(f"Enhanced prompt: {_a1111_quote(record['enhanced_prompt'])}")
    settings.append(f"Version: {GENERATOR} {record.get('version', '')}".rstrip())
    lines.append(", ".join(settings))
    return "\n".join(lines)


def xmp(record: dict[str, Any]) -> str:
    """The XMP packet with the IPTC fields for AI-generated images: the
    digital source type, the AI system and its version, the prompt."""
    return images.xmp_packet(
        "Iptc4xmpExt",
        IPTC_NAMESPACE,
        {
            "DigitalSourceType": DIGITAL_SOURCE_TYPE,
            "AISystemUsed": f"Google Imagen 4 ({record['model']})",
            "AISystemVersionUsed": record["api_model"],
            "AIPromptInformation": record.get("enhanced_prompt") or record["prompt"],
        },
    )


def sidecar_bytes(record: dict[str, Any], image: Path, sha256: str) -> bytes:
    return json.dumps(
        {**record, "file": image.name, "sha256": sha256},
        ensure_ascii=False,
        indent=2,
        sort_keys=True,
    ).encode("utf-8")


def finisher(
    record: dict[str, Any] | None,
) -> Callable[[Path, images.ImageType], Ready]:
    """What ``Destination.save`` calls to give a downloaded image its
    provenance: ``record`` written into a copy of it, or nothing at all
    when ``record`` is None (``--no-metadata``)."""

    def finish(tmp: Path, kind: images.ImageType) -> Ready:
        if record is None:
            return Ready(tmp)
        sidecar = functools.partial(sidecar_bytes, record)
        if has_c2pa(tmp, kind.content_type):
            return Ready(tmp, sidecar, c2pa=True)
        beside = sidecar if needs_sidecar(kind.content_type, False) else None
        out = files.meta_of(tmp)
        packet = xmp(record)
        if kind.content_type == "image/png":
            texts = [
                (PARAMETERS_KEYWORD, parameters(record, kind.width, kind.height)),
                (JSON_KEYWORD, json.dumps(record, ensure_ascii=False, sort_keys=True)),
            ]
            images.embed_png(tmp, out, texts, packet)
        elif kind.content_type == "image/jpeg":
            images.embed_jpeg(tmp, out, packet)
        else:
            images.embed_webp(tmp, out, packet)
        return Ready(out, beside)

    return finish


# -- reading ------------------------------------------------------------------


class FileRecord(BaseModel):
    """What a file's provenance claims, read as data and validated strictly:
    ``true`` is not a number, nor ``"7"``."""

    model_config = ConfigDict(extra="allow", strict=True)

    generator: str
    model: str
    prompt: str
    negative_prompt: str | None = None
    enhanced_prompt: str | None = None
    seed: int | None = None
    options: dict[str, Any] = {}


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _depth(value: Any) -> int:
    """How deeply a JSON value nests, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return deepest


def parse_record(text: str) -> dict[str, Any]:
    """A record's JSON: an object, at most JSON_DEPTH_CAP deep, with no
    NaN or infinity. ValueError otherwise."""
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    if _depth(value) > JSON_DEPTH_CAP:
        raise ValueError("nested too deeply")
    return value


# One setting of a ``parameters`` settings line, as AUTOMATIC1111's readers
# split it: a quoted value may hold commas. A name starts the line or
# follows ", " and is bounded, so that a hostile line of a megabyte is read
# in linear time.
_SETTING = re.compile(r'(?:^|(?<=, ))(\w[\w \-/]{0,63}): ("(?:\\.|[^\\"])*"|[^,]*)')


def _parameters_disagree(text: str, record: FileRecord) -> str | None:
    """What a ``parameters`` text gives otherwise than the record beside it
    ("another prompt", "another seed"): the lines before its settings line
    must be the record's prompt and negative prompt, and the settings line
    must hold the record's seed, once."""
    prompt, _, settings = text.rpartition("\n")
    if record.negative_prompt:
        expected = f"{record.prompt}\nNegative prompt: {record.negative_prompt}"
    else:
        expected = record.prompt
    seeds = [value for key, value in _SETTING.findall(settings) if key == "Seed"]
    other = [
        name
        for name, agrees in (
            ("prompt", prompt == expected),
            ("seed", seeds == ([] if record.seed is None else [str(record.seed)])),
        )
        if not agrees
    ]
    return f"another {' and '.join(other)}" if other else None


def _conflicting_claims(
    path: Path, texts: images.PngTexts | None, source: str, record: FileRecord
) -> str | None:
    """Why a file holds more than one claim of how it was made, or None:
    more than one record or ``parameters`` text, a ``parameters`` text that
    disagrees with the record, a sidecar beside the record inside it."""
    claims = []
    if texts is not None:
        for keyword, what in (
            (JSON_KEYWORD, "llm-imagen4 records"),
            (PARAMETERS_KEYWORD, "parameters texts"),
        ):
            if texts.count[keyword] > 1:
                claims.append(f"it holds {texts.count[keyword]} {what}")
        if PARAMETERS_KEYWORD in texts.first:
            other = _parameters_disagree(texts.first[PARAMETERS_KEYWORD], record)
            if other:
                claims.append(f"its parameters text gives {other} than its record")
    if source == "record" and files.sidecar_of(path).exists():
        claims.append("a sidecar lies beside the record inside it")
    return "; ".join(claims) or None


def needs_sidecar(content_type: str, c2pa: bool) -> bool:
    """Whether an image's record goes beside it: a JPEG or WebP holds only
    the XMP, and a signed image is left as received."""
    return c2pa or content_type != "image/png"


@dataclass(frozen=True)
class FileProvenance:
    record: FileRecord
    # Where the record was found: the PNG's own "record", or its "sidecar".
    source: str
    # The file carries C2PA Content Credentials, and was left as received.
    c2pa: bool
    # Why a sidecar may be another image's record: it names another file,
    # or its sha256 is not this file's. None when it is this file's, or the
    # record is the file's own.
    sidecar_mismatch: str | None = None
    # Why the file holds more than one claim of how it was made, so that it
    # is not evidence of one request. None when it holds one.
    conflicting_claims: str | None = None


def _sidecar_mismatch(path: Path, raw: dict[str, Any]) -> str | None:
    named = raw.get("file")
    if named != path.name:
        if not isinstance(named, str):
            return "its sidecar names no file"
        return f"its sidecar names another file, {named}"
    if path.stat().st_size > HASH_CAP:
        return (
            f"its sidecar's sha256 is not checked: the file is over"
            f" {HASH_CAP >> 20} MiB"
        )
    with os.fdopen(images.open_regular(path), "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if raw.get("sha256") != digest:
        return "its sidecar's sha256 is not this file's"
    return None


def read(path: Path) -> FileProvenance | None:
    """The provenance a file claims, and where it came from. None when it
    has none. ProvenanceError, naming the file, when it is not a regular
    file or its record is malformed or too large."""
    shown = str(path)
    try:
        fd = images.open_regular(path)
    except OSError as ex:
        raise ProvenanceError(f"{shown}: {ex.strerror or ex}") from None
    with os.fdopen(fd, "rb") as f:
        head = f.read(65536)
    texts = None
    try:
        if head.startswith(images.PNG_SIGNATURE):
            texts = images.png_texts(path, (JSON_KEYWORD, PARAMETERS_KEYWORD))
        if texts is not None and JSON_KEYWORD in texts.first:
            raw, source = parse_record(texts.first[JSON_KEYWORD]), "record"
        elif files.sidecar_of(path).exists():
            with os.fdopen(images.open_regular(files.sidecar_of(path)), "rb") as f:
                data = f.read(SIDECAR_CAP + 1)
            if len(data) > SIDECAR_CAP:
                raise ValueError("its sidecar is too large")
            raw, source = parse_record(data.decode("utf-8")), "sidecar"
        else:
            return None
    except (OSError, ValueError, UnicodeDecodeError) as ex:
        raise ProvenanceError(f"{shown}: unreadable provenance ({ex})") from None
    if raw.get("generator") != GENERATOR:
        return None
    try:
        record = FileRecord.model_validate(raw)
    except ValidationError as ex:
        error = ex.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "record"
        raise _refused(shown, where, error["msg"]) from None
    try:
        kind = images.sniff(head)
        c2pa = has_c2pa(path, kind.content_type)
    except (OSError, ValueError):
        c2pa = False
    try:
        mismatch = _sidecar_mismatch(path, raw) if source == "sidecar" else None
    except OSError as ex:
        raise ProvenanceError(f"{shown}: {ex.strerror or ex}") from None
    conflict = _conflicting_claims(path, texts, source, record)
    return FileProvenance(record, source, c2pa, mismatch, conflict)


def _refused(shown: str, where: str, why: str) -> ProvenanceError:
    return ProvenanceError(f"{shown}: its record's {where}: {why}")


def rerun_options(record: FileRecord, spec: specs.Spec, shown: str) -> dict[str, Any]:
    """The request a file's record describes, as options of ``spec``. Only
    the request is taken (never where to save, whether to write metadata,
    retries or timeout), and it is checked as strictly as typed options,
    or more: a field ``spec`` does not take is refused, never dropped, and
    so is a value the top of the record and its ``options`` disagree on.
    ProvenanceError naming ``shown`` and the field."""
    try:
        specs.check_prompt(spec, record.prompt)
    except llm.ModelError as ex:
        raise _refused(shown, "prompt", str(ex)) from None
    allowed = set(specs.request_options(spec))
    given = [(f"options.{name}", name, value) for name, value in record.options.items()]
    given += [
        (name, name, getattr(record, name))
        for name in ("negative_prompt", "seed")
        if getattr(record, name) is not None
    ]
    options: dict[str, Any] = {}
    for where, name, value in given:
        if name == "convert_base64_to_url":
            # How the images came back, which the user's --inline decides.
            if not isinstance(value, bool):
                raise _refused(shown, where, "Input should be a valid boolean")
            continue
        if name not in allowed:
            raise _refused(shown, where, f"not part of a request to {spec.model_id}")
        try:
            spec.options.model_validate({name: value}, strict=True)
        except ValidationError as ex:
            raise _refused(shown, where, ex.errors()[0]["msg"]) from None
        if name in options and options[name] != value:
            raise _refused(
                shown, where, f"{value!r}, but options.{name} is {options[name]!r}"
            )
        options[name] = value
    return options
