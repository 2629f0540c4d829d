"""`llm imagen4 batch`: formats, resuming, pacing, budget, dry run, Ctrl-C."""

import json
import math
import os
import pty
import signal
import subprocess
import sys
import threading
import time

import jsonschema
import pytest

from llm_imagen4 import api, errors

from .conftest import history, journal_ids, poll, start_llm
from .fake_api import load_schema, strict


def image_rows(logs_db):
    return list(
        logs_db().query("select * from imagen4_images order by datetime_utc, position")
    )


def write(fake, name, text):
    path = fake.work / name
    path.write_text(text)
    return str(path)


def prompts(fake):
    return [g.body["prompt"] for g in fake.generations]


def test_plain_text_one_prompt_a_line(fake, llm_cli):
    path = write(fake, "p.txt", "a red fox\n# not this one\n\n  a blue whale  \n")
    result = llm_cli("imagen4", "batch", path, "-o", "out", "-r", "16:9")
    assert result.exit_code == 0, result.output
    assert sorted(prompts(fake)) == ["a blue whale", "a red fox"]
    assert all(g.body["aspect_ratio"] == "16:9" for g in fake.generations)
    assert sorted(result.stdout.splitlines()) == [
        str(fake.work / "out" / "a-blue-whale.png"),
        str(fake.work / "out" / "a-red-fox.png"),
    ]
    assert (
        "2 rows: 2 generated, 0 recovered, 0 skipped (already done), 0 failed"
        in result.stderr
    )
    result = llm_cli("imagen4", "batch", write(fake, "one.txt", "a grey heron\n"))
    assert "1 row: 1 generated, 0 recovered" in result.stderr


def test_jsonl_rows_carry_their_own_fields(fake, llm_cli, logs_db):
    rows = [
        {"prompt": "one", "seed": 11, "aspect_ratio": "4:3", "negative_prompt": "fog"},
        {"prompt": "two", "model": "imagen4-fast", "num_images": 2, "output": "fast"},
        {"prompt": "three", "model": "imagen4-ultra", "seed": 0},
    ]
    path = write(fake, "rows.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    result = llm_cli("imagen4", "batch", path, "--json", "-n", "1")
    assert result.exit_code == 0, result.output
    bodies = {g.body["prompt"]: g.body for g in fake.generations}
    assert bodies["one"]["seed"] == 11 and bodies["one"]["negative_prompt"] == "fog"
    assert bodies["one"]["aspect_ratio"] == "4:3"
    assert bodies["two"]["model"] == "google/imagen-4.0-fast-generate-001"
    assert bodies["two"]["num_images"] == 2
    assert bodies["three"]["seed"] == 0
    lines = {r["row"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert [lines[n]["status"] for n in (1, 2, 3)] == ["done"] * 3
    assert [p.split("/")[-2] for p in lines[2]["paths"]] == ["fast", "fast"]
    assert lines[1]["seed"] == 11
    assert len(image_rows(logs_db)) == 4


def test_csv_and_stdin(fake, llm_cli):
    path = write(
        fake, "shots.csv", 'prompt,seed,aspect_ratio\n"a cat, sleeping",5,\nowl,,9:16\n'
    )
    assert llm_cli("imagen4", "batch", path).exit_code == 0
    assert llm_cli("imagen4", "batch", "-", input="from stdin\n").exit_code == 0
    jsonl = '{"prompt": "json on stdin", "seed": 3}\n'
    assert llm_cli("imagen4", "batch", "-", input=jsonl).exit_code == 0
    csv_in = (
        "prompt,num_images,enhance_prompt,model\ncsv on stdin,2,false,imagen4-fast\n"
    )
    assert (
        llm_cli("imagen4", "batch", "-", "--format", "csv", input=csv_in).exit_code == 0
    )
    bodies = {g.body["prompt"]: g.body for g in fake.generations}
    assert bodies["a cat, sleeping"]["seed"] == 5
    assert bodies["owl"]["aspect_ratio"] == "9:16"
    assert "from stdin" in bodies and bodies["json on stdin"]["seed"] == 3
    assert bodies["csv on stdin"]["num_images"] == 2
    # Any option of the model is a field, as its Options declare it.
    assert bodies["csv on stdin"]["enhance_prompt"] is False


def test_a_file_that_cannot_be_read_sends_nothing(fake, llm_cli):
    bad_csv = write(fake, "bad.csv", "prompt,style\nx,y\n")
    result = llm_cli("imagen4", "batch", bad_csv)
    assert result.exit_code == 1
    assert "unknown: style" in result.output
    empty = write(fake, "empty.txt", "\n# nothing\n")
    assert "No prompts in" in llm_cli("imagen4", "batch", empty).output
    binary = fake.work / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00")
    assert "is not UTF-8 text" in llm_cli("imagen4", "batch", str(binary)).output
    assert fake.state.requests == []


def test_bad_rows_fail_alone(fake, llm_cli):
    rows = [
        '{"prompt": "good one"}',
        "{not json",
        '{"prompt": "x", "style": "photo"}',
        '{"prompt": "y", "model": "imagen4-fast", "negative_prompt": "z"}',
        json.dumps({"prompt": "w" * 401, "model": "imagen4-ultra"}),
        '{"prompt": "good two", "num_images": 9}',
        '{"prompt": "good three"}',
    ]
    path = write(fake, "mixed.jsonl", "\n".join(rows))
    fake.fail_api(400, {"message": "Body validation error! nope"})
    result = llm_cli("imagen4", "batch", path, "-j", "1", "--json")
    assert result.exit_code == 1
    lines = {r["row"]: r for r in map(json.loads, result.stdout.splitlines())}
    errors = {n: r.get("error") for n, r in lines.items() if r["status"] == "failed"}
    assert errors[2] == "not valid JSON"
    assert errors[3] == "unknown fields: style"
    # A row's own fields are named as the row names them.
    assert errors[4] == "imagen4-fast does not take negative_prompt"
    assert "takes at most 400" in errors[5]
    assert errors[6].startswith("num_images: ")
    assert "AI/ML API error 400" in errors[1]  # the API refused the first sent
    assert lines[7]["status"] == "done"
    assert prompts(fake) == ["good one", "good three"]
    assert (
        "7 rows: 1 generated, 0 recovered, 0 skipped (already done), 6 failed"
        in result.stderr
    )


def test_running_again_skips_rows_already_done(fake, llm_cli):
    rows = '{"prompt": "a"}\n{"prompt": "b", "seed": 7}\n{"prompt": "c"}\n'
    path = write(fake, "again.jsonl", rows)
    fake.fail_api(
        503, {"message": "Service unavailable"}, {"Retry-After": "0"}, times=4
    )
    first = llm_cli("imagen4", "batch", path, "-j", "1", "--retries", "4")
    assert first.exit_code == 1  # row a failed after its attempts
    assert prompts(fake) == ["a"] * 4 + ["b", "c"]
    fake.reset()
    second = llm_cli("imagen4", "batch", path)
    assert second.exit_code == 0, second.output
    assert prompts(fake) == ["a"]
    assert "1 generated, 0 recovered, 2 skipped (already done)" in second.stderr
    fake.reset()
    assert llm_cli("imagen4", "batch", path).exit_code == 0
    assert prompts(fake) == []
    # A row with the same prompt but another request is not done.
    assert llm_cli("imagen4", "batch", path, "-r", "16:9").exit_code == 0
    assert sorted(prompts(fake)) == ["a", "b", "c"]
    fake.reset()
    assert llm_cli("imagen4", "batch", path, "--redo").exit_code == 0
    assert sorted(prompts(fake)) == ["a", "b", "c"]


def test_dry_run_prints_the_exact_requests_and_sends_nothing(fake, llm_cli):
    assert llm_cli("imagen4", "done already", "--seed", "1").exit_code == 0
    fake.reset()
    rows = [
        {"prompt": "done already", "seed": 1},
        {"prompt": "new", "model": "imagen4-generate", "aspect_ratio": "3:4"},
        {"prompt": "new too", "seed": 9},
    ]
    path = write(fake, "dry.jsonl", "\n".join(json.dumps(r) for r in rows))
    result = llm_cli("imagen4", "batch", path, "--dry-run", "--negative-prompt", "x")
    assert result.exit_code == 1
    assert "Row 2: imagen4-generate does not take --negative-prompt" in result.stderr
    result = llm_cli("imagen4", "batch", path, "--dry-run")
    assert result.exit_code == 0, result.output
    bodies = [json.loads(line) for line in result.stdout.splitlines()]
    for body in bodies:
        jsonschema.validate(body, strict(load_schema(body["model"])["request_schema"]))
    assert [b["prompt"] for b in bodies] == ["new", "new too"]
    assert bodies[0]["convert_base64_to_url"] is False
    # A seed drawn now would not be the one sent: none is shown.
    assert "seed" not in bodies[0] and bodies[1]["seed"] == 9
    assert "2 requests would be sent" in result.stderr
    assert "1 row already done, 0 rows with errors" in result.stderr
    assert result.stderr.endswith(
        "Estimated cost: $0.12 for 2 images at $0.06 an image\n"
    )
    # Nothing is sent: the one request is the keyless price list's.
    [asked] = fake.state.requests
    assert asked.method == "GET" and asked.path.startswith("/v1/models?")


def test_max_credits_stops_starting_rows(fake, llm_cli):
    fake.state.credits_per_image = 100
    path = write(fake, "budget.txt", "\n".join(f"prompt {i}" for i in range(6)))
    result = llm_cli(
        "imagen4",
        "batch",
        path,
        "-m",
        "imagen4-fast",
        "-j",
        "1",
        "--max-credits",
        "250",
    )
    assert result.exit_code == 0, result.output
    # A third row of 100 credits would take the spend past 250.
    assert len(fake.generations) == 2, result.stderr
    assert "2 generated" in result.stderr
    assert (
        "4 not started (--max-credits 250 would be exceeded: 1 image costs "
        "$0.00005 (100 credits) at $0.00005 an image); spent 200 credits"
        in result.stderr
    )


def test_an_unpublished_price_is_learned_from_the_first_answers_headers(fake, llm_cli):
    fake.state.cost_in = "headers"
    fake.state.service.pricing["google/imagen4/preview"] = None
    path = write(fake, "budget.txt", "\n".join(f"prompt {i}" for i in range(5)))
    result = llm_cli("imagen4", "batch", path, "-j", "4", "--max-usd", "0.1")
    assert result.exit_code == 0, result.output
    # The first row runs alone; at its price a second would pass the cap.
    assert len(fake.generations) == 1
    assert (
        "4 not started (--max-usd 0.1 would be exceeded: 1 image costs $0.06 "
        "(120000 credits) at $0.06 an image); spent 120000 credits / $0.0600"
        in result.stderr
    )


def test_a_budget_is_a_cap_with_rows_in_parallel(fake, llm_cli):
    fake.state.credits_per_image = 100
    path = write(fake, "budget.txt", "\n".join(f"prompt {i}" for i in range(8)))
    result = llm_cli(
        "imagen4",
        "batch",
        path,
        "-m",
        "imagen4-fast",
        "-j",
        "4",
        "--max-credits",
        "450",
        "--json",
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    done = [row for row in rows if row["status"] == "done"]
    # As many at once as fit at the published price.
    assert len(done) == len(fake.generations) == 4
    assert "spent 400 credits" in result.stderr
    assert [row["row"] for row in rows if row["status"] == "not started"] == [
        5,
        6,
        7,
        8,
    ]
    assert {row["reason"] for row in rows if row["status"] == "not started"} == {
        "--max-credits 450 would be exceeded: 1 image costs $0.00005 (100 credits)"
        " at $0.00005 an image"
    }


def test_a_budget_reckons_each_row_by_its_images(fake, llm_cli):
    rows = [
        {"prompt": "one", "model": "imagen4-fast"},
        {"prompt": "four", "model": "imagen4-fast", "num_images": 4},
        {"prompt": "another", "model": "imagen4-fast"},
    ]
    path = write(fake, "sizes.jsonl", "\n".join(json.dumps(r) for r in rows))
    result = llm_cli("imagen4", "batch", path, "--max-credits", "300000")
    assert result.exit_code == 0, result.output
    # One image costs 120000: four would take the spend to 600000.
    assert [g.body["prompt"] for g in fake.generations] == ["one"]
    assert (
        "2 not started (--max-credits 300000 would be exceeded: 4 images cost "
        "$0.24 (480000 credits) at $0.06 an image)" in result.stderr
    )
    assert "spent 120000 credits" in result.stderr


def test_a_budget_the_answers_cannot_keep_stops_the_batch(fake, llm_cli):
    fake.plan_api(generate=True, no_cost=True)
    path = write(fake, "budget.txt", "one\ntwo\n")
    result = llm_cli("imagen4", "batch", path, "-j", "1", "--max-credits", "1000000")
    assert "(the API reported no cost, so the cap cannot be kept)" in result.stderr
    assert len(fake.generations) == 1


@pytest.mark.parametrize("jobs", [6, 2])
def test_jobs_sets_how_many_requests_are_in_flight(fake, llm_cli, jobs):
    # The fake lets requests through only in groups of ``jobs``.
    fake.state.barrier = threading.Barrier(jobs, timeout=30)
    path = write(fake, "many.txt", "\n".join(f"p {i}" for i in range(12)))
    result = llm_cli("imagen4", "batch", path, "-j", str(jobs), "--no-log")
    assert result.exit_code == 0, result.output
    assert fake.state.most_in_flight == jobs
    assert len(fake.generations) == 12


def test_a_429_slows_the_whole_batch(fake, llm_cli):
    fake.fail_api(429, {"message": "Too Many Requests"}, {"Retry-After": "0"})
    path = write(fake, "busy.txt", "\n".join(f"p {i}" for i in range(8)))
    result = llm_cli("imagen4", "batch", path, "-j", "4")
    assert result.exit_code == 0, result.output
    assert "Slowing down to 2 requests in flight" in result.stderr
    assert "8 generated" in result.stderr


def test_a_wait_too_long_fails_its_own_row_and_holds_no_other(fake):
    # Three answers ask to wait forever: those rows fail, and the others are
    # not held back for a wait the plugin has refused.
    fake.fail_api(429, {"message": "Too Many Requests"}, {"Retry-After": "inf"}, 3)
    path = write(fake, "storm.txt", "\n".join(f"p {i}" for i in range(6)))
    started = time.monotonic()
    proc = start_llm(fake.work, "imagen4", "batch", path, "-j", "4", "--no-log")
    try:
        _, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert time.monotonic() - started < 15
    err = err.decode()
    assert proc.returncode == 1, err
    assert err.count("the server asked to wait too long: try again much later") == 3
    assert "3 generated, 0 recovered, 0 skipped (already done), 3 failed" in err
    assert len(fake.generations) == 6


def waiting(fake):
    folder = fake.user_path / "imagen4" / "unfinished"
    entries = [json.loads(path.read_text()) for path in folder.glob("*.json")]
    return sorted(entry["outcome"] for entry in entries)


def test_ctrl_c_sends_nothing_that_was_waiting(fake):
    # One row is told to wait 30 s, and every row after it waits with it:
    # after a Ctrl-C none of them is sent, the waiting ones counting as not
    # started.
    fake.plan_api(status=429, headers={"Retry-After": "30"}, sleep=0.2)
    fake.state.delay = 0.5  # the three others are sent before the 429 comes
    path = write(fake, "wait.txt", "\n".join(f"row {i}" for i in range(6)))
    proc = start_llm(fake.work, "imagen4", "batch", path, "-j", "4")
    try:
        # The row told to wait, and the two after it held back with it.
        poll(lambda: waiting(fake) == ["prepared", "prepared", "sent"])
        stopped = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    err = err.decode()
    assert time.monotonic() - stopped < 5
    assert proc.returncode == 1, err
    assert "Traceback" not in err and "Aborted" not in err
    assert [r.at < stopped + 1 for r in fake.generations] == [True] * 4
    assert "3 generated, 0 recovered, 0 skipped (already done), 0 failed" in err
    assert "3 not started (stopped)" in err
    assert len(out.splitlines()) == 3
    assert journal_ids(fake) == []


def test_the_pacer_halves_and_recovers():
    clock = [100.0]
    waits = []

    def sleep(seconds):
        waits.append(seconds)
        clock[0] += seconds

    pacer = api.Pacer(8, now=lambda: clock[0], sleep=sleep, rng=lambda: 0.0)
    pacer.slow_down(2.0)
    assert pacer.limit == 4
    pacer.before_send()  # every request waits until the server's time
    assert waits == [2.0]
    pacer.slow_down(0)
    pacer.slow_down(0)
    pacer.slow_down(0)
    assert pacer.limit == 1
    for _ in range(3):
        pacer.succeeded()
    assert pacer.limit == 4
    for _ in range(10):
        pacer.succeeded()
    assert pacer.limit == 8


def test_the_pacer_holds_no_one_for_a_wait_it_refuses_and_stops_at_once():
    clock = [100.0]
    waits = []

    def sleep(seconds):
        waits.append(seconds)
        clock[0] += seconds

    pacer = api.Pacer(4, now=lambda: clock[0], sleep=sleep, rng=lambda: 1.0)
    pacer.slow_down(math.inf)
    pacer.slow_down(api.BACKOFF_CAP + 1)
    assert pacer.limit == 1
    pacer.before_send()
    assert waits == []
    pacer.slow_down(api.BACKOFF_CAP)
    pacer.before_send()
    assert waits == [api.BACKOFF_CAP + 2.0]  # the cap, and a jitter of 2 s
    pacer.stop()
    with pytest.raises(errors.NotSent):
        pacer.before_send()
    with pytest.raises(errors.NotSent):
        pacer.pause(0)


def test_ctrl_c_finishes_the_rows_in_flight(fake, logs_db):
    fake.fail_downloads(hold=True)
    path = write(fake, "stop.txt", "\n".join(f"row {i}" for i in range(6)))
    proc = start_llm(fake.work, "imagen4", "batch", path, "-j", "2")
    err = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        poll(lambda: len(fake.downloads) == 2)
        proc.send_signal(signal.SIGINT)
        poll(lambda: any(b"Stopping" in line for line in err))
        fake.release.set()  # the two downloads in flight now finish
        out = proc.stdout.read()
        proc.wait(timeout=60)
        reader.join(10)
    finally:
        proc.kill()
    err = b"".join(err)
    assert proc.returncode == 1, err.decode()
    assert b"Traceback" not in err
    assert b"finishing the rows in flight" in err
    assert b"4 not started (stopped)" in err
    assert len(out.decode().splitlines()) == 2
    assert len(fake.generations) == 2
    assert [r["status"] for r in image_rows(logs_db)] == ["saved", "saved"]


def test_a_second_ctrl_c_still_says_what_to_finish(fake):
    fake.fail_downloads(hold=True)
    path = write(fake, "stop.txt", "\n".join(f"row {i}" for i in range(4)))
    proc = start_llm(fake.work, "imagen4", "batch", path, "-j", "2")
    err = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        poll(lambda: len(fake.downloads) == 2)
        proc.send_signal(signal.SIGINT)
        poll(lambda: any(b"Stopping" in line for line in err))
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        reader.join(10)
    finally:
        proc.kill()
        fake.release.set()
    err = b"".join(err)
    assert b"Traceback" not in err
    left = journal_ids(fake)
    assert len(left) == 2
    for generation_id in left:
        assert generation_id.encode() in err
    assert err.splitlines()[-1] == b"Finish them with: llm imagen4 download"


def test_running_again_recovers_before_it_buys(fake, llm_cli):
    rows = '{"prompt": "a"}\n{"prompt": "b", "seed": 7}\n{"prompt": "c"}\n'
    path = write(fake, "again.jsonl", rows)
    fake.fail_downloads(3, status=500)
    first = llm_cli("imagen4", "batch", path, "-j", "1")
    assert first.exit_code == 1
    assert len(journal_ids(fake)) == 3
    assert len(fake.generations) == 3
    second = llm_cli("imagen4", "batch", path)
    assert second.exit_code == 0, second.output
    assert "0 generated, 3 recovered, 0 skipped" in second.stderr
    assert len(fake.generations) == 3
    assert journal_ids(fake) == []
    third = llm_cli("imagen4", "batch", path)
    assert "0 generated, 0 recovered, 3 skipped" in third.stderr
    assert len(fake.generations) == 3
    assert sorted(p.name for p in fake.work.iterdir() if p.suffix == ".png") == [
        "a.png",
        "b.png",
        "c.png",
    ]


def test_a_row_bought_again_is_said_and_its_earlier_request_settled(fake, llm_cli):
    # A batch killed while the API makes its first row: the answer is lost,
    # and the API's log does not list the request yet when the batch runs
    # again.
    path = write(fake, "again.txt", "a kite\nb kite\n")
    fake.state.service.lagging = True
    fake.plan_api(generate=True, sleep=0.5)
    first = start_llm(fake.work, "imagen4", "batch", path, "-j", "1")
    try:
        poll(lambda: fake.generations)
        first.kill()
        first.wait(10)
    finally:
        first.kill()
    poll(lambda: len(fake.state.service.log) == 1)  # made, and charged
    [earlier] = journal_ids(fake)
    fake.state.delay = 0.3

    def publish_once_the_batch_goes_on():
        # The log lists the earlier request while the batch goes on.
        poll(lambda: len(fake.generations) == 2)
        fake.state.service.lagging = False
        fake.state.service.publish()

    publisher = threading.Thread(target=publish_once_the_batch_goes_on)
    publisher.start()
    second = llm_cli("imagen4", "batch", path, "-j", "1", "--json")
    publisher.join(30)
    err = second.stderr
    assert second.exit_code == 0, err
    rows = {row["prompt"]: row for row in map(json.loads, second.stdout.splitlines())}
    assert rows["a kite"]["status"] == "done"
    assert rows["a kite"]["earlier"]["id"] == earlier
    assert "not known yet" in rows["a kite"]["earlier"]["what"]
    assert "earlier" not in rows["b kite"]
    summary = err.splitlines()[-1]
    assert f"1 row bought again, whose earlier request {earlier}: the API's log" in (
        summary
    )
    assert "it is in the history as lost" in summary
    assert journal_ids(fake) == []
    lost = [r for r in history(llm_cli) if r["id"] == earlier]
    assert [i["status"] for r in lost for i in r["images"]] == ["lost"]
    assert len(fake.generations) == 3


def test_a_row_whose_answer_is_kept_is_never_bought_again(fake, llm_cli):
    from llm_imagen4 import journal

    path = write(fake, "again.txt", "a\nb\n")
    fake.fail_downloads(6, status=500)
    assert llm_cli("imagen4", "batch", path, "-j", "1").exit_code == 1
    held, still_failing = journal_ids(fake)
    # One generation is being saved by another process; the other's images
    # still cannot be fetched.
    claim = journal.claim(held)
    try:
        second = llm_cli("imagen4", "batch", path, "--json")
    finally:
        claim.release()
    assert second.exit_code == 1
    assert len(fake.generations) == 2
    rows = [json.loads(line) for line in second.stdout.splitlines()]
    assert {row["status"] for row in rows} == {"failed"}
    errors = " ".join(row["error"] for row in rows)
    assert "another process is saving its images now" in errors
    assert f"finish them with llm imagen4 download {still_failing}" in errors
    assert "0 generated, 0 recovered, 0 skipped (already done), 2 failed" in (
        second.stderr
    )
    assert sorted(journal_ids(fake)) == sorted([held, still_failing])


def test_a_progress_bar_only_on_a_terminal(fake, llm_cli):
    path = write(fake, "bar.txt", "one\ntwo\n")
    assert "Generating" not in llm_cli("imagen4", "batch", path).stderr
    main, secondary = pty.openpty()
    proc = subprocess.run(
        [sys.executable, "-m", "llm", "imagen4", "batch", path, "--redo"],
        cwd=fake.work,
        stdout=subprocess.PIPE,
        stderr=secondary,
        timeout=60,
    )
    os.close(secondary)
    shown = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(main)
    assert proc.returncode == 0
    assert b"Generating" in shown and b"100%" in shown
    assert len(proc.stdout.splitlines()) == 2
