"""The AI/ML API as it really answers: every documented shape of answer, the
rewritten prompt, the cost in the body or the headers, errors inside a 2xx,
client request ids, the API's log, its model list, and the preview's two
published schemas."""

import json
import re

import pytest

from llm_imagen4 import answers, api

from .conftest import history


def urls_of(answer):
    """The image URLs of an answer the fake made, whatever its shape."""
    return [item["url"] for item in answer.get("images") or answer.get("data")]


# Answers the AI/ML API's documentation prints for the same endpoint, each
# made from the fake's real answer so that its URLs can be fetched.
DOCUMENTED = {
    "the -001 models' page: data[] with mime_type and prompt, tokens_used": lambda a: {
        "data": [
            {"mime_type": "image/png", "url": url, "prompt": "A mischievous racoon"}
            for url in urls_of(a)
        ],
        "meta": {"usage": {"tokens_used": 84000}},
    },
    "newer specs: usd_spent and a top-level model": lambda a: {
        "model": "google/imagen4/preview",
        "data": [{"url": url, "b64_json": None} for url in urls_of(a)],
        "meta": {"usage": {"credits_used": 84000, "usd_spent": 0.028}},
    },
    "images[] empty beside a full data[]": lambda a: {
        "images": [],
        "data": [{"url": url} for url in urls_of(a)],
    },
    "data[] empty beside a full images[]": lambda a: {
        "data": [],
        "images": [{"url": url} for url in urls_of(a)],
    },
    "a top-level seed beside data[], file details inside": lambda a: {
        "seed": 5,
        "data": [
            {
                "url": url,
                "content_type": "image/png",
                "width": 1024,
                "height": 1024,
                "file_name": "output.png",
                "file_size": 1665805,
            }
            for url in urls_of(a)
        ],
    },
    "has_nsfw_concepts": lambda a: {
        "images": [{"url": url} for url in urls_of(a)],
        "has_nsfw_concepts": [False],
        "seed": 5,
    },
    "meta that is not an object": lambda a: {
        "data": [{"url": url} for url in urls_of(a)],
        "meta": "x",
    },
}


@pytest.mark.parametrize("shape", list(DOCUMENTED.values()), ids=list(DOCUMENTED))
def test_every_documented_answer_is_read(fake, llm_cli, shape):
    fake.plan_api(generate=True, shape=shape)
    result = llm_cli("imagen4", "a racoon", "--seed", "5")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(fake.work / "a-racoon.png")
    [row] = history(llm_cli)
    assert row["seed"] == 5 and row["images"][0]["exists"]


def test_the_cost_comes_from_the_body_or_else_the_headers(fake, llm_cli):
    fake.plan_api(
        generate=True, shape=DOCUMENTED["newer specs: usd_spent and a top-level model"]
    )
    assert llm_cli("imagen4", "body").exit_code == 0
    fake.plan_api(
        generate=True,
        shape=DOCUMENTED[
            "the -001 models' page: data[] with mime_type and prompt, tokens_used"
        ],
    )
    assert llm_cli("imagen4", "tokens").exit_code == 0
    fake.state.cost_in = "headers"
    assert llm_cli("imagen4", "headers", "-m", "imagen4-ultra").exit_code == 0
    fake.plan_api(generate=True, no_cost=True)
    assert llm_cli("imagen4", "none").exit_code == 0
    costs = {r["prompt"]: (r["credits_used"], r["usd_spent"]) for r in history(llm_cli)}
    assert costs == {
        "body": (84000, 0.028),
        # tokens_used is the cost; the dollars come from the header.
        "tokens": (84000, 0.06),
        "headers": (120000, 0.06),
        "none": (None, None),
    }


def test_the_rewritten_prompt_is_kept_per_image(fake, llm_cli):
    fake.plan_api(
        generate=True,
        shape=DOCUMENTED[
            "the -001 models' page: data[] with mime_type and prompt, tokens_used"
        ],
    )
    assert llm_cli("imagen4", "racoon", "-n", "2").exit_code == 0
    [row] = history(llm_cli)
    assert [i["enhanced_prompt"] for i in row["images"]] == ["A mischievous racoon"] * 2
    assert row["prompt"] == "racoon"


def test_an_inline_image_beside_a_null_url(fake, llm_cli):
    result = llm_cli("imagen4", "inline", "-m", "imagen4-fast")
    assert result.exit_code == 0, result.output
    assert fake.downloads == []
    [row] = history(llm_cli)
    assert row["images"][0]["url"] is None and row["images"][0]["exists"]


@pytest.mark.parametrize(
    "error,expected",
    [
        (
            {
                "name": "BillingError",
                "message": "Not enough credits",
                "data": {"kind": "err_insufficent_credits"},
            },
            "The AI/ML API account is out of credits (Not enough credits)",
        ),
        (
            {
                "name": "ValidationError",
                "message": ["prompt too long", "seed too large"],
                "data": {"kind": "err_validation"},
            },
            "prompt too long; seed too large (err_validation)",
        ),
    ],
    ids=["out of credits", "a list of messages"],
)
def test_an_error_inside_a_2xx_answer_is_one_line(fake, llm_cli, error, expected):
    fake.plan_api(status=200, body={"error": error})
    result = llm_cli("imagen4", "a")
    assert result.exit_code == 1
    assert (
        result.stderr.strip() == f"Error: The AI/ML API refused the request: {expected}"
    )
    assert list(fake.work.iterdir()) == []


def test_an_answer_that_is_itself_an_error_object_keeps_its_kind(fake, llm_cli):
    out_of_credits = {
        "name": "BillingError",
        "message": "Not enough credits",
        "data": {"kind": "err_insufficent_credits"},
    }
    expected = "The AI/ML API account is out of credits (Not enough credits)"
    fake.plan_api(status=200, body=out_of_credits)
    result = llm_cli("imagen4", "a")
    assert result.exit_code == 1
    assert result.stderr == f"Error: The AI/ML API refused the request: {expected}\n"
    fake.fail_api(403, {**out_of_credits, "requestId": "r-2"})
    result = llm_cli("imagen4", "a")
    assert result.stderr == f"Error: AI/ML API error 403: {expected} (requestId r-2)\n"
    fake.fail_api(402, {"message": "Payment required", "error": out_of_credits})
    result = llm_cli("imagen4", "a")
    assert result.stderr == f"Error: AI/ML API error 402: {expected}\n"
    assert list(fake.work.iterdir()) == []


def test_an_error_body_whose_message_is_a_list(fake, llm_cli):
    fake.fail_api(
        400,
        {
            "message": ["prompt must be shorter", "seed must be a number"],
            "requestId": "r-1",
        },
    )
    result = llm_cli("imagen4", "a")
    assert result.stderr.strip() == (
        "Error: AI/ML API error 400: prompt must be shorter; seed must be a number (requestId r-1)"
    )


def test_parse_answer_reads_the_headers_and_ignores_a_bad_seed():
    answer = answers.parse_answer(
        {"images": [{"url": "https://cdn/x.png"}], "seed": True},
        {
            "x-inference-id": "inf-7",
            "x-aimlapi-credits-used": "120000",
            "x-aimlapi-usd-spent": "0.04",
        },
    )
    assert (answer.inference_id, answer.credits_used, answer.usd_spent) == (
        "inf-7",
        120000,
        0.04,
    )
    assert answer.seed is None
    for bad in ("inf", "nan", "-1", "a lot"):
        assert (
            answers.parse_answer(
                {"data": [{"url": "u"}]}, {"x-aimlapi-credits-used": bad}
            ).credits_used
            is None
        )


@pytest.mark.parametrize(
    "generation_id",
    ["01m8g82k9ygph0dnz9tg1h6eba", "with spaces/and?odd&chars", "x" * 300],
)
def test_client_request_ids_fit_what_the_api_keeps(generation_id):
    request_id = api.client_request_id(generation_id)
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", request_id)


def test_the_client_request_id_and_inference_id_are_recorded(fake, llm_cli):
    assert llm_cli("imagen4", "a").exit_code == 0
    [turn_id] = [r["id"] for r in history(llm_cli)]
    [request] = fake.generations
    assert request.headers["X-Client-Request-Id"] == f"llm-imagen4:{turn_id}"
    shown = json.loads(llm_cli("imagen4", "show", turn_id, "--json").stdout)
    assert shown["client_request_id"] == f"llm-imagen4:{turn_id}"
    assert shown["inference_id"] == fake.log[0]["inference_id"]


def test_status_of_a_logged_generation_asks_the_apis_log(fake, llm_cli):
    assert llm_cli("imagen4", "a").exit_code == 0
    [turn_id] = [r["id"] for r in history(llm_cli)]
    result = llm_cli("imagen4", "status", turn_id)
    assert result.stdout.strip() == (
        f"{turn_id}: the API's log says it succeeded, costing 120000 credits / $0.0600"
    )
    assert len(fake.generations) == 1
    assert llm_cli("imagen4", "status", "nope").exit_code == 1


# -- the preview's two published schemas ------------------------------------------


def test_the_preview_takes_the_newer_controls_on_a_server_that_follows_them(
    fake, llm_cli
):
    fake.state.preview_2026 = True
    result = llm_cli(
        "imagen4",
        "a",
        "--no-enhance-prompt",
        "--person-generation",
        "dont_allow",
        "--watermark",
        "--inline",
    )
    assert result.exit_code == 0, result.output
    body = fake.generations[0].body
    assert body["enhance_prompt"] is False and body["add_watermark"] is True
    assert body["convert_base64_to_url"] is False and fake.downloads == []


@pytest.mark.parametrize(
    "args,misfit",
    [
        (
            ["a", "--negative-prompt", "fog", "--no-enhance-prompt"],
            "its page schema (2025-08) has no enhance_prompt; "
            "its newer schema (2026-01) has no negative_prompt",
        ),
        (
            ["a", "--negative-prompt", "fog", "--inline", "--watermark"],
            "its page schema (2025-08) has no add_watermark, inline; "
            "its newer schema (2026-01) has no negative_prompt",
        ),
        (
            ["x" * 500, "--safety-setting", "block_only_high"],
            "its page schema (2025-08) has no safety_setting; "
            "its newer schema (2026-01) takes prompts of at most 400 characters",
        ),
    ],
    ids=["negative prompt and enhance", "negative prompt and inline", "long prompt"],
)
def test_the_preview_sends_only_what_one_of_its_schemas_takes(
    fake, llm_cli, args, misfit
):
    # Each field alone is in one published schema; together, in none.
    result = llm_cli("imagen4", *args)
    assert result.exit_code == 1
    assert result.output == (
        "Error: No published request schema of imagen4 takes these together: "
        f"{misfit}\n"
    )
    assert fake.state.requests == []
    assert list(fake.work.iterdir()) == []


def test_llm_m_sends_the_preview_only_what_one_of_its_schemas_takes(fake, llm_cli):
    result = llm_cli(
        "-m",
        "imagen4",
        "a",
        "-o",
        "negative_prompt",
        "fog",
        "-o",
        "enhance_prompt",
        "0",
    )
    assert result.exit_code == 1
    assert "No published request schema of imagen4 takes these together" in (
        result.output
    )
    assert fake.state.requests == []


def test_a_refused_field_says_which_schema_the_server_follows(fake, llm_cli):
    result = llm_cli("imagen4", "a", "--no-enhance-prompt")
    assert result.exit_code == 1
    assert "Body validation error" in result.output
    assert result.output.count("'enhance_prompt' was unexpected") == 1, result.output
    assert "the server follows the preview's page schema (2025-08)" in result.output
    fake.reset()
    fake.state.preview_2026 = True
    result = llm_cli("imagen4", "a", "--negative-prompt", "fog")
    assert "the server follows the preview's newer schema (2026-01)" in result.output
    result = llm_cli("imagen4", "x" * 500)
    assert "takes prompts of at most 400 characters" in result.output


def test_the_preview_keeps_its_pages_limits(fake, llm_cli):
    assert llm_cli("imagen4", "x" * 4000, "--negative-prompt", "fog").exit_code == 0
    assert len(fake.generations[0].body["prompt"]) == 4000


def test_models_check_asks_the_keyless_model_list(fake, llm_cli, monkeypatch):
    monkeypatch.delenv("AIMLAPI_KEY")
    fake.state.gone_models = {"google/imagen4/preview"}
    result = llm_cli("imagen4", "models", "--check")
    assert result.exit_code == 1
    assert "imagen4: google/imagen4/preview (default)  NOT SERVED" in result.stdout
    assert "imagen4-fast: google/imagen-4.0-fast-generate-001  served" in result.stdout
    assert "1 of the models are no longer served by the API" in result.stderr
    [request] = fake.state.requests
    assert request.path.startswith("/v1/models?")
    assert "Authorization" not in request.headers
