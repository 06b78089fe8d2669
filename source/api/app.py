"""The FastAPI application: one TaskStore (and its API tables) per process, routers, /health,
/v1/workers, and errors mapped to what the client should do next (503: try again later)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from source.api import dashboard, events, metrics, tasks
from source.api.auth import Caller
from source.api.views import when
from source.api.webhooks import WebhookDeliverer, webhook_limits
from source.storage import Storage
from source.store.api_store import ApiStore, WebhookStore
from source.store.task_store import TaskStore

VERSION = "1"


def create_app(db_url: str, *, no_auth: bool = False, store: TaskStore | None = None,
               deliver_webhooks: bool = True, webhook_allow_private: bool = False,
               webhook_backoff_scale: float = 1.0) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        deliverer = None
        if deliver_webhooks:  # every server delivers; the outbox hands each attempt to one of them
            deliverer = WebhookDeliverer(app.state.webhooks, app.state.webhook_limits, webhook_backoff_scale,
                                         on_attempt=lambda outcome: app.state.webhook_attempts.labels(outcome).inc())
            deliverer.start()
        yield
        if deliverer is not None:
            deliverer.stop()

    app = FastAPI(title="headless-wan API", version=VERSION, lifespan=lifespan,
                  description="Queue tasks, follow their progress, fetch their outputs.")
    app.state.store = store or TaskStore(db_url)
    app.state.api = ApiStore(app.state.store)
    app.state.webhooks = WebhookStore(app.state.api)
    app.state.webhook_limits = webhook_limits(webhook_allow_private)
    app.state.storage = Storage.for_database(app.state.store.url)  # where workers on this database write
    app.state.no_auth = no_auth
    metrics.install(app)
    app.include_router(tasks.router)
    app.include_router(events.router)
    app.include_router(dashboard.router)

    @app.exception_handler(sa.exc.OperationalError)
    @app.exception_handler(sa.exc.InterfaceError)
    async def database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
        # The message may name the server: say only what to do.
        return JSONResponse({"detail": "the database is unavailable; try again shortly"}, status_code=503,
                            headers={"Retry-After": "5"})

    @app.get("/health", tags=["service"])
    def health(request: Request) -> JSONResponse:
        """200 when the database answers; 503 otherwise."""
        try:
            counts = request.app.state.store.count_by_status()
        except Exception:  # noqa: BLE001 - any database failure means "not healthy", never a 500
            return JSONResponse({"ok": False, "database": "unavailable"}, status_code=503)
        return JSONResponse({"ok": True, "database": "ok", "tasks": counts})

    @app.get("/v1/workers", tags=["service"])
    def workers(request: Request, key: Caller) -> dict[str, Any]:
        """Workers that registered, newest heartbeat first (the current task only for admin keys)."""
        rows = request.app.state.api.workers()
        return {"workers": [{"id": r["id"], "host": r["host"], "pid": r["pid"], "status": r["status"],
                             "version": r["version"], "started_at": when(r["started_at"]),
                             "last_seen_at": when(r["last_seen_at"]),
                             "current_task_id": r["current_task_id"] if key.admin else None} for r in rows]}

    return app
