"""Real worker processes (headless.py) against real SQLite and PostgreSQL: races, kill -9, SIGTERM,
zombies, cancellation, timeouts, retries with backoff, database restarts, logs and idle cost."""

from __future__ import annotations

import collections
import io
import json
import os
import signal
import time

import psutil

from source.store.task_store import TaskStore, iso_now
from tests.worker_process import WorkerProcess, all_events, wait_until

FAST = ["--poll-interval", "0.2", "--retry-base-seconds", "0.2"]


def start(db_url, tmp_path, name, *args, **kw) -> WorkerProcess:
    return WorkerProcess(db_url, tmp_path / "logs", *FAST, *args, worker_id=name, **kw)


def test_four_workers_drain_2000_tasks_each_exactly_once(db_url, tmp_path):
    store = TaskStore(db_url)
    ids = store.add_tasks([dict(task_type="noop", params={"n": i}) for i in range(2000)])
    workers = [start(db_url, tmp_path, f"w{i}", "--exit-when-idle") for i in range(4)]
    try:
        for w in workers:
            assert w.wait(240) == 0, w.stderr_tail()
    finally:
        for w in workers:
            w.stop()
    claimed = collections.Counter(e["task_id"] for e in all_events(workers, "task_claimed"))
    completed = collections.Counter(e["task_id"] for e in all_events(workers, "task_completed"))
    assert set(claimed) == set(ids) and set(completed) == set(ids)
    assert max(claimed.values()) == 1 and max(completed.values()) == 1, "a task ran twice"
    assert store.count_by_status() == {"Complete": 2000}
    busy = [w for w in workers if w.events("task_completed")]
    assert len(busy) >= 2, "the work should spread over the workers"
    store.close()


def test_kill9_mid_task_is_recovered_by_another_worker(db_url, tmp_path):
    store = TaskStore(db_url)
    tid = store.add_task("noop", {"seconds": 2.0})
    a = start(db_url, tmp_path, "A", "--lease-seconds", "1.5")
    a.wait_for_event("task_claimed", lambda e: e["task_id"] == tid)
    time.sleep(0.3)
    a.kill9()
    b = start(db_url, tmp_path, "B", "--exit-when-idle", "--lease-seconds", "5")
    try:
        assert b.wait(60) == 0, b.stderr_tail()
    finally:
        b.stop()
    row = store.get(tid)
    assert row["status"] == "Complete" and row["worker_id"] == "B" and row["attempts"] == 2
    assert [e["task_id"] for e in b.events("lease_expired_reclaimed")] == [tid]
    store.close()


def test_sigterm_lets_the_running_task_finish(db_url, tmp_path):
    store = TaskStore(db_url)
    tid = store.add_task("noop", {"seconds": 1.0})
    later = store.add_task("noop", {})
    w = start(db_url, tmp_path, "A", "--shutdown-grace", "20")
    w.wait_for_event("task_claimed", lambda e: e["task_id"] == tid)
    w.signal(signal.SIGTERM)
    assert w.wait(30) == 0
    assert store.get(tid)["status"] == "Complete"
    assert store.get(later)["status"] == "Queued", "no new claims after SIGTERM"
    assert w.events("worker_stopped")[-1]["reason"] == "signal"
    store.close()


def test_sigterm_past_grace_hands_the_task_back_without_spending_an_attempt(db_url, tmp_path):
    store = TaskStore(db_url)
    tid = store.add_task("noop", {"seconds": 30})
    w = start(db_url, tmp_path, "A", "--shutdown-grace", "0.5")
    w.wait_for_event("task_claimed", lambda e: e["task_id"] == tid)
    w.signal(signal.SIGTERM)
    assert w.wait(30) == 0
    row = store.get(tid)
    assert row["status"] == "Queued" and row["attempts"] == 0 and row["worker_id"] is None
    assert w.events("task_handed_back")
    store.close()


def test_second_signal_exits_at_once_and_hands_back(db_url, tmp_path):
    store = TaskStore(db_url)
    tid = store.add_task("noop", {"seconds": 30})
    w = start(db_url, tmp_path, "A", "--shutdown-grace", "60")
    w.wait_for_event("task_claimed", lambda e: e["task_id"] == tid)
    w.signal(signal.SIGTERM)
    time.sleep(0.3)
    t0 = time.monotonic()
    w.signal(signal.SIGINT)
    assert w.wait(10) != 0
    assert time.monotonic() - t0 < 5
    assert store.get(tid)["status"] == "Queued"
    store.close()


def test_sigterm_while_draining_short_tasks_loses_nothing(db_url, tmp_path):
    """A busy worker claims its next task together with each completion; stopping between the two
    must hand that task back unspent."""
    store = TaskStore(db_url)
    ids = store.add_tasks([dict(task_type="noop", params={"seconds": 0.01}) for _ in range(400)])
    w = start(db_url, tmp_path, "A")
    wait_until(lambda: len(w.events("task_completed")) >= 20, timeout=60, what="some completions")
    w.signal(signal.SIGTERM)
    assert w.wait(30) == 0, w.stderr_tail()
    rows = [store.get(t) for t in ids]
    done = {r["id"] for r in rows if r["status"] == "Complete"}
    assert done == {e["task_id"] for e in w.events("task_completed")}
    rest = [r for r in rows if r["id"] not in done]
    assert rest, "the worker should have stopped before the queue was empty"
    assert all(r["status"] == "Queued" and r["attempts"] == 0 and r["worker_id"] is None for r in rest), \
        [r for r in rest if r["status"] != "Queued" or r["attempts"]][:3]
    store.close()


def test_a_claim_taken_with_the_last_completion_is_handed_back_when_stopping(db_url, tmp_path):
    """In process, to hit the exact moment: the worker is told to stop right after it completed one
    task and claimed the next in the same call."""
    from source.event_log import EventLog
    from source.storage import Storage
    from source.worker import Worker, WorkerConfig

    store = TaskStore(db_url)
    first, second = store.add_tasks([dict(task_type="noop", params={}) for _ in range(2)])
    log_stream = io.StringIO()
    worker = Worker(store, Storage(tmp_path / "files"), WorkerConfig(worker_id="W", poll_interval=0.1),
                    EventLog("W", stream=log_stream))
    complete_and_claim = store.complete_and_claim

    def then_stop(*args, **kwargs):
        result = complete_and_claim(*args, **kwargs)
        worker.stop_event.set()
        return result

    store.complete_and_claim = then_stop
    assert worker.run() == 0
    events = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    assert store.get(first)["status"] == "Complete"
    row = store.get(second)
    assert (row["status"], row["attempts"], row["worker_id"]) == ("Queued", 0, None)
    handed = [e for e in events if e["event"] == "task_handed_back"]
    assert [(e["task_id"], e["ok"]) for e in handed] == [(second, True)]
    assert [e["task_id"] for e in events if e["event"] == "task_claimed"] == [first]
    store.close()


def test_zombie_late_completion_is_ignored(db_url, tmp_path):
    """A frozen worker loses its lease; another finishes the task; the zombie's late result changes nothing."""
    store = TaskStore(db_url)
    tid = store.add_task("noop", {"seconds": 1.5})
    zombie = start(db_url, tmp_path, "Z", "--lease-seconds", "1")
    zombie.wait_for_event("task_claimed", lambda e: e["task_id"] == tid)
    zombie.signal(signal.SIGSTOP)
    rescuer = start(db_url, tmp_path, "R", "--lease-seconds", "10")
    try:
        rescuer.wait_for_event("task_completed", lambda e: e["task_id"] == tid, timeout=30)
        zombie.signal(signal.SIGCONT)
        zombie.wait_for_event("stale_update_ignored", lambda e: e["task_id"] == tid, timeout=30)
        row = store.get(tid)
        assert row["status"] == "Complete" and row["worker_id"] == "R" and row["attempts"] == 2
        assert not zombie.events("task_completed")
    finally:
        zombie.signal(signal.SIGCONT)
        zombie.stop()
        rescuer.stop()
    store.close()


def test_cancel_queued_and_running_tasks(db_url, tmp_path):
    store = TaskStore(db_url)
    running = store.add_task("noop", {"seconds": 60}, priority=5)
    queued = store.add_task("noop", {})
    w = start(db_url, tmp_path, "A")
    try:
        w.wait_for_event("task_claimed", lambda e: e["task_id"] == running)
        assert store.request_cancel(queued) == "Cancelled"
        assert store.request_cancel(running) == "In Progress"
        t0 = time.monotonic()
        w.wait_for_event("task_cancelled", lambda e: e["task_id"] == running, timeout=15)
        assert time.monotonic() - t0 < 5, "a running task must stop within seconds"
        assert store.get(running)["status"] == "Cancelled"
        assert not any(e["task_id"] == queued for e in w.events("task_claimed"))
    finally:
        w.stop()
    store.close()


def test_progress_is_written_to_the_row(db_url, tmp_path):
    store = TaskStore(db_url)
    tid = store.add_task("noop", {"seconds": 3})
    w = start(db_url, tmp_path, "A", "--exit-when-idle")
    try:
        wait_until(lambda: (store.get(tid)["progress"] or 0) > 0.2, 20, "progress > 20%")
        assert "slept" in (store.get(tid)["progress_message"] or "")
        assert w.wait(30) == 0
    finally:
        w.stop()
    assert store.get(tid)["progress"] == 1
    store.close()


def test_timeout_fails_with_a_clear_message(db_url, tmp_path):
    store = TaskStore(db_url)
    tid = store.add_task("noop", {"seconds": 30}, timeout_seconds=0.5)
    other = store.add_task("noop", {"seconds": 30, "timeout_seconds": 0.5})
    w = start(db_url, tmp_path, "A", "--exit-when-idle")
    try:
        assert w.wait(30) == 0
    finally:
        w.stop()
    for t in (tid, other):
        row = store.get(t)
        assert row["status"] == "Failed" and "timed out after 0.5 s" in row["error_message"]
    store.close()


def test_transient_errors_retry_with_backoff_then_fail(db_url, tmp_path):
    store = TaskStore(db_url)
    tid = store.add_task("noop", {"transient": True}, max_attempts=3)
    w = start(db_url, tmp_path, "A", "--exit-when-idle", "--retry-base-seconds", "0.4")
    try:
        assert w.wait(60) == 0
    finally:
        w.stop()
    claims = [e for e in w.events("task_claimed") if e["task_id"] == tid]
    assert [c["attempt"] for c in claims] == [1, 2, 3]
    retries = w.events("task_retry_scheduled")
    assert [r["attempt"] for r in retries] == [1, 2]
    assert 0.3 <= retries[0]["delay_s"] <= 0.5 and 0.6 <= retries[1]["delay_s"] <= 1.0, "exponential + jitter"
    stamps = [time.mktime(time.strptime(c["ts"][:19], "%Y-%m-%dT%H:%M:%S")) + float("0." + c["ts"][20:26])
              for c in claims]
    assert stamps[1] - stamps[0] >= 0.29 and stamps[2] - stamps[1] >= 0.59
    row = store.get(tid)
    assert row["status"] == "Failed" and "gave up after 3 attempt(s)" in row["error_message"]
    store.close()


def test_bad_tasks_fail_clearly_and_the_worker_goes_on(db_url, tmp_path):
    import sqlalchemy as sa

    store = TaskStore(db_url)
    unknown = store.add_task("no_such_type", {})
    not_object = store.add_task("noop", [1, 2, 3])
    invalid = store.add_task("noop", {"seconds": "soon"})
    with store.begin() as conn:
        if store.is_sqlite:  # SQLite keeps params as text: other apps can write broken JSON
            conn.execute(sa.text("INSERT INTO tasks (id, task_type, params, created_at) VALUES"
                                 " ('broken', 'noop', '{oops', :now)"), {"now": iso_now()})
    good = store.add_task("noop", {})
    w = start(db_url, tmp_path, "A", "--exit-when-idle")
    try:
        assert w.wait(30) == 0
    finally:
        w.stop()
    assert "unknown task_type 'no_such_type'" in store.get(unknown)["error_message"]
    assert "must be a JSON object" in store.get(not_object)["error_message"]
    assert "seconds" in store.get(invalid)["error_message"]
    if store.is_sqlite:
        assert "not valid JSON" in store.get("broken")["error_message"]
    assert store.get(good)["status"] == "Complete"
    store.close()


def test_fatal_fault_hands_the_task_back_and_exits_non_zero(db_url, tmp_path):
    store = TaskStore(db_url)
    tid = store.add_task("noop", {"fatal": True}, max_attempts=2)
    w = start(db_url, tmp_path, "A")
    assert w.wait(30) == 3
    row = store.get(tid)
    assert row["status"] == "Queued" and row["attempts"] == 1, "handed back for a healthy worker, attempt counted"
    assert w.events("worker_fatal_error")[0]["handed_back"] is True
    again = start(db_url, tmp_path, "B")  # a task that poisons every worker ends Failed, not in a loop
    assert again.wait(30) == 3
    row = store.get(tid)
    assert row["status"] == "Failed" and "fatal fault" in row["error_message"]
    store.close()


def test_dag_runs_in_dependency_order_across_workers(db_url, tmp_path):
    store = TaskStore(db_url)
    root = store.add_task("noop", {"seconds": 0.3})
    mids = [store.add_task("noop", {"seconds": 0.2}, depends_on=[root]) for _ in range(4)]
    join = store.add_task("noop", {}, depends_on=mids)
    failing = store.add_task("noop", {"fail": "no such image: a.png"})
    after_fail = store.add_task("noop", {}, depends_on=[failing, root])
    workers = [start(db_url, tmp_path, f"w{i}", "--exit-when-idle") for i in range(2)]
    try:
        for w in workers:
            assert w.wait(60) == 0
    finally:
        for w in workers:
            w.stop()
    rows = {t: store.get(t) for t in [root, *mids, join]}
    assert all(r["status"] == "Complete" for r in rows.values())
    for m in mids:
        assert str(rows[m]["generation_started_at"]) >= str(rows[root]["generation_processed_at"])
        assert str(rows[join]["generation_started_at"]) >= str(rows[m]["generation_processed_at"])
    row = store.get(after_fail)
    assert row["status"] == "Failed" and failing in row["error_message"]
    store.close()


def test_exit_when_idle_waits_for_children_of_running_tasks(db_url, tmp_path):
    store = TaskStore(db_url)
    parent = store.add_task("noop", {"seconds": 1.0})
    child = store.add_task("noop", {}, depends_on=[parent])
    a = start(db_url, tmp_path, "A", "--max-tasks", "1")
    a.wait_for_event("task_claimed")
    b = start(db_url, tmp_path, "B", "--exit-when-idle")
    try:
        assert b.wait(30) == 0 and a.wait(30) == 0
    finally:
        a.stop()
        b.stop()
    assert store.get(child)["status"] == "Complete" and store.get(child)["worker_id"] == "B"
    store.close()


def test_wakeup_is_prompt_with_a_long_poll_interval(db_url, tmp_path):
    store = TaskStore(db_url)
    w = WorkerProcess(db_url, tmp_path / "logs", "--poll-interval", "30", worker_id="A")
    try:
        w.wait_for_event("worker_started")
        time.sleep(1.0)
        tid = store.add_task("noop", {})
        t0 = time.monotonic()
        w.wait_for_event("task_completed", lambda e: e["task_id"] == tid, timeout=10)
        assert time.monotonic() - t0 < 2.0, "NOTIFY / change detection should wake the idle worker"
    finally:
        w.stop()
    store.close()


def test_polling_only_mode_still_drains(db_url, tmp_path):
    store = TaskStore(db_url)
    ids = store.add_tasks([dict(task_type="noop", params={}) for _ in range(5)])
    w = start(db_url, tmp_path, "A", "--no-listen", "--exit-when-idle")
    assert w.wait(30) == 0
    assert all(store.get(t)["status"] == "Complete" for t in ids)
    store.close()


def test_idle_worker_uses_next_to_no_cpu(db_url, tmp_path):
    w = WorkerProcess(db_url, tmp_path / "logs", "--poll-interval", "1", worker_id="A")
    try:
        w.wait_for_event("worker_started")
        time.sleep(1.0)
        p = psutil.Process(w.proc.pid)
        before = sum(p.cpu_times()[:2])
        time.sleep(4.0)
        used = sum(p.cpu_times()[:2]) - before
        assert used < 0.4, f"idle worker used {used:.2f} s of CPU in 4 s"
    finally:
        w.stop()


def test_logs_are_json_with_events_and_no_passwords(pg_cluster, tmp_path):
    url = pg_cluster.create_database("logcheck").replace(f"{pg_cluster.user}@", f"{pg_cluster.user}:S3cretPw@")
    store = TaskStore(url)
    store.add_task("noop", {"api_token": "tok-123-secret"})
    w = start(url, tmp_path, "A", "--exit-when-idle")
    assert w.wait(30) == 0
    text = w.log_file.read_text() + w.stderr()
    assert "S3cretPw" not in text and "tok-123-secret" not in text
    events = [json.loads(line)["event"] for line in w.log_file.read_text().splitlines()]
    assert events[0] == "worker_started" and events[-1] == "worker_stopped"
    assert {"task_claimed", "task_completed"} <= set(events)
    store.close()


def test_worker_survives_a_postgres_restart(pg_cluster, tmp_path):
    url = pg_cluster.create_database("restart")
    store = TaskStore(url)
    tid = store.add_task("noop", {"seconds": 3})
    w = start(url, tmp_path, "A", "--lease-seconds", "20")
    try:
        w.wait_for_event("task_claimed", lambda e: e["task_id"] == tid)
        pg_cluster.restart(down_seconds=2.0)
        w.wait_for_event("task_completed", lambda e: e["task_id"] == tid, timeout=60)
        after = store.run(lambda: store.add_task("noop", {}))
        w.wait_for_event("task_completed", lambda e: e["task_id"] == after, timeout=60)
        row = store.get(tid)
        assert row["status"] == "Complete" and row["attempts"] == 1
        assert w.proc.poll() is None, "the worker keeps running"
    finally:
        w.stop()
        store.close()


def test_headless_and_add_task_command_lines(sqlite_url, tmp_path):
    import subprocess
    import sys

    from tests.worker_process import REPO

    def cli(*args):
        return subprocess.run([sys.executable, str(REPO / "add_task.py"), "--db", sqlite_url, *args],
                              capture_output=True, text=True, cwd=REPO, timeout=60)

    first = cli("--type", "noop", "--params", '{"seconds": 0}', "--priority", "3", "--project-id", "p")
    assert first.returncode == 0, first.stderr
    tid = first.stdout.strip()
    params_file = tmp_path / "p.json"
    params_file.write_text('{"seconds": 0}')
    second = cli("--type", "noop", "--params", f"@{params_file}", "--depends-on", tid, "--id", "my-id",
                 "--max-attempts", "5")
    assert second.returncode == 0 and second.stdout.strip() == "my-id"
    bulk = tmp_path / "bulk.jsonl"
    bulk.write_text("\n".join(json.dumps({"task_type": "noop", "params": {"n": i}}) for i in range(3)))
    third = cli("--jsonl", str(bulk))
    assert third.returncode == 0 and len(third.stdout.split()) == 3
    for bad, why in [(("--type", "noop", "--params", "{x"), "not valid JSON"),
                     (("--type", "nope", "--params", "{}"), "unknown task_type"),
                     (("--type", "noop", "--params", "{}", "--depends-on", "ghost"), "does not exist"),
                     (("status", "ghost"), "no task")]:
        r = cli(*bad)
        assert r.returncode != 0 and why in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    listing = cli("list", "--json")
    assert len(json.loads(listing.stdout)) == 5
    run = subprocess.run([sys.executable, str(REPO / "headless.py"), "--db", sqlite_url, "--exit-when-idle",
                          "--max-tasks", "100", "--task-types", "noop"], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert run.returncode == 0, run.stderr
    status = json.loads(cli("status", "my-id", "--json").stdout)
    assert status["status"] == "Complete" and status["max_attempts"] == 5
    watch = cli("watch", "my-id")
    assert watch.returncode == 0 and "Complete" in watch.stdout
    assert cli("cancel", "my-id").stdout.strip() == "task is already Complete"
    assert cli("retry", "my-id").returncode != 0
    assert os.path.exists(sqlite_url[len("sqlite:///"):])
