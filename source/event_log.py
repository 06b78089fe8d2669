"""Structured logs: one JSON object per line with an `event` field, on stderr and in --log-dir files.

Secrets never reach the log: values of secret-looking keys are masked, and passwords inside URLs
(`scheme://user:password@host`) are replaced, wherever they appear in a value.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

_SECRET_KEYS = re.compile(r"pass(word|wd)?|secret|token|api[_-]?key|authorization|access[_-]?key|service[_-]?role",
                          re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@\s]+@", re.IGNORECASE)


_PLAIN = (int, float, bool, type(None))  # nothing to mask inside these
_ENCODER = json.JSONEncoder(default=str)


@functools.lru_cache(maxsize=1024)
def _is_secret_key(key: str) -> bool:
    return _SECRET_KEYS.search(key) is not None


def redact(value: Any, key: str = "") -> Any:
    if key and _is_secret_key(key):
        return "***"
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\1***@", value) if "@" in value else value  # no "@", no URL password
    if isinstance(value, dict):
        return {k: v if type(v) in _PLAIN and not _is_secret_key(str(k)) else redact(v, str(k))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


class EventLog:
    def __init__(self, worker_id: str, log_dir: Path | None = None, stream: TextIO | None = None) -> None:
        self.worker_id = worker_id
        self.stream = stream if stream is not None else sys.stderr
        self._lock = threading.Lock()
        self._file = None
        if log_dir is not None:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", worker_id)
            self._file = open(Path(log_dir) / f"worker-{safe}.jsonl", "a", encoding="utf-8", buffering=1)

    def emit(self, event: str, **fields: Any) -> None:
        # isoformat is several times cheaper than strftime; same text: 2025-07-01T10:00:00.000000Z
        stamp = datetime.now(timezone.utc).isoformat(timespec="microseconds")[:-6] + "Z"
        record = {"ts": stamp, "event": event, "worker_id": self.worker_id}
        record.update(redact(fields))
        line = _ENCODER.encode(record)
        with self._lock:
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass  # a closed stderr must not stop the worker
            if self._file is not None:
                self._file.write(line + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
