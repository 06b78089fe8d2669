"""Rows no app should write, that apps do write: the store and a real worker must end them with a clear
error and go on with the rest of the queue (real SQLite and PostgreSQL, real worker processes)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from source.store.task_store import TaskStore, iso_now, parse_params
from tests.worker_process import WorkerProcess

LATIN1_PARAMS = "7b2261223a2022e9227d"  # {"a": "é"} written in latin-1: 0xE9 is not UTF-8
DEEP = "[" * 5000 + "]" * 5000  # valid JSON that Python's recursive decoder cannot take


def run_worker_until_idle(db_url, tmp_path) -> None:
    w = WorkerProcess(db_url, tmp_path / "logs", "--poll-interval", "0.2", "--exit-when-idle", worker_id="W")
    try:
        assert w.wait(60) == 0, w.stderr_tail()
    finally:
        w.stop()


def test_parse_params_refuses_what_it_cannot_decode_with_a_clear_error():
    assert parse_params('{"a": 1}') == {"a": 1} and parse_params(b'{"a": "\xc3\xa9"}') == {"a": "é"}
    with pytest.raises(ValueError, match="could not be decoded: byte 0xe9 at position 7 is not valid UTF-8"):
        parse_params(bytes.fromhex(LATIN1_PARAMS))
    with pytest.raises(ValueError, match="nested too deeply"):
        parse_params(DEEP)
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_params("{oops")


def test_undecodable_params_fail_that_task_alone_and_the_queue_goes_on(db_url, tmp_path):
    store = TaskStore(db_url)
    first = store.add_task("noop", {})
    claim = store.claim("W0", 30)
    with store.begin() as conn:
        if store.is_sqlite:  # TEXT that is not UTF-8, as an app writing latin-1 leaves it
            conn.execute(sa.text("INSERT INTO tasks (id, task_type, params, created_at) VALUES"
                                 f" ('latin1', 'noop', CAST(X'{LATIN1_PARAMS}' AS TEXT), :now)"), {"now": iso_now()})
    if not store.is_sqlite:  # PostgreSQL refuses such bytes at the insert: nothing lands
        with pytest.raises(sa.exc.DataError, match="invalid byte sequence"):
            with store.begin() as conn:
                conn.execute(sa.text("INSERT INTO tasks (id, task_type, params) VALUES ('latin1', 'noop',"
                                     f" CAST(convert_from(decode('{LATIN1_PARAMS}', 'hex'), 'UTF8') AS jsonb))"))
        assert store.get("latin1") is None
    deep = store.add_task("noop", DEEP)
    last = store.add_task("noop", {})

    # The claim batched with a completion takes the broken row without failing: the completion stays.
    done, nxt = store.complete_and_claim(claim, "out/first", None, worker_id="W0", lease_seconds=30)
    assert done and store.get(first)["status"] == "Complete"
    assert nxt is not None and nxt.id == ("latin1" if store.is_sqlite else deep)
    store.hand_back(nxt)
    assert store.get(nxt.id)["status"] == "Queued"  # reading the row works too (status, list)
    assert len(store.list_tasks(limit=10)) == (4 if store.is_sqlite else 3)

    run_worker_until_idle(db_url, tmp_path)
    if store.is_sqlite:
        row = store.get("latin1")
        assert row["status"] == "Failed", row
        assert "params could not be decoded: byte 0xe9 at position 7 is not valid UTF-8" in row["error_message"]
    row = store.get(deep)
    assert row["status"] == "Failed" and "params could not be decoded: JSON nested too deeply" in row["error_message"]
    assert store.get(last)["status"] == "Complete"
    store.close()
