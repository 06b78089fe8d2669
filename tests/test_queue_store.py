"""The task store on real SQLite and real PostgreSQL: claiming, guards, DAGs, propagation, retry,
cancel, orchestrator children, migration of a seed-era table, direct-SQL inserts and query plans."""

from __future__ import annotations

import json
import time

import pytest
import sqlalchemy as sa

from source.store import sql
from source.store.task_store import StoreError, TaskStore, normalise_db_url
from source.task_context import ChildTask, child_task_id
from tests.table_fill import insert_finished_rows


def claim_one(store: TaskStore, worker: str = "w1", lease: float = 30.0):
    claim = store.claim(worker, lease)
    assert claim is not None, "expected a ready task"
    return claim


def status(store: TaskStore, task_id: str) -> str:
    return store.get(task_id)["status"]


def test_claim_order_priority_then_age(store):
    low = store.add_task("noop", {})
    high = store.add_task("noop", {}, priority=10)
    low2 = store.add_task("noop", {})
    order = [claim_one(store).id for _ in range(3)]
    assert order == [high, low, low2]
    assert store.claim("w1", 30) is None


def test_tasks_inserted_together_run_in_insertion_order(store):
    ids = store.add_tasks([dict(task_type="noop", params={"n": i}) for i in range(8)])
    assert [claim_one(store).id for _ in ids] == ids


def test_claim_sets_worker_attempt_and_lease(store):
    tid = store.add_task("noop", {"a": 1})
    claim = claim_one(store, "wA")
    row = store.get(tid)
    assert (row["status"], row["worker_id"], row["attempts"]) == ("In Progress", "wA", 1)
    assert row["lease_expires_at"] is not None and row["generation_started_at"] is not None
    assert claim.attempt == 1


def test_task_types_filter(store):
    store.add_task("noop", {})
    other = store.add_task("generate", {})
    assert claim_one(store, "w").task_type == "noop"
    assert store.claim("w", 30, task_types=["noop"]) is None
    assert store.claim("w", 30, task_types=["generate", "x"]).id == other


def test_fan_out_fan_in_order(store):
    root = store.add_task("noop", {})
    left = store.add_task("noop", {}, depends_on=[root])
    right = store.add_task("noop", {}, depends_on=[root])
    join = store.add_task("noop", {}, depends_on=[left, right])
    c = claim_one(store)
    assert c.id == root and store.claim("w", 30) is None
    store.complete(c, None)
    a, b = claim_one(store), claim_one(store)
    assert {a.id, b.id} == {left, right}
    assert store.claim("w", 30) is None
    store.complete(a, None)
    assert store.claim("w", 30) is None, "fan-in must wait for every parent"
    store.complete(b, None)
    assert claim_one(store).id == join


def test_guarded_updates_ignore_zombies(store):
    tid = store.add_task("noop", {})
    zombie = claim_one(store, "A", lease=0.2)
    time.sleep(0.5)
    reclaimed = store.reclaim_expired()
    assert [r["task_id"] for r in reclaimed] == [tid]
    fresh = claim_one(store, "B")
    assert fresh.attempt == 2
    # Every late write of the zombie changes nothing.
    assert store.heartbeat(zombie, 30) == (False, False)
    assert store.complete(zombie, "zombie-output") is False
    assert store.fail(zombie, "zombie failure") is False
    assert store.hand_back(zombie) is False
    assert store.complete(fresh, "real-output") is True
    row = store.get(tid)
    assert (row["status"], row["output_location"], row["worker_id"], row["attempts"]) == \
        ("Complete", "real-output", "B", 2)


def test_expired_lease_past_max_attempts_fails_with_reason(store):
    tid = store.add_task("noop", {}, max_attempts=1)
    child = store.add_task("noop", {}, depends_on=[tid])
    claim_one(store, "A", lease=0.1)
    time.sleep(0.3)
    assert store.reclaim_expired()[0]["outcome"] == "Failed"
    row = store.get(tid)
    assert row["status"] == "Failed" and "lease expired" in row["error_message"]
    assert "no attempts left" in row["error_message"]
    assert status(store, child) == "Failed"


def test_failure_propagates_to_every_waiting_descendant(store):
    a = store.add_task("noop", {})
    b = store.add_task("noop", {}, depends_on=[a])
    c = store.add_task("noop", {}, depends_on=[b])
    d = store.add_task("noop", {}, depends_on=[a, c])
    unrelated = store.add_task("noop", {})
    ca = claim_one(store)
    assert ca.id == a
    store.fail(ca, "bad input: image missing")
    for t in (b, c, d):
        row = store.get(t)
        assert row["status"] == "Failed"
        assert "depends on failed" in row["error_message"] and "bad input: image missing" in row["error_message"]
    assert a in store.get(b)["error_message"]
    assert status(store, unrelated) == "Queued"
    counts = store.count_by_status()
    assert counts.get("Queued") == 1


def test_retry_requeues_failed_descendants_and_continues(store):
    a = store.add_task("noop", {})
    b = store.add_task("noop", {}, depends_on=[a])
    c = store.add_task("noop", {}, depends_on=[b])
    store.complete(claim_one(store), "a-out")
    cb = claim_one(store)
    store.fail(cb, "transient glitch, gave up")
    assert status(store, c) == "Failed"
    requeued = store.retry(b)
    assert set(requeued) == {b, c}
    assert status(store, a) == "Complete" and store.get(a)["output_location"] == "a-out"
    assert claim_one(store).id == b
    with pytest.raises(StoreError):
        store.retry(a)


def test_cancel_queued_and_running(store):
    q = store.add_task("noop", {})
    child = store.add_task("noop", {}, depends_on=[q])
    running = store.add_task("noop", {}, priority=5)
    claim = claim_one(store)
    assert claim.id == running
    assert store.request_cancel(q) == "Cancelled"
    assert status(store, child) == "Cancelled"
    assert q in store.get(child)["error_message"]
    assert store.request_cancel(running) == "In Progress"
    ok, cancel = store.heartbeat(claim, 30)
    assert ok and cancel
    assert store.mark_cancelled(claim, "stopped") is True
    assert status(store, running) == "Cancelled"
    with pytest.raises(StoreError):
        store.request_cancel("no-such-task")


def test_retry_later_respects_not_before(store):
    tid = store.add_task("noop", {})
    claim = claim_one(store)
    assert store.retry_later(claim, "network blip", delay_seconds=0.6)
    assert store.claim("w", 30) is None
    time.sleep(0.8)
    again = claim_one(store)
    assert again.id == tid and again.attempt == 2


def test_hand_back_does_not_spend_an_attempt(store):
    tid = store.add_task("noop", {})
    claim = claim_one(store)
    assert store.hand_back(claim)
    row = store.get(tid)
    assert row["status"] == "Queued" and row["attempts"] == 0 and row["worker_id"] is None


def test_orchestrator_children_atomic_idempotent_and_fan_in(store):
    orch = store.add_task("travel_orchestrator", {"x": 1}, priority=3, project_id="p1")
    claim = claim_one(store)
    children = [
        ChildTask("seg-0", "noop", {"i": 0}),
        ChildTask("seg-1", "noop", {"i": 1}, depends_on=["seg-0"]),
        ChildTask("stitch", "noop", {}, depends_on=["seg-0", "seg-1"], completes_parent=True),
    ]
    assert store.spawn_children(claim, children)
    row = store.get(orch)
    assert row["status"] == "In Progress" and row["awaiting_children"] == 1 and row["worker_id"] is None
    ids = {c.key: child_task_id(orch, c.key) for c in children}
    assert store.get(ids["stitch"])["depends_on"] == [ids["seg-0"], ids["seg-1"]]
    assert store.get(ids["seg-0"])["project_id"] == "p1" and store.get(ids["seg-0"])["priority"] == 3
    # A stale second spawn (same claim) inserts nothing.
    assert store.spawn_children(claim, children) is False
    assert len(store.list_tasks(parent_task_id=orch)) == 3
    for key in ("seg-0", "seg-1", "stitch"):
        c = claim_one(store)
        assert c.id == ids[key]
        store.complete(c, f"files/{key}.mp4", {"frames": 9})
    row = store.get(orch)
    assert row["status"] == "Complete" and row["output_location"] == "files/stitch.mp4"
    assert store.reclaim_expired() == []


def test_failed_child_fails_orchestrator_naming_it_and_retry_resumes(store):
    orch = store.add_task("travel_orchestrator", {})
    claim = claim_one(store)
    store.spawn_children(claim, [
        ChildTask("seg-0", "noop", {}), ChildTask("seg-1", "noop", {}),
        ChildTask("stitch", "noop", {}, depends_on=["seg-0", "seg-1"], completes_parent=True)])
    first = claim_one(store)
    store.fail(first, "generation exploded")
    row = store.get(orch)
    assert row["status"] == "Failed" and first.id in row["error_message"]
    assert "generation exploded" in row["error_message"]
    assert store.count_by_status().get("Queued", 0) == 0, "nothing may stay Queued"
    requeued = store.retry(first.id)
    assert first.id in requeued
    assert status(store, orch) == "In Progress"
    while (c := store.claim("w", 30)) is not None:
        store.complete(c, f"out-{c.id}")
    assert status(store, orch) == "Complete"


def test_cancel_waiting_orchestrator_cancels_children(store):
    orch = store.add_task("travel_orchestrator", {})
    claim = claim_one(store)
    store.spawn_children(claim, [ChildTask("a", "noop", {}), ChildTask("b", "noop", {}, depends_on=["a"],
                                                                             completes_parent=True)])
    running = claim_one(store)
    assert store.request_cancel(orch) == "Cancelled"
    assert status(store, child_task_id(orch, "b")) == "Cancelled"
    assert store.heartbeat(running, 30) == (True, True), "the running child is asked to stop"


def test_regenerate_one_segment_reruns_it_and_the_stitch_only(store):
    orch = store.add_task("travel_orchestrator", {})
    store.spawn_children(claim_one(store), [
        ChildTask("seg-0", "noop", {"prompt": "a"}), ChildTask("seg-1", "noop", {"prompt": "b"}),
        ChildTask("stitch", "noop", {}, depends_on=["seg-0", "seg-1"], completes_parent=True)])
    while (c := store.claim("w", 30)) is not None:
        store.complete(c, f"out-{c.id}")
    assert status(store, orch) == "Complete"
    seg1 = child_task_id(orch, "seg-1")
    requeued = store.regenerate(seg1, {"prompt": "new prompt", "seed": 7})
    assert set(requeued) == {seg1, child_task_id(orch, "stitch")}
    assert status(store, child_task_id(orch, "seg-0")) == "Complete"
    c = claim_one(store)
    assert c.id == seg1 and json.loads(json.dumps(c.row["params"])) is not None
    params = c.row["params"] if isinstance(c.row["params"], dict) else json.loads(c.row["params"])
    assert params["prompt"] == "new prompt" and params["seed"] == 7
    store.complete(c, "out-new")
    s = claim_one(store)
    store.complete(s, "final-2")
    row = store.get(orch)
    assert row["status"] == "Complete" and row["output_location"] == "final-2"


def test_add_task_validates_parents_and_ids(store):
    with pytest.raises(StoreError, match="does not exist"):
        store.add_task("noop", {}, depends_on=["missing"])
    tid = store.add_task("noop", {}, task_id="fixed-id")
    with pytest.raises(StoreError, match="already exists"):
        store.add_task("noop", {}, task_id=tid)
    # all or nothing
    with pytest.raises(StoreError):
        store.add_tasks([dict(task_type="noop", params={}, task_id="x1"),
                         dict(task_type="noop", params={}, depends_on=["nope"])])
    assert store.get("x1") is None


def test_direct_sql_insert_with_seed_columns_only(store):
    now = "2025-07-01T10:00:00.000000Z"
    ts = ":now" if store.is_sqlite else "CAST(:now AS timestamptz)"
    with store.begin() as conn:
        conn.execute(sa.text("INSERT INTO tasks (id, task_type, params, status, dependant_on, project_id, created_at)"
                             f" VALUES (:id, 'noop', :params, 'Queued', :dep, 'proj', {ts})"),
                     [{"id": "parent", "params": '{"seconds": 0}', "dep": None, "now": now},
                      {"id": "child", "params": '{}', "dep": "parent", "now": now}])
        # a several-parent dependency written by another app
        conn.execute(sa.text(f"INSERT INTO tasks (id, task_type, params, created_at) VALUES ('multi', 'noop', '{{}}', {ts})"),
                     {"now": now})
        conn.execute(sa.text("INSERT INTO task_dependencies (task_id, depends_on) VALUES ('multi', 'parent'),"
                             " ('multi', 'child')"))
    order = []
    while (c := store.claim("w", 30)) is not None:
        order.append(c.id)
        store.complete(c, None)
    assert order == ["parent", "child", "multi"]


def test_sweep_ends_rows_whose_parent_is_missing_or_failed(store):
    with store.begin() as conn:
        conn.execute(sa.text("INSERT INTO tasks (id, task_type, params, dependant_on, created_at) VALUES"
                             " ('orphan', 'noop', '{}', 'ghost', " + ("'2025-01-01T00:00:00.000000Z'" if store.is_sqlite
                                                                      else "now()") + ")"))
    swept = store.sweep_stranded()
    assert [s["task_id"] for s in swept] == ["orphan"]
    row = store.get("orphan")
    assert row["status"] == "Failed" and "ghost" in row["error_message"]


def test_output_cache_shared_table(store):
    assert store.cache_get("k") is None
    store.cache_put("k", "files/a.mp4", "t1")
    store.cache_put("k", "files/b.mp4", "t2")
    assert store.cache_get("k") == "files/b.mp4"
    store.cache_forget("k")
    assert store.cache_get("k") is None


def test_workers_table(store):
    store.register_worker("w-1", "host", 123, "0.1.0")
    store.worker_seen("w-1", "task-1")
    with store.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT host, pid, current_task_id, version, status FROM workers"
                                   " WHERE id = 'w-1'")).first()
    assert tuple(row) == ("host", 123, "task-1", "0.1.0", "running")


SEED_DDL_SQLITE = """CREATE TABLE tasks (
    id TEXT PRIMARY KEY, task_type TEXT NOT NULL, params TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'Queued',
    dependant_on TEXT NULL, output_location TEXT NULL, created_at TEXT NOT NULL, updated_at TEXT NULL,
    generation_started_at TEXT NULL, generation_processed_at TEXT NULL, project_id TEXT NOT NULL,
    FOREIGN KEY (project_id) REFERENCES projects(id))"""
SEED_DDL_POSTGRES = """CREATE TABLE tasks (
    id TEXT PRIMARY KEY, task_type TEXT NOT NULL, params JSONB NOT NULL, status TEXT NOT NULL DEFAULT 'Queued',
    dependant_on TEXT NULL, output_location TEXT NULL, created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NULL, generation_started_at TIMESTAMPTZ NULL, generation_processed_at TIMESTAMPTZ NULL,
    project_id TEXT NOT NULL)"""


def make_seed_db(url: str) -> None:
    """A tasks table exactly as the seed worker made it, with rows in every state."""
    engine = sa.create_engine(normalise_db_url(url))
    sqlite = url.startswith("sqlite")
    with engine.begin() as conn:
        conn.execute(sa.text(SEED_DDL_SQLITE if sqlite else SEED_DDL_POSTGRES))
        conn.execute(sa.text("CREATE INDEX idx_status_created ON tasks(status, created_at)"))
        rows = [
            ("done", "wgp", '{"prompt": "x"}', "Complete", None, "files/done.mp4", "2025-07-01T10:00:00.000000Z"),
            ("failed", "wgp", '{}', "Failed", None, "error text", "2025-07-01T10:00:01.000000Z"),
            ("q1", "noop", '{"seconds": 0}', "Queued", None, None, "2025-07-01T10:00:02.000000Z"),
            ("q2", "noop", '{}', "Queued", "q1", None, "2025-07-01T10:00:03.000000Z"),
            ("stuck", "noop", '{}', "In Progress", None, None, "2025-07-01T10:00:04.000000Z"),
        ]
        for r in rows:
            conn.execute(sa.text("INSERT INTO tasks (id, task_type, params, status, dependant_on, output_location,"
                                 f" created_at, project_id) VALUES (:id, :t, :p, :s, :d, :o, {'' if sqlite else 'CAST('}:c"
                                 f"{'' if sqlite else ' AS timestamptz)'}, 'default_project_id')"),
                         dict(zip(["id", "t", "p", "s", "d", "o", "c"], r)))
    engine.dispose()


def test_seed_era_database_is_migrated_in_place(db_url):
    make_seed_db(db_url)
    store = TaskStore(db_url, lease_seconds_for_migrated=0.2)
    try:
        assert len(store.list_tasks(limit=100)) == 5
        assert store.get("done")["output_location"] == "files/done.mp4"
        assert store.get("failed")["status"] == "Failed"
        c1 = claim_one(store)
        assert c1.id == "q1"
        store.complete(c1, None)
        assert claim_one(store).id == "q2"
        time.sleep(0.4)  # the seed's orphaned In Progress row got a lease, so it is reclaimed, not stranded
        assert [r["task_id"] for r in store.reclaim_expired()] == ["stuck"]
        assert claim_one(store).id == "stuck"
        # a second open (another worker starting) changes nothing
        TaskStore(db_url).close()
        assert len(store.list_tasks(limit=100)) == 5
    finally:
        store.close()


def test_claim_plan_stays_index_driven_with_100k_finished_rows(store):
    insert_finished_rows(store, 100_000)
    for i in range(50):
        store.add_task("noop", {}, depends_on=[f"done-{i + 1}"] if i % 2 else [])
    sql = store.sql.claim_sql(0)
    params = {"worker": "w", "now": "2030-01-01T00:00:00.000000Z", "lease_until": "2030-01-01T00:01:00.000000Z",
              "lease_seconds": 60, "model": "tiny-t2v", "cutoff": "2029-12-31T23:55:00.000000Z"}
    with store.engine.connect() as conn:
        if store.is_sqlite:
            plan = "\n".join(str(r[-1]) for r in conn.execute(sa.text("EXPLAIN QUERY PLAN " + sql), params))
            # every access to tasks goes through an index (no bare "SCAN t" / "SCAN tasks")
            for line in plan.splitlines():  # "SCAN head": the one-row CTE of the first ready task
                if line.strip().startswith("SCAN") and line.strip() not in ("SCAN head", "SCAN CONSTANT ROW"):
                    assert "USING" in line and "INDEX" in line, plan
            # walks the ready index in claim order: no sort of all Queued rows per claim
            assert "idx_tasks_ready" in plan and "TEMP B-TREE" not in plan, plan
        else:
            plan = pg_claim_plan(conn)
            assert "Seq Scan on tasks" not in plan, plan
            assert "SubPlan" not in plan or "hashed" not in plan, plan
            assert "idx_tasks_ready" in plan and "Sort" not in plan, plan
    started = time.perf_counter()
    claim = store.claim("w", 30)
    assert claim is not None and (time.perf_counter() - started) < 1.0


def pg_claim_plan(conn) -> str:
    """EXPLAIN of the statement inside headless_claim(), under the planner settings the function
    carries (read back from the catalog, so the test sees what the server runs)."""
    settings = conn.execute(sa.text("SELECT proconfig FROM pg_proc WHERE proname = 'headless_claim'")).scalar()
    assert settings, "headless_claim should carry its planner settings"
    for setting in settings:  # SET LOCAL: for this transaction only, rolled back below
        name, value = setting.split("=", 1)
        conn.execute(sa.text(f"SET LOCAL {name} = {value}"))
    statement = sql.pg_claim_statement(":worker", "CAST(:lease_seconds AS double precision)", "CAST(:types AS text[])",
                                       "CAST(:model AS text)", "CAST(:max_wait AS double precision)")
    rows = conn.execute(sa.text("EXPLAIN " + statement), {"worker": "w", "lease_seconds": 60, "types": None,
                                                          "model": "tiny-t2v", "max_wait": 300})
    plan = "\n".join(r[0] for r in rows)
    conn.rollback()
    return plan


@pytest.mark.parametrize("statistics", ["never analyzed", "analyzed while nothing was queued"])
def test_pg_claim_stays_index_driven_with_misleading_statistics(pg_url, statistics):
    """A burst of 3,000 queued tasks into a table whose statistics say few rows are Queued: the claim
    must walk idx_tasks_ready in claim order once (no sort of every Queued row) and update the row it
    found through the primary key (not by walking the Queued rows again)."""
    store = TaskStore(pg_url)
    if statistics != "never analyzed":
        insert_finished_rows(store, 5_000)  # ends with VACUUM ANALYZE: 0 Queued rows in the statistics
    ids = store.add_tasks([dict(task_type="noop", params={}, priority=i % 3) for i in range(3_000)])
    with store.engine.connect() as conn:
        plan = pg_claim_plan(conn)
    assert "Index Scan using idx_tasks_ready" in plan and "Sort" not in plan, plan
    # idx_tasks_ready once (the head); idx_tasks_ready_model serves only the affinity branches
    assert plan.count("using idx_tasks_ready on") == 1 and "Index Scan using tasks_pkey on tasks" in plan, plan
    expected = sorted(range(3_000), key=lambda i: (-(i % 3), i))[:20]
    assert [claim_one(store).id for _ in range(20)] == [ids[i] for i in expected]
    store.close()


def test_complete_and_claim_finishes_one_task_and_takes_the_next(store):
    root = store.add_task("noop", {})
    child = store.add_task("noop", {}, depends_on=[root])
    first = claim_one(store, "W")
    assert store.claim("X", 30) is None  # the child waits for its parent
    done, nxt = store.complete_and_claim(first, "out/root.mp4", {"k": 1}, worker_id="W", lease_seconds=30)
    assert done is True and nxt is not None and nxt.id == child and nxt.attempt == 1
    assert store.get(root)["status"] == "Complete" and store.get(root)["output_location"] == "out/root.mp4"
    assert (store.get(child)["status"], store.get(child)["worker_id"]) == ("In Progress", "W")
    # a stale completion changes nothing, and the empty queue gives no claim
    assert store.complete_and_claim(first, "late", None, worker_id="W", lease_seconds=30) == (False, None)
    assert store.get(root)["output_location"] == "out/root.mp4"
    assert store.complete_and_claim(nxt, None, None, worker_id="W", lease_seconds=30) == (True, None)
    assert store.count_by_status() == {"Complete": 2}


def test_complete_and_claim_completes_the_orchestrator_when_the_child_does(store):
    orchestrator = store.add_task("travel_orchestrator", {})
    claim = claim_one(store)
    assert store.spawn_children(claim, [ChildTask(key="final", task_type="noop", params={},
                                                  completes_parent=True)])
    final = claim_one(store, "W")
    done, nxt = store.complete_and_claim(final, "files/final.mp4", None, worker_id="W", lease_seconds=30)
    assert done and nxt is None
    row = store.get(orchestrator)
    assert (row["status"], row["output_location"]) == ("Complete", "files/final.mp4")


def test_the_hot_path_reconnects_after_the_server_drops_its_connection(pg_url):
    store = TaskStore(pg_url)
    first, second = store.add_tasks([dict(task_type="noop", params={}) for _ in range(2)])
    claim = claim_one(store, "W")  # opens the worker's driver connection
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        killed = conn.execute(sa.text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                      " WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
    assert killed >= 1
    with pytest.raises(sa.exc.OperationalError):  # the class TaskStore.run retries
        store.complete(claim, None)
    assert store.run(lambda: store.complete(claim, None), retry_for=10) is True
    assert claim_one(store, "W").id == second
    assert store.get(first)["status"] == "Complete"
    store.close()
