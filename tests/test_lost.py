"""A request whose answer never arrived: found in the API's published log
(a window, the model, pages of 100, newest first), said plainly, and, when
it was charged, in the history as lost."""

from __future__ import annotations

import json
import signal
import socket
import threading
import urllib.parse

import pytest

from .conftest import history, journal_ids, poll, start_llm

LOST = "its images never arrived and cannot be fetched; it is in the history as lost"


def log_reads(fake) -> list[dict[str, list[str]]]:
    return [
        urllib.parse.parse_qs(urllib.parse.urlsplit(r.path).query)
        for r in fake.state.requests
        if r.path.startswith("/v2/logs")
    ]


def lost_rows(logs_db) -> list[dict]:
    db = logs_db()
    if not db["imagen4_images"].exists():
        return []
    return list(
        db.query(
            "select turn_id, position, status, credits_used, usd_spent, prompt"
            " from imagen4_images where status = 'lost'"
        )
    )


def test_a_lost_answer_is_found_behind_230_newer_requests(fake, llm_cli, logs_db):
    fake.plan_api(generate=True, sleep=1.0, newer=230)
    result = llm_cli("imagen4", "a busy account", "-n", "2", "--timeout", "0.3")
    assert result.exit_code == 1
    assert "No whole answer from the API within 0.3 s" in result.stderr
    assert (
        "the API's log says it succeeded, costing 240000 credits / $0.1200, but " + LOST
        in result.stderr
    )
    assert "Nothing was sent again" in result.stderr
    assert len(fake.generations) == 1
    reads = log_reads(fake)
    assert [read["offset"] for read in reads] == [["0"], ["100"], ["200"]]
    for read in reads:
        assert read["model"] == ["google/imagen4/preview"]
        assert read["limit"] == ["100"]
        assert read["start"][0] < read["end"][0]
    assert journal_ids(fake) == []
    # In the history, at what it cost, each image lost.
    rows = lost_rows(logs_db)
    assert [(r["position"], r["credits_used"], r["usd_spent"]) for r in rows] == [
        (0, 240000, 0.12),
        (1, 240000, 0.12),
    ]
    [entry] = history(llm_cli)
    assert entry["id"] == rows[0]["turn_id"] and entry["prompt"] == "a busy account"
    assert [image["status"] for image in entry["images"]] == ["lost", "lost"]
    listed = llm_cli("imagen4", "history").stdout
    assert "(lost, missing)" in listed and "240000 credits $0.1200" in listed
    shown = llm_cli("imagen4", "show", entry["id"]).stdout
    assert "status: lost" in shown and "never arrived" in shown
    # The turn is llm's own, with its usage.
    turn = logs_db()["turns"].get(entry["id"])
    assert json.loads(turn["options_json"])["num_images"] == 2
    assert llm_cli("logs", "-u", "-n", "1").stdout.count("240000") >= 1
    # The spend query of the README counts it once.
    [spent] = logs_db().query(
        "select sum(usd) as usd from (select max(usd_spent) as usd"
        " from imagen4_images group by turn_id)"
    )
    assert spent["usd"] == 0.12


def test_a_request_not_listed_yet_is_kept_and_found_later_behind_400(
    fake, llm_cli, logs_db
):
    fake.state.service.lagging = True
    fake.plan_api(generate=True, sleep=1.0)
    result = llm_cli("imagen4", "a lagging ledger", "--timeout", "0.3")
    assert result.exit_code == 1
    assert (
        "the API's log does not list it yet, so whether it was charged is not "
        "known yet; ask later with: llm imagen4 status" in result.stderr
    )
    [generation_id] = journal_ids(fake)
    later = llm_cli("imagen4", "download")
    assert later.exit_code == 1
    assert "not known yet" in later.stderr
    assert journal_ids(fake) == [generation_id]
    # The ledger catches up, and the account makes 400 more requests.
    fake.state.service.lagging = False
    fake.state.service.publish()
    fake.add_log_rows(400, "google/imagen4/preview")
    status = llm_cli("imagen4", "status", generation_id)
    assert status.exit_code == 0, status.output
    assert status.stdout.strip() == (
        f"{generation_id}: the API's log says it succeeded, costing 120000 "
        f"credits / $0.0600, but {LOST}"
    )
    assert [read["offset"] for read in log_reads(fake)][-5:] == [
        ["0"],
        ["100"],
        ["200"],
        ["300"],
        ["400"],
    ]
    assert journal_ids(fake) == []
    assert [r["turn_id"] for r in lost_rows(logs_db)] == [generation_id]
    # Once in the history, status asks the log by its inference id.
    again = llm_cli("imagen4", "status", generation_id)
    assert again.stdout.strip() == (
        f"{generation_id}: the API's log says it succeeded, costing 120000 "
        "credits / $0.0600"
    )
    assert len(fake.generations) == 1


def test_a_lost_answer_that_failed_is_settled_and_nothing_is_logged(
    fake, llm_cli, logs_db
):
    fake.plan_api(drop=True)
    result = llm_cli("imagen4", "a")
    assert result.exit_code == 1
    assert "the API's log says it failed, and failed requests cost nothing" in (
        result.stderr
    )
    assert journal_ids(fake) == [] and history(llm_cli) == []


def test_the_log_is_asked_within_its_rate_limit(fake, llm_cli):
    fake.plan_service(
        "/v2/logs",
        status=429,
        headers={"Retry-After": "0"},
        body={"message": "Too Many Requests", "statusCode": 429},
    )
    fake.plan_api(generate=True, sleep=1.0)
    result = llm_cli("imagen4", "a", "--timeout", "0.3")
    assert "the API's log says it succeeded" in result.stderr
    assert len(log_reads(fake)) == 2


def test_a_log_answer_too_large_once_inflated_is_refused(fake, llm_cli):
    bomb = b'{"data": [' + b" " * (64 * 1024 * 1024) + b"]}"
    fake.plan_service("/v2/logs", body=bomb, gzip=True)
    fake.plan_api(generate=True, sleep=1.0)
    result = llm_cli("imagen4", "a", "--timeout", "0.3")
    assert result.exit_code == 1
    assert "the API's log could not be asked (/v2/logs could not be read: an " in (
        result.stderr
    )
    assert "answer larger than 4096 kB" in result.stderr
    # Kept, to ask again.
    assert len(journal_ids(fake)) == 1


class Silent:
    """A TCP server that accepts and never answers: a client's TLS
    handshake with it hangs, before any request can go out."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.accepted.append(connection)

    def close(self) -> None:
        for connection in self.accepted:
            connection.close()
        self.socket.close()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill", "Ctrl-C"])
def test_a_process_stopped_before_sending_leaves_nothing_to_wait_for(
    fake, llm_cli, monkeypatch, sig
):
    silent = Silent()
    monkeypatch.setenv("AIMLAPI_BASE_URL", f"https://127.0.0.1:{silent.port}")
    proc = start_llm(fake.work, "imagen4", "never sent")
    try:
        poll(lambda: silent.accepted and journal_ids(fake))
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        silent.close()
    monkeypatch.setenv("AIMLAPI_BASE_URL", fake.base_url)
    if sig == signal.SIGINT:
        assert b"Stopped before the request was sent; nothing was charged" in err
        assert journal_ids(fake) == []
        return
    [generation_id] = journal_ids(fake)
    result = llm_cli("imagen4", "download")
    assert result.exit_code == 0, result.output
    assert (
        f"{generation_id}: it was never sent, so nothing was made or charged"
        in result.stderr
    )
    assert journal_ids(fake) == []
    assert fake.state.requests == []


@pytest.mark.parametrize("where", ["logs.db", "-d", "-n"])
def test_a_lost_but_charged_generation_is_logged_where_llm_would_log_it(
    fake, llm_cli, logs_db, tmp_path, where
):
    other = tmp_path / "other.db"
    flags = {"logs.db": [], "-d": ["-d", str(other)], "-n": ["-n"]}[where]
    fake.plan_api(generate=True, sleep=1.0)
    result = llm_cli("-m", "imagen4", "a lost fox", "-o", "timeout", "0.3", *flags)
    assert result.exit_code == 1
    assert "the API's log says it succeeded" in result.output
    in_logs = [r["prompt"] for r in lost_rows(logs_db)]
    assert in_logs == (["a lost fox"] if where == "logs.db" else [])
    if where == "-d":
        assert [r["prompt"] for r in lost_rows(lambda: logs_db(other))] == [
            "a lost fox"
        ]
    assert journal_ids(fake) == []
