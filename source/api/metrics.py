"""GET /metrics: Prometheus text (prometheus-client) from a registry of this app's own.

Requests are counted and timed per route template (never per task id: bounded label values); task
counts by status are read from the database at scrape time; webhook attempts are counted by outcome."""

from __future__ import annotations

import time

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from source.task_status import TaskStatus


class _TaskCounts:
    """Collected on each scrape: one cheap GROUP BY, so the numbers are never stale."""

    def __init__(self, store) -> None:
        self.store = store

    def collect(self):
        family = GaugeMetricFamily("headless_tasks", "Tasks in the table by status", labels=["status"])
        try:
            counts = self.store.count_by_status()
        except Exception:  # noqa: BLE001 - a scrape during an outage shows no task counts, not a 500
            return
        for status in TaskStatus:
            family.add_metric([status.value], counts.get(status.value, 0))
        yield family


def install(app: FastAPI) -> None:
    registry = CollectorRegistry()
    requests = Counter("headless_api_requests", "HTTP requests", ["method", "route", "code"], registry=registry)
    latency = Histogram("headless_api_request_seconds", "HTTP request time (streams: until the headers)",
                        ["route"], registry=registry,
                        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))
    app.state.webhook_attempts = Counter("headless_webhook_attempts", "Webhook delivery attempts", ["outcome"],
                                         registry=registry)
    registry.register(_TaskCounts(app.state.store))

    @app.middleware("http")
    async def measure(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")  # the template, e.g. /v1/tasks/{task_id}
        requests.labels(request.method, template, str(response.status_code)).inc()
        latency.labels(template).observe(time.perf_counter() - started)
        return response

    @app.get("/metrics", tags=["service"], response_class=Response)
    def metrics() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
