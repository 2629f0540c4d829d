import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from .fake_api import KEY, FakeAPI


@pytest.fixture(scope="session")
def fake_server():
    server = FakeAPI()
    yield server
    server.close()


@pytest.fixture
def fake(fake_server, tmp_path, monkeypatch):
    """A reset fake API, a fresh LLM_USER_PATH and a working folder."""
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
    return fake_server


@pytest.fixture
def llm_cli():
    """Run the real llm command in-process and return click's result."""
    from llm.cli import cli

    def run(*args, input=None):
        return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)

    return run


@pytest.fixture
def llm_process():
    """Run llm as a true subprocess, with the test's environment."""

    def run(*args, input=None, cwd=None):
        return subprocess.run(
            [sys.executable, "-m", "llm", *args],
            input=input,
            capture_output=True,
            cwd=cwd,
            env=dict(os.environ),
            timeout=120,
        )

    return run


@pytest.fixture
def logs_db(fake):
    import sqlite_utils

    def open_db():
        return sqlite_utils.Database(Path(fake.user_path) / "logs.db")

    return open_db
