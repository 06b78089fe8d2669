"""Rows no app should write, that apps do write: the store and a real worker must end them with a clear
error and go on with the rest of the queue (real SQLite and PostgreSQL, real worker processes)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from source.store.task_store import StoreError, TaskStore, iso_now, normalise_db_url, parse_params
from source.task_context import ChildTask
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
    assert row["status"] == "Failed" and "params nest too deeply to read" in row["error_message"]
    assert store.get(last)["status"] == "Complete"
    store.close()


def test_rows_that_could_never_run_are_refused_at_insert(store):
    with pytest.raises(StoreError, match="cannot depend on itself"):
        store.add_task("noop", {}, task_id="me", depends_on=["me"])
    with pytest.raises(StoreError, match="dependency cycle: a -> b -> a"):
        parent = store.add_task("travel_orchestrator", {})
        store.spawn_children(store.claim("W", 30), [ChildTask(key="a", task_type="noop", params={}, depends_on=["b"]),
                                                     ChildTask(key="b", task_type="noop", params={}, depends_on=["a"])])
    assert store.get(parent)["status"] == "In Progress" and not store.list_tasks(parent_task_id=parent)
    # Direct SQL into a table this store made: the database itself refuses what could never run.
    for bad in ["INSERT INTO tasks (id, task_type, params, status) VALUES ('p', 'noop', '{}', 'Pending')",
                "INSERT INTO tasks (id, task_type, params, status) VALUES ('q', 'noop', '{}', 'queued')",
                "INSERT INTO tasks (id, task_type, params, dependant_on) VALUES ('s', 'noop', '{}', 's')",
                "INSERT INTO task_dependencies (task_id, depends_on) VALUES ('e', 'e')"]:
        with pytest.raises(sa.exc.IntegrityError, match="tasks_status_known|not_own_parent|CHECK"):
            with store.begin() as conn:
                conn.execute(sa.text(bad))
    assert [r["id"] for r in store.list_tasks()] == [parent]


SEED_DDL = """CREATE TABLE tasks (id TEXT PRIMARY KEY, task_type TEXT NOT NULL, params {json} NOT NULL,
    status TEXT NOT NULL DEFAULT 'Queued', dependant_on TEXT NULL, output_location TEXT NULL,
    created_at {ts} NOT NULL, updated_at {ts} NULL, generation_started_at {ts} NULL,
    generation_processed_at {ts} NULL, project_id TEXT NULL)"""


def test_the_sweep_ends_rows_that_slipped_in_so_an_idle_worker_exits(db_url, tmp_path):
    """Rows written by SQL into a seed-era table (no CHECKs): unknown status words, a task depending on
    itself, dependency cycles. A worker ends each with a message naming the word or the cycle, runs the
    rest, and --exit-when-idle exits."""
    sqlite = db_url.startswith("sqlite")
    engine = sa.create_engine(normalise_db_url(db_url))
    rows = [("pending", "Pending", None), ("lower", "queued", None), ("selfish", "Queued", "selfish"),
            ("a", "Queued", "b"), ("b", "Queued", "a"), ("after", "Queued", "a"), ("fine", "Queued", None)]
    with engine.begin() as conn:
        conn.execute(sa.text(SEED_DDL.format(json="TEXT" if sqlite else "JSONB",
                                             ts="TEXT" if sqlite else "TIMESTAMPTZ")))
        for i, (task_id, status, parent) in enumerate(rows):
            conn.execute(sa.text("INSERT INTO tasks (id, task_type, params, status, dependant_on, created_at)"
                                 f" VALUES (:id, 'noop', '{{}}', :status, :parent, {':at' if sqlite else 'now()'})"),
                         {"id": task_id, "status": status, "parent": parent, "at": f"2025-07-01T10:00:0{i}.000000Z"})
    engine.dispose()
    store = TaskStore(db_url)  # migrates the table in place; the rows stay
    # A three-task cycle closed through the extra-parents table, after the migration.
    x, y = store.add_task("noop", {}, task_id="x"), store.add_task("noop", {}, task_id="y", depends_on=["x"])
    z = store.add_task("noop", {}, task_id="z", depends_on=["y"])
    with store.begin() as conn:
        conn.execute(sa.text("INSERT INTO task_dependencies (task_id, depends_on) VALUES ('x', 'z'), ('x', 'fine')"))
    if not sqlite:  # PostgreSQL added the CHECKs NOT VALID: the old rows stay, new ones are refused
        with pytest.raises(sa.exc.IntegrityError, match="tasks_status_known"):
            with store.begin() as conn:
                conn.execute(sa.text("INSERT INTO tasks (id, task_type, params, status, created_at) VALUES"
                                     " ('new', 'noop', '{}', 'Pending', now())"))

    run_worker_until_idle(db_url, tmp_path)
    ended = {r["id"]: (r["status"], r["error_message"] or "") for r in store.list_tasks(limit=20)}
    assert ended["pending"][0] == "Failed" and ended["pending"][1].startswith("unknown status 'Pending'")
    assert ended["lower"][0] == "Failed" and ended["lower"][1].startswith("unknown status 'queued'")
    assert ended["selfish"] == ("Failed", "dependency cycle selfish -> selfish: no task in it can ever run")
    assert ended["a"] == ended["b"] == ("Failed", "dependency cycle a -> b -> a: no task in it can ever run")
    assert ended["after"][0] == "Failed" and "not run: task a (noop) that it depends on failed" in ended["after"][1]
    cycle = ("Failed", "dependency cycle x -> z -> y -> x: no task in it can ever run")
    assert {ended[t] for t in (x, y, z)} == {cycle}
    assert ended["fine"] == ("Complete", "")
    store.close()
