"""Faults injected through the fake API: retries, timeouts, failed downloads,
unsafe files, interruptions, and many processes at once."""

import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from llm_imagen4 import api

from .fake_api import KEY, png


def poll(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def image_rows(logs_db):
    return list(logs_db().query("select * from imagen4_images order by id"))


# -- retries ----------------------------------------------------------------


def test_429_with_retry_after_is_retried(fake, llm_cli):
    fake.fail_api(429, {"message": "Too Many Requests"}, {"Retry-After": "0"})
    result = llm_cli("imagen4", "a")
    assert result.exit_code == 0, result.output
    assert len(fake.generations) == 2
    assert result.stdout.strip().endswith("a.png")
    [line] = result.stderr.splitlines()
    assert "AI/ML API error 429: Too Many Requests" in line
    assert "retrying in 0.0 s (attempt 2 of 4)" in line


def test_a_run_of_5xx_then_success(fake, llm_cli):
    for status in (500, 502, 503):
        fake.fail_api(status, headers={"retry-after-ms": "0"})
    result = llm_cli("imagen4", "a")
    assert result.exit_code == 0, result.output
    assert len(fake.generations) == 4
    assert len(result.stderr.splitlines()) == 3
    # Every attempt is the same request: the same seed, never a new one.
    assert len({json.dumps(g.body) for g in fake.generations}) == 1


def test_gives_up_after_the_attempts_with_the_last_error(fake, llm_cli):
    fake.fail_api(
        504,
        {"message": "Generation timeout", "requestId": "r-9"},
        {"Retry-After": "0"},
        times=4,
    )
    result = llm_cli("imagen4", "a")
    assert result.exit_code == 1
    assert len(fake.generations) == 4
    assert result.stderr.splitlines()[-1] == (
        "Error: AI/ML API error 504: Generation timeout (requestId r-9)"
    )


def test_retries_flag_and_option(fake, llm_cli):
    fake.fail_api(503, headers={"Retry-After": "0"}, times=4)
    assert llm_cli("imagen4", "a", "--retries", "2").exit_code == 1
    assert len(fake.generations) == 2
    fake.reset()
    fake.fail_api(503, headers={"Retry-After": "0"}, times=4)
    assert llm_cli("-m", "imagen4", "a", "-o", "retries", "1").exit_code == 1
    assert len(fake.generations) == 1


def test_a_wait_longer_than_the_cap_says_when_to_try_again(fake, llm_cli):
    fake.fail_api(429, headers={"Retry-After": "3600"})
    result = llm_cli("imagen4", "a")
    assert result.exit_code == 1
    assert "the server asked to wait 3600 s: try again after" in result.output
    assert len(fake.generations) == 1


def test_retry_delay_reads_every_form_of_the_header():
    now = 1_700_000_000.0
    date = "Tue, 14 Nov 2023 22:13:40 GMT"  # now + 20 s
    assert api.retry_delay(1, {"Retry-After": "7"}) == 7
    assert api.retry_delay(1, {"retry-after-ms": "1500"}) == 1.5
    assert api.retry_delay(1, {"Retry-After": date}, now=lambda: now) == 20
    assert api.retry_delay(1, {"Retry-After": date}, now=lambda: now + 60) == 0
    # No usable header: capped exponential backoff, with jitter.
    assert api.retry_delay(1, {"Retry-After": "soon"}, rng=lambda: 0.0) == 0.5
    assert api.retry_delay(3, {}, rng=lambda: 1.0) == 4
    assert api.retry_delay(30, {}, rng=lambda: 1.0) == api.BACKOFF_CAP


def test_backoff_without_retry_after(fake):
    fake.fail_api(503, times=3)
    waits, lines = [], []
    client = api.ApiClient(KEY, sleep=waits.append, notify=lines.append)
    body = {"model": "google/imagen4/preview", "prompt": "a", "seed": 3}
    generation = client.generate(body)
    assert len(generation.images) == 1
    assert [0.5 <= waits[0] <= 1, 1 <= waits[1] <= 2, 2 <= waits[2] <= 4] == [True] * 3
    assert len(lines) == 3


def test_connection_refused_is_retried_then_reported(fake, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AIMLAPI_BASE_URL", f"http://127.0.0.1:{port}")
    waits = []
    client = api.ApiClient(KEY, sleep=waits.append, notify=lambda line: None)
    with pytest.raises(api.ApiError, match="Could not connect to"):
        client.generate({"model": "google/imagen4/preview", "prompt": "a"})
    assert len(waits) == 3


def test_read_timeout_is_not_resent(fake, llm_cli):
    fake.plan_api(sleep=1.0, status=200, body={"images": [], "seed": 1})
    result = llm_cli("imagen4", "a", "--timeout", "0.2")
    assert result.exit_code == 1
    assert "No answer from" in result.output
    assert "may have been generated and charged" in result.output
    assert len(fake.generations) == 1


def test_connection_dropped_after_sending_is_not_resent(fake, llm_cli):
    fake.plan_api(drop=True)
    result = llm_cli("imagen4", "a")
    assert result.exit_code == 1
    assert "failed after the request was sent" in result.output
    assert len(fake.generations) == 1


def test_success_with_a_body_that_is_not_json(fake, llm_cli):
    fake.plan_api(status=200, body="<html>ok</html>")
    result = llm_cli("imagen4", "a")
    assert result.exit_code == 1
    assert "The API answered 200 with a body that is not JSON" in result.output


# -- downloads --------------------------------------------------------------


def test_truncated_download_is_fetched_again(fake, llm_cli):
    fake.state.response_shape = "images"
    fake.fail_downloads(truncate=100)
    result = llm_cli("imagen4", "a")
    assert result.exit_code == 0, result.output
    assert len(fake.downloads) == 2
    [data] = fake.state.files.values()
    with open(result.stdout.strip(), "rb") as saved:
        # Every byte as the image host sent it, provenance added before IEND.
        assert saved.read().startswith(data[:-12])
    assert len(fake.generations) == 1


def test_failed_download_is_kept_and_completed_later(fake, llm_cli, logs_db):
    fake.fail_downloads(3, status=500)
    result = llm_cli("imagen4", "a heron", "-n", "2")
    assert result.exit_code == 1
    assert result.stdout == ""
    rows = image_rows(logs_db)
    turn_id = rows[0]["turn_id"]
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert all(r["url"].startswith(fake.cdn_url) and r["path"] is None for r in rows)
    assert f"llm imagen4 download {turn_id}" in result.stderr
    assert "2 of 2 images were not saved" in result.stderr
    assert list(fake.work.iterdir()) == []

    restored = llm_cli("imagen4", "download", turn_id)
    assert restored.exit_code == 0, restored.output
    paths = restored.stdout.splitlines()
    assert [os.path.basename(p) for p in paths] == ["a-heron.png", "a-heron-2.png"]
    rows = image_rows(logs_db)
    assert [r["status"] for r in rows] == ["saved", "saved"]
    for row, path in zip(rows, paths, strict=True):
        assert row["path"] == path
        with open(path, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == row["sha256"]
    assert len(fake.generations) == 1
    again = llm_cli("imagen4", "download", turn_id)
    assert again.exit_code == 0
    assert "All 2 images of" in again.stderr and again.stdout == ""


def test_download_of_an_unknown_or_expired_generation(fake, llm_cli, logs_db):
    assert llm_cli("imagen4", "download", "nope").exit_code == 1
    result = llm_cli("imagen4", "a")
    path = result.stdout.strip()
    os.remove(path)
    fake.state.files.clear()  # the URL has expired
    expired = llm_cli("imagen4", "download", image_rows(logs_db)[0]["turn_id"])
    assert expired.exit_code == 1
    assert "could not be fetched: The image host answered 404" in expired.stderr
    assert "1 of 1 missing images could not be restored" in expired.stderr


def test_bytes_that_are_not_an_image_are_refused(fake, llm_cli, logs_db):
    fake.fail_downloads(3, body=b"<html>not an image</html>")
    result = llm_cli("imagen4", "a")
    assert result.exit_code == 1
    assert "not a PNG, JPEG or WebP image" in result.stderr
    assert list(fake.work.iterdir()) == []
    assert image_rows(logs_db)[0]["status"] == "failed"


def test_an_oversized_image_is_refused_without_holding_it(fake, llm_cli):
    huge = png(16, 16) + b"\0" * (65 * 1024 * 1024)
    fake.fail_downloads(3, body=huge)
    result = llm_cli("imagen4", "a")
    assert result.exit_code == 1
    assert "The image is larger than 64 MB; refused" in result.stderr
    assert list(fake.work.iterdir()) == []


def test_the_servers_file_names_are_never_paths(fake, llm_cli):
    fake.state.response_shape = "images"
    fake.state.file_name = "../../../escaped.png"
    result = llm_cli("imagen4", "a cat")
    assert result.exit_code == 0
    assert result.stdout.strip() == str(fake.work / "a-cat.png")
    assert not (fake.work.parent / "escaped.png").exists()


def test_a_redirect_to_another_host_never_carries_the_key(fake, llm_cli):
    fake.state.response_shape = "images"
    fake.fail_downloads(redirect=f"{fake.base_url}/files/x.png")
    result = llm_cli("imagen4", "a")
    redirected = [
        r for r in fake.state.requests if r.host == "api" and r.method == "GET"
    ]
    assert redirected, "the redirect was followed"
    for request in fake.downloads + redirected:
        assert "Authorization" not in request.headers
        assert KEY not in json.dumps(request.headers)
    assert result.exit_code == 1  # the other host has no such image


def test_image_urls_must_be_https_when_the_api_is(monkeypatch):
    monkeypatch.setenv("AIMLAPI_BASE_URL", "https://api.example.test")
    with pytest.raises(api.ApiError, match="Refusing to fetch an image from http:"):
        api.check_image_url("http://cdn.example.test/a.png")
    api.check_image_url("https://cdn.example.test/a.png")
    with pytest.raises(api.ApiError, match="Refusing"):
        api.check_image_url("file:///etc/passwd")


def test_the_key_is_not_in_debug_logs_or_errors(fake, llm_cli, caplog):
    caplog.set_level(logging.DEBUG)
    fake.fail_api(500, headers={"Retry-After": "0"})
    ok = llm_cli("imagen4", "a")
    bad = llm_cli("imagen4", "b", "--key", "sk-not-this-one")
    assert ok.exit_code == 0 and bad.exit_code == 1
    assert caplog.records, "debug logging was captured"
    for text in (caplog.text, ok.output, bad.output):
        assert KEY not in text and "sk-not-this-one" not in text


# -- interruption and concurrency -------------------------------------------


def test_ctrl_c_during_a_download_loses_nothing(fake, llm_process, logs_db):
    fake.fail_downloads(hold=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "llm", "imagen4", "a stork"],
        cwd=fake.work,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        poll(lambda: fake.downloads)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert b"Traceback" not in err
    [row] = image_rows(logs_db)
    assert row["status"] == "pending" and row["url"]
    assert f"llm imagen4 download {row['turn_id']}".encode() in err
    assert list(fake.work.iterdir()) == []  # no partial file left behind

    fake.release.set()
    restored = llm_process("imagen4", "download", row["turn_id"], cwd=fake.work)
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.decode().strip() == str(fake.work / "a-stork.png")
    assert image_rows(logs_db)[0]["status"] == "saved"
    assert len(fake.generations) == 1


def test_eight_processes_at_once_on_a_new_logs_db(fake, logs_db):
    assert not (fake.user_path / "logs.db").exists()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llm",
                "imagen4",
                f"parallel {i}",
                "--seed",
                str(i + 1),
            ],
            cwd=fake.work,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(8)
    ]
    results = [proc.communicate(timeout=120) for proc in procs]
    for proc, (_out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err.decode()
    rows = image_rows(logs_db)
    assert sorted(r["seed"] for r in rows) == list(range(1, 9))
    assert logs_db()["turns"].count == 8
    assert logs_db().execute("pragma integrity_check").fetchone()[0] == "ok"
    assert len(list(fake.work.iterdir())) == 8
