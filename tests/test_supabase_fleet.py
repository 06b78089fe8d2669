"""Fleet scheduling (model affinity, pauses, project limits, start_by, idempotency keys) in the Supabase project:
supabase/migrations/20261202130000_headless_fleet.sql on a real PostgreSQL prepared as Supabase prepares one.

Each test acts as PostgREST would (SET LOCAL ROLE + request.jwt.claims) and looks at what the database did.
"""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from source import task_model
from tests.supabase_db import BASE_SQL, apply_supabase, as_role, migration_files

USER_A, USER_B = str(uuid.uuid4()), str(uuid.uuid4())
FLEET_MIGRATION = "20261202130000_headless_fleet.sql"


@pytest.fixture
def sb(pg_url):
    """A migrated database with users A and B, each owning one project (pa, pb)."""
    apply_supabase(pg_url)
    conn = psycopg.connect(pg_url, autocommit=True)
    conn.execute("INSERT INTO auth.users (id, email) VALUES (%s, 'a@example.com'), (%s, 'b@example.com')",
                 (USER_A, USER_B))
    conn.execute("INSERT INTO projects (id, user_id) VALUES ('pa', %s), ('pb', %s)", (USER_A, USER_B))
    yield conn
    conn.close()


def _insert(conn, role, sub, task_id, project, task_type="noop", params=None, **extra):
    cols = {"id": task_id, "task_type": task_type, "params": json.dumps(params or {}), "project_id": project, **extra}
    with as_role(conn, role, sub):
        conn.execute(f"INSERT INTO tasks ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})",
                     list(cols.values()))


def _claim(conn, model=None, max_wait=300, types=None, token=None, role="service_role"):
    with as_role(conn, role):
        rows = conn.execute("SELECT id, model FROM worker_claim('w', 30, %s, %s, %s, %s)",
                            (types, token, model, max_wait)).fetchall()
    return rows[0] if rows else None


def _sqlstate(fn) -> str:
    with pytest.raises(psycopg.Error) as info:
        fn()
    return info.value.sqlstate


def test_app_inserts_get_their_model_and_the_claim_prefers_the_held_model(sb):
    with as_role(sb, "service_role"):
        written = sb.execute("SELECT worker_record_model_names(%s)", (json.dumps(task_model.name_pairs()),))
        assert written.fetchone()[0] == len(task_model.name_pairs())
    # A signed-in app's insert runs the trigger (it reads model_names, which the app itself may not).
    _insert(sb, "authenticated", USER_A, "old", "pa", "t2v", {"prompt": "x"})
    _insert(sb, "authenticated", USER_A, "young", "pa", "t2v", {"model": " I2V_720p "})
    models = dict(sb.execute("SELECT id, model FROM tasks").fetchall())
    assert models == {"old": task_model.name_pairs()["t2v"], "young": task_model.name_pairs()["i2v_720p"]}
    held = models["young"]
    assert _claim(sb, model=held) == ("young", held)  # the held model first, within the head's priority
    assert _claim(sb, model=held, max_wait=0) == ("old", models["old"])  # nothing left for it: strict order
    # A personal worker's catalog is not written (it would steer other users' tasks).
    with as_role(sb, "authenticated", USER_A):
        token = sb.execute("SELECT create_worker_token('t')").fetchone()[0]["token"]
    with as_role(sb, "anon"):
        assert sb.execute("SELECT worker_record_model_names('{\"t2v\": \"evil\"}', %s)", (token,)).fetchone()[0] == 0
    assert sb.execute("SELECT model FROM model_names WHERE name = 't2v'").fetchone()[0] != "evil"


def test_affinity_cut_off_gives_the_oldest_task_first(sb):
    sb.execute("INSERT INTO tasks (id, task_type, params, project_id, model, created_at) VALUES"
               " ('waited', 'noop', '{}', 'pa', 'm1', now() - interval '10 minutes'),"
               " ('fresh', 'noop', '{}', 'pa', 'm2', now())")
    assert _claim(sb, model="m2", max_wait=300) == ("waited", "m1")  # waited past the cut-off
    with as_role(sb, "service_role"):
        sb.execute("SELECT worker_register('w', 'h', 1, 'v')")
        sb.execute("SELECT worker_set_model('w', 'm2')")
    assert sb.execute("SELECT model FROM workers WHERE id = 'w'").fetchone()[0] == "m2"


def test_pauses_limits_and_deadlines_hold_for_workers_over_the_api(sb):
    for i in range(2):
        _insert(sb, "service_role", None, f"a{i}", "pa")
        _insert(sb, "service_role", None, f"b{i}", "pb")
    sb.execute("INSERT INTO paused_scopes (task_type, project_id) VALUES ('', 'pa')")
    sb.execute("INSERT INTO project_limits (project_id, max_running) VALUES ('pb', 1)")
    assert _claim(sb)[0] == "b0"
    assert _claim(sb) is None  # pa paused, pb at its limit
    sb.execute("DELETE FROM paused_scopes")
    assert _claim(sb)[0] == "a0"
    # A deadline the app set: never claimed once passed; the sweep ends it and what waits on it.
    sb.execute("DELETE FROM project_limits")
    sb.execute("DELETE FROM tasks")
    _insert(sb, "authenticated", USER_A, "late", "pa", start_by="2020-01-01T00:00:00Z")
    _insert(sb, "authenticated", USER_A, "after", "pa", dependant_on="late")
    _insert(sb, "authenticated", USER_B, "theirs", "pb", start_by="2020-01-01T00:00:00Z")
    assert _claim(sb) is None
    with as_role(sb, "authenticated", USER_A):
        token = sb.execute("SELECT create_worker_token('t')").fetchone()[0]["token"]
    with as_role(sb, "anon"):  # a personal worker ends only its owner's expired tasks
        done = sb.execute("SELECT worker_expire_unstarted(%s)", (token,)).fetchone()[0]
    assert [d["task_id"] for d in done] == ["late"]
    assert done[0]["reason"].startswith("expired before it started: not claimed by its start_by time 2020-01-01")
    rows = dict(sb.execute("SELECT id, status FROM tasks").fetchall())
    assert rows == {"late": "Failed", "after": "Failed", "theirs": "Queued"}
    assert sb.execute("SELECT error_message FROM tasks WHERE id = 'after'").fetchone()[0].startswith(
        "not run: task late (noop) that it depends on failed: expired before it started")


def test_fleet_tables_are_the_service_roles_and_owners_read_their_own_rows(sb):
    sb.execute("INSERT INTO paused_scopes (task_type, project_id) VALUES ('', 'pa'), ('', 'pb'), ('t2v', '')")
    sb.execute("INSERT INTO project_limits (project_id, max_running) VALUES ('pa', 2), ('pb', 3)")
    sb.execute("INSERT INTO model_names (name, model) VALUES ('x', 'y')")
    with as_role(sb, "authenticated", USER_A):
        assert sb.execute("SELECT project_id FROM paused_scopes").fetchall() == [("pa",)]
        assert sb.execute("SELECT project_id, max_running FROM project_limits").fetchall() == [("pa", 2)]

    def act(role, statement, sub=USER_A):
        with as_role(sb, role, sub if role == "authenticated" else None):
            sb.execute(statement)
    for role in ("authenticated", "anon"):
        assert _sqlstate(lambda r=role: act(r, "SELECT * FROM model_names")) == "42501"
        assert _sqlstate(lambda r=role: act(r, "INSERT INTO paused_scopes (project_id) VALUES ('pa')")) == "42501"
        assert _sqlstate(lambda r=role: act(r, "DELETE FROM project_limits")) == "42501"
    assert _sqlstate(lambda: act("anon", "SELECT * FROM paused_scopes")) == "42501"
    assert _sqlstate(lambda: act("authenticated", "SELECT * FROM headless_claim('w', 30, NULL, NULL, 0)")) == "42501"
    assert sb.execute("SELECT count(*) FROM paused_scopes").fetchone()[0] == 3  # nothing changed


def test_one_idempotency_rule_for_every_path(sb):
    with as_role(sb, "service_role"):  # no project is one project
        first = sb.execute("SELECT insert_task(NULL, 'noop', '{}', 'k')").fetchone()[0]
        assert sb.execute("SELECT insert_task(NULL, 'noop', '{}', 'k')").fetchone()[0] == first
    with as_role(sb, "authenticated", USER_A):
        mine = sb.execute("SELECT insert_task('pa', 'noop', '{}', 'k')").fetchone()[0]
    assert mine != first
    # A plain insert with a used key is refused by the same unique rule (the store's ON CONFLICT target).
    assert _sqlstate(lambda: _insert(sb, "authenticated", USER_A, "dup", "pa", idempotency_key="k")) == "23505"
    assert sb.execute("SELECT count(*) FROM tasks").fetchone()[0] == 2


def test_the_upgrade_keeps_rows_that_shared_a_key_without_a_project(pg_cluster):
    url = pg_cluster.create_database(f"u{uuid.uuid4().hex[:8]}")
    files = migration_files()
    fleet = [f for f in files if f.name == FLEET_MIGRATION][0]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(BASE_SQL.read_text(encoding="utf-8"))
        for path in files:
            if path.name >= FLEET_MIGRATION:
                break
            conn.execute(path.read_text(encoding="utf-8"))
        # The first migration's UNIQUE (project_id, idempotency_key) let these two share the key.
        conn.execute("INSERT INTO tasks (id, task_type, params, idempotency_key, created_at) VALUES"
                     " ('first', 'noop', '{}', 'k', now() - interval '1 minute'), ('second', 'noop', '{}', 'k', now())")
        for path in files:
            if path.name >= FLEET_MIGRATION:
                conn.execute(path.read_text(encoding="utf-8"))
        rows = conn.execute("SELECT id, idempotency_key, model FROM tasks ORDER BY id").fetchall()
        assert rows == [("first", "k", None), ("second", None, None)]
        assert conn.execute("SELECT version FROM headless_schema").fetchone()[0] == 5
        # Applying it again changes nothing (CREATE ... IF NOT EXISTS, OR REPLACE).
        conn.execute(fleet.read_text(encoding="utf-8"))
        assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 2


# ------------------------------------------------------------------ over HTTP (supabase-py -> stand-in)
@pytest.fixture
def project(pg_url, tmp_path):
    from tests.supabase_project import start_project

    p = start_project(pg_url, tmp_path / "objects")
    p.add_user("a", ["pa"])
    yield p
    p.stop()


def test_the_rest_store_claims_with_the_held_model_and_cut_off(project):
    from source.store.rest_store import SupabaseRestStore

    with psycopg.connect(project.db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO tasks (id, task_type, params, project_id, model, created_at) VALUES"
                     " ('m1-old', 'noop', '{}', 'pa', 'm1', now() - interval '60 seconds'),"
                     " ('m2-new', 'noop', '{}', 'pa', 'm2', now()),"
                     " ('m1-new', 'noop', '{}', 'pa', 'm1', now() + interval '1 second')")
    store = SupabaseRestStore(project.url, project.service_key)
    store.check()
    first = store.claim("w", 30, model="m2", affinity_max_wait=300)
    assert (first.id, first.row["model"]) == ("m2-new", "m2")
    _, second = store.complete_and_claim(first, None, None, worker_id="w", lease_seconds=30, model="m2",
                                         affinity_max_wait=30)  # m1-old has waited past 30 s
    assert second.id == "m1-old"
    store.worker_model("w", "m1")  # no workers row yet: changes nothing, refuses nothing
    assert store.claim("w", 30, model=None).id == "m1-new"


def test_a_rest_worker_expires_missed_deadlines_and_records_model_names(project, tmp_path):
    from tests.worker_process import WorkerProcess

    project.client(project.service_key).table("tasks").insert([
        {"id": "late", "task_type": "noop", "params": {}, "project_id": "pa", "start_by": "2020-01-01T00:00:00Z"},
        {"id": "on-time", "task_type": "noop", "params": {}, "project_id": "pa"}]).execute()
    worker = WorkerProcess(None, tmp_path / "logs", "--db-type", "supabase", "--supabase-url", project.url,
                           "--output-dir", str(tmp_path / "out"), "--poll-interval", "0.2", "--exit-when-idle",
                           worker_id="w", env={"SUPABASE_ACCESS_TOKEN": project.service_key})
    try:
        assert worker.wait(120) == 0, worker.stderr_tail()
    finally:
        worker.stop()
    with psycopg.connect(project.db_url) as conn:
        assert dict(conn.execute("SELECT id, status FROM tasks").fetchall()) == {"late": "Failed",
                                                                                 "on-time": "Complete"}
        names = dict(conn.execute("SELECT name, model FROM model_names").fetchall())
        assert names == task_model.name_pairs()
    swept = worker.events("task_failed")
    assert [e["task_id"] for e in swept] == ["late"] and swept[0]["stranded"] is True


def test_a_worker_refuses_a_project_without_the_fleet_migration(pg_url, tmp_path):
    from source.store.rest_store import SupabaseRestStore, WorkerRefused
    from tests.supabase_project import start_project

    p = start_project(pg_url, tmp_path / "objects", migrations=False)  # what Supabase provides, nothing of ours
    try:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            for path in migration_files():
                if path.name < FLEET_MIGRATION:
                    conn.execute(path.read_text(encoding="utf-8"))
        with pytest.raises(WorkerRefused, match="worker API is version 1, this worker needs 2 or later"):
            SupabaseRestStore(p.url, p.service_key).check()
    finally:
        p.stop()
