"""What the store hands out and refuses: a Claim on a task, StoreError, and params as stored."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from source.store import sql as q


class StoreError(Exception):
    """A request the store refuses (unknown id, wrong state, bad dependency): the message says why."""


@dataclass
class Claim:
    """A task this worker holds: (id, worker, attempt) guard every later write."""

    row: dict[str, Any]

    @property
    def id(self) -> str:
        return self.row["id"]

    @property
    def worker_id(self) -> str:
        return self.row["worker_id"]

    @property
    def attempt(self) -> int:
        return int(self.row["attempts"])

    @property
    def task_type(self) -> str:
        return self.row["task_type"]

    def guard(self) -> dict[str, Any]:
        return {"id": self.id, "worker": self.worker_id, "attempt": self.attempt}


def claim_from(rows: list[tuple]) -> Claim | None:
    """The Claim of a claim statement's result rows (q.CLAIM_COLUMNS), or None when nothing was ready."""
    return Claim(dict(zip(q.CLAIM_COLUMNS, rows[0]))) if rows else None


def parse_params(raw: Any) -> Any:
    """Params as stored: a JSON text (SQLite, seed) or already decoded (PostgreSQL JSONB)."""
    if isinstance(raw, (bytes, bytearray)):
        raw = raw.decode("utf-8", "replace")
    if isinstance(raw, str):
        return json.loads(raw)
    return raw
