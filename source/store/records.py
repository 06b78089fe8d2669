"""What the store hands out and refuses: a Claim on a task, StoreError, and params as stored.

A row's content is untrusted (other apps write the table): text that is not UTF-8 or params nested
too deeply to decode come back marked or raise a clear ValueError here, never from inside the claim.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from source.store import sql as q
from source.task_limits import UndecodableText, decode_text


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
    """Params as stored: a JSON text (SQLite, seed) or already decoded (PostgreSQL JSONB). Params that
    cannot be decoded raise ValueError with a message fit for the task's error."""
    if isinstance(raw, (bytes, bytearray)):
        raw = decode_text(bytes(raw))
    if isinstance(raw, UndecodableText):
        raise ValueError(f"params could not be decoded: {raw.problem} (the row was written in another"
                         " encoding; params must be UTF-8 JSON)")
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except RecursionError:  # json recurses per nesting level: thousands deep exhausts the stack
            raise ValueError("params could not be decoded: JSON nested too deeply") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"params are not valid JSON: {exc}") from None
    return raw
