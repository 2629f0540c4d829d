"""Generating through `llm imagen4`, `llm -m` and the Python API: one engine,
two identical routes, with llm's defaults, aliases, keys, usage and logging."""

import ast
import json
import os
import re
import stat
import struct
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from .conftest import history

MODELS = {
    "imagen4": "google/imagen4/preview",
    "imagen4-generate": "google/imagen-4.0-generate-001",
    "imagen4-fast": "google/imagen-4.0-fast-generate-001",
    "imagen4-ultra": "google/imagen-4.0-ultra-generate-001",
}
ROOT = Path(__file__).parent.parent


def png_size(path):
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_racoon_16_9_saves_a_1408x768_png(fake, llm_cli, logs_db):
    result = llm_cli("imagen4", "Racoon eating ice-cream", "-r", "16:9")
    assert result.exit_code == 0, result.output
    path = result.stdout.strip()
    assert path == str(fake.work / "racoon-eating-ice-cream.png")
    assert png_size(path) == (1408, 768)
    [request] = fake.generations
    assert request.body["aspect_ratio"] == "16:9"
    assert request.body["model"] == "google/imagen4/preview"
    seed = request.body["seed"]
    assert 1 <= seed <= 4294967295
    logs = llm_cli("logs", "-n", "1").stdout
    assert "Racoon eating ice-cream" in logs and f"seed: {seed}" in logs
    [row] = history(llm_cli)
    assert row["prompt"] == "Racoon eating ice-cream" and row["seed"] == seed
    [image] = logs_db().query("select * from imagen4_images")
    assert image["path"] == path and (image["width"], image["height"]) == (1408, 768)


@pytest.mark.parametrize("model_id", list(MODELS))
def test_every_model_sends_its_api_id_and_saves(fake, llm_cli, model_id):
    result = llm_cli("imagen4", "a red kite", "-m", model_id, "--seed", "7")
    assert result.exit_code == 0, result.output
    [request] = fake.generations
    assert request.body["model"] == MODELS[model_id]
    assert request.body["seed"] == 7
    assert png_size(result.stdout.strip()) == (1024, 1024)
    inline = model_id != "imagen4"
    assert request.body.get("convert_base64_to_url") is (False if inline else None)
    assert len(fake.downloads) == (0 if inline else 1)


def test_both_routes_send_the_same_request_and_log_the_same_turn(
    fake, llm_cli, logs_db
):
    args = ("-r", "4:3", "-n", "2", "--seed", "5", "--negative-prompt", "fog")
    assert llm_cli("imagen4", "a harbour", *args).exit_code == 0
    options = ["-o", "aspect_ratio", "4:3", "-o", "num_images", "2", "-o", "seed", "5"]
    result = llm_cli(
        "-m", "imagen4", "a harbour", *options, "-o", "negative_prompt", "fog"
    )
    assert result.exit_code == 0, result.output
    first, second = (g.body for g in fake.generations)
    assert first == second
    turns = list(logs_db().query("select options_json, model from turns order by id"))
    assert turns[0] == turns[1]
    assert json.loads(turns[0]["options_json"]) == {
        "aspect_ratio": "4:3",
        "num_images": 2,
        "seed": 5,
        "negative_prompt": "fog",
    }


def test_model_defaults_apply_on_every_route(fake, llm_cli):
    assert (
        llm_cli("models", "options", "set", "imagen4", "aspect_ratio", "16:9").exit_code
        == 0
    )
    assert llm_cli("imagen4", "one").exit_code == 0
    assert llm_cli("-m", "imagen4", "two").exit_code == 0
    import llm

    llm.get_model("imagen4").prompt("three").text()
    assert [g.body["aspect_ratio"] for g in fake.generations] == ["16:9"] * 3
    # A flag still wins over the default.
    assert llm_cli("imagen4", "four", "-r", "1:1").exit_code == 0
    assert fake.generations[-1].body["aspect_ratio"] == "1:1"


def test_aliases_work_on_every_command(fake, llm_cli):
    assert llm_cli("aliases", "set", "pic", "imagen4-fast").exit_code == 0
    assert llm_cli("imagen4", "a kite", "-m", "pic").exit_code == 0
    assert llm_cli("-m", "pic", "a kite").exit_code == 0
    assert [g.body["model"] for g in fake.generations] == [MODELS["imagen4-fast"]] * 2
    assert [r["model"] for r in history(llm_cli, "-m", "pic")] == ["imagen4-fast"] * 2
    wrong = llm_cli("imagen4", "a kite", "-m", "nope")
    assert wrong.exit_code == 1
    assert "nope is not an Imagen 4 model" in wrong.output


def test_credits_are_llm_usage(fake, llm_cli, logs_db):
    result = llm_cli("-m", "imagen4-fast", "a koi", "--usage")
    assert result.exit_code == 0, result.output
    assert 'Token usage: {"credits_used": 120000.0, "usd_spent": 0.06}' in result.stderr
    [turn] = logs_db().query("select token_details from turns")
    assert json.loads(turn["token_details"]) == {
        "credits_used": 120000.0,
        "usd_spent": 0.06,
    }
    assert "credits_used" in llm_cli("logs", "-u", "-n", "1").stdout
    # The preview reports its cost only in headers: that counts too.
    assert llm_cli("imagen4", "a carp").exit_code == 0
    assert history(llm_cli)[0]["credits_used"] == 120000


def test_images_get_the_mode_any_new_file_gets(fake, generate, llm_cli):
    old = os.umask(0o022)
    try:
        [path] = generate("a mode")
        assert llm_cli("imagen4", "gallery").exit_code == 0
    finally:
        os.umask(old)
    for made in (Path(path), fake.work / "imagen4-gallery.html"):
        assert stat.S_IMODE(made.stat().st_mode) == 0o644, made


def test_json_output(fake, llm_cli):
    result = llm_cli("imagen4", "a fox", "--json", "-n", "2", "--seed", "99")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["seed"] == 99
    assert data["model"] == "imagen4"
    assert data["api_model"] == "google/imagen4/preview"
    assert data["options"] == {"num_images": 2, "seed": 99}
    assert len(data["paths"]) == 2 and all(Path(p).exists() for p in data["paths"])
    assert data["images"][0]["path"] == data["paths"][0]
    assert data["credits_used"] == 240000
    assert len(data["id"]) == 26


def test_prompt_from_stdin(fake, llm_cli):
    result = llm_cli("imagen4", "-", input="a quiet harbour\n")
    assert result.exit_code == 0, result.output
    assert fake.generations[0].body["prompt"] == "a quiet harbour"


def test_python_api_sync_and_async(fake):
    import asyncio

    import llm

    response = llm.get_model("imagen4-generate").prompt("a bee", seed=5)
    assert Path(response.text()).exists()
    assert response.response_json["seed"] == 5
    assert response.usage().details == {"credits_used": 120000.0, "usd_spent": 0.06}

    async def run():
        model = llm.get_async_model("imagen4-generate")
        return await model.prompt("a wasp", seed=6).text()

    assert Path(asyncio.run(run())).exists()
    assert [r.body["seed"] for r in fake.generations] == [5, 6]


def test_log_to_db_from_python_puts_the_images_in_that_history(fake, tmp_path, llm_cli):
    import llm
    import sqlite_utils

    response = llm.get_model("imagen4").prompt("a bee")
    response.text()
    other = tmp_path / "other.db"
    response.log_to_db(sqlite_utils.Database(other))
    [row] = history(llm_cli, "-d", str(other))
    assert row["id"] == response.id and row["images"][0]["exists"]
    assert history(llm_cli) == []


def test_async_cli_route(fake, llm_cli):
    result = llm_cli("-m", "imagen4-fast", "an owl", "--async")
    assert result.exit_code == 0, result.output
    assert png_size(result.stdout.strip()) == (1024, 1024)


def test_a_true_subprocess_generates_and_pipes_paths(fake, llm_process):
    proc = llm_process("imagen4", "lighthouse: at dawn/dusk", "-n", "2", cwd=fake.work)
    assert proc.returncode == 0, proc.stderr
    assert [Path(p).name for p in proc.stdout.decode().splitlines()] == [
        "lighthouse-at-dawn-dusk.png",
        "lighthouse-at-dawn-dusk-2.png",
    ]
    assert proc.stderr == b""


def test_the_plugin_imports_next_to_nothing_for_other_commands(fake):
    code = (
        "import sys, llm, llm.cli; llm.get_models(); llm.get_tools();"
        "print(sorted(m for m in sys.modules if m.startswith('llm_imagen4')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == (
        "['llm_imagen4', 'llm_imagen4.cli', 'llm_imagen4.flags', 'llm_imagen4.models', "
        "'llm_imagen4.output', 'llm_imagen4.specs', 'llm_imagen4.tool']"
    )


def imports_of(path: Path) -> set[str]:
    """The package's modules that ``path`` imports, at its top or inside a
    function, leaving out what only a type checker reads."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or id(node) in typing_only:
            continue
        if node.level == 1 and node.module:
            found.add(node.module.split(".")[0])
        elif node.level == 1:
            found.update(alias.name for alias in node.names)
    return {name for name in found if (path.parent / f"{name}.py").exists()}


def test_no_module_imports_itself_back_through_others():
    """No import cycle, counting imports made inside functions: following
    the imports from any module never comes back to it."""
    package = ROOT / "llm_imagen4"
    graph = {p.stem: imports_of(p) - {p.stem} for p in package.glob("*.py")}
    for start in graph:
        # Every way out of ``start``, a path at a time, each module once.
        paths, seen = [[start]], {start}
        while paths:
            path = paths.pop()
            for imported in sorted(graph[path[-1]]):
                assert imported != start, " -> ".join([*path, imported])
                if imported not in seen:
                    seen.add(imported)
                    paths.append([*path, imported])
    # The walk sees function-level imports: one that loops is caught.
    assert "engine" in graph["models"]


def test_each_module_imports_on_its_own():
    """Each module, imported first, brings what it needs."""
    modules = sorted(
        p.stem for p in (ROOT / "llm_imagen4").glob("*.py") if p.stem != "__init__"
    )
    script = (
        "import importlib, sys, llm\n"
        f"for name in {modules!r}:\n"
        "    for loaded in [m for m in sys.modules if m.startswith('llm_imagen4')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module('llm_imagen4.' + name)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_dependencies_are_what_the_code_imports():
    """The dependencies are what the plugin imports; the Datasette plugin's
    own imports beyond them are its extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"  # httpx2 needs 3.11

    def names(requirements):
        return {
            re.split(r"[<>=\[;]", name)[0].strip().replace("-", "_")
            for name in requirements
        }

    def third_party(paths):
        imported = set()
        for path in paths:
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    imported.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    imported.add(node.module.split(".")[0])
        return {name for name in imported if name not in sys.stdlib_module_names}

    modules = sorted((ROOT / "llm_imagen4").glob("*.py"))
    plugin = ROOT / "llm_imagen4" / "datasette_plugin.py"
    declared = names(project["dependencies"])
    assert declared == third_party(m for m in modules if m != plugin)
    extra = names(project["optional-dependencies"]["datasette"])
    assert third_party([plugin]) - declared == extra


def test_options_are_listed(fake, llm_cli):
    preview = llm_cli("models", "--options", "-m", "imagen4").stdout
    fast = llm_cli("models", "--options", "-m", "imagen4-fast").stdout
    for name in ("aspect_ratio", "num_images", "seed", "output", "negative_prompt"):
        assert f"{name}:" in preview
    assert "negative_prompt" not in fast
    for name in (
        "enhance_prompt",
        "person_generation",
        "safety_setting",
        "add_watermark",
    ):
        assert f"{name}:" in fast and f"{name}:" in preview
    listed = llm_cli("imagen4", "models").stdout
    assert "imagen4: google/imagen4/preview (default)" in listed
    assert "prompt: up to 400 characters" in listed
    # Each model's own range and default; the shared flags say both.
    assert "Seed, 1 to 4294967295" in preview and "Seed, 0 to 4294967295" in fast
    assert "round trip (default false)" in " ".join(preview.split())
    assert "round trip (default true)" in " ".join(fast.split())
    assert "imagen4: 1" not in listed + preview + fast
    assert "false on imagen4" not in listed + preview + fast
    shared = llm_cli("imagen4", "generate", "--help").stdout
    assert "0 (imagen4: 1) to" in shared and "false on imagen4" in shared


def test_subcommand_flags_come_from_the_models_options(fake, llm_cli):
    from llm_imagen4 import flags, specs

    shown = llm_cli("imagen4", "generate", "--help").stdout
    for name in flags.OPTION_FIELDS:
        assert flags.flag(name) in shown
        assert specs.help_of(name).split()[0] in shown
    assert set(flags.OPTION_FIELDS) == {
        name for spec in specs.SPECS for name in spec.options.model_fields
    }


@pytest.mark.parametrize("status", [200, 201, 202, 299])
def test_any_2xx_is_success(fake, llm_cli, status):
    fake.plan_api(generate=True, status=status)
    result = llm_cli("imagen4", "any success", "-m", "imagen4-fast")
    assert result.exit_code == 0, result.output
    assert png_size(result.stdout.strip()) == (1024, 1024)


def test_readme_is_in_step_with_the_code():
    proc = subprocess.run(
        [sys.executable, "-m", "cogapp", "--check", "README.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_reliability_table_names_tests_that_exist():
    named = re.findall(
        r"`(test_\w+\.py)::(test_\w+)`", (ROOT / "docs" / "reliability.md").read_text()
    )
    assert len(named) > 50
    for module, test in named:
        source = (ROOT / "tests" / module).read_text()
        assert f"def {test}(" in source, f"{module}::{test}"
