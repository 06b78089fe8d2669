"""The dashboard: server-rendered pages (jinja2) at `/` and `/tasks/{id}`, kept live by a small
script of our own (static/dashboard.js: Server-Sent Events, no build step).

Browsers cannot put an API key in an EventSource request, so the dashboard signs in once: the key is
posted to /login and kept in an HttpOnly, SameSite=Strict cookie (source/api/auth.py accepts it; state
changes by cookie also need the X-Requested-With header, which another site cannot send)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from source.api.auth import COOKIE, optional_caller, sees
from source.api.views import task_view

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(include_in_schema=False)
SCRIPT = (HERE / "static" / "dashboard.js").read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse)
def index(request: Request):
    key = optional_caller(request)
    if key is None:
        return templates.TemplateResponse(request, "login.html", {"error": None})
    filters = {} if key.admin or key.project_id is None else {"project_id": key.project_id}
    rows = request.app.state.api.page(filters, 50, None)
    return templates.TemplateResponse(request, "index.html", {"tasks": [task_view(r) for r in rows], "key": key})


@router.get("/tasks/{task_id}", response_class=HTMLResponse)
def task_page(request: Request, task_id: str):
    key = optional_caller(request)
    if key is None:
        return RedirectResponse("/", status_code=303)
    row = request.app.state.store.get(task_id)
    if not sees(key, row):
        raise HTTPException(404, f"no task {task_id}")
    return templates.TemplateResponse(request, "task.html",
                                      {"task": task_view(row, request.app.state.api.children(task_id))})


@router.post("/login")
def login(request: Request, key: str = Form(max_length=300)):
    if request.app.state.api.authenticate(key.strip()) is None:
        return templates.TemplateResponse(request, "login.html", {"error": "that key is not valid"},
                                          status_code=401)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, key.strip(), httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", max_age=12 * 3600)
    return response


@router.post("/logout")
def logout():
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(COOKIE)
    return response


@router.get("/static/dashboard.js")
def script() -> Response:
    return Response(SCRIPT, media_type="text/javascript", headers={"Cache-Control": "no-cache"})
