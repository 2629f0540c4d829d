"""Bad input: a clear error, a non-zero exit, nothing sent, nothing written."""

import os

import pytest

from .fake_api import KEY


@pytest.fixture
def fake(new_machine):
    """Bad input must leave even llm's user folder as it was: empty."""
    return new_machine


LONG_PREVIEW = "x" * 4001
LONG_NEWER = "x" * 401

GENERATE_CASES = {
    "aspect ratio not offered": (["a", "-r", "2:1"], "'2:1' is not one of"),
    "zero images": (["a", "-n", "0"], "0 is not in the range 1<=x<=4"),
    "five images": (["a", "-n", "5"], "5 is not in the range 1<=x<=4"),
    "seed not a number": (["a", "--seed", "abc"], "'abc' is not a valid integer"),
    "seed below the preview's minimum": (
        ["a", "--seed", "0"],
        "--seed: Input should be greater than or equal to 1",
    ),
    "negative seed": (
        ["a", "-m", "imagen4-fast", "--seed", "-1"],
        "-1 is not in the range 0<=x<=4294967295",
    ),
    "seed above 32 bits": (
        ["a", "--seed", "4294967296"],
        "4294967296 is not in the range 0<=x<=4294967295",
    ),
    "negative prompt on a newer model": (
        ["a", "-m", "imagen4-fast", "--negative-prompt", "x"],
        "imagen4-fast does not take --negative-prompt",
    ),
    "an alias that is not an Imagen 4 model": (
        ["a", "-m", "echo"],
        "echo is not an Imagen 4 model",
    ),
    "person generation value": (
        ["a", "-m", "imagen4-ultra", "--person-generation", "all"],
        "'all' is not one of",
    ),
    "unknown model": (["a", "-m", "imagen3"], "imagen3 is not an Imagen 4 model"),
    "prompt too long for the preview": (
        [LONG_PREVIEW],
        "The prompt is 4001 characters; imagen4 takes at most 4000",
    ),
    "prompt too long for a newer model": (
        [LONG_NEWER, "-m", "imagen4-generate"],
        "The prompt is 401 characters; imagen4-generate takes at most 400",
    ),
    "empty prompt": ([""], "The prompt is empty"),
    "blank prompt": (["  \n\t "], "The prompt is empty"),
    "zero timeout": (["a", "--timeout", "0"], "--timeout"),
    "zero retries": (["a", "--retries", "0"], "0 is not in the range 1<=x<=10"),
}


def assert_nothing_happened(fake, result, expected):
    assert result.exit_code != 0
    assert expected in result.output
    assert "Traceback" not in result.output
    assert fake.state.requests == []
    assert list(fake.work.iterdir()) == []
    assert list(fake.user_path.iterdir()) == []


@pytest.mark.parametrize(
    "args,expected", list(GENERATE_CASES.values()), ids=list(GENERATE_CASES)
)
def test_generate_refuses_bad_input(fake, llm_cli, args, expected):
    result = llm_cli("imagen4", *args)
    assert_nothing_happened(fake, result, expected)
    assert result.stdout == ""


def test_prompt_exactly_at_the_limit_is_sent(fake, llm_cli):
    result = llm_cli("imagen4", "x" * 4000)
    assert result.exit_code == 0, result.output
    assert len(fake.generations[0].body["prompt"]) == 4000


@pytest.mark.parametrize(
    "stdin,expected",
    [
        (b"\xff\xfe not utf-8", "The prompt on standard input is not UTF-8"),
        (b"", "The prompt on standard input is empty"),
        (b"  \n", "The prompt on standard input is empty"),
    ],
    ids=["not utf-8", "empty", "blank"],
)
def test_stdin_prompt_must_be_text(fake, llm_cli, stdin, expected):
    result = llm_cli("imagen4", "-", input=stdin)
    assert_nothing_happened(fake, result, expected)


def test_existing_file_is_never_overwritten(fake, llm_cli):
    target = fake.work / "mine.png"
    target.write_bytes(b"precious")
    result = llm_cli("imagen4", "a", "-o", "mine.png")
    assert result.exit_code == 1
    assert "mine.png already exists; it will not be overwritten" in result.output
    assert target.read_bytes() == b"precious"
    assert fake.state.requests == []


def test_existing_file_as_output_for_several_images(fake, llm_cli):
    (fake.work / "notes").write_text("x")
    result = llm_cli("imagen4", "a", "-n", "2", "-o", "notes")
    assert result.exit_code == 1
    assert "notes is a file; give a folder to save 2 images" in result.output
    assert fake.state.requests == []


def test_file_name_output_for_several_images(fake, llm_cli):
    result = llm_cli("imagen4", "a", "-n", "2", "-o", "one.png")
    assert result.exit_code == 1
    assert "one.png names one file; give a folder to save 2 images" in result.output
    assert fake.state.requests == []


def test_output_folder_that_cannot_be_created(fake, llm_cli):
    (fake.work / "afile").write_text("x")
    result = llm_cli("imagen4", "a", "-o", "afile/sub/dir")
    assert result.exit_code == 1
    assert "Cannot save to afile/sub/dir" in result.output
    assert "is not a folder" in result.output
    assert fake.state.requests == []
    assert sorted(p.name for p in fake.work.iterdir()) == ["afile"]


LLM_PROMPT_CASES = {
    "aspect ratio": (["-o", "aspect_ratio", "2:1"], "aspect_ratio"),
    "num_images": (["-o", "num_images", "9"], "num_images"),
    "negative prompt on a newer model": (
        ["-m", "imagen4-fast", "-o", "negative_prompt", "x"],
        "negative_prompt",
    ),
    "unknown option": (["-o", "style", "photo"], "style"),
    "prompt too long": (["-m", "imagen4-ultra", "-o", "seed", "1"], "at most 400"),
}


@pytest.mark.parametrize(
    "args,expected", list(LLM_PROMPT_CASES.values()), ids=list(LLM_PROMPT_CASES)
)
def test_llm_prompt_refuses_bad_options(fake, llm_cli, args, expected):
    if "-m" not in args:
        args = ["-m", "imagen4", *args]
    result = llm_cli(*args, LONG_NEWER)
    assert result.exit_code != 0
    assert expected in result.output
    assert "Traceback" not in result.output
    assert fake.state.requests == []
    assert list(fake.work.iterdir()) == []


def test_no_key_names_both_ways_to_set_one(fake, llm_cli, monkeypatch):
    monkeypatch.delenv("AIMLAPI_KEY")
    for args in (["imagen4", "a"], ["-m", "imagen4", "a"]):
        result = llm_cli(*args)
        assert result.exit_code == 1
        assert "llm keys set aimlapi" in result.output
        assert "AIMLAPI_KEY" in result.output
        assert "Traceback" not in result.output
    assert fake.state.requests == []
    assert list(fake.work.iterdir()) == []


def test_stored_key_explicit_key_and_alias(fake, llm_cli, monkeypatch):
    monkeypatch.delenv("AIMLAPI_KEY")
    assert llm_cli("keys", "set", "aimlapi", "--value", KEY).exit_code == 0
    assert llm_cli("imagen4", "stored").exit_code == 0
    assert llm_cli("keys", "set", "work", "--value", KEY).exit_code == 0
    assert llm_cli("keys", "set", "aimlapi", "--value", "wrong").exit_code == 0
    assert llm_cli("imagen4", "by alias", "--key", "work").exit_code == 0
    assert llm_cli("imagen4", "explicit", "--key", KEY).exit_code == 0
    assert llm_cli("-m", "imagen4", "llm alias", "--key", "work").exit_code == 0
    auth = [r.headers["Authorization"] for r in fake.generations]
    assert auth == [f"Bearer {KEY}"] * 4


def test_wrong_key_says_how_to_set_one(fake, llm_cli):
    result = llm_cli("imagen4", "a", "--key", "sk-wrong")
    assert result.exit_code == 1
    line = result.output.strip()
    assert "\n" not in line
    assert "AI/ML API error 401: Invalid API key" in line
    assert "requestId req-401" in line
    assert "llm keys set aimlapi" in line
    assert "sk-wrong" not in result.output
    assert len(fake.generations) == 1


@pytest.mark.parametrize("status", [400, 403, 404])
def test_client_errors_are_one_line_and_not_retried(fake, llm_cli, status):
    fake.fail_api(
        status,
        {"message": "Body validation error! nope", "requestId": "abc-123"},
    )
    result = llm_cli("imagen4", "a")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"Error: AI/ML API error {status}: Body validation error! nope "
        "(requestId abc-123)"
    )
    assert len(fake.generations) == 1
    assert list(fake.work.iterdir()) == []


def test_non_json_error_body(fake, llm_cli):
    fake.fail_api(403, "<html><body>\nForbidden by proxy\n</body></html>")
    result = llm_cli("imagen4", "a")
    assert result.exit_code == 1
    assert (
        "AI/ML API error 403: <html><body> Forbidden by proxy </body></html>"
        in result.output
    )
    assert "Traceback" not in result.output


def test_a_base_url_that_is_not_http(fake, llm_cli, monkeypatch):
    monkeypatch.setenv("AIMLAPI_BASE_URL", "ftp://api.example.test")
    result = llm_cli("imagen4", "a")
    assert_nothing_happened(
        fake, result, "AIMLAPI_BASE_URL must start with https:// or http://"
    )


def test_an_answer_without_images(fake, llm_cli):
    fake.plan_api(status=200, body={"data": [], "meta": {"usage": {"credits_used": 0}}})
    result = llm_cli("imagen4", "a")
    assert result.exit_code == 1
    assert "The API answered without any image" in result.output
    assert list(fake.work.iterdir()) == []


def test_a_success_without_images_says_what_the_api_charged(fake, llm_cli):
    # Made and charged, then answered with no image: the API's log tells.
    fake.plan_api(generate=True, shape=lambda made: {**made, "data": [], "images": []})
    result = llm_cli("imagen4", "a")
    assert result.exit_code == 1
    assert "The API answered without any image" in result.output
    assert (
        "the API's log says it succeeded, costing 120000 credits / $0.0600"
        in result.output
    )
    assert "Nothing was sent again" in result.output
    assert len(fake.generations) == 1


@pytest.mark.skipif(
    not os.path.isdir("/sys"), reason="needs /sys, where even root makes no files"
)
def test_output_folder_that_cannot_be_written(fake, llm_cli):
    result = llm_cli("imagen4", "a", "-o", "/sys/imagen4-out")
    assert result.exit_code == 1
    assert "Cannot save to /sys/imagen4-out: /sys is not writable" in result.output
    assert fake.state.requests == []
