"""Webhooks end to end: a real server delivers from the outbox to a real HTTP receiver as a real worker
moves the task; signatures verify with the standardwebhooks library; a failed attempt is retried under
the same webhook-id and recorded. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks.webhooks import Webhook

from source.api.webhooks import post, webhook_limits
from source.errors import InvalidInput
from tests.api_server import REPO, ApiServer, make_key
from tests.worker_process import WorkerProcess, wait_until


class Receiver:
    """Records every POST; answers 500 to the first one on /hook, then 204; /redirect answers 302."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8")
                owner.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                if self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", "http://example.com/")
                elif sum(1 for p, _, _ in owner.received if p == "/hook") == 1:
                    self.send_response(500)
                else:
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_signed_webhooks_with_retries_and_recorded_attempts(db_url, tmp_path, receiver):
    key = make_key(db_url, "A")
    out = subprocess.run([sys.executable, str(REPO / "add_task.py"), "webhook-secret", "--project", "A",
                          "--db", db_url], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("whsec_"), out.stderr
    secret = out.stdout.strip()
    server = ApiServer(db_url, tmp_path / "serve.log", "--webhook-allow-private", "--webhook-backoff-scale", "0.02")
    worker = WorkerProcess(db_url, tmp_path / "logs", "--poll-interval", "0.2", worker_id="W1")
    try:
        client = server.client(key)
        assert client.post("/v1/tasks", json={"task_type": "noop", "params": {},
                                              "webhook_url": "ftp://x/y"}).status_code == 422
        task = client.post("/v1/tasks", json={"task_type": "noop", "params": {"seconds": 0.5},
                                              "webhook_url": receiver.url + "/hook"})
        assert task.status_code == 201, task.text
        task_id = task.json()["id"]
        moved = client.post("/v1/tasks", json={"task_type": "noop", "params": {"x": 1},
                                               "webhook_url": receiver.url + "/redirect"}).json()["id"]

        def delivered() -> list[dict]:
            return [d for d in client.get(f"/v1/tasks/{task_id}/webhooks").json()["deliveries"] if d["delivered_at"]]
        wait_until(lambda: len(delivered()) == 2, 60, "task.started and task.completed delivered")

        hook_posts = [(h, b) for p, h, b in receiver.received if p == "/hook"]
        assert len(hook_posts) == 3  # the first answered 500 and was sent again
        ids = [h["webhook-id"] for h, _ in hook_posts]
        assert ids.count(ids[0]) == 2 and len(set(ids)) == 2  # the retry kept its webhook-id
        events = set()
        for headers, body in hook_posts:
            payload = Webhook(secret).verify(body, headers)  # raises unless the signature is right
            events.add((payload["type"], payload["data"]["task_id"], payload["data"]["status"]))
        assert events == {("task.started", task_id, "In Progress"), ("task.completed", task_id, "Complete")}
        assert Webhook(secret).verify(hook_posts[0][1], hook_posts[0][0])["type"] == "task.started"

        deliveries = client.get(f"/v1/tasks/{task_id}/webhooks").json()["deliveries"]
        assert [d["event_type"] for d in deliveries] == ["task.started", "task.completed"]
        assert [a["status_code"] for a in deliveries[0]["attempt_log"]] == [500, 204]
        assert deliveries[0]["attempt_log"][0]["error"] == "HTTP 500"

        wait_until(lambda: any(a["error"] and "redirects are not followed" in a["error"]
                               for d in client.get(f"/v1/tasks/{moved}/webhooks").json()["deliveries"]
                               for a in d["attempt_log"]), 60, "the redirect recorded as a failed attempt")
        assert not any(p != "/redirect" and p != "/hook" for p, _, _ in receiver.received)  # never followed
    finally:
        worker.stop()
        server.stop()


def test_private_addresses_are_refused_unless_allowed(receiver):
    with pytest.raises(InvalidInput, match="loopback, private or link-local"):
        post(receiver.url + "/hook", "{}", {}, webhook_limits(allow_private=False))
    assert receiver.received == []
    assert post(receiver.url + "/x", json.dumps({}), {}, webhook_limits(allow_private=True)) == 204


def test_a_worker_delivers_webhooks_too(db_url, tmp_path, receiver):
    key = make_key(db_url, "W")
    out = subprocess.run([sys.executable, str(REPO / "add_task.py"), "webhook-secret", "--project", "W",
                          "--db", db_url], capture_output=True, text=True, timeout=60)
    secret = out.stdout.strip()
    server = ApiServer(db_url, tmp_path / "serve.log", "--no-webhooks", "--webhook-allow-private")
    worker = WorkerProcess(db_url, tmp_path / "logs", "--poll-interval", "0.2", "--deliver-webhooks",
                           "--allow-private-urls", worker_id="W2")
    try:
        client = server.client(key)
        task_id = client.post("/v1/tasks", json={"task_type": "noop", "params": {},
                                                 "webhook_url": receiver.url + "/ok"}).json()["id"]
        wait_until(lambda: len(receiver.received) >= 2, 60, "the worker's deliveries")
        types = [Webhook(secret).verify(b, h)["type"] for _, h, b in receiver.received]
        assert sorted(types) == ["task.completed", "task.started"]
        assert all(json.loads(b)["data"]["task_id"] == task_id for _, _, b in receiver.received)
    finally:
        worker.stop()
        server.stop()
