"""Imagen 4 as an llm tool: real chains with llm-echo (and a chat model that
cannot see images) against the fake API. llm-echo calls the tools its
prompt names and, in the next round, echoes back what it received: the tool
results and the attachments."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click.testing
import llm
import pytest
from llm.plugins import pm

from llm_imagen4.tool import Imagen4

from .conftest import history, journal_ids

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


# -- the CLI chain ----------------------------------------------------------------


@pytest.mark.parametrize("route", [[], ["--async"]], ids=["sync", "async"])
def test_cli_chain_makes_the_image_and_the_next_round_sees_it(fake, llm_cli, route):
    first, second = chain(
        llm_cli, *route, "-T", "Imagen4", calls({"prompt": "a red fox", "seed": 7})
    )[0]
    assert "tool_results" not in first
    output = made(second)
    assert output["model"] == "imagen4" and output["seed"] == 7
    assert output["attached"] is True and output["images_left"] == 3
    # What it cost, as the API reported it.
    assert output["credits_used"] == 120000 and output["usd_spent"] == 0.06
    assert output["not_saved"] == []
    [path] = output["paths"]
    assert Path(path).is_absolute() and Path(path).is_file()
    assert Path(path).parent == fake.work
    assert second["attachments"] == [
        {
            "type": "image/png",
            "path": path,
            "url": None,
            "id": second["attachments"][0]["id"],
        }
    ]
    [sent] = fake.generations
    assert sent.body["prompt"] == "a red fox" and sent.body["seed"] == 7
    [row] = history(llm_cli)
    assert row["id"] == output["id"] and row["images"][0]["path"] == path


def test_cli_chain_with_a_configured_toolbox(fake, llm_cli):
    spec = 'Imagen4(model="imagen4-ultra", max_images=8, output="renders")'
    answer = chain(
        llm_cli,
        "-T",
        spec,
        calls({"prompt": "a lighthouse at dawn", "num_images": 2, "seed": 3}),
    )[0][-1]
    output = made(answer)
    assert output["model"] == "imagen4-ultra" and output["images_left"] == 6
    assert [Path(p).parent for p in output["paths"]] == [fake.work / "renders"] * 2
    assert all(Path(p).is_file() for p in output["paths"])
    assert [a["path"] for a in answer["attachments"]] == output["paths"]
    assert [r.body["model"] for r in fake.generations] == [ULTRA]


def test_a_fixed_option_holds_for_every_call(fake, llm_cli):
    answer = chain(
        llm_cli,
        "-T",
        'Imagen4(aspect_ratio="16:9")',
        calls(
            {"prompt": "a wide valley"},
            {"prompt": "a tall tower", "aspect_ratio": "9:16"},
            {"prompt": "a wide river", "aspect_ratio": "16:9"},
        ),
    )[0][-1]
    first, second, third = outputs(answer)
    assert "aspect_ratio is fixed to 16:9" in refusal(second)
    assert json.loads(first)["paths"] and json.loads(third)["paths"]
    assert [r.body["aspect_ratio"] for r in fake.generations] == ["16:9", "16:9"]


def test_tools_debug_shows_the_call_and_its_output(fake, llm_cli):
    _, result = chain(llm_cli, "--td", "-T", "Imagen4", calls({"prompt": "a wren"}))
    assert "Tool call: Imagen4_generate({'prompt': 'a wren'})" in result.stderr
    assert '"model": "imagen4"' in result.stderr
    assert "Attachments:" in result.stderr and "a-wren.png" in result.stderr


@pytest.mark.parametrize("answer", ["y", "n"])
def test_tools_approve_asks_before_anything_is_sent(fake, llm_cli, monkeypatch, answer):
    # As at a terminal: llm reads no prompt from stdin, and asks there.
    monkeypatch.setattr(click.testing._NamedTextIOWrapper, "isatty", lambda _: True)
    result = llm_cli(
        "-m", "echo", "--ta", "-T", "Imagen4", calls({"prompt": "a moth"}), input=answer
    )
    assert result.exit_code == 0, result.output
    assert "Tool call: Imagen4_generate({'prompt': 'a moth'})" in result.stderr
    asked = f"Approve tool call? [y/N]: {answer}\n"
    assert result.stdout.count(asked) == 1
    [output] = outputs(rounds(result.stdout.replace(asked, ""))[-1])
    if answer == "y":
        assert Path(json.loads(output)["paths"][0]).is_file()
        assert len(fake.generations) == 1
    else:
        assert output == "Cancelled: User cancelled tool call"
        assert fake.state.requests == [] and history(llm_cli) == []
        assert list(fake.work.iterdir()) == []


# -- Python chains ------------------------------------------------------------------


def test_python_sync_chain(fake):
    response = llm.get_model("echo").chain(
        calls({"prompt": "a green frog", "seed": 9}), tools=[Imagen4()]
    )
    first, second = rounds(response.text())
    output = made(second)
    assert output["seed"] == 9 and output["attached"] is True
    [path] = output["paths"]
    assert Path(path).is_file()
    [attachment] = response._responses[-1].prompt.attachments
    assert attachment.path == path and attachment.resolve_type() == "image/png"
    assert len(fake.generations) == 1


def test_python_async_chain(fake):
    async def run():
        response = llm.get_async_model("echo").chain(
            calls({"prompt": "a blue whale", "seed": 10}), tools=[Imagen4()]
        )
        return await response.text(), response

    text, response = asyncio.run(run())
    output = made(rounds(text)[-1])
    assert output["seed"] == 10 and output["attached"] is True
    [path] = output["paths"]
    assert Path(path).is_file()
    [attachment] = response._responses[-1].prompt.attachments
    assert attachment.path == path and attachment.resolve_type() == "image/png"
    assert len(fake.generations) == 1


def test_an_async_chain_goes_on_while_the_tool_waits_for_the_api(fake):
    # The API takes a while; a task beside the chain counts the ticks of
    # the event loop that come while the generation is in flight.
    fake.state.delay = 0.3

    async def run():
        ticks = 0
        done = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not done.is_set():
                await asyncio.sleep(0.01)
                ticks += bool(fake.state.in_flight)

        task = asyncio.create_task(ticker())
        response = llm.get_async_model("echo").chain(
            calls({"prompt": "a slow loris"}), tools=[Imagen4()]
        )
        text = await response.text()
        done.set()
        await task
        return ticks, text

    ticks, text = asyncio.run(run())
    assert ticks > 0
    assert Path(made(rounds(text)[-1])["paths"][0]).is_file()
    assert len(fake.generations) == 1


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


def test_calls_in_one_async_round_cannot_pass_the_cap(fake):
    async def run():
        response = llm.get_async_model("echo").chain(
            calls(*({"prompt": f"a cat {i}", "num_images": 2} for i in range(3))),
            tools=[Imagen4(max_images=4)],
        )
        return await response.text()

    answer = rounds(asyncio.run(run()))[-1]
    first, second, third = outputs(answer)
    assert json.loads(second)["images_left"] == 0
    assert "may make no more images" in refusal(third)
    assert len(fake.generations) == 2 and len(answer["attachments"]) == 4


# -- money guards ---------------------------------------------------------------------


def test_threads_sharing_a_toolbox_cannot_pass_the_cap(fake):
    toolbox = Imagen4(max_images=3)
    # The three calls allowed are in flight at once, while the rest are
    # refused.
    fake.state.barrier = threading.Barrier(3)

    def one(i):
        chain = llm.get_model("echo").chain(
            calls({"prompt": f"a bee {i}"}), tools=[toolbox]
        )
        return outputs(rounds(chain.text())[-1])[0]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(8)))
    refused = [a for a in answers if a.startswith("Error: ")]
    assert len(refused) == 5
    assert all("may make no more images" in refusal(a) for a in refused)
    assert len(fake.generations) == 3 and fake.state.most_in_flight == 3


def test_a_failed_generation_reaches_the_model_as_one_line(fake, llm_cli):
    fake.fail_api(400, {"message": "Body validation error! something"})
    answer = chain(llm_cli, "-T", "Imagen4", calls({"prompt": "a yak"}))[0][-1]
    [output] = outputs(answer)
    assert "AI/ML API error 400: Body validation error! something" in refusal(output)
    assert answer["attachments"] == [] and len(fake.generations) == 1


HOSTILE = "\x1b]0;pwned\x07 \x9b2J"


@pytest.mark.parametrize("source", ["api", "toolbox"])
def test_control_characters_in_an_error_are_escaped(fake, llm_cli, source):
    # The API's error text, or the toolbox's own setup echoed in a refusal.
    if source == "api":
        fake.fail_api(400, {"message": f"Body validation error! {HOSTILE}"})
        spec, call = "Imagen4", {"prompt": "a yak"}
    else:
        spec = f"Imagen4(negative_prompt={json.dumps(HOSTILE)})"
        call = {"prompt": "a yak", "negative_prompt": "cats"}
    answers, result = chain(llm_cli, "--td", "-T", spec, calls(call))
    [output] = outputs(answers[-1])
    assert "\\x1b]0;pwned\\x07 \\x9b2J" in refusal(output)
    # Neither the model's round nor llm's tools debug on stderr holds them.
    for text in (output, result.stdout, result.stderr):
        assert not {"\x1b", "\x07", "\x9b"} & set(text), text
    assert "Exception: " in result.stderr and "\\x1b]0;pwned" in result.stderr


def test_only_images_that_may_have_been_charged_count_against_the_cap(fake, llm_cli):
    # A refusal (400) made and charged nothing: the one image allowed is
    # still there for the next call.
    fake.fail_api(400, {"message": "Body validation error! prompt"})
    answer = chain(
        llm_cli,
        "-T",
        "Imagen4(max_images=1)",
        calls({"prompt": "a yak"}, {"prompt": "a gnu"}, {"prompt": "an elk"}),
    )[0][-1]
    first, second, third = outputs(answer)
    assert "AI/ML API error 400" in refusal(first)
    assert json.loads(second)["images_left"] == 0
    assert Path(json.loads(second)["paths"][0]).is_file()
    assert "may make no more images" in refusal(third)
    assert len(fake.generations) == 2
    # A request made and charged whose answer never came counts.
    fake.plan_api(generate=True, drop=True)
    answer = chain(
        llm_cli,
        "-T",
        "Imagen4(max_images=1)",
        calls({"prompt": "a ram"}, {"prompt": "a ewe"}),
    )[0][-1]
    first, second = outputs(answer)
    assert "the API's log says it succeeded" in refusal(first)
    assert "may make no more images" in refusal(second)
    assert len(fake.generations) == 3
    # So does a success the plugin could not read: it was charged.
    fake.plan_api(generate=True, shape=lambda made: {**made, "data": [], "images": []})
    answer = chain(
        llm_cli,
        "-T",
        "Imagen4(max_images=1)",
        calls({"prompt": "a cow"}, {"prompt": "a bull"}),
    )[0][-1]
    first, second = outputs(answer)
    assert "The API answered without any image" in refusal(first)
    assert "the API's log says it succeeded" in refusal(first)
    assert "may make no more images" in refusal(second)
    assert len(fake.generations) == 4


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


LONG = "a very detailed castle " * 200


@pytest.mark.parametrize(
    "model,arguments,says",
    [
        ("imagen4", {"prompt": "a cat", "aspect_ratio": "2:1"}, "aspect_ratio"),
        ("imagen4", {"prompt": LONG[:4001]}, "imagen4 takes at most 4000"),
        ("imagen4-fast", {"prompt": LONG[:401]}, "imagen4-fast takes at most 400"),
        (
            "imagen4-fast",
            {"prompt": "a cat", "negative_prompt": "dogs"},
            "imagen4-fast does not take negative_prompt",
        ),
        ("imagen4", {"prompt": "a cat", "num_images": 9}, "num_images"),
        ("imagen4", {"prompt": "a cat", "seed": -1}, "seed"),
        ("imagen4", {"prompt": "a cat", "style": "oil"}, "style"),
        ("imagen4", {"prompt": 42}, "prompt"),
        ("imagen4", {"prompt": "  "}, "The prompt is empty"),
        ("imagen4", {}, "prompt"),
    ],
    ids=[
        "aspect 2:1",
        "4001 characters",
        "401 characters to fast",
        "negative prompt to fast",
        "9 images",
        "seed -1",
        "unknown argument",
        "prompt not text",
        "empty prompt",
        "no prompt",
    ],
)
def test_bad_arguments_come_back_as_one_line_and_nothing_is_sent(
    fake, llm_cli, model, arguments, says
):
    answer = chain(llm_cli, "-T", f'Imagen4(model="{model}")', calls(arguments))[0][-1]
    [output] = outputs(answer)
    assert says in refusal(output)
    assert fake.state.requests == []
    assert answer["attachments"] == [] and history(llm_cli) == []
    assert journal_ids(fake) == []


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


# -- history --------------------------------------------------------------------------


def test_each_tool_generation_is_in_the_history_with_its_tool_call(
    fake, llm_cli, generate
):
    generate("by hand")
    answer = chain(
        llm_cli, "-T", "Imagen4", calls({"prompt": "a kite"}, {"prompt": "a drum"})
    )[0][-1]
    ids = {
        r["tool_call_id"]: json.loads(r["output"])["id"] for r in answer["tool_results"]
    }
    rows = history(llm_cli)
    assert [r["prompt"] for r in rows] == ["a drum", "a kite", "by hand"]
    assert all(r["images"][0]["exists"] and r["credits_used"] for r in rows)
    tool_rows = history(llm_cli, "--tool")
    assert {r["tool_call_id"]: r["id"] for r in tool_rows} == ids
    assert "(tool)" in llm_cli("imagen4", "history", "--tool").stdout
    # The tool calls are the chain's, in llm's own logs.
    logged = json.loads(llm_cli("logs", "--json", "-n", "0").stdout)
    asked = {
        call["tool_call_id"]: turn["conversation_id"]
        for turn in logged
        for call in turn["tool_calls"]
    }
    assert set(ids) <= set(asked) and len(set(asked.values())) == 1


@pytest.mark.parametrize("how", ["logs off", "-n"])
def test_no_logging_means_no_history(fake, llm_cli, how):
    if how == "logs off":
        assert llm_cli("logs", "off").exit_code == 0
    before = fake.logs.read_bytes()
    extra = ["-n"] if how == "-n" else []
    answers, _ = chain(llm_cli, *extra, "-T", "Imagen4", calls({"prompt": "a secret"}))
    assert Path(made(answers[-1])["paths"][0]).is_file()
    assert fake.logs.read_bytes() == before
    assert history(llm_cli) == [] and journal_ids(fake) == []


def test_another_database_on_the_chain(fake, llm_cli, tmp_path, migrated_logs_db):
    other = tmp_path / "other.db"
    shutil.copy(migrated_logs_db, other)
    answer = chain(
        llm_cli, "-d", str(other), "-T", "Imagen4", calls({"prompt": "an owl"})
    )[0][-1]
    [row] = history(llm_cli, "-d", str(other), "--tool")
    assert row["id"] == made(answer)["id"]
    assert history(llm_cli) == []


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


def test_llm_c_after_a_tool_chain_continues_the_chat(fake, llm_cli, logs_db):
    chain(llm_cli, "-T", "Imagen4", calls({"prompt": "a swan"}))
    # The generation is logged in the chat's conversation, where llm logs
    # --cid shows it, and llm -c goes on with the chat's own model.
    threads = {
        row["model"]: row["thread_id"]
        for row in logs_db().query("select model, thread_id from turns")
    }
    assert threads["imagen4"] == threads["echo"]
    result = llm_cli("-c", "now a goose")
    assert result.exit_code == 0, result.output
    assert '"prompt": "now a goose"' in result.stdout


def test_a_python_chain_logs_nothing_and_llm_c_goes_on_with_the_last_chat(
    fake, llm_cli, logs_db
):
    chain(llm_cli, "first chat")
    # From Python llm logs nothing, so neither does the tool: no thread of
    # its own or of the unlogged chat for llm -c to pick up.
    response = llm.get_model("echo").chain(
        calls({"prompt": "a stoat"}), tools=[Imagen4()]
    )
    output = made(rounds(response.text())[-1])
    assert Path(output["paths"][0]).is_file() and len(fake.generations) == 1
    assert history(llm_cli) == [] and journal_ids(fake) == []
    [first] = logs_db().query("select model, thread_id from turns")
    assert first["model"] == "echo"
    result = llm_cli("-c", "hello")
    assert result.exit_code == 0, result.output
    assert '"prompt": "hello"' in result.stdout
    turns = logs_db().query("select model, thread_id from turns order by id")
    assert [t["thread_id"] for t in turns] == [first["thread_id"]] * 2
