"""Fuzz every operation of the served OpenAPI document with schemathesis against a real server process
(SQLite and PostgreSQL): whatever a client sends, the server answers without a 5xx."""

from __future__ import annotations

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.api_server import ApiServer, make_key


def test_no_operation_answers_a_server_error(db_url, tmp_path):
    server = ApiServer(db_url, tmp_path / "serve.log", "--no-webhooks")
    try:
        auth = {"Authorization": f"Bearer {make_key(db_url, 'F')}"}
        schema = schemathesis.openapi.from_url(server.base + "/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 10  # the document was read, not an empty list fuzzed
        for operation in operations:
            # (schemathesis' own pytest plugin does not load under this pytest: hypothesis directly)
            @given(case=operation.as_strategy())
            @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def fuzz(case):
                case.call_and_validate(base_url=server.base, headers={**(case.headers or {}), **auth}, timeout=15,
                                       checks=[not_a_server_error])
            fuzz()
        metrics = httpx.get(server.base + "/metrics").text
        sent = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                   if line.startswith("headless_api_requests_total{"))
        assert sent >= 5 * len(operations), sent  # the cases reached the server
        assert 'code="5' not in metrics  # and none was answered with a server error
    finally:
        server.stop()
