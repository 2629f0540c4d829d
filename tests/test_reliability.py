"""Faults, through the fake API and the image host: retries that never buy an
image twice, answers that are lost, downloads that fail in every way, our own
storage failing, and the process being stopped. Nothing paid for is lost or
bought twice."""

import hashlib
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import threading

import pytest

from llm_imagen4 import api, errors, imagehost

from .conftest import held_for_writing, history, journal_ids, poll, start_llm
from .fake_api import KEY, png

# -- retries ----------------------------------------------------------------


def test_429_with_retry_after_is_retried(fake, llm_cli):
    fake.fail_api(429, {"message": "Too Many Requests"}, {"Retry-After": "0"})
    result = llm_cli("imagen4", "a")
    assert result.exit_code == 0, result.output
    assert len(fake.generations) == 2
    [line] = result.stderr.splitlines()
    assert "AI/ML API error 429: Too Many Requests" in line
    assert "retrying in 0.0 s (attempt 2 of 4)" in line


def test_every_attempt_is_the_same_request_with_the_same_client_request_id(
    fake, llm_cli
):
    for status in (500, 502, 503):
        fake.fail_api(status, headers={"retry-after-ms": "0"})
    result = llm_cli("imagen4", "a")
    assert result.exit_code == 0, result.output
    assert len(fake.generations) == 4
    assert len({json.dumps(g.body) for g in fake.generations}) == 1
    ids = {g.headers["X-Client-Request-Id"] for g in fake.generations}
    [turn_id] = [r["id"] for r in history(llm_cli)]
    assert ids == {f"llm-imagen4:{turn_id}"}


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
    assert journal_ids(fake) == []


def test_retries_flag_and_option(fake, llm_cli):
    fake.fail_api(503, headers={"Retry-After": "0"}, times=4)
    assert llm_cli("imagen4", "a", "--retries", "2").exit_code == 1
    assert len(fake.generations) == 2
    fake.reset()
    fake.fail_api(503, headers={"Retry-After": "0"}, times=4)
    assert llm_cli("-m", "imagen4", "a", "-o", "retries", "1").exit_code == 1
    assert len(fake.generations) == 1


@pytest.mark.parametrize(
    "value", ["3600", "inf", "nan", "1e400", "Fri, 31 Dec 9999 23:59:59 GMT"]
)
def test_a_wait_too_long_or_not_a_number_is_one_line(fake, llm_cli, value):
    fake.fail_api(429, headers={"Retry-After": value})
    result = llm_cli("imagen4", "a")
    assert result.exit_code == 1
    assert "the server asked to wait too long: try again" in result.output
    assert "Traceback" not in result.output
    assert len(fake.generations) == 1


def test_retry_delay_reads_every_form_of_the_header():
    now = 1_700_000_000.0
    date = "Tue, 14 Nov 2023 22:13:40 GMT"  # now + 20 s
    assert api.retry_delay(1, {"Retry-After": "7"}) == 7
    assert api.retry_delay(1, {"retry-after-ms": "1500"}) == 1.5
    assert api.retry_delay(1, {"Retry-After": date}, now=lambda: now) == 20
    assert api.retry_delay(1, {"Retry-After": date}, now=lambda: now + 60) == 0
    assert api.retry_delay(1, {"Retry-After": "inf"}) == float("inf")
    assert api.retry_delay(1, {"Retry-After": "nan"}) == float("inf")
    assert api.retry_delay(1, {"Retry-After": "soon"}, rng=lambda: 0.0) == 0.5
    assert api.retry_delay(3, {}, rng=lambda: 1.0) == 4
    assert api.retry_delay(30, {}, rng=lambda: 1.0) == api.BACKOFF_CAP


def test_backoff_without_retry_after(fake):
    fake.fail_api(503, times=3)
    waits, lines = [], []
    client = api.ApiClient(KEY, sleep=waits.append, notify=lines.append)
    answer = client.generate(
        {"model": "google/imagen4/preview", "prompt": "a", "seed": 3}, "id-1"
    )
    assert len(answer.images) == 1
    assert [0.5 <= waits[0] <= 1, 1 <= waits[1] <= 2, 2 <= waits[2] <= 4] == [True] * 3
    assert len(lines) == 3


def test_connection_refused_is_retried_then_reported(fake, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AIMLAPI_BASE_URL", f"http://127.0.0.1:{port}")
    waits = []
    client = api.ApiClient(KEY, sleep=waits.append, notify=lambda line: None)
    with pytest.raises(errors.ApiError, match="Could not connect to"):
        client.generate({"model": "google/imagen4/preview", "prompt": "a"}, "id-1")
    assert len(waits) == 3


def test_the_429_wait_keeps_a_jitter_per_request():
    clock = [100.0]
    waits = []

    def sleep(seconds):
        waits.append(seconds)
        clock[0] += seconds

    draws = iter([0.0, 0.5, 1.0])
    pacer = api.Pacer(
        8,
        now=lambda: clock[0],
        sleep=sleep,
        rng=lambda: next(draws),
        notify=lambda line: None,
    )
    pacer.slow_down(4.0)
    for _ in range(3):
        clock[0] = 100.0  # every request asks at the same instant
        pacer.before_send()
    assert waits == [4.0, 4.5, 5.0]
    assert pacer.limit == 4


# -- answers that never arrive whole ----------------------------------------------


def test_a_slow_drip_answer_ends_at_the_timeout(fake, llm_cli):
    fake.plan_api(generate=True, drip=0.2)
    result = llm_cli("imagen4", "a", "--timeout", "0.5")
    assert result.exit_code == 1
    assert "No whole answer from the API within 0.5 s" in result.output
    assert len(fake.generations) == 1


def test_a_slow_drip_download_ends_at_its_deadline(fake, llm_cli):
    # Made, but not fetched: a generation whose download is still to come.
    fake.fail_downloads(3, status=500)
    assert llm_cli("imagen4", "a").exit_code == 1
    [url] = [r["images"][0]["url"] for r in history(llm_cli)]
    fake.replan_downloads(1, drip=0.2)
    with pytest.raises(errors.DownloadError, match="took longer than 0.5 s"):
        imagehost.fetch_image(url, lambda chunks: b"".join(chunks), deadline=0.5)
    fake.release.set()


def test_a_dropped_connection_is_not_sent_again(fake, llm_cli):
    fake.plan_api(drop=True)
    result = llm_cli("imagen4", "a")
    assert result.exit_code == 1
    assert "failed after the request was sent" in result.output
    assert (
        "the API's log says it failed, and failed requests cost nothing"
        in result.output
    )
    assert len(fake.generations) == 1


def test_a_process_killed_while_waiting_leaves_the_request_id_to_ask_about(
    fake, llm_cli
):
    fake.plan_api(generate=True, sleep=60)
    proc = start_llm(fake.work, "imagen4", "a")
    try:
        poll(lambda: fake.generations)
        proc.kill()
        proc.wait(30)
    finally:
        proc.kill()
    [generation_id] = journal_ids(fake)
    # Not in the history yet: show and rerun say how to finish it.
    for verb in ("show", "rerun"):
        unfinished = llm_cli("imagen4", verb, generation_id)
        assert unfinished.exit_code == 1
        assert unfinished.output == (
            f"Error: {generation_id} is not finished yet; finish it with: "
            f"llm imagen4 download {generation_id}\n"
        )
    fake.release.set()
    poll(lambda: fake.log)
    result = llm_cli("imagen4", "download")
    assert result.exit_code == 0, result.output
    assert (
        f"{generation_id}: the API's log says it succeeded, costing 120000 credits"
        in result.stderr
    )
    assert "cannot be fetched; it is in the history as lost" in result.stderr
    assert journal_ids(fake) == []
    [lost] = history(llm_cli)
    assert lost["id"] == generation_id
    assert [image["status"] for image in lost["images"]] == ["lost"]
    assert llm_cli("imagen4", "status", generation_id).exit_code == 0
    assert len(fake.generations) == 1


def test_a_request_the_apis_log_never_lists_is_dropped_after_a_day(fake, llm_cli):
    import datetime

    from llm_imagen4 import journal

    # Entries of requests that went out and that the API's log never listed.
    now = datetime.datetime.now(datetime.UTC)
    fresh, stale = "01m8fresh0000000000000000a", "01m8sta1e0000000000000000b"
    for generation_id, age in ((fresh, 0), (stale, 2)):
        sent = (now - datetime.timedelta(days=age)).isoformat()
        with journal.claimed(generation_id) as held:
            held.write(
                journal.Entry(
                    id=generation_id,
                    model="imagen4",
                    outcome="sent",
                    client_request_id=f"llm-imagen4:{generation_id}",
                    created_utc=sent,
                    sent_utc=sent,
                )
            )
    result = llm_cli("imagen4", "download")
    # The fresh one is left for later, and the exit status says so.
    assert result.exit_code == 1, result.output
    assert result.stderr.endswith(
        "Error: 1 generation not finished yet: run llm imagen4 download again later\n"
    )
    assert f"{fresh}: the API's log does not list it yet" in result.stderr
    assert (
        f"{stale}: the API's log has not listed it a day after it was sent"
        in result.stderr
    )
    assert journal_ids(fake) == [fresh]
    assert len(fake.generations) == 0


STOPS = {
    "Ctrl-C": (signal.SIGINT, ["imagen4", "a wait"]),
    "SIGTERM": (signal.SIGTERM, ["imagen4", "a wait"]),
    "llm -m --async, Ctrl-C": (signal.SIGINT, ["-m", "imagen4", "a wait", "--async"]),
}


@pytest.mark.parametrize("sig,route", STOPS.values(), ids=STOPS)
def test_stopped_while_waiting_for_the_answer_keeps_the_request_to_ask_about(
    fake, llm_cli, sig, route
):
    fake.plan_api(generate=True, sleep=60)
    proc = start_llm(fake.work, *route)
    try:
        # The API has made the images (and charged); its answer is held.
        poll(lambda: fake.log)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert b"Traceback" not in err
    [generation_id] = journal_ids(fake)
    # One line says what is left and how to finish it, and nothing follows.
    [line] = err.decode().splitlines()
    assert f"llm imagen4 download {generation_id}" in line
    result = llm_cli("imagen4", "download")
    assert "the API's log says it succeeded" in result.stderr
    assert "cannot be fetched" in result.stderr
    assert journal_ids(fake) == []
    assert len(fake.generations) == 1


def test_success_with_a_body_that_is_not_json(fake, llm_cli):
    fake.plan_api(status=200, body="<html>ok</html>")
    result = llm_cli("imagen4", "a")
    assert result.exit_code == 1
    assert "The API answered 200 with a body that is not JSON" in result.output


# -- downloads --------------------------------------------------------------------


def test_an_inline_image_in_wrapped_base64_is_saved(fake, llm_cli):
    # Base64 as MIME writes it: lines of 76 characters, CRLF between them.
    def wrapped(answer):
        for item in answer["data"]:
            text = item["b64_json"]
            lines = [text[i : i + 76] for i in range(0, len(text), 76)]
            item["b64_json"] = "\r\n".join(lines) + "\n"
        return answer

    fake.plan_api(generate=True, shape=wrapped)
    result = llm_cli("imagen4", "a wrapped owl", "-m", "imagen4-fast")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    [sent] = fake.state.files.values()
    [saved] = fake.work.glob("*.png")
    assert png_key(saved.read_bytes()) == png_key(sent)
    assert fake.downloads == []


def png_key(data):
    """A PNG's image data, which the plugin's provenance leaves as it is."""
    from llm_imagen4 import images

    start = data.index(b"IDAT") - 4
    length = int.from_bytes(data[start : start + 4], "big")
    assert images.PNG_SIGNATURE == data[:8]
    return data[start : start + 12 + length]


def test_a_cut_download_is_fetched_again(fake, llm_cli):
    fake.fail_downloads(truncate=100)
    result = llm_cli("imagen4", "a")
    assert result.exit_code == 0, result.output
    assert len(fake.downloads) == 2


def test_half_an_image_with_a_matching_length_is_not_a_success(fake, llm_cli):
    fake.fail_downloads(3, half=True)
    result = llm_cli("imagen4", "a")
    assert result.exit_code == 1
    assert "the image arrived cut off" in result.stderr
    assert list(fake.work.iterdir()) == []
    [row] = history(llm_cli)
    assert row["images"][0]["status"] == "failed" and row["images"][0]["url"]
    assert llm_cli("imagen4", "download").exit_code == 0
    assert os.path.exists(fake.work / "a.png")


def test_a_failed_download_is_kept_and_the_turn_says_so_once_restored(
    fake, llm_cli, logs_db
):
    fake.fail_downloads(3, status=500)
    result = llm_cli("-m", "imagen4", "a heron", "-o", "num_images", "2")
    assert result.exit_code == 1
    assert "Image 1 not saved: the image host answered 500" in result.stdout
    assert "finish it with: llm imagen4 download" in result.stdout
    [turn_id] = journal_ids(fake)
    [turn] = logs_db().query("select response_json from turns")
    assert [i["status"] for i in json.loads(turn["response_json"])["images"]] == [
        "failed",
        "failed",
    ]
    restored = llm_cli("imagen4", "download", turn_id)
    assert restored.exit_code == 0, restored.output
    paths = restored.stdout.splitlines()
    assert [os.path.basename(p) for p in paths] == ["a-heron.png", "a-heron-2.png"]
    [turn] = logs_db().query("select response_json from turns")
    record = json.loads(turn["response_json"])
    assert [i["status"] for i in record["images"]] == ["saved", "saved"]
    for image, path in zip(record["images"], paths, strict=True):
        assert image["sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()
    shown = llm_cli("logs", "-n", "1").stdout
    assert paths[0] in shown and "not saved" not in shown
    assert len(fake.generations) == 1
    assert journal_ids(fake) == []
    again = llm_cli("imagen4", "download", turn_id)
    assert again.exit_code == 0 and "Every saved image of" in again.stderr


NOT_SAVED = {
    "image host 500": ({"status": 500}, "the image host answered 500"),
    "redirect loop": ({"redirect": "/files/loop.png"}, "redirected in a loop"),
    "cut-off PNG": ({"half": True}, "the image arrived cut off"),
}


@pytest.mark.parametrize("fault,message", NOT_SAVED.values(), ids=NOT_SAVED)
def test_llm_m_fails_when_an_image_is_not_saved_and_its_turn_is_logged(
    fake, llm_cli, logs_db, fault, message
):
    if fault.get("redirect"):
        fake.state.cdn_faults["loop.png"] = __import__("collections").deque(
            [fault] * 20
        )
    fake.fail_downloads(3, **fault)
    result = llm_cli("-m", "imagen4", "a heron")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    [generation_id] = journal_ids(fake)
    hint = f"finish it with: llm imagen4 download {generation_id}"
    assert message in result.stdout and hint in result.stdout
    assert result.stderr.splitlines()[-1] == "Error: 1 of 1 images were not saved"
    [turn] = logs_db().query("select id, response_json from turns")
    assert turn["id"] == generation_id
    assert json.loads(turn["response_json"])["images"][0]["status"] == "failed"
    fake.replan_downloads()
    assert llm_cli("imagen4", "download").exit_code == 0
    assert [r["id"] for r in history(llm_cli)] == [generation_id]
    assert len(fake.generations) == 1


@pytest.mark.parametrize(
    "flags", [["--json"], ["-n"], ["-n", "--json"], ["--async"]], ids=" ".join
)
def test_llm_m_fails_when_an_image_is_not_saved_however_it_logs(
    fake, llm_cli, logs_db, flags
):
    fake.fail_downloads(3, status=500)
    result = llm_cli("-m", "imagen4", "a heron", *flags)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    [generation_id] = journal_ids(fake)
    assert "Error: 1 of 1 images were not saved" in result.stderr
    if "--json" in flags:
        [logged] = json.loads(result.stdout)
        assert logged["id"] == generation_id
    else:
        assert f"finish it with: llm imagen4 download {generation_id}" in (
            result.stdout
        )
    if "--async" in flags:
        # llm logs another object than the one that failed: download logs it.
        assert "the turn is logged once they are, by llm imagen4 download" in (
            result.stderr
        )
    logged_by_llm = [] if "-n" in flags or "--async" in flags else [generation_id]
    assert [r["id"] for r in logs_db().query("select id from turns")] == logged_by_llm
    fake.replan_downloads()
    assert llm_cli("imagen4", "download").exit_code == 0
    in_history = [] if "-n" in flags else [generation_id]
    assert [r["id"] for r in history(llm_cli)] == in_history
    assert len(fake.generations) == 1


def test_a_download_keeps_the_generation_in_its_place(fake, llm_cli):
    fake.fail_downloads(3, status=500)
    assert llm_cli("-m", "imagen4", "a heron").exit_code == 1
    [turn_id] = journal_ids(fake)
    fake.replan_downloads()
    assert llm_cli("imagen4", "a later heron").exit_code == 0
    in_order = ["a later heron", "a heron"]
    assert [r["prompt"] for r in history(llm_cli)] == in_order
    assert llm_cli("imagen4", "download", turn_id).exit_code == 0
    rows = history(llm_cli)
    assert [r["prompt"] for r in rows] == in_order
    assert [image["exists"] for r in rows for image in r["images"]] == [True, True]
    assert [r["prompt"] for r in history(llm_cli, "-q", "heron")] == in_order


def test_download_gives_the_images_the_name_that_was_asked_for(fake, llm_cli):
    fake.fail_downloads(3, status=500)
    assert llm_cli("imagen4", "a cat", "-o", "mycat.png").exit_code == 1
    restored = llm_cli("imagen4", "download")
    assert restored.exit_code == 0, restored.output
    assert restored.stdout.strip() == str(fake.work / "mycat.png")
    assert [p.name for p in fake.work.iterdir()] == ["mycat.png"]


def test_download_of_an_unknown_or_expired_generation(fake, llm_cli, generate):
    assert llm_cli("imagen4", "download", "nope").exit_code == 1
    [path] = generate("a")
    os.remove(path)
    fake.state.files.clear()  # the URL has expired
    expired = llm_cli("imagen4", "download", history(llm_cli)[0]["id"])
    assert expired.exit_code == 1
    assert "could not be saved: the image host answered 404" in expired.stderr
    assert "Traceback" not in expired.output


@pytest.mark.parametrize(
    "fault,message",
    [
        ({"redirect": "/files/loop.png"}, "the image host redirected in a loop"),
        ({"gzip": True}, "the download failed"),
        ({"body": b"<html>not an image</html>"}, "not a PNG, JPEG or WebP image"),
    ],
    ids=["redirect loop", "gzip over a plain body", "not an image"],
)
def test_every_download_failure_is_an_outcome_never_a_hang(
    fake, llm_cli, fault, message
):
    if fault.get("redirect"):
        fake.state.cdn_faults["loop.png"] = __import__("collections").deque(
            [fault] * 20
        )
    fake.fail_downloads(3, **fault)
    result = llm_cli("imagen4", "a")
    assert result.exit_code == 1
    assert message in result.stderr
    assert "Traceback" not in result.output
    [generation_id] = journal_ids(fake)
    again = llm_cli("imagen4", "download", generation_id)
    assert "Traceback" not in again.output


@pytest.mark.parametrize(
    "url", [42, ["a", "list"], "http://[not a url"], ids=["number", "list", "malformed"]
)
def test_a_url_that_is_not_a_url_is_a_failed_image(fake, llm_cli, url):
    fake.plan_api(
        generate=True, shape=lambda answer: {"images": [{"url": url}], "seed": 1}
    )
    result = llm_cli("imagen4", "a")
    assert result.exit_code == 1
    assert "Image 1 was not saved" in result.stderr
    assert "Traceback" not in result.output


def test_an_oversized_image_is_refused_and_not_offered_to_download(fake, llm_cli):
    fake.fail_downloads(3, body=png(16, 16) + b"\0" * (65 * 1024 * 1024))
    result = llm_cli("imagen4", "a")
    assert result.exit_code == 1
    assert "the image is larger than 64 MB" in result.stderr
    assert "download" not in result.stderr
    assert list(fake.work.iterdir()) == []
    assert journal_ids(fake) == []
    assert len(fake.downloads) == 1


def test_a_redirect_to_another_host_never_carries_the_key(fake, llm_cli):
    fake.fail_downloads(redirect=f"{fake.base_url}/files/x.png")
    result = llm_cli("imagen4", "a")
    redirected = [
        r for r in fake.state.requests if r.host == "api" and r.method == "GET"
    ]
    assert redirected, "the redirect was followed"
    for request in fake.downloads + redirected:
        assert "Authorization" not in request.headers
        assert KEY not in json.dumps(request.headers)
    assert result.exit_code == 1


def test_image_urls_must_be_https_when_the_api_is(monkeypatch):
    monkeypatch.setenv("AIMLAPI_BASE_URL", "https://api.example.test")
    with pytest.raises(errors.Refused, match="Refusing to fetch an image from http:"):
        imagehost.check_image_url("http://cdn.example.test/a.png")
    imagehost.check_image_url("https://cdn.example.test/a.png")
    with pytest.raises(errors.Refused):
        imagehost.check_image_url("file:///etc/passwd")


def test_the_key_is_not_in_debug_logs_or_errors(fake, llm_cli, caplog):
    caplog.set_level(logging.DEBUG)
    fake.fail_api(500, headers={"Retry-After": "0"})
    ok = llm_cli("imagen4", "a")
    bad = llm_cli("imagen4", "b", "--key", "sk-not-this-one")
    assert ok.exit_code == 0 and bad.exit_code == 1
    for text in (caplog.text, ok.output, bad.output):
        assert KEY not in text and "sk-not-this-one" not in text


def test_the_seed_recorded_is_the_one_sent(fake, llm_cli):
    for seed in (2**40, True, -5, 1.5):
        fake.plan_api(
            generate=True, shape=lambda answer, seed=seed: {**answer, "seed": seed}
        )
    for _ in range(4):
        assert (
            llm_cli("imagen4", "a", "--seed", "77", "-m", "imagen4-fast").exit_code == 0
        )
    assert [r["seed"] for r in history(llm_cli)] == [77] * 4


# -- our own storage failing ----------------------------------------------------------


def test_a_journal_that_cannot_be_written_prints_the_urls_at_once(fake, llm_cli):
    (fake.user_path / "imagen4").write_text("a file where the journal's folder goes")
    result = llm_cli("imagen4", "a stork")
    assert result.exit_code == 0, result.output
    assert "Could not write the recovery journal" in result.stderr
    [turn] = history(llm_cli)
    # Fetched under a name of the plugin's, never the server's.
    saved_as = shlex.quote(str(fake.work / f"a-stork-1-{turn['id']}.png"))
    assert f"curl -fL -o {saved_as} {fake.cdn_url}/files/" in result.stderr
    assert result.stdout.strip() == str(fake.work / "a-stork.png")
    # An image inside the answer has no URL: the line says what is at stake.
    inline = llm_cli("imagen4", "a heron", "-m", "imagen4-fast")
    assert inline.exit_code == 0, inline.output
    assert (
        "image 1 came inside the answer: if it cannot be saved now, it is lost"
        in inline.stderr
    )
    # And with the logs database failing too, nothing promises a later log.
    fake.fail_downloads(1, hold=True)
    unwritable = fake.work / "blocked" / "logs.db"
    outcome = {}
    run = threading.Thread(
        target=lambda: outcome.update(
            result=llm_cli("imagen4", "a crane", "-d", str(unwritable))
        )
    )
    run.start()
    poll(lambda: len(fake.downloads) > 1)
    shutil.rmtree(fake.work / "blocked")
    (fake.work / "blocked").write_text("a file where a folder should be")
    fake.release.set()
    run.join(30)
    assert (
        "the images are saved, and the recovery journal could not keep it to log"
        " later" in outcome["result"].stderr
    )


def test_a_logs_database_that_cannot_be_written_loses_no_image(fake, llm_cli, tmp_path):
    # The database can be opened when the request goes out, and no longer
    # once the image has downloaded (a full disk, a drive gone).
    unwritable = tmp_path / "blocked" / "logs.db"
    fake.fail_downloads(1, hold=True)
    outcome = {}
    run = threading.Thread(
        target=lambda: outcome.update(
            result=llm_cli("imagen4", "a crane", "-d", str(unwritable))
        )
    )
    run.start()
    poll(lambda: fake.downloads)
    shutil.rmtree(tmp_path / "blocked")
    (tmp_path / "blocked").write_text("a file where a folder should be")
    fake.release.set()
    run.join(30)
    result = outcome["result"]
    assert result.exit_code == 0
    assert result.stdout.strip() == str(fake.work / "a-crane.png")
    assert "Could not log the turn (" in result.stderr
    assert "the images are saved, and llm imagen4 download" in result.stderr
    assert "logs it later" in result.stderr
    assert "Traceback" not in result.output
    [generation_id] = journal_ids(fake)
    # Once the database can be written, download logs it, fetching nothing.
    (tmp_path / "blocked").unlink()
    (tmp_path / "blocked").mkdir()
    downloads = len(fake.downloads)
    assert llm_cli("imagen4", "download").exit_code == 0
    assert len(fake.downloads) == downloads
    assert [r["id"] for r in history(llm_cli, "-d", str(unwritable))] == [generation_id]


def test_llm_prompt_failing_to_log_is_one_line_and_download_logs_it(
    fake, llm_cli, logs_db
):
    # A write to turns that fails, as on a full disk.
    logs_db().execute(
        "CREATE TRIGGER full BEFORE INSERT ON turns"
        " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    )
    result = llm_cli("-m", "imagen4", "a crane")
    assert "Traceback" not in result.output
    assert result.stdout.strip() == str(fake.work / "a-crane.png")
    [line] = [line for line in result.stderr.splitlines() if "Could not" in line]
    assert line.startswith("Could not log the turn (database or disk is full)")
    [generation_id] = journal_ids(fake)
    assert f"llm imagen4 download {generation_id} logs it later" in line
    logs_db().execute("DROP TRIGGER full")
    downloads = len(fake.downloads)
    assert llm_cli("imagen4", "download").exit_code == 0
    assert len(fake.downloads) == downloads
    assert [r["id"] for r in history(llm_cli)] == [generation_id]


# -- exactly once on disk --------------------------------------------------------------


def test_two_downloads_at_once_save_each_image_once(fake, llm_cli, llm_process):
    fake.fail_downloads(3, status=500)
    assert llm_cli("imagen4", "a pair", "-n", "2").exit_code == 1
    [generation_id] = journal_ids(fake)
    fake.replan_downloads(1, hold=True)
    procs = [
        start_llm(fake.work, "imagen4", "download", generation_id) for _ in range(2)
    ]
    # One holds both downloads; the other, however late it starts, finds the
    # generation locked and ends (the held downloads keep the first going).
    poll(
        lambda: (
            len(fake.downloads) == 6 + 2
            and any(proc.poll() is not None for proc in procs)
        ),
        timeout=60,
    )
    fake.release.set()
    outputs = [proc.communicate(timeout=60) for proc in procs]
    assert sorted(p.name for p in fake.work.iterdir()) == ["a-pair-2.png", "a-pair.png"]
    assert any(b"another process is saving it now" in err for _, err in outputs), (
        outputs
    )


# -- the process being stopped ---------------------------------------------------------


@pytest.mark.parametrize(
    "sig,route",
    [
        (signal.SIGINT, ["imagen4", "a stork"]),
        (signal.SIGTERM, ["-m", "imagen4", "a stork"]),
    ],
    ids=["Ctrl-C", "SIGTERM on llm -m"],
)
def test_stopping_during_a_download_loses_nothing(fake, llm_cli, sig, route):
    fake.fail_downloads(hold=True)
    proc = start_llm(fake.work, *route)
    try:
        poll(lambda: fake.downloads)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert b"Traceback" not in err
    [generation_id] = journal_ids(fake)
    # One line says what is left and how to finish it, and nothing follows.
    assert err.decode().splitlines() == [
        f"Stopped; finish it with: llm imagen4 download {generation_id}"
    ]
    assert list(fake.work.iterdir()) == []  # no partial file left behind
    fake.release.set()
    restored = llm_cli("imagen4", "download")
    assert restored.exit_code == 0, restored.output
    assert restored.stdout.strip() == str(fake.work / "a-stork.png")
    # It was never logged: download logs it where llm imagen4 would have.
    assert [r["id"] for r in history(llm_cli)] == [generation_id]
    assert len(fake.generations) == 1


@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGTERM"]
)
def test_stopping_download_itself_keeps_the_generation(fake, llm_cli, sig):
    fake.fail_downloads(3, status=500)
    assert llm_cli("imagen4", "a stork").exit_code == 1
    [generation_id] = journal_ids(fake)
    fake.replan_downloads(1, hold=True)
    downloads = len(fake.downloads)
    proc = start_llm(fake.work, "imagen4", "download")
    try:
        poll(lambda: len(fake.downloads) > downloads)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        fake.release.set()
    assert proc.returncode == 1, err
    assert b"Traceback" not in err
    assert f"llm imagen4 download {generation_id}".encode() in err
    assert list(fake.work.iterdir()) == []  # no partial file left behind
    assert journal_ids(fake) == [generation_id]
    restored = llm_cli("imagen4", "download")
    assert restored.stdout.strip() == str(fake.work / "a-stork.png")
    assert len(fake.generations) == 1


def test_ctrl_c_is_honoured_while_a_download_hangs(fake):
    fake.fail_downloads(hold=True)
    proc = start_llm(fake.work, "imagen4", "a hang", "-n", "2")
    try:
        poll(lambda: len(fake.downloads) == 2)
        proc.send_signal(signal.SIGINT)
        # The downloads are still held: the process ends without them.
        proc.wait(timeout=10)
        assert not fake.release.is_set()
    finally:
        proc.kill()
        fake.release.set()


@pytest.mark.parametrize(
    "route",
    [
        ["imagen4", "saved then killed", "-n", "2"],
        ["-m", "imagen4", "saved then killed", "-o", "num_images", "2"],
    ],
    ids=["llm imagen4", "llm -m"],
)
def test_killed_after_the_images_are_saved_download_saves_nothing_twice(
    fake, llm_cli, route
):
    # Another writer holds logs.db: the process has saved the images and
    # waits to log the turn when it is killed.
    assert llm_cli("imagen4", "history").exit_code == 0
    with held_for_writing(fake.logs):
        proc = start_llm(fake.work, *route)
        try:
            poll(lambda: len(list(fake.work.glob("saved-then-killed*.png"))) == 2)
            poll(lambda: not list(fake.work.glob(".imagen4-*")))
            proc.kill()
            proc.wait(30)
        finally:
            proc.kill()
    [generation_id] = journal_ids(fake)
    assert history(llm_cli) == []
    downloads = len(fake.downloads)
    result = llm_cli("imagen4", "download")
    assert result.exit_code == 0, result.output
    assert len(fake.downloads) == downloads
    assert sorted(p.name for p in fake.work.iterdir()) == [
        "saved-then-killed-2.png",
        "saved-then-killed.png",
    ]
    [entry] = history(llm_cli)
    assert entry["id"] == generation_id
    assert [i["status"] for i in entry["images"]] == ["saved", "saved"]
    assert journal_ids(fake) == []


def test_killed_as_an_image_gets_its_name_download_saves_nothing_twice(fake, llm_cli):
    # Killed the moment the image has its name, whether or not the journal
    # has said so yet (the turn waits on a logs database another writer
    # holds): the file is found, never saved again.
    assert llm_cli("imagen4", "history").exit_code == 0
    with held_for_writing(fake.logs):
        proc = start_llm(fake.work, "imagen4", "named then killed")
        try:
            poll(lambda: (fake.work / "named-then-killed.png").exists())
            proc.kill()
            proc.wait(30)
        finally:
            proc.kill()
    [generation_id] = journal_ids(fake)
    downloads = len(fake.downloads)
    result = llm_cli("imagen4", "download")
    assert result.exit_code == 0, result.output
    assert len(fake.downloads) == downloads  # found on disk, not fetched again
    assert [p.name for p in fake.work.iterdir()] == ["named-then-killed.png"]
    [entry] = history(llm_cli)
    assert entry["id"] == generation_id
    [image] = entry["images"]
    assert image["status"] == "saved" and image["exists"]
    path = fake.work / "named-then-killed.png"
    assert image["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert journal_ids(fake) == []

    # Once llm has logged a turn, its entry goes.
    assert llm_cli("-m", "imagen4", "logged").exit_code == 0
    assert journal_ids(fake) == []


def test_journal_files_a_killed_write_left_are_removed(fake, llm_cli):
    fake.fail_downloads(3, status=500)
    assert llm_cli("imagen4", "half written").exit_code == 1
    [generation_id] = journal_ids(fake)
    folder = fake.user_path / "imagen4" / "unfinished"
    # What a process killed while rewriting this entry, or while writing
    # the first entry of another, leaves: the prompt in a hidden file.
    left = [
        folder / f".{generation_id}.json.0a1b2c3d.tmp",
        folder / f".{generation_id}-0.img.0a1b2c3d.tmp",
        folder / ".01m8rphan00000000000000000.json.deadbeef.tmp",
    ]
    for path in left:
        path.write_text('{"prompt": "half written"}')
    kept = folder / "notes.tmp"  # not the journal's
    kept.write_text("")
    result = llm_cli("imagen4", "download")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == ["notes.tmp"]


def test_a_killed_writes_leftovers_stay_while_another_process_holds_the_entry(
    fake,
):
    from llm_imagen4 import journal

    with journal.claimed("01m8he1d00000000000000000c") as held:
        assert held is not None
        leftover = journal.folder() / ".01m8he1d00000000000000000c.json.0a1b2c3d.tmp"
        leftover.write_text("{}")
        journal.sweep()
        assert leftover.exists()
    journal.sweep()
    assert not leftover.exists()
    assert list(journal.folder().iterdir()) == []


def test_threads_outcomes_include_every_exception():
    from llm_imagen4.concurrency import in_threads

    def work(item):
        if item == 1:
            raise RuntimeError("boom")
        if item == 2:
            raise KeyboardInterrupt
        return item * 10

    outcomes = dict(in_threads([0, 1, 2, 3], work))
    assert outcomes[0] == 0 and outcomes[3] == 30
    assert isinstance(outcomes[1], RuntimeError)
    assert isinstance(outcomes[2], KeyboardInterrupt)


def test_threads_keep_the_limit(fake):
    from llm_imagen4.concurrency import in_threads

    running, most = [0], [0]
    lock = threading.Lock()
    gate = threading.Barrier(3, timeout=10)

    def work(item):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        gate.wait() if item < 3 else None
        with lock:
            running[0] -= 1

    list(in_threads(range(9), work, limit=lambda: 3))
    assert most[0] == 3


def test_the_download_hint_of_an_unlogged_generation_works(fake, llm_cli):
    fake.fail_downloads(3, status=500)
    result = llm_cli("-m", "imagen4", "a private heron", "-n")
    assert result.exit_code == 1
    hint = result.stdout.strip().split("finish it with: ")[1]
    assert hint.startswith("llm imagen4 download ")
    restored = llm_cli(*hint.split()[1:])
    assert restored.exit_code == 0, restored.output
    assert restored.stdout.strip() == str(fake.work / "a-private-heron.png")
    assert history(llm_cli) == []
