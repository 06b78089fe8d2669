"""GET /v1/tasks/{id}/events: a task's life as Server-Sent Events.

The store is polled (a primary-key read every 200 ms per stream); a status change is sent at once,
progress at most once per 500 ms, and the terminal state is the last event before the stream ends.
Each event's id is the row's state token, so a client reconnecting with Last-Event-ID is sent nothing
it already has."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import StreamingResponse

from source.api.auth import Caller, sees
from source.api.views import task_view
from source.task_status import TERMINAL

router = APIRouter(prefix="/v1/tasks", tags=["events"])

POLL_SECONDS = 0.2
PROGRESS_INTERVAL = 0.5  # at most one progress event per this many seconds
KEEPALIVE_SECONDS = 15.0


def state_token(row: dict[str, Any]) -> str:
    """What identifies what a client has seen: status, attempt, progress and message."""
    return json.dumps([row["status"], row.get("attempts"), row.get("progress"), row.get("progress_message")],
                      separators=(",", ":"))


def _event(kind: str, row: dict[str, Any]) -> str:
    data = json.dumps(task_view(row), separators=(",", ":"))
    token = state_token(row).replace("\n", " ")
    return f"id: {token}\nevent: {kind}\ndata: {data}\n\n"


async def task_events(request: Request, task_id: str, last_event_id: str | None):
    store = request.app.state.store
    sent_token, sent_status, last_progress_at = last_event_id, None, 0.0
    if last_event_id:
        try:
            sent_status = json.loads(last_event_id)[0]
        except (ValueError, TypeError, IndexError, KeyError):
            sent_status = None
    last_write = time.monotonic()
    yield "retry: 1000\n\n"
    while True:
        row = await asyncio.to_thread(store.get, task_id)
        now = time.monotonic()
        if row is None:
            yield 'event: gone\ndata: {"error": "the task was deleted"}\n\n'
            return
        if row["status"] in TERMINAL:
            # Always sent, even to a client that resumed from it: `end` is the client's cue to close.
            yield _event("end", row)
            return
        token = state_token(row)
        if token != sent_token:
            status_changed = row["status"] != sent_status
            if status_changed or now - last_progress_at >= PROGRESS_INTERVAL:
                yield _event("state" if status_changed else "progress", row)
                sent_token, sent_status, last_write = token, row["status"], now
                last_progress_at = now  # the next progress-only event waits its 500 ms from here
        if now - last_write > KEEPALIVE_SECONDS:
            yield ": keepalive\n\n"
            last_write = now
        if await request.is_disconnected():
            return
        await asyncio.sleep(POLL_SECONDS)


@router.get("/{task_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def events(request: Request, task_id: str, key: Caller,
                 last_event_id: str | None = Header(None, max_length=2000)):
    """Events `state`, `progress` (<= 2/s) and a last `end`, each with the task as JSON."""
    row = await asyncio.to_thread(request.app.state.store.get, task_id)
    if not sees(key, row):
        raise HTTPException(404, f"no task {task_id}")
    return StreamingResponse(task_events(request, task_id, last_event_id), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
