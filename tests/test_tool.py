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
