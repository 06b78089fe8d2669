"""The HTTP API's SQL statements (API keys, paged task lists, workers, children), both backends.

Kept apart from source/store/sql.py so the API's tables and reads change without touching the worker's
hot statements. tests/test_architecture.py admits SQL text only here and in sql.py.
"""

from __future__ import annotations

import functools

from source.store.sql import LIST_FILTERS, Dialect


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
