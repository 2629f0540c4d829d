"""Imagen 4 as an llm tool: real chains with llm-echo (and a chat model that
cannot see images) against the fake API. llm-echo calls the tools its
prompt names and, in the next round, echoes back what it received: the tool
results and the attachments."""

from __future__ import annotations

import json
from pathlib import Path

import llm
import pytest
from llm.plugins import pm

from llm_imagen4.tool import Imagen4

from .conftest import history

ULTRA = "google/imagen-4.0-ultra-generate-001"


def calls(*arguments: dict) -> str:
    """A prompt that makes llm-echo call Imagen4_generate once per item."""
    return json.dumps(
        {
            "tool_calls": [
                {"name": "Imagen4_generate", "arguments": item} for item in arguments
            ]
        }
    )


def rounds(text: str) -> list[dict]:
    """What llm-echo said in each round of a chain, in order."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(text):
        if text[at].isspace():
            at += 1
            continue
        item, at = decoder.raw_decode(text, at)
        found.append(item)
    return found


def chain(llm_cli, *args, input=None) -> tuple[list[dict], object]:
    """``llm -m echo ARGS`` that must succeed: the rounds and click's result."""
    result = llm_cli("-m", "echo", *args, input=input)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return rounds(result.stdout), result


def outputs(answer: dict) -> list[str]:
    return [r["output"] for r in answer["tool_results"]]


def made(answer: dict) -> dict:
    """The one tool result of the round, as the JSON the tool returned."""
    [output] = outputs(answer)
    return json.loads(output)


def refusal(output: str) -> str:
    assert output.startswith("Error: "), output
    assert "\n" not in output and "Traceback" not in output
    return output


# -- llm tools list -------------------------------------------------------------


def test_tools_list_shows_generate_with_its_description(fake, llm_cli):
    result = llm_cli("tools", "list", "--json")
    assert result.exit_code == 0, result.output
    [toolbox] = [
        t for t in json.loads(result.stdout)["toolboxes"] if t["name"] == "Imagen4"
    ]
    [tool] = toolbox["tools"]
    assert tool["name"] == "Imagen4_generate"
    description = tool["description"]
    words = " ".join(description.split())
    for word in (
        "Imagen 4",
        "costs the user money",
        "imagen4",
        "4000 characters",
        "400",
        "prompt:",
        "aspect_ratio:",
        "1:1",
        "16:9",
        "9:16",
        "4:3",
        "3:4",
        "negative_prompt:",
        "Only the imagen4 model",
        "seed:",
        "4294967295",
        "num_images:",
        "1 to 4",
    ):
        assert word in words, word
    # As a model reads it: no indentation left over from the source.
    assert all(line == line.lstrip() for line in description.splitlines())
    properties = tool["arguments"]["properties"]
    assert list(properties) == [
        "prompt",
        "aspect_ratio",
        "negative_prompt",
        "seed",
        "num_images",
    ]
    assert properties["aspect_ratio"]["anyOf"][0]["enum"] == [
        "1:1",
        "16:9",
        "9:16",
        "4:3",
        "3:4",
    ]
    assert tool["arguments"]["required"] == ["prompt"]
    text = llm_cli("tools", "list").stdout
    assert "Imagen4_generate(prompt:" in text
    assert "Imagen4(model: 'str' = 'imagen4', output:" in text
    assert "unknown" not in text


def test_a_configured_toolbox_tells_the_model_its_limits(fake, llm_cli):
    spec = 'Imagen4(model="imagen4-fast", aspect_ratio="16:9", max_images=2)'
    result = llm_cli("tools", "list", spec, "--json")
    assert result.exit_code == 0, result.output
    [tool] = json.loads(result.stdout)["toolboxes"][0]["tools"]
    assert tool["description"].endswith(
        "\n\nThis tool uses imagen4-fast: prompts of at most 400 characters, "
        "no negative_prompt. It may make 2 images in all. "
        "aspect_ratio is fixed to 16:9; leave it out."
    )
    [tool] = Imagen4().tools()
    assert tool.description.endswith(
        "This tool uses imagen4: prompts of at most 4000 characters, "
        "negative_prompt taken. It may make 4 images in all."
    )


def test_attach_false_and_a_call_outside_any_chain(fake):
    response = llm.get_model("echo").chain(
        calls({"prompt": "a vole"}), tools=[Imagen4(attach=False)]
    )
    output = made(rounds(response.text())[-1])
    assert output["attached"] is False and Path(output["paths"][0]).is_file()
    assert response._responses[-1].prompt.attachments == []
    # Called directly, the toolbox's attach alone decides.
    result = Imagen4().generate("a shrew", seed=4)
    [attachment] = result.attachments
    assert result.output["attached"] is True and result.output["seed"] == 4
    assert (
        attachment.type == "image/png" and attachment.path == result.output["paths"][0]
    )


# -- money guards ---------------------------------------------------------------------


def test_the_cap_refuses_the_next_call(fake, llm_cli):
    answer = chain(
        llm_cli,
        "-T",
        "Imagen4(max_images=2)",
        calls({"prompt": "a plum"}, {"prompt": "two pears", "num_images": 2}),
    )[0][-1]
    first, second = outputs(answer)
    assert json.loads(first)["images_left"] == 1
    text = refusal(second)
    assert "2 images asked for" in text and "only 1 more" in text
    assert "max_images" in text
    assert len(fake.generations) == 1
    assert [r["prompt"] for r in history(llm_cli)] == ["a plum"]


@pytest.mark.parametrize(
    "spec,says",
    [
        ('Imagen4(model="nope")', "nope is not an Imagen 4 model"),
        ('Imagen4(aspect_ratio="2:1")', "aspect_ratio"),
        ('Imagen4(model="imagen4-fast", negative_prompt="dogs")', "negative_prompt"),
        ("Imagen4(max_images=-1)", "max_images"),
        ('Imagen4(max_images="lots")', "max_images"),
        ('Imagen4(attach="yes")', "attach"),
        ('Imagen4(modle="imagen4-ultra")', "modle"),
    ],
)
def test_a_bad_toolbox_configuration_is_one_line_before_anything(
    fake, llm_cli, spec, says
):
    result = llm_cli("-m", "echo", "-T", spec, calls({"prompt": "a cat"}))
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert line.startswith("Error: Imagen4: ") and says in line
    assert fake.state.requests == []


def test_a_bad_configuration_from_python_is_a_value_error(fake):
    with pytest.raises(ValueError, match="nope is not an Imagen 4 model"):
        Imagen4(model="nope")
    with pytest.raises(ValueError, match="modle"):
        Imagen4(modle="imagen4")


# -- a chat model that cannot see images ------------------------------------------------


class TextOnly(llm.Model):
    """A chat model with tools and no image input: attachments are an
    error, as a real API without image input would make them."""

    model_id = "text-only"
    supports_tools = True

    def execute(self, prompt, stream, response, conversation):
        if prompt.attachments:
            raise ValueError("text-only does not take attachments")
        if prompt.tool_results:
            yield json.dumps({"tool_results": [r.output for r in prompt.tool_results]})
            return
        for call in json.loads(prompt.prompt)["tool_calls"]:
            response.add_tool_call(llm.ToolCall(call["name"], call["arguments"]))
        yield ""


class TextOnlyPlugin:
    __name__ = "TextOnlyPlugin"

    @llm.hookimpl
    def register_models(self, register):
        register(TextOnly())


@pytest.fixture
def text_only():
    pm.register(TextOnlyPlugin(), name="test-text-only")
    try:
        yield
    finally:
        pm.unregister(name="test-text-only")


def test_a_model_without_image_input_gets_the_paths(fake, llm_cli, text_only):
    result = llm_cli("-m", "text-only", "-T", "Imagen4", calls({"prompt": "a pig"}))
    assert result.exit_code == 0, result.output
    [output] = json.loads(result.stdout)["tool_results"]
    output = json.loads(output)
    assert output["attached"] is False and Path(output["paths"][0]).is_file()


def test_a_model_without_image_input_from_python(fake, text_only):
    response = llm.get_model("text-only").chain(
        calls({"prompt": "a goat"}), tools=[Imagen4()]
    )
    [output] = json.loads(response.text())["tool_results"]
    output = json.loads(output)
    assert output["attached"] is False and Path(output["paths"][0]).is_file()


def test_a_continued_conversation_asks_its_own_model(fake, llm_cli, text_only):
    first = llm_cli("-m", "text-only", "-T", "Imagen4", calls({"prompt": "a hen"}))
    assert first.exit_code == 0, first.output
    [conversation] = {
        turn["conversation_id"]
        for turn in json.loads(llm_cli("logs", "--json", "-n", "0").stdout)
        if turn["model"] == "text-only"
    }
    # The default model takes images; the conversation's model does not.
    assert "image/png" in llm.get_model(llm.get_default_model()).attachment_types
    result = llm_cli(
        "--cid", conversation, "-T", "Imagen4", calls({"prompt": "a rooster"})
    )
    assert result.exit_code == 0, result.output
    [output] = json.loads(result.stdout)["tool_results"]
    assert json.loads(output)["attached"] is False
