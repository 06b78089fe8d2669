"""The task store's facade: the lifecycle of a task row, on SQLite or PostgreSQL.

The worker, the CLI and tests use only TaskStore. It is a Database (source/store/connection.py:
engine, retries, time parameters) and adds inserting, claiming, heartbeats and the ends of a claimed
task; the task graph (children, propagation, cancel, retry, regenerate, sweep) lives in dag.py, the
schema in schema.py, and every SQL statement in sql.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from source.store import dag, schema
from source.store.connection import (
    Database,
    is_connection_problem,
    iso_now,
    normalise_db_url,
    redact_url,
    text,
    to_json,
)
from source.store.records import Claim, StoreError, claim_from, parse_params
from source.task_context import ChildTask
from source.task_status import TaskStatus

__all__ = ["TaskStore", "Claim", "StoreError", "parse_params", "redact_url", "normalise_db_url", "iso_now"]


class TaskStore(Database):
    def __init__(self, url: str, *, lease_seconds_for_migrated: float = 300.0, echo: bool = False) -> None:
        super().__init__(url, echo=echo)
        self.ensure_schema(lease_seconds_for_migrated)

    def ensure_schema(self, lease_seconds_for_migrated: float = 300.0) -> None:
        """Create the tables, or migrate a seed-era table in place (no row is lost). Safe to run concurrently."""
        schema.ensure_schema(self, lease_seconds_for_migrated)

    # ------------------------------------------------------------------ inserting
    def add_task(self, task_type: str, params: Any, *, task_id: str | None = None, priority: int = 0,
                 depends_on: Sequence[str] = (), project_id: str | None = None, max_attempts: int = 3,
                 timeout_seconds: float | None = None) -> str:
        """Insert one Queued task (its parents must exist, so no cycle can form). Returns its id."""
        return self.add_tasks([dict(task_type=task_type, params=params, task_id=task_id, priority=priority,
                                    depends_on=list(depends_on), project_id=project_id,
                                    max_attempts=max_attempts, timeout_seconds=timeout_seconds)])[0]

    def add_tasks(self, specs: Sequence[dict[str, Any]]) -> list[str]:
        """Insert many tasks in one transaction (all or nothing). A spec may depend on earlier specs' ids."""
        def insert() -> list[str]:
            ids: list[str] = []
            with self.begin() as conn:
                for spec in specs:
                    task_id = spec.get("task_id") or str(uuid.uuid4())
                    depends_on = list(spec.get("depends_on") or [])
                    if task_id in depends_on:
                        raise StoreError(f"task {task_id} cannot depend on itself: it would never run")
                    dag.check_parents_exist(self, conn, depends_on)
                    if dag.exists(self, conn, task_id):
                        raise StoreError(f"a task with id {task_id} already exists")
                    dag.insert_row(self, conn, task_id=task_id, task_type=spec["task_type"], params=spec["params"],
                                   priority=spec.get("priority") or 0, depends_on=depends_on,
                                   project_id=spec.get("project_id"),
                                   max_attempts=spec.get("max_attempts") or 3,
                                   timeout_seconds=spec.get("timeout_seconds"))
                    ids.append(task_id)
            return ids

        return self.run(insert, what="insert tasks")

    # ------------------------------------------------------------------ claiming
    def claim(self, worker_id: str, lease_seconds: float, task_types: Sequence[str] | None = None) -> Claim | None:
        """Atomically take the best ready task: Queued, not-before passed, every parent Complete,
        highest priority first, then oldest."""
        rows = self._driver.write(*self._claim_statement(worker_id, lease_seconds, task_types))
        return claim_from(rows)

    def _claim_statement(self, worker_id: str, lease_seconds: float,
                         task_types: Sequence[str] | None) -> tuple[str, dict[str, Any]]:
        types = list(task_types or [])
        params = {"worker": worker_id, **self.times(lease_seconds=lease_seconds), "types": types or None}
        params.update({f"type{i}": t for i, t in enumerate(types)})
        return self.sql.claim_sql(len(types)), params

    def complete_and_claim(self, claim: Claim, output_location: str | None, result: dict | None, *,
                           worker_id: str, lease_seconds: float,
                           task_types: Sequence[str] | None = None) -> tuple[bool, Claim | None]:
        """Complete `claim` (as complete()) and claim the next ready task. Returns (completed, next claim).

        SQLite: both in one write transaction, so a busy worker takes the database's one write lock once
        per task instead of twice. PostgreSQL: two single-statement round trips (a transaction around
        them would add two more); if the claim then hits a connection problem, no claim is returned and
        the worker's loop claims again, so the completion is never repeated."""
        if not self.is_sqlite or claim.row.get("completes_parent", 1) != 0:
            completed = self.complete(claim, output_location, result)
            try:
                return completed, self.claim(worker_id, lease_seconds, task_types)
            except Exception as exc:
                if is_connection_problem(exc):
                    return completed, None
                raise
        done, claimed = self._driver.write_sqlite_batch([
            (self.sql.complete, self._complete_params(claim, output_location, result)),
            self._claim_statement(worker_id, lease_seconds, task_types)])
        return bool(done), claim_from(claimed)

    def _complete_params(self, claim: Claim, output_location: str | None, result: dict | None) -> dict[str, Any]:
        return {**claim.guard(), **self.times(), "output_location": output_location, "result": to_json(result)}

    def heartbeat(self, claim: Claim, lease_seconds: float, progress: float | None = None,
                  message: str | None = None) -> tuple[bool, bool]:
        """Renew the lease and write progress. Returns (still ours, cancel requested)."""
        params = {**claim.guard(), **self.times(lease_seconds=lease_seconds), "progress": progress,
                  "message": message}
        rows = self._driver.write(self.sql.heartbeat, params)
        if not rows:
            return False, False
        return True, bool(rows[0][0])

    # ------------------------------------------------------------------ ending a claimed task
    def complete(self, claim: Claim, output_location: str | None, result: dict | None = None) -> bool:
        """Complete (guarded). When the task completes its orchestrator, the orchestrator completes too."""
        params = self._complete_params(claim, output_location, result)
        if claim.row.get("completes_parent", 1) == 0:  # the common case: one statement, one round trip
            return bool(self._driver.write(self.sql.complete, params))
        with self.begin() as conn:
            row = conn.execute(text(self.sql.complete), params).first()
            if row is None:
                return False
            dag.complete_parents(self, conn, row[0], row[1], output_location, result, claim.id)
        return True

    def fail(self, claim: Claim, message: str) -> bool:
        return self._end_claimed(claim, self.sql.fail, TaskStatus.FAILED, message)

    def mark_cancelled(self, claim: Claim, message: str) -> bool:
        return self._end_claimed(claim, self.sql.cancelled, TaskStatus.CANCELLED, message)

    def _end_claimed(self, claim: Claim, statement: str, status: TaskStatus, message: str) -> bool:
        with self.begin() as conn:
            row = conn.execute(text(statement), {**claim.guard(), **self.times(), "message": message}).first()
            if row is None:
                return False
            dag.propagate_end(self, conn, claim.id, claim.task_type, status, message, row[0])
        return True

    def retry_later(self, claim: Claim, message: str, delay_seconds: float) -> bool:
        params = {**claim.guard(), **self.times(delay_seconds=delay_seconds), "message": message}
        with self.begin() as conn:
            return conn.execute(text(self.sql.retry_later), params).rowcount == 1

    def hand_back(self, claim: Claim) -> bool:
        """Back to Queued without spending the attempt (graceful shutdown)."""
        with self.begin() as conn:
            return conn.execute(text(self.sql.hand_back), {**claim.guard(), **self.times()}).rowcount == 1

    def spawn_children(self, claim: Claim, children: Sequence[ChildTask]) -> bool:
        """Insert an orchestrator's children and let it wait without a worker, in one transaction.
        Children have deterministic ids, so a re-run inserts nothing twice."""
        return dag.spawn_children(self, claim, children)

    # ------------------------------------------------------------------ maintenance
    def reclaim_expired(self) -> list[dict[str, Any]]:
        """Tasks whose worker stopped renewing its lease: re-queue them (the attempt counts), or fail them
        past max_attempts. Returns what was done, for the log."""
        done = []
        with self.begin() as conn:
            rows = conn.execute(text(self.sql.expired_leases), self.times()).mappings().all()
            for r in rows:
                attempt, max_attempts = int(r["attempts"]), int(r["max_attempts"])
                base = (f"lease expired during attempt {attempt} of {max_attempts}: worker {r['worker_id']} stopped"
                        " renewing it (crashed, killed or cut off)")
                params = {**self.times(), "id": r["id"], "attempt": attempt}
                if attempt >= max_attempts:
                    message = base + "; no attempts left"
                    row = conn.execute(text(self.sql.fail_expired), {**params, "message": message}).first()
                    if row is not None:
                        dag.propagate_end(self, conn, r["id"], dag.type_of(self, conn, r["id"]), TaskStatus.FAILED,
                                          message, row[0])
                        done.append({"task_id": r["id"], "worker_id": r["worker_id"], "attempt": attempt,
                                     "outcome": TaskStatus.FAILED})
                else:
                    if conn.execute(text(self.sql.reclaim_expired), {**params, "message": base}).rowcount:
                        done.append({"task_id": r["id"], "worker_id": r["worker_id"], "attempt": attempt,
                                     "outcome": TaskStatus.QUEUED})
        return done

    def sweep_stranded(self) -> list[dict[str, Any]]:
        """Queued rows that can never run: end them with a clear error (see dag.sweep_stranded)."""
        return dag.sweep_stranded(self)

    # ------------------------------------------------------------------ user actions
    def request_cancel(self, task_id: str) -> str:
        """Cancel: a Queued task (or a waiting orchestrator) ends Cancelled now; a running one is asked to
        stop. Returns the task's status afterwards."""
        return dag.request_cancel(self, task_id)

    def retry(self, task_id: str) -> list[str]:
        """Re-queue a Failed/Cancelled task and its Failed/Cancelled descendants (see dag.retry)."""
        return dag.retry(self, task_id)

    def regenerate(self, task_id: str, params_patch: dict[str, Any]) -> list[str]:
        """Run one finished task again with changed params, and re-run its descendants (see dag.regenerate)."""
        return dag.regenerate(self, task_id, params_patch)

    # ------------------------------------------------------------------ reading
    def get(self, task_id: str) -> dict[str, Any] | None:
        with self.read() as conn:
            row = conn.execute(text(self.sql.get), {"id": task_id}).mappings().first()
            if row is None:
                return None
            task = dict(row)
            task["depends_on"] = ([task["dependant_on"]] if task.get("dependant_on") else []) + [
                r[0] for r in conn.execute(text(self.sql.dependencies_of), {"id": task_id})
                if r[0] != task.get("dependant_on")]
            return task

    def output_of(self, task_id: str) -> str | None:
        with self.read() as conn:
            return conn.execute(text(self.sql.output_of), {"id": task_id}).scalar()

    def list_tasks(self, *, status: str | None = None, task_type: str | None = None, project_id: str | None = None,
                   parent_task_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        filters = {name: value for name, value in (("status", status), ("task_type", task_type),
                                                   ("project_id", project_id), ("parent_task_id", parent_task_id))
                   if value is not None}
        with self.read() as conn:
            rows = conn.execute(text(self.sql.list_tasks(tuple(filters))),
                                {**filters, "limit": int(limit)}).mappings().all()
        return [dict(r) for r in rows]

    def count_by_status(self) -> dict[str, int]:
        with self.read() as conn:
            return {s: n for s, n in conn.execute(text(self.sql.count_by_status))}

    # ------------------------------------------------------------------ output cache
    def cache_get(self, key: str) -> str | None:
        with self.read() as conn:
            return conn.execute(text(self.sql.cache_get), {"key": key}).scalar()

    def cache_put(self, key: str, location: str, task_id: str | None = None) -> None:
        with self.begin() as conn:
            conn.execute(text(self.sql.cache_put), {**self.times(), "key": key, "location": location,
                                                      "task_id": task_id})

    def cache_forget(self, key: str) -> None:
        with self.begin() as conn:
            conn.execute(text(self.sql.cache_delete), {"key": key})

    # ------------------------------------------------------------------ workers
    def register_worker(self, worker_id: str, host: str, pid: int, version: str) -> None:
        with self.begin() as conn:
            conn.execute(text(self.sql.worker_upsert), {**self.times(), "id": worker_id, "host": host,
                                                          "pid": pid, "version": version})

    def worker_seen(self, worker_id: str, task_id: str | None, status: str = "running") -> None:
        with self.begin() as conn:
            conn.execute(text(self.sql.worker_seen), {**self.times(), "id": worker_id, "task_id": task_id,
                                                        "status": status})
