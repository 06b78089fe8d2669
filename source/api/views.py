"""What the API shows of a task row, and the opaque list cursor."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from fastapi import HTTPException


def when(value: Any) -> str | None:
    """Timestamps as ISO-8601 text whichever backend stored them."""
    if value is None:
        return None
    return value.isoformat() if isinstance(value, datetime) else str(value)


def output_url(row: dict[str, Any]) -> str | None:
    location = row.get("output_location")
    if not location or row.get("status") != "Complete":
        return None
    if str(location).startswith(("http://", "https://")):
        return str(location)
    return f"/v1/tasks/{row['id']}/output"


def task_view(row: dict[str, Any], children: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    result = row.get("result")
    if isinstance(result, (str, bytes)):
        try:
            result = json.loads(result)
        except ValueError:
            result = None
    view = {
        "id": row["id"], "task_type": row["task_type"], "status": row["status"], "project_id": row.get("project_id"),
        "progress": row.get("progress"), "message": row.get("progress_message"),
        "attempts": row.get("attempts"), "max_attempts": row.get("max_attempts"), "priority": row.get("priority"),
        "output_url": output_url(row), "error": row.get("error_message"), "result": result,
        "cancel_requested": bool(row.get("cancel_requested")),
        "parent_task_id": row.get("parent_task_id"), "depends_on": row.get("depends_on"),
        "timings": {"created_at": when(row.get("created_at")), "started_at": when(row.get("generation_started_at")),
                    "finished_at": when(row.get("generation_processed_at")),
                    "updated_at": when(row.get("updated_at"))},
    }
    if children is not None:
        view["children"] = [{"id": c["id"], "task_type": c["task_type"], "status": c["status"]} for c in children]
    return view


def encode_cursor(row: dict[str, Any]) -> str:
    raw = json.dumps([when(row["created_at"]), row["id"]]).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        at, task_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if isinstance(at, str) and isinstance(task_id, str):
            datetime.fromisoformat(at.replace("Z", "+00:00"))  # a tampered cursor is refused, not sent to SQL
            return at, task_id
    except (ValueError, TypeError):
        pass
    raise HTTPException(422, [{"loc": ["query", "cursor"], "msg": "not a cursor this API returned",
                               "type": "value_error"}])
