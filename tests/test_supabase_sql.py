"""The Supabase project's SQL (supabase/), on a real PostgreSQL prepared as Supabase prepares one.

RLS, column protection, the worker functions' grants and scoping, idempotent inserts, worker tokens and
the storage policy are the database's own decisions here: each test acts as PostgREST would (SET LOCAL
ROLE + request.jwt.claims) and looks at what the database allowed.
"""

from __future__ import annotations

import json
import re
import uuid

import psycopg
import pytest

from tests.supabase_db import apply_supabase, as_role

USER_A, USER_B = str(uuid.uuid4()), str(uuid.uuid4())


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


def _insert_as(conn, role, sub, project, task_id, **extra):
    cols = {"id": task_id, "task_type": "noop", "params": json.dumps({}), "project_id": project, **extra}
    with as_role(conn, role, sub):
        conn.execute(f"INSERT INTO tasks ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})",
                     list(cols.values()))


def _run_as(conn, role, sub, statement, params=()):
    with as_role(conn, role, sub):
        return conn.execute(statement, params).fetchall()


def _sqlstate(fn) -> str:
    with pytest.raises(psycopg.Error) as info:
        fn()
    return info.value.sqlstate


def test_a_user_works_only_in_their_own_projects(sb):
    _insert_as(sb, "authenticated", USER_A, "pa", "a1")  # allowed
    assert _sqlstate(lambda: _insert_as(sb, "authenticated", USER_A, "pb", "a2")) == "42501"
    _insert_as(sb, "service_role", None, "pb", "b1")
    with as_role(sb, "authenticated", USER_A):
        assert [r[0] for r in sb.execute("SELECT id FROM tasks")] == ["a1"]
        assert [r[0] for r in sb.execute("SELECT id FROM projects")] == ["pa"]
    with as_role(sb, "authenticated", USER_B):
        assert [r[0] for r in sb.execute("SELECT id FROM tasks")] == ["b1"]
    with as_role(sb, "anon"):
        assert sb.execute("SELECT count(*) FROM tasks").fetchone()[0] == 0
        assert sb.execute("SELECT count(*) FROM projects").fetchone()[0] == 0
    # A new project is the signed-in user's by default; naming another owner is refused.
    assert _run_as(sb, "authenticated", USER_A, "INSERT INTO projects (name) VALUES ('film') RETURNING user_id")[0][0] \
        == uuid.UUID(USER_A)
    assert _sqlstate(lambda: _run_as(sb, "authenticated", USER_A, "INSERT INTO projects (user_id) VALUES (%s)",
                                     (USER_B,))) == "42501"
    # A depends-on pointing into someone else's project is refused too.
    assert _sqlstate(lambda: _insert_as(sb, "authenticated", USER_A, "pa", "a3", dependant_on="b1")) == "42501"


def test_protected_columns_are_the_workers_alone(sb):
    _insert_as(sb, "authenticated", USER_A, "pa", "a1")
    for column, value in [("status", "Complete"), ("worker_id", "me"), ("lease_expires_at", "2030-01-01"),
                          ("attempts", 0), ("output_location", "x"), ("generation_started_at", "2030-01-01")]:
        statement = f"UPDATE tasks SET {column} = %s WHERE id = 'a1' RETURNING id"
        assert _sqlstate(lambda s=statement, v=value: _run_as(sb, "authenticated", USER_A, s, (v,))) == "42501", \
            column
    assert _sqlstate(lambda: _insert_as(sb, "authenticated", USER_A, "pa", "a2", worker_id="me")) == "42501"
    assert _sqlstate(lambda: _insert_as(sb, "authenticated", USER_A, "pa", "a3", status="Complete")) == "42501"
    _insert_as(sb, "authenticated", USER_A, "pa", "a4", status="Queued")  # the seed app names it: fine
    row = sb.execute("SELECT status, worker_id, attempts FROM tasks WHERE id = 'a1'").fetchone()
    assert row == ("Queued", None, 0)


def test_only_workers_claim_and_the_service_role_claims(sb):
    _insert_as(sb, "authenticated", USER_A, "pa", "a1")

    def claim(role, sub=None, token=None):
        with as_role(sb, role, sub):
            return sb.execute("SELECT id, attempts FROM worker_claim('w1', 30, NULL, %s)", (token,)).fetchall()

    assert _sqlstate(lambda: claim("authenticated", USER_A)) == "42501"
    direct = "SELECT * FROM headless_claim('w', 30, NULL, NULL, 0)"
    assert _sqlstate(lambda: _run_as(sb, "authenticated", USER_A, direct)) == "42501"
    assert _sqlstate(lambda: claim("anon")) == "28000"  # anon key without a worker token
    assert claim("service_role") == [("a1", 1)]
    with as_role(sb, "service_role"):
        beat = sb.execute("SELECT worker_heartbeat('a1', 'w1', 1, 30, 0.5, 'half')").fetchone()[0]
        assert beat == {"owned": True, "cancel_requested": False}
        assert sb.execute("SELECT worker_complete('a1', 'w2', 1, 'x', NULL)").fetchone()[0] is False  # not its task
        assert sb.execute("SELECT worker_complete('a1', 'w1', 1, 'out.mp4', '{\"n\": 1}')").fetchone()[0] is True
        assert sb.execute("SELECT worker_complete('a1', 'w1', 1, 'again', NULL)").fetchone()[0] is False
    with as_role(sb, "authenticated", USER_A):  # the owner sees the outcome (an app's subscription would too)
        assert sb.execute("SELECT status, output_location, progress FROM tasks WHERE id = 'a1'").fetchone() == \
            ("Complete", "out.mp4", 1.0)


def test_failure_propagates_and_users_cancel_their_own(sb):
    _insert_as(sb, "authenticated", USER_A, "pa", "parent")
    _insert_as(sb, "authenticated", USER_A, "pa", "child", dependant_on="parent")
    _insert_as(sb, "authenticated", USER_A, "pa", "other")
    with as_role(sb, "service_role"):
        assert sb.execute("SELECT id FROM worker_claim('w1', 30, ARRAY['noop'])").fetchone()[0] == "parent"
        assert sb.execute("SELECT worker_end('parent', 'w1', 1, 'Failed', 'boom')").fetchone()[0] is True
    status, message = sb.execute("SELECT status, error_message FROM tasks WHERE id = 'child'").fetchone()
    assert status == "Failed" and message == "not run: task parent (noop) that it depends on failed: boom"
    _insert_as(sb, "service_role", None, "pb", "theirs")
    with as_role(sb, "authenticated", USER_A):
        assert sb.execute("SELECT cancel_task('other')").fetchone()[0] == "Cancelled"
    assert _sqlstate(lambda: _run_as(sb, "authenticated", USER_A, "SELECT cancel_task('theirs')")) == "42501"
    assert sb.execute("SELECT status FROM tasks WHERE id = 'theirs'").fetchone()[0] == "Queued"


def test_idempotent_insert_gives_the_existing_task(sb):
    with as_role(sb, "authenticated", USER_A):
        first = sb.execute("SELECT insert_task('pa', 'noop', '{}', 'key-1')").fetchone()[0]
        again = sb.execute("SELECT insert_task('pa', 'noop', '{\"other\": 1}', 'key-1')").fetchone()[0]
        fresh = sb.execute("SELECT insert_task('pa', 'noop', '{}', NULL)").fetchone()[0]
    assert first == again != fresh
    assert sb.execute("SELECT count(*) FROM tasks WHERE idempotency_key = 'key-1'").fetchone()[0] == 1
    # The key is per project: B may use the same key in theirs, and A cannot reach B's project with it.
    with as_role(sb, "authenticated", USER_B):
        assert sb.execute("SELECT insert_task('pb', 'noop', '{}', 'key-1')").fetchone()[0] != first
    assert _sqlstate(lambda: _run_as(sb, "authenticated", USER_A,
                                     "SELECT insert_task('pb', 'noop', '{}', 'key-2')")) == "42501"


def test_a_worker_token_claims_only_its_owners_tasks_until_revoked(sb):
    _insert_as(sb, "service_role", None, "pb", "b1")
    _insert_as(sb, "authenticated", USER_A, "pa", "a1")
    with as_role(sb, "authenticated", USER_A):
        made = sb.execute("SELECT create_worker_token('laptop')").fetchone()[0]
    token = made["token"]
    stored = sb.execute("SELECT token_hash FROM worker_tokens").fetchone()[0]
    assert token not in stored and len(stored) == 64  # only the hash is kept
    with as_role(sb, "anon"):
        assert [r[0] for r in sb.execute("SELECT id FROM worker_claim('w', 30, NULL, %s)", (token,))] == ["a1"]
        assert sb.execute("SELECT id FROM worker_claim('w', 30, NULL, %s)", (token,)).fetchall() == []  # not b1
        assert sb.execute("SELECT worker_hand_back('a1', 'w', 1, %s)", (token,)).fetchone()[0] is True
    with as_role(sb, "authenticated", USER_B):  # B cannot revoke A's token
        assert sb.execute("SELECT revoke_worker_token(%s)", (made["id"],)).fetchone()[0] is False
    with as_role(sb, "authenticated", USER_A):
        assert sb.execute("SELECT revoke_worker_token(%s)", (made["id"],)).fetchone()[0] is True

    def claim_revoked():
        with as_role(sb, "anon"):
            sb.execute("SELECT * FROM worker_claim('w', 30, NULL, %s)", (token,))
    assert _sqlstate(claim_revoked) == "28000"


def test_project_owners_read_their_outputs_in_storage(sb):
    sb.execute("INSERT INTO storage.objects (bucket_id, name) VALUES ('image_uploads', 'pa/out.mp4'),"
               " ('image_uploads', 'pb/out.mp4')")
    with as_role(sb, "authenticated", USER_A):
        assert [r[0] for r in sb.execute("SELECT name FROM storage.objects")] == ["pa/out.mp4"]
    with as_role(sb, "anon"):
        assert sb.execute("SELECT count(*) FROM storage.objects").fetchone()[0] == 0
    assert sb.execute("SELECT public FROM storage.buckets WHERE id = 'image_uploads'").fetchone()[0] is False


# ------------------------------------------------------------------ one definition with source/store
def _columns(conn, table):
    return conn.execute("SELECT column_name, data_type, is_nullable FROM information_schema.columns"
                        " WHERE table_schema = 'public' AND table_name = %s ORDER BY column_name", (table,)).fetchall()


def _indexes(conn):
    return conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
                        " AND tablename <> 'projects'").fetchall()


def _triggers(conn):
    return conn.execute("SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal"
                        " AND tgrelid = 'public.tasks'::regclass ORDER BY tgname").fetchall()


def _function(conn, name):
    return conn.execute("SELECT prosrc, pg_get_function_arguments(oid), pg_get_function_result(oid), proconfig"
                        " FROM pg_proc WHERE proname = %s", (name,)).fetchone()


def test_the_migrations_make_what_the_store_makes(pg_cluster):
    from source.store.sql import SCHEMA_VERSION
    from source.store.task_store import TaskStore

    migrated = pg_cluster.create_database(f"m{uuid.uuid4().hex[:8]}")
    plain = pg_cluster.create_database(f"p{uuid.uuid4().hex[:8]}")
    apply_supabase(migrated)
    TaskStore(plain).close()
    with psycopg.connect(migrated) as m, psycopg.connect(plain) as p:
        for table in ("tasks", "task_dependencies", "workers", "output_cache", "headless_schema", "paused_scopes",
                      "project_limits", "model_names"):
            assert _columns(m, table) == _columns(p, table), table
        # Every index the store makes, the same (the migrations add idx_tasks_project for RLS lookups).
        store_indexes = set(_indexes(p))
        assert store_indexes <= set(_indexes(m)), sorted(store_indexes - set(_indexes(m)))
        assert _function(m, "headless_claim") == _function(p, "headless_claim")
        # The model trigger: the same body; SECURITY DEFINER here (an app user's insert runs it).
        assert _function(m, "headless_task_model")[:3] == _function(p, "headless_task_model")[:3]
        assert _triggers(m) == _triggers(p)
        # The token claim is the same statement with one more condition after each ready test.
        scoped = _function(m, "headless_claim_for_user")[0]
        extra = "    AND t.project_id IN (SELECT pr.id FROM projects pr WHERE pr.user_id = p_user)\n"
        assert scoped.count(extra) == 3 and scoped.replace(extra, "") == _function(m, "headless_claim")[0]
        assert m.execute("SELECT version FROM headless_schema").fetchone()[0] == SCHEMA_VERSION
    # A direct-URL worker uses the migrated database as it is, with the same claim function.
    store = TaskStore(migrated)
    try:
        task = store.add_task("noop", {}, project_id="p")
        assert store.claim("w", 30).id == task
    finally:
        store.close()


def test_every_worker_function_is_security_definer_with_a_search_path(sb):
    rows = sb.execute("SELECT proname, prosecdef, proconfig FROM pg_proc WHERE proname ~ '^(worker_|cancel_task"
                      "|create_worker_token|revoke_worker_token|headless_worker_scope|headless_propagate_end)'"
                      ).fetchall()
    assert len(rows) >= 11
    for name, definer, config in rows:
        assert definer, name
        assert any(re.match(r"search_path=", c) for c in config or []), name
    for role in ("authenticated", "anon", "service_role"):
        assert sb.execute("SELECT rolbypassrls FROM pg_roles WHERE rolname = %s", (role,)).fetchone()[0] is \
            (role == "service_role")
