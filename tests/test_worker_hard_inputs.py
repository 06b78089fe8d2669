"""Rows that used to end a worker: deep nesting, oversized params and task types, numbers JSON
cannot hold, characters a database column refuses. A real worker process on SQLite and PostgreSQL fails
each such row with a clear, short message and goes on to the next task."""

from __future__ import annotations

import signal

import sqlalchemy as sa

from source.store.task_store import TaskStore
from tests.worker_process import WorkerProcess


def outcome(store: TaskStore, task_id: str) -> dict:
    """Status columns only: TaskStore.get decodes params, and PostgreSQL's driver cannot decode a
    3,000-deep jsonb value."""
    with store.begin() as conn:
        row = conn.execute(sa.text("SELECT status, attempts, error_message FROM tasks WHERE id = :id"),
                           {"id": task_id}).mappings().one()
    return dict(row)


def test_rows_that_used_to_kill_the_worker_fail_and_the_worker_goes_on(db_url, tmp_path):
    store = TaskStore(db_url)
    deep = store.add_task("noop", '{"a":' * 3000 + "0" + "}" * 3000)  # past json's recursion limit
    nested = store.add_task("noop", '{"a":' * 100 + "0" + "}" * 100)  # readable, but past the depth cap
    big = store.add_task("noop", {"prompt": "x" * 150_000})  # over the cap this worker is given
    long_type = store.add_task("t" * 100_000, {})
    huge_number = store.add_task("noop", '{"n": ' + "9" * 5000 + "}")
    control = store.add_task("noop", {"fail": "bad \x01 input " + "y" * 50_000})
    good = store.add_task("noop", {"seconds": 0})
    w = WorkerProcess(db_url, tmp_path / "logs", "--poll-interval", "0.2", "--exit-when-idle", worker_id="A",
                      env={"HEADLESS_MAX_PARAMS_BYTES": "100000"})
    try:
        assert w.wait(60) == 0, w.stderr_tail()
    finally:
        w.stop()
    expected = {deep: "nest too deeply", nested: "nest deeper than 64 levels",
                big: "the limit is 100,000 (HEADLESS_MAX_PARAMS_BYTES)", long_type: "unknown task_type",
                huge_number: "not valid JSON", control: "bad \x01 input"}
    for task_id, words in expected.items():
        row = outcome(store, task_id)
        assert row["status"] == "Failed" and row["attempts"] == 1, (words, row["status"], row["error_message"])
        assert words in row["error_message"], row["error_message"][:300]
    assert len(outcome(store, long_type)["error_message"]) < 2000, "quotes an excerpt of the task type, not all of it"
    assert "(100,000 characters)" in outcome(store, long_type)["error_message"]
    assert store.get(good)["status"] == "Complete"
    assert "Traceback" not in w.stderr()
    lines = w.log_file.read_text().splitlines()
    assert max(len(line) for line in lines) < 5000, "no log line echoes a whole oversized value"
    assert len(w.events("task_failed")) == len(expected)
    store.close()


def test_a_character_postgresql_refuses_in_a_message_does_not_stop_the_worker(db_url, tmp_path):
    """A handler's message holding NUL (SQLite keeps JSON's \\u0000 escape; PostgreSQL text cannot hold it)."""
    store = TaskStore(db_url)
    fail = store.add_task("noop", {"fail": "bad\x00thing"}) if store.is_sqlite else None
    # PostgreSQL's jsonb refuses \u0000 itself; the same message reaches it from a TEXT params column
    # written by another app, which the claim reads as text too.
    if not store.is_sqlite:
        with store.begin() as conn:
            conn.execute(sa.text("ALTER TABLE tasks ALTER COLUMN params TYPE TEXT"))
        fail = store.add_task("noop", '{"fail": "bad\\u0000thing"}')
    good = store.add_task("noop", {})
    w = WorkerProcess(db_url, tmp_path / "logs", "--poll-interval", "0.2", "--exit-when-idle", worker_id="B")
    try:
        assert w.wait(60) == 0, w.stderr_tail()
    finally:
        w.stop()
    row = store.get(fail)
    assert row["status"] == "Failed" and "bad" in row["error_message"] and "thing" in row["error_message"]
    assert store.get(good)["status"] == "Complete"
    store.close()


def test_validation_messages_quote_short_excerpts():
    """100,000 wrong list items or a 100 KB task type give a message of a few hundred characters."""
    import pytest

    from source.errors import InvalidInput
    from source.handler_registry import validate_params

    with pytest.raises(InvalidInput) as many:
        validate_params("single_image", {"prompt": "x", "image_refs_paths": list(range(100_000))})
    assert len(str(many.value)) < 1000 and "and 99,990 more" in str(many.value)
    with pytest.raises(InvalidInput) as unknown:
        validate_params("x" * 100_000, {})
    assert len(str(unknown.value)) < 2000 and "(100,000 characters)" in str(unknown.value)


def test_sigterm_stops_a_worker_waiting_out_a_database_outage(pg_cluster, tmp_path):
    """An idle worker retries the claim while PostgreSQL is down; a signal still stops it within seconds."""
    url = pg_cluster.create_database("outage_signal")
    w = WorkerProcess(url, tmp_path / "logs", "--poll-interval", "0.2", worker_id="C")
    try:
        w.wait_for_event("worker_started")
        pg_cluster.stop("immediate")
        w.wait_for_event("database_unavailable", timeout=30)
        w.signal(signal.SIGTERM)
        assert w.wait(20) == 0, w.stderr_tail()
        assert w.events("worker_stopped")[-1]["reason"] == "signal"
        assert "Traceback" not in w.stderr()
    finally:
        pg_cluster.start()
        w.stop()
