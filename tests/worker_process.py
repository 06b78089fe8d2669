"""Run real worker processes (`headless.py`) in tests and read their JSON-lines logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class WorkerProcess:
    def __init__(self, db_url: str | None, log_dir: Path, *args: str, worker_id: str, env: dict | None = None) -> None:
        self.worker_id = worker_id
        self.log_dir = Path(log_dir)
        database = ["--db", db_url] if db_url else []  # None: a Supabase REST worker (args say where)
        cmd = [sys.executable, str(REPO / "headless.py"), *database, "--worker-id", worker_id,
               "--log-dir", str(log_dir), *args]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # stderr goes to a file: an unread pipe would fill up and block the worker
        self.stderr_path = self.log_dir / f"stderr-{worker_id}.txt"
        with open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(cmd, cwd=str(REPO), env=full_env, stdout=subprocess.DEVNULL,
                                         stderr=err, text=True)

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"worker-{self.worker_id}.jsonl"

    def events(self, name: str | None = None) -> list[dict]:
        if not self.log_file.exists():
            return []
        out = []
        for line in self.log_file.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written right now
            if name is None or record.get("event") == name:
                out.append(record)
        return out

    def wait_for_event(self, name: str, predicate: Callable[[dict], bool] = lambda e: True,
                       timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events(name):
                if predicate(e):
                    return e
            if self.proc.poll() is not None and not any(predicate(e) for e in self.events(name)):
                raise AssertionError(f"worker {self.worker_id} exited ({self.proc.returncode}) before {name}: "
                                     f"{self.stderr_tail()}")
            time.sleep(0.05)
        raise AssertionError(f"no {name} event from {self.worker_id} within {timeout}s")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def wait(self, timeout: float = 60.0) -> int:
        return self.proc.wait(timeout)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def stderr_tail(self) -> str:
        return self.stderr()[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def all_events(workers: list[WorkerProcess], name: str) -> list[dict]:
    return [e for w in workers for e in w.events(name)]


def wait_until(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
