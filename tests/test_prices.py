"""Prices before paying: the published price an image (``GET /v1/models``
with ``include=pricing``, kept a day), the caps that check every row against
it, the dry run's estimate, the toolbox's dollar cap, and the balance."""

from __future__ import annotations

import json

import pytest

from .test_batch import write
from .test_tool import calls, chain, made, outputs, refusal

PREVIEW = "google/imagen4/preview"


def catalogue_reads(fake) -> list:
    return [r for r in fake.state.requests if r.path.startswith("/v1/models")]


def test_a_cap_below_one_row_buys_nothing_and_says_what_a_row_costs(fake, llm_cli):
    path = write(fake, "three.txt", "one\ntwo\nthree\n")
    result = llm_cli("imagen4", "batch", path, "--max-usd", "0.05", "--json")
    assert result.exit_code == 0, result.output
    assert fake.generations == []
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["status"] for row in rows] == ["not started"] * 3
    assert (
        "3 not started (--max-usd 0.05 would be exceeded: 1 image costs $0.06 "
        "(120000 credits) at $0.06 an image)" in result.stderr
    )


def test_a_cap_of_five_rows_buys_exactly_five_at_four_in_flight(fake, llm_cli):
    fake.state.delay = 0.05
    path = write(fake, "eight.txt", "\n".join(f"row {i}" for i in range(8)))
    result = llm_cli("imagen4", "batch", path, "-j", "4", "--max-usd", "0.30")
    assert result.exit_code == 0, result.output
    assert len(fake.generations) == 5
    assert fake.state.most_in_flight == 4
    assert "5 generated" in result.stderr
    assert "3 not started" in result.stderr
    assert "spent 600000 credits / $0.3000" in result.stderr


@pytest.mark.parametrize(
    "pricing",
    [
        None,
        {"kind": "variable", "currency": "USD"},
        {"kind": "variants", "dimensions": ["aspect_ratio"], "variants": []},
        {"kind": "fixed", "units": [{"unit": "token", "price": 1, "per": 1000}]},
        {"kind": "fixed", "units": [{"unit": "image", "price": 0.06}]},
    ],
    ids=["none", "variable", "variants", "per token", "no per"],
)
def test_an_unknown_price_is_learned_from_the_first_row_alone(fake, llm_cli, pricing):
    fake.state.service.pricing[PREVIEW] = pricing
    fake.state.delay = 0.1
    path = write(fake, "five.txt", "\n".join(f"row {i}" for i in range(5)))
    result = llm_cli("imagen4", "batch", path, "-j", "4", "--max-usd", "0.18")
    assert result.exit_code == 0, result.output
    first, *others = fake.generations
    assert len(others) == 2
    # The first ran alone; the two that fit went together once it ended.
    assert all(other.at - first.at >= 0.1 for other in others)
    assert abs(others[0].at - others[1].at) < 0.08
    assert "spent 360000 credits / $0.1800" in result.stderr


def test_the_dry_run_estimates_what_the_batch_costs(fake, llm_cli):
    path = write(fake, "ten.txt", "\n".join(f"row {i}" for i in range(10)))
    result = llm_cli("imagen4", "batch", path, "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[-1] == (
        "Estimated cost: $0.60 for 10 images at $0.06 an image"
    )
    fake.state.service.pricing[PREVIEW] = {"kind": "variable"}
    fake.state.requests.clear()
    # The price list is kept a day: asked again only when it is older.
    again = llm_cli("imagen4", "batch", path, "--dry-run", "-n", "2")
    assert catalogue_reads(fake) == []
    assert again.stderr.splitlines()[-1] == (
        "Estimated cost: $1.20 for 20 images at $0.06 an image"
    )


def test_the_dry_run_says_when_the_price_is_unknown(fake, llm_cli):
    fake.state.service.pricing[PREVIEW] = {"kind": "variable"}
    path = write(fake, "two.txt", "one\ntwo\n")
    result = llm_cli("imagen4", "batch", path, "--dry-run")
    assert result.stderr.splitlines()[-1] == (
        "Estimated cost: unknown for 2 images: no price an image is published "
        "for imagen4"
    )


def test_models_shows_each_price_and_check_asks_again(fake, llm_cli):
    fake.state.service.pricing["google/imagen-4.0-ultra-generate-001"] = {
        "kind": "fixed",
        "currency": "USD",
        "units": [{"unit": "image", "price": 0.24, "per": 4}],
    }
    result = llm_cli("imagen4", "models")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[lines.index("imagen4: google/imagen4/preview (default)") + 1] == (
        "  price: $0.06 an image"
    )
    ultra = lines.index("imagen4-ultra: google/imagen-4.0-ultra-generate-001")
    assert lines[ultra + 1] == "  price: $0.06 an image"
    [asked] = catalogue_reads(fake)
    assert "include=pricing" in asked.path and "Authorization" not in asked.headers
    assert llm_cli("imagen4", "models").exit_code == 0
    assert len(catalogue_reads(fake)) == 1
    checked = llm_cli("imagen4", "models", "--check")
    assert checked.exit_code == 0, checked.output
    assert "imagen4: google/imagen4/preview (default)  served" in checked.stdout
    second = catalogue_reads(fake)[1]
    assert "If-None-Match" in second.headers


def test_models_without_the_price_list_says_the_price_is_unknown(fake, llm_cli):
    fake.plan_service("/v1/models", status=503, body={"message": "down"})
    result = llm_cli("imagen4", "models")
    assert result.exit_code == 0, result.output
    assert "  price: unknown (the API's model list could not be read: AI/ML API" in (
        result.stdout
    )


def test_a_price_list_too_large_once_inflated_is_refused(fake, llm_cli):
    bomb = b'{"object": "list", "data": [' + b" " * (64 * 1024 * 1024) + b"]}"
    fake.plan_service("/v1/models", body=bomb, gzip=True)
    result = llm_cli("imagen4", "models", "--check")
    assert result.exit_code == 1
    assert "an answer larger than 4096 kB" in result.stderr


def test_the_balance_is_one_line(fake, llm_cli, monkeypatch):
    fake.state.service.balance = 1234.5
    result = llm_cli("imagen4", "balance")
    assert result.exit_code == 0, result.output
    assert result.stdout == "$1,234.50\n"
    [asked] = [r for r in fake.state.requests if r.path == "/v2/billing"]
    assert asked.headers["Authorization"].startswith("Bearer ")
    monkeypatch.setenv("AIMLAPI_KEY", "sk-wrong-key")
    wrong = llm_cli("imagen4", "balance")
    assert wrong.exit_code == 1
    assert wrong.stderr.count("\n") == 1 and "401" in wrong.stderr
    assert "llm keys set aimlapi" in wrong.stderr
    monkeypatch.delenv("AIMLAPI_KEY")
    none = llm_cli("imagen4", "balance")
    assert none.exit_code == 1 and "llm keys set aimlapi" in none.stderr


def test_the_toolbox_dollar_cap_holds_across_a_chain(fake, llm_cli):
    answers, _ = chain(
        llm_cli,
        "-T",
        "Imagen4(max_usd=0.15, max_images=10)",
        "--chain-limit",
        "10",
        calls({"prompt": "a plum"}, {"prompt": "two pears", "num_images": 2}),
    )
    first, second = outputs(answers[-1])
    assert json.loads(first)["price_per_image_usd"] == 0.06
    assert json.loads(first)["usd_left"] == pytest.approx(0.09)
    text = refusal(second)
    assert "max_usd 0.15 would be exceeded: 2 images cost $0.12" in text
    assert len(fake.generations) == 1
    # The next call of the chain that fits is made.
    answers, _ = chain(
        llm_cli,
        "-T",
        "Imagen4(max_usd=0.15)",
        calls({"prompt": "one"}, {"prompt": "two"}, {"prompt": "three"}),
    )
    results = outputs(answers[-1])
    assert [json.loads(r)["usd_left"] for r in results[:2]] == pytest.approx(
        [0.09, 0.03]
    )
    assert "max_usd 0.15 would be exceeded" in refusal(results[2])


def test_every_tool_result_tells_the_price_an_image(fake, llm_cli):
    answers, _ = chain(llm_cli, "-T", "Imagen4", calls({"prompt": "a fig"}))
    assert made(answers[-1])["price_per_image_usd"] == 0.06
    assert "usd_left" not in made(answers[-1])
