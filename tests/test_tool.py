"""Imagen 4 as an llm tool: real chains with llm-echo (and a chat model that
cannot see images) against the fake API. llm-echo calls the tools its
prompt names and, in the next round, echoes back what it received: the tool
results and the attachments."""

from __future__ import annotations

import json

import pytest

from llm_imagen4.tool import Imagen4


def calls(*arguments: dict) -> str:
    """A prompt that makes llm-echo call Imagen4_generate once per item."""
    return json.dumps(
        {
            "tool_calls": [
                {"name": "Imagen4_generate", "arguments": item} for item in arguments
            ]
        }
    )


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
