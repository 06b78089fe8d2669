"""The HTTP API's SQL statements (API keys, paged task lists, workers, children), both backends.

Kept apart from source/store/sql.py so the API's tables and reads change without touching the worker's
hot statements. tests/test_architecture.py admits SQL text only here and in sql.py.
"""

from __future__ import annotations

import functools

from source.store.sql import LIST_FILTERS, Dialect
from source.task_status import TaskStatus


class ApiStatements:
    def __init__(self, d: Dialect) -> None:
        ts = "TEXT" if d.name == "sqlite" else "TIMESTAMPTZ"
        now = d.now
        # One row per key; only a hash of the secret is kept, so a leaked table grants nothing.
        self.ddl = [
            f"""CREATE TABLE IF NOT EXISTS api_keys (
                id TEXT PRIMARY KEY,
                project_id TEXT NOT NULL,
                key_hash TEXT NOT NULL,
                admin INTEGER NOT NULL DEFAULT 0,
                created_at {ts} NOT NULL,
                revoked_at {ts} NULL
            )""",
        ]
        self.insert_key = (
            "INSERT INTO api_keys (id, project_id, key_hash, admin, created_at)"
            f" VALUES (:id, :project_id, :key_hash, :admin, {now})"
        )
        self.live_key = "SELECT id, project_id, key_hash, admin FROM api_keys WHERE id = :id AND revoked_at IS NULL"
        self.revoke_key = f"UPDATE api_keys SET revoked_at = {now} WHERE id = :id AND revoked_at IS NULL"
        self.children = "SELECT id, task_type, status FROM tasks WHERE parent_task_id = :id ORDER BY created_at, id"
        self.workers = (
            "SELECT id, host, pid, started_at, last_seen_at, current_task_id, version, status FROM workers"
            " ORDER BY last_seen_at DESC, id LIMIT 500"
        )

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def tasks_page(filters: tuple[str, ...], after: bool) -> str:
        """Newest first, keyset-paged: `after` continues below the cursor (:cursor_at, :cursor_id), so a
        page never repeats or skips rows however many are inserted meanwhile."""
        unknown = set(filters) - set(LIST_FILTERS)
        if unknown:  # column names become SQL text: only these few ever may
            raise ValueError(f"cannot filter tasks by {sorted(unknown)}")
        clauses = [f"{c} = :{c}" for c in filters]
        if after:
            clauses.append("(created_at < :cursor_at OR (created_at = :cursor_at AND id < :cursor_id))")
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        return f"SELECT * FROM tasks{where} ORDER BY created_at DESC, id DESC LIMIT :limit"


# -- webhooks: an outbox filled by a trigger on the task's status --------------------------------
# The trigger writes the outbox row in the same transaction as the status change, whoever makes it
# (a worker's claim/complete/fail, the sweep, a cancel, an app's own SQL), so no event is lost or
# invented; the lifecycle statements themselves stay as they are. Tasks without a webhook cost one
# primary-key probe of task_webhooks per status change.
WEBHOOK_EVENTS = {
    TaskStatus.IN_PROGRESS: "task.started", TaskStatus.COMPLETE: "task.completed",
    TaskStatus.FAILED: "task.failed", TaskStatus.CANCELLED: "task.cancelled",
}
_EVENT_CASE = "CASE NEW.status " + " ".join(f"WHEN '{s.value}' THEN '{e}'" for s, e in WEBHOOK_EVENTS.items()) + " END"
_EVENT_STATUSES = ", ".join(f"'{s.value}'" for s in WEBHOOK_EVENTS)
_OUTBOX_COLUMNS = ("id, task_id, project_id, url, event_type, status, output_location, error_message,"
                   " created_at, next_attempt_at")


def _outbox_insert(message_id: str, now: str) -> str:
    return (f"INSERT INTO webhook_outbox ({_OUTBOX_COLUMNS}) SELECT {message_id}, NEW.id, NEW.project_id, w.url,"
            f" {_EVENT_CASE}, NEW.status, NEW.output_location, NEW.error_message, {now}, {now}"
            " FROM task_webhooks w WHERE w.task_id = NEW.id")


_SQLITE_NOW = "(strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z')"
_SQLITE_OUTBOX_TRIGGER = (
    "CREATE TRIGGER IF NOT EXISTS headless_webhook_outbox AFTER UPDATE OF status ON tasks FOR EACH ROW"
    f" WHEN NEW.status <> OLD.status AND NEW.status IN ({_EVENT_STATUSES}) BEGIN "
    + _outbox_insert("'msg_' || lower(hex(randomblob(16)))", _SQLITE_NOW) + "; END"
)
_PG_OUTBOX_TRIGGER = [
    "CREATE OR REPLACE FUNCTION headless_webhook_outbox() RETURNS trigger AS $$ BEGIN "
    + _outbox_insert("'msg_' || replace(gen_random_uuid()::text, '-', '')", "clock_timestamp()")
    + "; RETURN NULL; END $$ LANGUAGE plpgsql",
    "CREATE OR REPLACE TRIGGER headless_webhook_outbox AFTER UPDATE OF status ON tasks FOR EACH ROW"
    f" WHEN (NEW.status IS DISTINCT FROM OLD.status AND NEW.status IN ({_EVENT_STATUSES}))"
    " EXECUTE FUNCTION headless_webhook_outbox()",
]
OUTBOX_COLUMNS = ("id", "task_id", "project_id", "url", "event_type", "status", "output_location", "error_message",
                  "created_at", "attempts")


class WebhookStatements:
    def __init__(self, d: Dialect) -> None:
        ts = "TEXT" if d.name == "sqlite" else "TIMESTAMPTZ"
        now, retry_at, lease_until = d.now, d.not_before_at, d.lease_until
        self.ddl = [
            f"""CREATE TABLE IF NOT EXISTS webhook_secrets (
                project_id TEXT PRIMARY KEY,
                secret TEXT NOT NULL,
                created_at {ts} NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS task_webhooks (
                task_id TEXT PRIMARY KEY,
                url TEXT NOT NULL
            )""",
            f"""CREATE TABLE IF NOT EXISTS webhook_outbox (
                id TEXT PRIMARY KEY,
                task_id TEXT NOT NULL,
                project_id TEXT NULL,
                url TEXT NOT NULL,
                event_type TEXT NOT NULL,
                status TEXT NOT NULL,
                output_location TEXT NULL,
                error_message TEXT NULL,
                created_at {ts} NOT NULL,
                next_attempt_at {ts} NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                delivered_at {ts} NULL,
                gave_up_at {ts} NULL,
                last_error TEXT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS idx_webhook_outbox_due ON webhook_outbox (next_attempt_at)"
            " WHERE delivered_at IS NULL AND gave_up_at IS NULL",
            "CREATE INDEX IF NOT EXISTS idx_webhook_outbox_task ON webhook_outbox (task_id, created_at)",
            f"""CREATE TABLE IF NOT EXISTS webhook_attempts (
                outbox_id TEXT NOT NULL,
                attempt INTEGER NOT NULL,
                at {ts} NOT NULL,
                status_code INTEGER NULL,
                error TEXT NULL,
                duration_ms INTEGER NOT NULL,
                PRIMARY KEY (outbox_id, attempt)
            )""",
        ] + ([_SQLITE_OUTBOX_TRIGGER] if d.name == "sqlite" else _PG_OUTBOX_TRIGGER)
        self.put_secret = (
            f"INSERT INTO webhook_secrets (project_id, secret, created_at) VALUES (:project_id, :secret, {now})"
            " ON CONFLICT (project_id) DO UPDATE SET secret = excluded.secret, created_at = excluded.created_at"
        )
        self.secret_of = "SELECT secret FROM webhook_secrets WHERE project_id = :project_id"
        self.add_task_webhook = "INSERT INTO task_webhooks (task_id, url) VALUES (:task_id, :url)"
        # Taking a due message pushes its next attempt a lease ahead: a deliverer that dies mid-attempt
        # leaves it to be tried again then, and two deliverers never send the same attempt.
        due = f"delivered_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= {now}"
        columns = ", ".join(OUTBOX_COLUMNS)
        if d.name == "sqlite":
            self.take_due = (
                f"UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt_at = {lease_until}"
                f" WHERE id = (SELECT id FROM webhook_outbox WHERE {due} ORDER BY next_attempt_at, id LIMIT 1)"
                f" AND {due} RETURNING {columns}"
            )
        else:
            self.take_due = (
                f"WITH c AS (SELECT id FROM webhook_outbox WHERE {due} ORDER BY next_attempt_at, id LIMIT 1"
                " FOR UPDATE SKIP LOCKED)"
                f" UPDATE webhook_outbox o SET attempts = o.attempts + 1, next_attempt_at = {lease_until}"
                f" FROM c WHERE o.id = c.id RETURNING " + ", ".join(f"o.{c}" for c in OUTBOX_COLUMNS)
            )
        mine = "id = :id AND attempts = :attempt AND delivered_at IS NULL AND gave_up_at IS NULL"
        self.record_attempt = (
            "INSERT INTO webhook_attempts (outbox_id, attempt, at, status_code, error, duration_ms)"
            f" VALUES (:id, :attempt, {now}, :status_code, :error, :duration_ms)"
        )
        self.delivered = f"UPDATE webhook_outbox SET delivered_at = {now}, last_error = NULL WHERE {mine}"
        self.retry_later = f"UPDATE webhook_outbox SET next_attempt_at = {retry_at}, last_error = :error WHERE {mine}"
        self.give_up = f"UPDATE webhook_outbox SET gave_up_at = {now}, last_error = :error WHERE {mine}"
        self.deliveries_of = (
            "SELECT id, event_type, status, attempts, delivered_at, gave_up_at, last_error, created_at"
            " FROM webhook_outbox WHERE task_id = :task_id ORDER BY created_at, id"
        )
        self.attempts_of = (
            "SELECT attempt, at, status_code, error, duration_ms FROM webhook_attempts WHERE outbox_id = :id"
            " ORDER BY attempt"
        )
