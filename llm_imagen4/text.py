"""What the commands' results look like as text: the lines ``cli`` prints.
Every value that came from a prompt, a file, a logs database or the API is
escaped (``terminal.printable``); a value the history must have but has
not is "not valid"."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from . import history, specs
from .commands import Generated, ModelRow
from .terminal import command, printable


def _shown(value: Any) -> str:
    return history.NOT_VALID if value is None else printable(value)


def generated_json(generated: Generated) -> dict[str, Any]:
    """One generation as ``--json`` prints it."""
    response, record = generated.response, generated.record
    return {
        "id": response.id,
        "model": response.model.model_id,
        "api_model": record.request["model"],
        "prompt": record.request["prompt"],
        "seed": record.seed,
        "options": response.prompt.options.model_dump(exclude_none=True),
        "credits_used": record.credits_used,
        "usd_spent": record.usd_spent,
        "paths": generated.paths,
        "images": [
            {
                "path": str(record.path(image)) if image.name else None,
                **image.model_dump(exclude={"name", "directory", "placing"}),
            }
            for image in record.images
        ],
    }


def history_lines(entries: list[Any], paths_only: bool) -> Iterator[str]:
    for entry in entries:
        if paths_only:
            for image in entry.images:
                if image.path and image.exists:
                    yield printable(image.path)
            continue
        yield from _entry_lines(entry)


def _entry_lines(entry: Any) -> Iterator[str]:
    """One generation of ``history``: its line, its prompt, its files."""
    cost = " ".join(
        part
        for part in (
            f"{entry.credits_used:g} credits" if entry.credits_used is not None else "",
            f"${entry.usd_spent:.4f}" if entry.usd_spent is not None else "",
        )
        if part
    )
    when = entry.datetime_utc[:19] if entry.datetime_utc else None
    yield (
        f"{_shown(entry.id)}  {_shown(when)}  {_shown(entry.model)}"
        f"  seed {_shown(entry.seed)}  {_shown(entry.aspect_ratio)}"
        + (f"  {cost}" if cost else "")
        + ("  (tool)" if entry.tool_call_id else "")
    )
    prompt = " ".join(entry.prompt.split()) if entry.prompt is not None else None
    yield f"  {_shown(prompt)}"
    for image in entry.images:
        gone = "" if image.exists else f"  ({_shown(image.status)}, missing)"
        yield f"  {printable(image.path or image.url or '')}{gone}"


def history_json(entries: list[Any]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(entry) for entry in entries]


def show_lines(data: dict[str, Any]) -> Iterator[str]:
    """Each field of one generation, then each image's."""
    data = dict(data)
    images = data.pop("images")
    data.pop("provenance")
    for name, value in data.pop("options").items():
        data[f"option {name}"] = value
    yield from _fields(data, "")
    for image in images:
        image = dict(image)
        position = image.pop("position")
        yield f"image {_shown(position + 1 if position is not None else None)}:"
        yield from _fields(image, "  ")


def _fields(data: dict[str, Any], indent: str) -> Iterator[str]:
    """Each field with a value, and each a generation must have: what has
    no value is left out, as --json shows it null."""
    for name, value in data.items():
        if value is not None or name in history.REQUIRED:
            yield f"{indent}{name}: {_shown(value)}"


INSPECTED_FIELDS = ("created_utc", "turn_id", "credits_used", "usd_spent", "version")


def inspect_lines(item: dict[str, Any]) -> Iterator[str]:
    """What one file claims, apart from the file's real path."""
    claims = item["claims"]
    yield printable(item["file"])
    if item["c2pa"]:
        yield (
            "  left as received: it carries C2PA Content Credentials,"
            " which a change would break"
        )
    if item["source"] == "sidecar":
        yield f"  record read from: {printable(item['file'] + '.json')}"
    yield f"  model: {printable(claims['model'])}"
    yield f"  prompt: {printable(claims['prompt'])}"
    for name in ("enhanced_prompt", "negative_prompt"):
        if claims.get(name):
            yield f"  {name.replace('_', ' ')}: {printable(claims[name])}"
    yield f"  seed: {printable(claims.get('seed'))}"
    if claims.get("options"):
        options = ", ".join(f"{k}={v}" for k, v in claims["options"].items())
        yield f"  options: {printable(options)}"
    for name in INSPECTED_FIELDS:
        if claims.get(name) is not None:
            yield f"  {name.replace('_', ' ')}: {printable(claims[name])}"
    if claims.get("path") is not None:
        yield f"  the record claims a path: {printable(claims['path'])}"
    if item["conflicting_claims"]:
        yield f"  more than one claim: {printable(item['conflicting_claims'])}"
    elif item["sidecar_mismatch"]:
        yield f"  not this file's record: {printable(item['sidecar_mismatch'])}"
    else:
        yield f"  again: {command('llm', 'imagen4', 'rerun', item['file'])}"


def model_lines(row: ModelRow) -> Iterator[str]:
    spec = row.spec
    default = " (default)" if spec.model_id == specs.DEFAULT_MODEL else ""
    served = {None: "", True: "  served", False: "  NOT SERVED"}[row.served]
    yield f"{spec.model_id}: {spec.api_id}{default}{served}"
    yield f"  price: {printable(row.price)}"
    yield f"  prompt: up to {spec.prompt_max} characters"
    for name, field in spec.options.model_fields.items():
        yield f"  {name}: {field.description}"


def dollars(amount: float) -> str:
    return ("-" if amount < 0 else "") + f"${abs(amount):,.2f}"
