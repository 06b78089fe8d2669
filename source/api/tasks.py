"""/v1/tasks: create (idempotent), read, list (keyset pages), cancel, retry, output file.

Params are checked by the worker's own validation (source.handler_registry.validate_params) and the
row caps (source.task_limits.read_params), so the API refuses exactly what a worker would fail."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field

from source.api.auth import Caller, sees
from source.api.views import decode_cursor, encode_cursor, task_view
from source.api.webhooks import check_webhook_url
from source.handler_registry import validate_params
from source.store.api_store import ApiKey, idempotent_task_id, same_request
from source.store.records import StoreError
from source.task_context import InvalidInput
from source.task_limits import read_params
from source.task_status import TaskStatus

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])


class TaskCreate(BaseModel):
    task_type: str = Field(min_length=1, max_length=200)
    params: dict[str, Any]
    priority: int = Field(0, ge=-1_000_000, le=1_000_000)
    depends_on: list[str] = Field(default_factory=list, max_length=100)
    max_attempts: int = Field(3, ge=1, le=100)
    timeout_seconds: float | None = Field(None, gt=0, le=7 * 86400)
    project_id: str | None = Field(None, max_length=200, description="admin keys only; others use the key's")
    webhook_url: str | None = Field(None, max_length=2000, description="POSTed each state change (signed)")


def _invalid(field: str, message: str) -> HTTPException:
    return HTTPException(422, [{"loc": ["body", field], "msg": message, "type": "value_error"}])


def _visible(request: Request, key: ApiKey, task_id: str) -> dict[str, Any]:
    row = request.app.state.store.get(task_id)
    if not sees(key, row):
        raise HTTPException(404, f"no task {task_id}")  # another project's task is not revealed
    return row


def _project(key: ApiKey, body: TaskCreate) -> str | None:
    """The task's project: the key's; an admin key may name another."""
    return body.project_id if (key.admin and body.project_id) else key.project_id


def _create(request: Request, key: ApiKey, body: TaskCreate, task_id: str) -> JSONResponse:
    try:
        read_params(json.dumps(body.params))  # the row caps (size, depth) a worker would apply
        validate_params(body.task_type, body.params)
    except RecursionError:
        raise _invalid("params", "params nest too deeply") from None
    except InvalidInput as exc:
        field = "task_type" if str(exc).startswith("unknown task_type") else "params"
        raise _invalid(field, str(exc)) from None
    if body.webhook_url is not None:
        try:
            check_webhook_url(body.webhook_url, request.app.state.webhook_limits)
        except InvalidInput as exc:
            raise _invalid("webhook_url", str(exc)) from None
    for parent in body.depends_on:  # another project's task is as absent here as everywhere else
        if not sees(key, request.app.state.store.get(parent)):
            raise _invalid("depends_on", f"depends-on task {parent[:200]} does not exist")
    project = _project(key, body)
    spec = {**body.model_dump(), "project_id": project}
    api = request.app.state.api
    try:
        inserted = api.create_task(task_id, spec)
    except StoreError as exc:
        raise _invalid("depends_on", str(exc)) from None
    row = request.app.state.store.get(task_id)
    if not inserted and (not sees(key, row) or not same_request(row, body.task_type, body.params)):
        raise HTTPException(409, f"task {task_id} already exists with a different request")
    children = [] if inserted else api.children(task_id)  # a task just inserted has none yet
    return JSONResponse(task_view(row, children), status_code=201 if inserted else 200,
                        headers={"Location": f"/v1/tasks/{task_id}"})


@router.post("", status_code=201, responses={200: {"description": "the task this Idempotency-Key created"}})
def create_task(request: Request, body: TaskCreate, key: Caller,
                idempotency_key: str | None = Header(None, max_length=200)) -> JSONResponse:
    """Queue a task. With an Idempotency-Key, repeating the request returns the same task (200)."""
    task_id = idempotent_task_id(_project(key, body), idempotency_key) if idempotency_key else str(uuid.uuid4())
    return _create(request, key, body, task_id)


@router.put("/{task_id}", status_code=201, responses={200: {"description": "the task already existed"}})
def put_task(request: Request, body: TaskCreate, key: Caller,
             task_id: str = PathParam(min_length=1, max_length=200)) -> JSONResponse:
    """Queue a task under the client's id; repeating it returns the existing task (200)."""
    return _create(request, key, body, task_id)


@router.get("/{task_id}")
def get_task(request: Request, task_id: str, key: Caller) -> dict[str, Any]:
    row = _visible(request, key, task_id)
    return task_view(row, request.app.state.api.children(task_id))


@router.get("")
def list_tasks(request: Request, key: Caller,
               status: TaskStatus | None = None, task_type: str | None = Query(None, max_length=200),
               limit: int = Query(50, ge=1, le=500), cursor: str | None = Query(None, max_length=1000)):
    """Newest first. `next_cursor` continues the listing (null on the last page)."""
    filters: dict[str, Any] = {}
    if status is not None:
        filters["status"] = status.value
    if task_type is not None:
        filters["task_type"] = task_type
    if not key.admin and key.project_id is not None:
        filters["project_id"] = key.project_id
    rows = request.app.state.api.page(filters, limit + 1, decode_cursor(cursor) if cursor else None)
    more = len(rows) > limit
    rows = rows[:limit]
    return {"tasks": [task_view(r) for r in rows], "next_cursor": encode_cursor(rows[-1]) if more else None}


@router.post("/{task_id}/cancel", status_code=202)
def cancel_task(request: Request, task_id: str, key: Caller) -> dict[str, Any]:
    """A queued task ends Cancelled at once; a running one stops at its next progress check."""
    _visible(request, key, task_id)
    request.app.state.store.request_cancel(task_id)
    return task_view(request.app.state.store.get(task_id))


@router.post("/{task_id}/retry")
def retry_task(request: Request, task_id: str, key: Caller) -> dict[str, Any]:
    """Re-queue a Failed or Cancelled task (and its failed descendants)."""
    row = _visible(request, key, task_id)
    try:
        ids = request.app.state.store.retry(task_id)
    except StoreError as exc:
        raise HTTPException(409, str(exc)) from None
    if not ids:
        raise HTTPException(409, f"task {task_id} is {row['status']}: only Failed or Cancelled tasks are retried")
    return {**task_view(request.app.state.store.get(task_id)), "requeued": ids}


@router.get("/{task_id}/output", response_class=FileResponse,
            responses={206: {"description": "a byte range"}, 302: {"description": "the output's URL"}})
def task_output(request: Request, task_id: str, key: Caller):
    """The output file (Range requests supported), or a redirect to an output published elsewhere."""
    row = _visible(request, key, task_id)
    location = row.get("output_location")
    if row["status"] != TaskStatus.COMPLETE or not location:
        raise HTTPException(404, f"task {task_id} has no output (status {row['status']})")
    if str(location).startswith(("http://", "https://")):
        return JSONResponse({"url": location}, status_code=302, headers={"Location": str(location)})
    storage = request.app.state.storage
    path = storage.local_path(str(location))
    # The row is untrusted: serve only files inside the output folders, never an arbitrary path.
    roots = [storage.files_dir] + ([storage.location_base] if storage.location_base else [])
    if not any(path.is_relative_to(root) for root in roots) or not path.is_file():
        raise HTTPException(404, f"the output of task {task_id} is not a file this server holds")
    return FileResponse(path, filename=Path(path).name)


@router.get("/{task_id}/webhooks")
def task_webhooks(request: Request, task_id: str, key: Caller) -> dict[str, Any]:
    """The task's webhook messages and every delivery attempt (time, HTTP status, error)."""
    _visible(request, key, task_id)
    return {"deliveries": jsonable_encoder(request.app.state.webhooks.deliveries(task_id))}
