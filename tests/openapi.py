"""The AI/ML API's published OpenAPI documents for its service endpoints
(``tests/schemas/*.2026-08.json``, unedited): each operation's query
parameters and the schema of its answer, as the fake API reads them.

The fake answers every request through these, so that it accepts exactly
the parameters the documents list and can give no answer they would not."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMAS = Path(__file__).parent / "schemas"
DOCUMENTS = {
    "/v2/logs": "logs-v2.2026-08.json",
    "/v1/models": "models.2026-08.json",
    "/v2/billing": "billing-v2.2026-08.json",
}
# The parameters each document says may be given more than once.
REPEATABLE = {
    "/v2/logs": {"model", "status"},
    "/v1/models": {"include", "id", "tags", "capabilities"},
    "/v2/billing": set(),
}


class BadQuery(ValueError):
    """A query the published document does not allow: a 400."""


def nullable(schema: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` as JSON Schema's ``null`` type."""
    if isinstance(schema, list):
        return [nullable(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {key: nullable(value) for key, value in schema.items()}
    if schema.pop("nullable", False) and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    return schema


@dataclass(frozen=True)
class Operation:
    path: str
    parameters: dict[str, dict[str, Any]]
    answer: dict[str, Any]

    def read_query(self, query: dict[str, list[str]], repeatable: set[str]) -> dict:
        """The query as typed values: only the documented parameters, each
        once unless ``repeatable``, each as its schema types it."""
        values: dict[str, Any] = {}
        for name, given in query.items():
            schema = self.parameters.get(name)
            if schema is None:
                raise BadQuery(f"{name} is not a parameter of {self.path}")
            if len(given) > 1 and name not in repeatable:
                raise BadQuery(f"{name} given more than once")
            typed = [_typed(name, value, schema) for value in given]
            values[name] = typed if name in repeatable else typed[0]
        return values

    def check_answer(self, body: Any) -> None:
        validate(body, self.answer)


def validate(instance: Any, schema: dict[str, Any]) -> None:
    """``jsonschema.validate``, with each schema checked and compiled once:
    the fake validates every request and answer it sees."""
    error = jsonschema.exceptions.best_match(
        _validator(json.dumps(schema, sort_keys=True)).iter_errors(instance)
    )
    if error is not None:
        raise error


def is_valid(instance: Any, schema: dict[str, Any]) -> bool:
    return _validator(json.dumps(schema, sort_keys=True)).is_valid(instance)


@cache
def _validator(schema_text: str) -> Any:
    schema = json.loads(schema_text)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _typed(name: str, value: str, schema: dict[str, Any]) -> Any:
    if schema.get("type") == "integer":
        try:
            number = int(value)
        except ValueError:
            raise BadQuery(f"{name} must be an integer") from None
        if "minimum" in schema and number < schema["minimum"]:
            raise BadQuery(f"{name} must be at least {schema['minimum']}")
        if "maximum" in schema and number > schema["maximum"]:
            raise BadQuery(f"{name} must be at most {schema['maximum']}")
        return number
    if "enum" in schema and value not in schema["enum"]:
        raise BadQuery(f"{name} must be one of {', '.join(schema['enum'])}")
    return value


@cache
def operation(path: str) -> Operation:
    document = json.loads((SCHEMAS / DOCUMENTS[path]).read_text())
    get = document["paths"][path]["get"]
    answer = get["responses"]["200"]["content"]["application/json"]["schema"]
    return Operation(
        path,
        {p["name"]: p["schema"] for p in get.get("parameters", [])},
        nullable(copy.deepcopy(answer)),
    )
