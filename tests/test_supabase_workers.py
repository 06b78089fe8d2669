"""Real worker processes over a Supabase project's HTTP API (supabase-py -> the stand-in -> a migrated
PostgreSQL): exactly-once under two workers, lease reclaim after kill -9, personal worker tokens and
their revocation, and the refusals that must stop a worker with exit code 2 and one clear line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest

from tests.supabase_project import start_project
from tests.worker_process import REPO, WorkerProcess, all_events


@pytest.fixture
def project(pg_url, tmp_path):
    p = start_project(pg_url, tmp_path / "objects")
    p.add_user("a", ["pa"])
    p.add_user("b", ["pb"])
    yield p
    p.stop()


def _rest_worker(project, tmp_path, name, token, *args, env=None):
    return WorkerProcess(None, tmp_path / "logs", "--db-type", "supabase", "--supabase-url", project.url,
                         "--output-dir", str(tmp_path / f"out-{name}"), "--poll-interval", "0.2", *args,
                         worker_id=name, env={"SUPABASE_ACCESS_TOKEN": token, **(env or {})})


def _seed_env_worker(project, tmp_path, name, *args):
    """Configured only as the seed's .env does: DB_TYPE, SUPABASE_URL, SUPABASE_SERVICE_KEY."""
    return WorkerProcess(None, tmp_path / "logs", "--output-dir", str(tmp_path / f"out-{name}"),
                         "--poll-interval", "0.2", *args, worker_id=name,
                         env={"DB_TYPE": "supabase", "SUPABASE_URL": project.url,
                              "SUPABASE_SERVICE_KEY": project.service_key})


def _insert(project, rows):
    project.client(project.service_key).table("tasks").insert(rows).execute()


def _rows(project):
    with psycopg.connect(project.db_url) as conn:
        return {r[0]: r[1:] for r in conn.execute("SELECT id, status, attempts, worker_id FROM tasks")}


def _plain_lines(text):
    """stderr lines that are not the JSON event log (which also goes to stderr)."""
    return [line for line in text.splitlines() if line.strip() and not line.startswith("{")]


def _no_secret_in(texts, *secrets):
    for text in texts:
        for secret in secrets:
            assert secret not in text


def test_two_rest_workers_run_200_tasks_exactly_once(project, tmp_path):
    _insert(project, [{"id": f"t{i:03d}", "task_type": "noop", "params": {}, "project_id": "pa"} for i in range(200)])
    workers = [_rest_worker(project, tmp_path, f"w{i}", project.service_key, "--exit-when-idle") for i in range(2)]
    try:
        assert [w.wait(240) for w in workers] == [0, 0], [w.stderr_tail() for w in workers]
    finally:
        for w in workers:
            w.stop()
    rows = _rows(project)
    assert len(rows) == 200 and {r[0] for r in rows.values()} == {"Complete"}
    assert {r[1] for r in rows.values()} == {1}
    done = [e["task_id"] for e in all_events(workers, "task_completed")]
    assert sorted(done) == sorted(rows)  # each completed once, by one worker
    assert all(w.events("task_completed") for w in workers), "both workers took part"
    _no_secret_in([w.log_file.read_text() + w.stderr() for w in workers], project.service_key)


def test_a_killed_rest_worker_s_task_is_reclaimed_after_its_lease(project, tmp_path):
    _insert(project, [{"id": "slow", "task_type": "noop", "params": {"seconds": 30}, "project_id": "pa"}])
    first = _rest_worker(project, tmp_path, "victim", project.service_key, "--lease-seconds", "3")
    try:
        first.wait_for_event("task_claimed", timeout=60)
        first.kill9()
    finally:
        first.stop()
    with psycopg.connect(project.db_url, autocommit=True) as conn:  # the rescuer need not sleep 30 s again
        conn.execute("UPDATE tasks SET params = '{\"seconds\": 0.2}' WHERE id = 'slow'")
    second = _rest_worker(project, tmp_path, "rescuer", project.service_key, "--lease-seconds", "3",
                          "--exit-when-idle")
    try:
        assert second.wait(120) == 0, second.stderr_tail()
    finally:
        second.stop()
    reclaimed = second.events("lease_expired_reclaimed")
    assert [e["task_id"] for e in reclaimed] == ["slow"] and reclaimed[0]["worker_id"] == "victim"
    assert _rows(project)["slow"][:2] == ("Complete", 2)


def test_a_personal_token_claims_only_its_owners_tasks_and_revoking_stops_it(project, tmp_path):
    a = project.client(project.anon_key, project.key("authenticated", project.users["a"]))
    made = a.rpc("create_worker_token", {"p_name": "laptop"}).execute().data
    _insert(project, [{"id": "b1", "task_type": "noop", "params": {}, "project_id": "pb"},
                      {"id": "a1", "task_type": "noop", "params": {}, "project_id": "pa"}])
    worker = _rest_worker(project, tmp_path, "mine", made["token"], env={"SUPABASE_ANON_KEY": project.anon_key})
    try:
        worker.wait_for_event("task_completed", lambda e: e["task_id"] == "a1", timeout=60)
        a.table("tasks").insert({"id": "a2", "task_type": "noop", "params": {"seconds": 0.1},
                                 "project_id": "pa"}).execute()
        worker.wait_for_event("task_completed", lambda e: e["task_id"] == "a2", timeout=60)
        assert _rows(project)["b1"][0] == "Queued"  # B's task: never claimed by A's worker
        a.rpc("revoke_worker_token", {"p_id": made["id"]}).execute()
        revoked_at = time.monotonic()
        assert worker.wait(30) == 2
        assert time.monotonic() - revoked_at < 5  # within a poll or two (0.2 s here) plus process exit
        a.table("tasks").insert({"id": "a3", "task_type": "noop", "params": {}, "project_id": "pa"}).execute()
    finally:
        worker.stop()
    assert _rows(project)["a3"][0] == "Queued"
    assert _plain_lines(worker.stderr()) == [
        "error: Supabase refused the worker's key or token (28000): worker token is invalid or revoked"]
    _no_secret_in([worker.log_file.read_text(), worker.stderr()], made["token"], project.anon_key)


def _start_refused(tmp_path, *args, env=None):
    return subprocess.run([sys.executable, str(REPO / "headless.py"), "--log-dir", str(tmp_path / "logs"), *args],
                          cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=60)


def test_refusals_exit_2_with_one_line_and_no_secret(project, pg_cluster, tmp_path):
    forged = project.key("service_role")[:-6] + "AAAAAA"
    cases = {
        "wrong key": (project.url, forged, "refused the worker's key"),
        "not Supabase": ("ftp://example.invalid", project.service_key, "must be the project's http(s) URL"),
        "nothing there": ("http://127.0.0.1:9", project.service_key, "cannot reach Supabase"),
        "revoked token": (project.url, "hwt_" + "0" * 64, "worker token is invalid or revoked"),
    }
    web = ThreadingHTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)  # a web server, not Supabase
    threading.Thread(target=web.serve_forever, daemon=True).start()
    cases["a web server"] = (f"http://127.0.0.1:{web.server_address[1]}", project.service_key,
                             "without PostgREST's JSON")
    bare = start_project(pg_cluster.create_database("nomigrations"), tmp_path / "bare", migrations=False)
    try:
        cases["missing migration"] = (bare.url, bare.service_key, "apply supabase/migrations")
        for name, (url, token, expected) in cases.items():
            done = _start_refused(tmp_path, "--supabase-url", url, "--db-type", "supabase",
                                  env={"SUPABASE_ACCESS_TOKEN": token, "SUPABASE_ANON_KEY": project.anon_key})
            lines = _plain_lines(done.stderr)
            assert done.returncode == 2, (name, done.stderr)
            assert len(lines) == 1 and expected in lines[0] and "Traceback" not in done.stderr, (name, lines)
            _no_secret_in([done.stderr, done.stdout], token, project.anon_key)
        unset = dict.fromkeys(("SUPABASE_URL", "SUPABASE_ACCESS_TOKEN", "SUPABASE_SERVICE_KEY",
                               "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_ANON_KEY", "SUPABASE_KEY"), "")
        done = _start_refused(tmp_path, "--db-type", "supabase", env=unset)
        assert done.returncode == 2 and _plain_lines(done.stderr) == [
            "error: --db-type supabase needs --supabase-url (or $SUPABASE_URL) and --supabase-access-token "
            "(or $SUPABASE_ACCESS_TOKEN)"], done.stderr
    finally:
        bare.stop()
        web.shutdown()


def test_a_travel_job_runs_on_two_rest_workers_with_no_shared_disk(project, tmp_path, tiny_models):
    """Segments on two hosts (separate output folders), outputs in a private bucket; the stitch fetches
    the other host's segment from Storage by a signed URL."""
    from source.media.video_io import probe_video
    from tests.test_e2e_travel import SAMPLES, payload

    images = tmp_path / "inputs"
    shutil.copytree(SAMPLES / "images", images)
    task_type, params = payload("travel_independent.json", images)
    params["frames"] = 13
    _insert(project, [{"id": "travel", "task_type": task_type, "params": params, "project_id": "pa"}])
    workers = [_rest_worker(project, tmp_path, f"gpu{i}", project.service_key, "--exit-when-idle",
                            "--input-root", str(images), "--allow-private-urls") for i in range(2)]
    try:
        assert [w.wait(300) for w in workers] == [0, 0], [w.stderr_tail() for w in workers]
    finally:
        for w in workers:
            w.stop()
    with psycopg.connect(project.db_url) as conn:
        status, location, error = conn.execute(
            "SELECT status, output_location, error_message FROM tasks WHERE id = 'travel'").fetchone()
        children = conn.execute("SELECT id, task_type, worker_id, output_location FROM tasks"
                                " WHERE parent_task_id = 'travel'").fetchall()
    assert status == "Complete", error
    # A private bucket (the default): the URL needs a session or a signature; the stitch got signed URLs.
    assert location.startswith(project.url + "/storage/v1/object/authenticated/image_uploads/pa/")
    segments = {c[0] for c in children if c[1] == "travel_segment"}
    ran_on = {e["worker_id"] for w in workers for e in w.events("task_completed") if e["task_id"] in segments}
    assert ran_on == {"gpu0", "gpu1"}, "segments ran on both workers"
    name = location.split("/authenticated/image_uploads/", 1)[1]
    info = probe_video(project.storage_dir / "image_uploads" / name)
    assert info.frames == 3 * 13 - 2 * 1


def test_an_app_cancels_a_running_task_and_its_dependent_through_rest(project, tmp_path):
    a = project.client(project.anon_key, project.key("authenticated", project.users["a"]))
    a.table("tasks").insert({"id": "long", "task_type": "noop", "params": {"seconds": 60},
                             "project_id": "pa"}).execute()
    a.table("tasks").insert({"id": "after", "task_type": "noop", "params": {}, "project_id": "pa",
                             "dependant_on": "long"}).execute()
    worker = _rest_worker(project, tmp_path, "w", project.service_key, "--exit-when-idle", "--lease-seconds", "3")
    try:
        worker.wait_for_event("task_claimed", lambda e: e["task_id"] == "long", timeout=60)
        assert a.rpc("cancel_task", {"p_id": "long"}).execute().data == "In Progress"  # asked to stop
        assert worker.wait(60) == 0, worker.stderr_tail()
    finally:
        worker.stop()
    rows = {r["id"]: r for r in a.table("tasks").select("id, status, error_message").execute().data}
    assert rows["long"]["status"] == "Cancelled"
    assert rows["after"]["status"] == "Cancelled" and "long" in rows["after"]["error_message"]


def test_retries_with_backoff_then_failure_propagates_through_rest(project, tmp_path):
    _insert(project, [{"id": "flaky", "task_type": "noop", "params": {"transient": True}, "project_id": "pa",
                       "max_attempts": 2}])
    _insert(project, [{"id": "child", "task_type": "noop", "params": {}, "project_id": "pa",
                       "dependant_on": "flaky"}])
    worker = _seed_env_worker(project, tmp_path, "w", "--exit-when-idle", "--retry-base-seconds", "0.3")
    try:
        assert worker.wait(120) == 0, worker.stderr_tail()
    finally:
        worker.stop()
    assert [e["task_id"] for e in worker.events("task_retry_scheduled")] == ["flaky"]
    claims = [e["attempt"] for e in worker.events("task_claimed") if e["task_id"] == "flaky"]
    assert claims == [1, 2]
    rows = _rows(project)
    assert rows["flaky"][:2] == ("Failed", 2)
    assert rows["child"][0] == "Failed"  # never ran: its parent failed
    assert "child" not in [e["task_id"] for e in worker.events("task_claimed")]
