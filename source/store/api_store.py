"""What the HTTP API keeps beside the task table: API keys (hashed), idempotent creates, keyset pages,
children and workers. Uses a TaskStore's database (engine, dialect, retries); statements in api_sql.py.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from source.store import dag
from source.store.api_sql import OUTBOX_COLUMNS, ApiStatements, WebhookStatements
from source.store.connection import text
from source.store.records import StoreError
from source.store.task_store import TaskStore

KEY_PREFIX = "hk_"
# Idempotency-Key -> task id: the same (project, key) always names the same task, so a retried create
# finds the row its first attempt inserted (the primary key makes the insert "if absent" atomic).
IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1d3f7e-8d1c-4c1e-9a56-3b8f5d0a7c21")


@dataclass(frozen=True)
class ApiKey:
    id: str
    project_id: str | None  # None only for --no-auth (loopback): sees every project
    admin: bool


def idempotent_task_id(project_id: str | None, idempotency_key: str) -> str:
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{project_id or ''}\x00{idempotency_key}"))


def _hash(secret: str) -> str:
    # The secret is 256 random bits: a plain SHA-256 cannot be brute-forced, and lookups stay cheap.
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class ApiStore:
    def __init__(self, store: TaskStore) -> None:
        self.store = store
        self.sql = ApiStatements(store.dialect)
        self.hooks = WebhookStatements(store.dialect)
        self.ensure_schema()

    def ensure_schema(self) -> None:
        def create() -> None:
            with self.store.begin() as conn:
                if self.store.sql.migration_lock:  # PostgreSQL: one server at a time replaces the trigger
                    conn.execute(text(self.store.sql.migration_lock))
                for ddl in self.sql.ddl + self.hooks.ddl:
                    conn.exec_driver_sql(ddl)
        self.store.run(create, what="create API tables")

    # ------------------------------------------------------------------ keys
    def create_key(self, project_id: str, admin: bool = False) -> tuple[str, str]:
        """A new key for project_id: (key id, the full key). The full key is shown once, stored hashed."""
        if not project_id or not project_id.strip():
            raise StoreError("a key needs a project id")
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        with self.store.begin() as conn:
            conn.execute(text(self.sql.insert_key), {**self.store.times(), "id": key_id, "project_id": project_id,
                                                      "key_hash": _hash(secret), "admin": 1 if admin else 0})
        return key_id, f"{KEY_PREFIX}{key_id}.{secret}"

    def revoke_key(self, key_id: str) -> bool:
        with self.store.begin() as conn:
            return conn.execute(text(self.sql.revoke_key), {**self.store.times(), "id": key_id}).rowcount == 1

    def authenticate(self, presented: str) -> ApiKey | None:
        """The live key for a presented `hk_<id>.<secret>`, or None (unknown, revoked, wrong secret, malformed)."""
        if not presented.startswith(KEY_PREFIX) or "." not in presented or len(presented) > 200:
            return None
        key_id, _, secret = presented[len(KEY_PREFIX):].partition(".")
        with self.store.read() as conn:
            row = conn.execute(text(self.sql.live_key), {"id": key_id}).mappings().first()
        if row is None or not hmac.compare_digest(row["key_hash"], _hash(secret)):
            return None
        return ApiKey(id=row["id"], project_id=row["project_id"], admin=bool(row["admin"]))

    # ------------------------------------------------------------------ tasks
    def create_task(self, task_id: str, spec: dict[str, Any]) -> bool:
        """Insert a Queued task under task_id unless that id exists (atomic: the primary key decides).
        Returns True when this call inserted it."""
        depends_on = list(spec.get("depends_on") or [])
        if task_id in depends_on:
            raise StoreError(f"task {task_id} cannot depend on itself: it would never run")

        def insert() -> bool:
            with self.store.begin() as conn:
                dag.check_parents_exist(self.store, conn, depends_on)
                inserted = dag.insert_row(self.store, conn, task_id=task_id, task_type=spec["task_type"],
                                      params=spec["params"], priority=spec.get("priority") or 0,
                                      depends_on=depends_on, project_id=spec.get("project_id"),
                                      max_attempts=spec.get("max_attempts") or 3,
                                      timeout_seconds=spec.get("timeout_seconds"), if_absent=True)
                if inserted and spec.get("webhook_url"):  # with the task: its first event finds it
                    conn.execute(text(self.hooks.add_task_webhook), {"task_id": task_id, "url": spec["webhook_url"]})
                return inserted
        return self.store.run(insert, what="insert task")

    def page(self, filters: dict[str, Any], limit: int, cursor: tuple[str, str] | None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {**filters, "limit": int(limit)}
        if cursor is not None:
            at, params["cursor_id"] = cursor
            params["cursor_at"] = at if self.store.is_sqlite else datetime.fromisoformat(at)
        with self.store.read() as conn:
            rows = conn.execute(text(self.sql.tasks_page(tuple(filters), cursor is not None)), params)
            return [dict(r) for r in rows.mappings()]

    def children(self, task_id: str) -> list[dict[str, Any]]:
        with self.store.read() as conn:
            return [dict(r) for r in conn.execute(text(self.sql.children), {"id": task_id}).mappings()]

    def workers(self) -> list[dict[str, Any]]:
        with self.store.read() as conn:
            return [dict(r) for r in conn.execute(text(self.sql.workers)).mappings()]


def same_request(row: dict[str, Any], task_type: str, params: Any) -> bool:
    """Whether an existing row was created by the same request (a retried create), not a different one
    reusing the Idempotency-Key or id."""
    stored = row.get("params")
    try:
        stored = json.loads(stored) if isinstance(stored, (str, bytes)) else stored
    except ValueError:
        return False
    return row.get("task_type") == task_type and stored == params


class WebhookStore:
    """The webhook outbox: per-project signing secrets, taking due messages, recording attempts."""

    def __init__(self, api: ApiStore) -> None:
        self.store, self.sql = api.store, api.hooks

    def new_secret(self, project_id: str) -> str:
        """A fresh `whsec_` secret for the project (replacing any earlier one); shown once to the operator."""
        import base64

        if not project_id or not project_id.strip():
            raise StoreError("a webhook secret needs a project id")
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")
        with self.store.begin() as conn:
            conn.execute(text(self.sql.put_secret), {**self.store.times(), "project_id": project_id, "secret": secret})
        return secret

    def secret_of(self, project_id: str | None) -> str | None:
        if project_id is None:
            return None
        with self.store.read() as conn:
            return conn.execute(text(self.sql.secret_of), {"project_id": project_id}).scalar()

    def take_due(self, lease_seconds: float = 60.0) -> dict[str, Any] | None:
        with self.store.begin() as conn:
            row = conn.execute(text(self.sql.take_due), self.store.times(lease_seconds=lease_seconds)).first()
        return dict(zip(OUTBOX_COLUMNS, row)) if row else None

    def finish_attempt(self, message: dict[str, Any], *, status_code: int | None, error: str | None,
                       duration_ms: int, retry_in: float | None) -> None:
        """Record the attempt and its consequence in one transaction: delivered (no error), retried in
        retry_in seconds, or given up (retry_in None)."""
        guard = {"id": message["id"], "attempt": message["attempts"]}
        with self.store.begin() as conn:
            conn.execute(text(self.sql.record_attempt), {**self.store.times(), **guard, "status_code": status_code,
                                                          "error": error, "duration_ms": duration_ms})
            if error is None:
                conn.execute(text(self.sql.delivered), {**self.store.times(), **guard})
            elif retry_in is not None:
                conn.execute(text(self.sql.retry_later), {**self.store.times(delay_seconds=retry_in), **guard,
                                                           "error": error})
            else:
                conn.execute(text(self.sql.give_up), {**self.store.times(), **guard, "error": error})

    def deliveries(self, task_id: str) -> list[dict[str, Any]]:
        with self.store.read() as conn:
            out = [dict(r) for r in conn.execute(text(self.sql.deliveries_of), {"task_id": task_id}).mappings()]
            for d in out:
                d["attempt_log"] = [dict(r) for r in conn.execute(text(self.sql.attempts_of), {"id": d["id"]})
                                    .mappings()]
        return out
