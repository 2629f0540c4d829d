"""The fake API's service endpoints against the vendor's published OpenAPI
documents: the parameters they take, the errors they give, and answers
that validate against the documents' schemas (checked here independently of
the fake's own check)."""

from __future__ import annotations

import httpx2
import jsonschema
import pytest

from . import openapi
from .fake_api import GENERATIONS_PATH, KEY, SHORT_ID, load_schema

AUTH = {"Authorization": f"Bearer {KEY}"}
# What the tests here send is marked, as it is not the plugin's to check.
PROBE = {"X-Contract-Probe": "1"}
WINDOW = {"start": "2020-01-01T00:00:00Z", "end": "2020-02-01T00:00:00Z"}


def get(fake, path, params=None, headers=None):
    response = httpx2.get(
        fake.base_url + path,
        params=params,
        headers={**PROBE, **(headers or {})},
        timeout=10,
    )
    if response.status_code == 200:
        jsonschema.validate(response.json(), openapi.operation(path).answer)
    return response


@pytest.mark.parametrize(
    "params, message",
    [
        ({}, "Neither period nor start and end given"),
        ({"period": "7d", **WINDOW}, "either period or start and end"),
        ({"start": WINDOW["start"]}, "start and end must be given together"),
        ({"period": "7 days"}, "period must be"),
        ({"start": "yesterday", "end": WINDOW["end"]}, "not an ISO-8601 time"),
        ({"start": WINDOW["end"], "end": WINDOW["start"]}, "end is earlier"),
        ({"start": "2020-01-01", "end": "2020-06-01"}, "longer than 92 days"),
        ({"period": "1d", "limit": "0"}, "limit must be at least 1"),
        ({"period": "1d", "limit": "101"}, "limit must be at most 100"),
        ({"period": "1d", "offset": "-1"}, "offset must be at least 0"),
        ({"period": "1d", "status": "succeeded,failed"}, "status must be one of"),
        ({"period": "1d", "client_request_id": "x"}, "not a parameter of /v2/logs"),
        ({"period": ["1d", "2d"]}, "period given more than once"),
    ],
)
def test_the_log_refuses_what_its_document_does_not_allow(fake, params, message):
    response = get(fake, "/v2/logs", params, AUTH)
    assert response.status_code == 400
    assert message in response.json()["message"]


def test_the_log_needs_the_key(fake):
    assert get(fake, "/v2/logs", {"period": "1d"}).status_code == 401


def test_the_log_pages_newest_first_and_filters_by_model(fake):
    fake.add_log_rows(230, "google/imagen-4.0-fast-generate-001")
    fake.add_log_rows(5, "openai/gpt-5", status="failed")
    pages = [
        get(
            fake,
            "/v2/logs",
            {
                "period": "1h",
                "model": "imagen-4.0-fast-generate-001",  # a bare alias
                "limit": 100,
                "offset": offset,
            },
            AUTH,
        ).json()
        for offset in (0, 100, 200)
    ]
    assert [len(page["data"]) for page in pages] == [100, 100, 30]
    assert [page["pagination"]["has_more"] for page in pages] == [True, True, False]
    assert {page["pagination"]["total"] for page in pages} == {230}
    ids = [row["inference_id"] for page in pages for row in page["data"]]
    assert ids == [f"inf-{n}" for n in range(230, 0, -1)]
    default = get(fake, "/v2/logs", {"period": "1h"}, AUTH).json()
    assert default["pagination"]["limit"] == 50 and len(default["data"]) == 50
    both = get(
        fake,
        "/v2/logs",
        {"period": "1h", "model": ["openai/gpt-5", "gpt-5"], "status": "failed"},
        AUTH,
    ).json()
    assert both["pagination"]["total"] == 5


def test_the_log_lists_a_request_only_once_its_ledger_has_it(fake):
    fake.state.service.lagging = True
    fake.add_log_rows(1, "openai/gpt-5")
    assert get(fake, "/v2/logs", {"period": "1h"}, AUTH).json()["data"] == []
    fake.state.service.publish()
    assert len(get(fake, "/v2/logs", {"period": "1h"}, AUTH).json()["data"]) == 1


def test_the_log_is_rate_limited(fake):
    fake.state.service.rate = (2, 60.0)
    for _ in range(2):
        assert get(fake, "/v2/logs", {"period": "1h"}, AUTH).status_code == 200
    assert get(fake, "/v2/logs", {"period": "1h"}, AUTH).status_code == 429


def test_the_catalogue_is_keyless_with_prices_and_an_etag(fake):
    plain = get(fake, "/v1/models")
    assert plain.status_code == 200
    assert all("pricing" not in entry for entry in plain.json()["data"])
    priced = get(
        fake,
        "/v1/models",
        [("include", "pricing,unknown"), ("id", "imagen4/preview")],
    )
    [entry] = priced.json()["data"]
    assert entry["id"] == "google/imagen4/preview"
    assert entry["pricing"]["kind"] == "fixed"
    again = get(
        fake,
        "/v1/models",
        [("include", "pricing"), ("id", "imagen4/preview")],
        {"If-None-Match": priced.headers["etag"]},
    )
    assert again.status_code == 304 and again.content == b""
    everything = get(fake, "/v1/models", {"details": "true"}).json()["data"]
    assert {"pricing", "modalities", "capabilities"} <= set(everything[0])
    assert get(fake, "/v1/models", {"include_prices": "1"}).status_code == 400


def test_the_balance_needs_the_key(fake):
    assert get(fake, "/v2/billing").status_code == 401
    answer = get(fake, "/v2/billing", headers=AUTH).json()
    assert answer == {"current_balance": 123.45, "currency": "USD"}


def post(fake, body):
    return httpx2.post(
        fake.base_url + GENERATIONS_PATH,
        json=body,
        headers={**PROBE, **AUTH},
        timeout=10,
    )


def test_the_previews_short_id_takes_its_own_minimal_schema(fake):
    made = post(fake, {"model": SHORT_ID, "prompt": "a", "num_images": 2, "seed": 0})
    assert made.status_code == 200
    answer_schema = openapi.nullable(load_schema(SHORT_ID)["response_schema"])
    jsonschema.validate(made.json(), answer_schema)
    assert len(made.json()["data"]) == 2
    for field in ({"negative_prompt": "fog"}, {"enhance_prompt": False}):
        refused = post(fake, {"model": SHORT_ID, "prompt": "a", **field})
        assert refused.status_code == 400
        assert "Body validation error" in refused.text


def test_a_generation_no_published_schema_takes_is_refused(fake):
    # The preview's page schema (which the fake follows unless told) takes
    # negative_prompt, not enhance_prompt; no model is "imagen4".
    for body in (
        {"model": "google/imagen4/preview", "prompt": "a", "enhance_prompt": False},
        {"model": "imagen4", "prompt": "a"},
        {"model": "google/imagen-4.0-fast-generate-001", "prompt": "x" * 401},
    ):
        assert post(fake, body).status_code == 400
    assert fake.state.files == {}  # nothing made
