"""Fixtures shared by every test: the fake AI/ML API, a user folder of
llm's with a real logs database, the real ``llm`` command in-process and as
a subprocess, and a few helpers."""

from __future__ import annotations

import compileall
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
import sqlite_utils
from click.testing import CliRunner

from . import openapi
from .fake_api import (
    GENERATIONS_PATH,
    KEY,
    SERVICE_PATHS,
    FakeAPI,
    published_request_schemas,
)


def pytest_configure(config):
    """Where bytecode is not written (PYTHONDONTWRITEBYTECODE), every llm
    process the tests start would compile the plugin from source again:
    compile it, and the fake's modules, once before the tests start."""
    if sys.dont_write_bytecode and not hasattr(config, "workerinput"):
        root = Path(__file__).parent.parent
        for folder in ("llm_imagen4", "tests"):
            compileall.compile_dir(root / folder, quiet=1)


@pytest.fixture(autouse=True)
def isolated_user_folder(tmp_path, monkeypatch):
    """Every test has an llm user folder of its own, as llm's own tests do:
    none can read or write a real one."""
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "llm-user"))


@pytest.fixture(scope="session")
def fake_server():
    server = FakeAPI()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def published_contract(request):
    """In every test that uses the fake API: every generation the plugin
    sent is a request one published schema of its model takes, whichever
    schema the fake was following; everything it asked of a service
    endpoint is within its published document; and every answer the fake
    gave follows the document's schema."""
    yield
    if "fake_server" not in request.fixturenames:
        return
    fake = request.getfixturevalue("fake_server")
    assert fake.state.service.violations == []
    for received in fake.state.requests:
        url = urllib.parse.urlsplit(received.path)
        if received.host != "api" or "X-Contract-Probe" in received.headers:
            continue
        if url.path == GENERATIONS_PATH:
            body = received.body
            model = body.get("model") if isinstance(body, dict) else None
            assert any(
                openapi.is_valid(body, schema)
                for schema in published_request_schemas(model)
            ), f"no published schema takes {body!r}"
        elif url.path in SERVICE_PATHS:
            query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
            openapi.operation(url.path).read_query(query, openapi.REPEATABLE[url.path])


@pytest.fixture(scope="session")
def migrated_logs_db(tmp_path_factory) -> Path:
    """A logs.db as llm leaves it after its first run: made once, copied into
    each test's user folder (llm's migrations take most of a second)."""
    from llm.migrations import migrate

    path = tmp_path_factory.mktemp("template") / "logs.db"
    db = sqlite_utils.Database(path)
    migrate(db)
    db.close()
    return path


@pytest.fixture
def new_machine(fake_server, tmp_path, monkeypatch):
    """A reset fake API, an empty LLM_USER_PATH, a working folder, the key
    in the environment."""
    fake_server.reset()
    user = tmp_path / "llm"
    work = tmp_path / "work"
    user.mkdir()
    work.mkdir()
    monkeypatch.setenv("LLM_USER_PATH", str(user))
    monkeypatch.setenv("AIMLAPI_BASE_URL", fake_server.base_url)
    monkeypatch.setenv("AIMLAPI_KEY", KEY)
    monkeypatch.delenv("LLM_RAISE_ERRORS", raising=False)
    monkeypatch.chdir(work)
    fake_server.user_path = user
    fake_server.work = work
    fake_server.logs = user / "logs.db"
    return fake_server


@pytest.fixture
def fake(new_machine, migrated_logs_db):
    """As ``new_machine``, where llm has run before: logs.db exists."""
    shutil.copy(migrated_logs_db, new_machine.logs)
    return new_machine


@pytest.fixture
def llm_cli():
    """Run the real llm command in-process and return click's result."""
    from llm.cli import cli

    def run(*args, input=None):
        return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)

    return run


def llm_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "llm", *args]


def start_llm(folder: Path, *args: str) -> subprocess.Popen:
    """A true ``llm ARGS`` process working in ``folder``, its output piped."""
    return subprocess.Popen(
        llm_command(*args),
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.fixture
def llm_process():
    """Run llm as a true subprocess, with the test's environment."""

    def run(*args, input=None, cwd=None):
        return subprocess.run(
            llm_command(*args),
            input=input,
            capture_output=True,
            cwd=cwd,
            env=dict(os.environ),
            timeout=120,
        )

    return run


@pytest.fixture
def generate(llm_cli):
    """``llm imagen4 ARGS`` that must succeed; the paths it printed."""

    def run(*args):
        result = llm_cli("imagen4", *args)
        assert result.exit_code == 0, result.output
        return result.stdout.splitlines()

    return run


@pytest.fixture
def logs_db(fake):
    def open_db(path: Path | None = None):
        return sqlite_utils.Database(path or fake.logs)

    return open_db


def history(llm_cli, *args) -> list[dict]:
    result = llm_cli("imagen4", "history", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def poll(condition, timeout=30.0):
    """Wait for ``condition()`` to hold, checking often, up to a deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


@contextlib.contextmanager
def held_for_writing(path: Path):
    """Another process's write transaction on a logs database: every
    writer waits for it (readers do not) until it ends."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
    finally:
        conn.close()


def journal_ids(fake) -> list[str]:
    folder = Path(fake.user_path) / "imagen4" / "unfinished"
    return sorted(p.stem for p in folder.glob("*.json")) if folder.exists() else []
