"""The dashboard in a real headless Chromium (Playwright driving Debian's chromium-headless-shell):
sign in with a key, watch a real worker's progress bar move, cancel a running task with the button,
play a real MP4 output through the range-serving output endpoint. SQLite (the page is the same on
PostgreSQL; the API under it is tested on both in test_api.py)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from playwright.sync_api import sync_playwright

from source.media.video_io import write_video
from source.storage import Storage
from source.store.task_store import TaskStore
from tests.api_server import ApiServer, make_key
from tests.worker_process import WorkerProcess

CHROMIUM = shutil.which("chromium-headless-shell") or "/usr/lib/chromium/chromium-headless-shell"


@pytest.fixture
def browser():
    # Playwright's own browser download is unreachable: the Debian package (make setup installs it).
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


def test_dashboard_live_progress_cancel_and_video(sqlite_url, tmp_path, browser):
    key = make_key(sqlite_url, "D")
    server = ApiServer(sqlite_url, tmp_path / "serve.log")
    worker = WorkerProcess(sqlite_url, tmp_path / "logs", "--poll-interval", "0.2", worker_id="W1")
    store = TaskStore(sqlite_url)
    try:
        api = server.client(key)
        page = browser.new_page()
        page.goto(server.base + "/")
        page.fill("input[name=key]", "hk_wrong.key")
        page.click("button[type=submit]")
        assert "not valid" in page.content()
        page.fill("input[name=key]", key)
        page.click("button[type=submit]")
        page.wait_for_selector("#tasks")

        # Progress: the bar follows the worker through the event stream, without reloading.
        slow = api.post("/v1/tasks", json={"task_type": "noop", "params": {"seconds": 6}}).json()["id"]
        page.goto(f"{server.base}/tasks/{slow}")
        page.wait_for_function("document.getElementById('progress').value > 0.1", timeout=30_000)
        first = page.eval_on_selector("#progress", "e => e.value")
        page.wait_for_function(f"document.getElementById('progress').value > {first} + 0.2", timeout=30_000)
        page.wait_for_function("document.getElementById('status').textContent === 'Complete'", timeout=30_000)
        assert page.eval_on_selector("#cancel", "e => e.disabled")

        # Cancel: the button stops a running task.
        doomed = api.post("/v1/tasks", json={"task_type": "noop", "params": {"seconds": 120}}).json()["id"]
        page.goto(f"{server.base}/tasks/{doomed}")
        page.wait_for_function("document.getElementById('status').textContent === 'In Progress'", timeout=30_000)
        page.click("#cancel")
        page.wait_for_function("document.getElementById('status').textContent === 'Cancelled'", timeout=30_000)
        assert api.get(f"/v1/tasks/{doomed}").json()["status"] == "Cancelled"
        worker.stop()

        # Video: a real MP4 output plays from the output endpoint.
        shown = api.post("/v1/tasks", json={"task_type": "noop", "params": {"v": 1}}).json()["id"]
        storage = Storage.for_database(sqlite_url)
        path = storage.output_path(shown, ".mp4")
        frames = [np.full((64, 96, 3), (i * 8) % 255, dtype=np.uint8) for i in range(32)]
        write_video(frames, path, fps=16)
        claim = store.claim("T", 30)
        assert claim.id == shown and store.complete(claim, storage.location_for(path), None)
        page.goto(f"{server.base}/tasks/{shown}")
        page.wait_for_selector("#output:not([hidden])")
        page.eval_on_selector("#output", "v => v.play()")
        page.wait_for_function("document.getElementById('output').currentTime > 0.3", timeout=30_000)
        assert page.eval_on_selector("#output", "v => v.videoWidth") == 96
    finally:
        worker.stop()
        server.stop()
        store.close()
