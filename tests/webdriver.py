"""Headless Chromium for the tests: just enough of the W3C WebDriver
protocol, spoken to Debian's chromedriver."""

import os
import shutil
import socket
import subprocess

import httpx2
import pytest

from .conftest import poll

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
# .ci/run installs Chromium; elsewhere, a machine without it skips these.
needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"),
    reason="needs Debian's chromium and chromium-driver",
)


def free_port() -> int:
    """A loopback port no one listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WebDriver:
    """A headless Chromium session, driven through chromedriver."""

    def __init__(self, tmp_path):
        port = free_port()
        self.process = subprocess.Popen(
            [CHROMEDRIVER, f"--port={port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.http = httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)

        def ready() -> bool:
            try:
                return self.http.get("/status").json()["value"]["ready"]
            except httpx2.TransportError:
                return False

        poll(ready)
        args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium'}",
        ]
        capabilities = {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }
        answer = self.http.post(
            "/session", json={"capabilities": {"alwaysMatch": capabilities}}
        ).json()["value"]
        self.session = f"/session/{answer['sessionId']}"

    def call(self, method, path, body=None):
        response = self.http.request(method, self.session + path, json=body)
        value = response.json()["value"]
        assert response.is_success, value
        return value

    def run(self, script):
        return self.call("POST", "/execute/sync", {"script": script, "args": []})

    def type_into(self, selector, text):
        element = self.call(
            "POST", "/element", {"using": "css selector", "value": selector}
        )
        element_id = next(iter(element.values()))
        self.call("POST", f"/element/{element_id}/value", {"text": text})

    def close(self):
        try:
            self.http.delete(self.session)
        finally:
            self.process.terminate()
            self.process.wait(10)
            self.http.close()
