"""Structured logs: one JSON object per line with an `event` field, on stderr and in --log-dir files.

Secrets never reach the log: values of secret-looking keys are masked, and inside any URL found in a value
the password (`scheme://user:password@host`) and the values of secret-looking query parameters (`?token=`,
`&sig=`, signed-URL parameters such as `X-Amz-Signature`, `X-Goog-Credential`, `api_key`) are replaced.
mask_url is the one home of that rule; downloads use it for their error messages too.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

_SECRET_KEYS = re.compile(r"pass(word|wd)?|secret|token|api[_-]?key|authorization|access[_-]?key|service[_-]?role",
                          re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@\s]+@", re.IGNORECASE)
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s\"'<>]+", re.IGNORECASE)
# A query parameter whose name contains one of these carries a credential (over-masking costs nothing).
_SECRET_QUERY = re.compile(r"([?&;])([^=&;#\s]*(?:token|sig|secret|pass|pwd|key|auth|credential|session|jwt)"
                           r"[^=&;#\s]*=)[^&;#\s\"'<>]*", re.IGNORECASE)


_PLAIN = (int, float, bool, type(None))  # nothing to mask inside these
_ENCODER = json.JSONEncoder(default=str)


@functools.lru_cache(maxsize=1024)
def _is_secret_key(key: str) -> bool:
    return _SECRET_KEYS.search(key) is not None


def _mask_one_url(match: re.Match) -> str:
    url = match.group(0)
    return _SECRET_QUERY.sub(r"\1\2***", url) if "=" in url else url


def mask_url(text: str) -> str:
    """text with every URL's password and secret query values replaced by ***."""
    if "://" not in text:  # the common case: no URL, nothing to scan
        return text
    if "@" in text:
        text = _URL_PASSWORD.sub(r"\1***@", text)
    return _URL.sub(_mask_one_url, text)


def redact(value: Any, key: str = "") -> Any:
    if key and _is_secret_key(key):
        return "***"
    if isinstance(value, str):
        return mask_url(value)
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
        stamp = datetime.now(UTC).isoformat(timespec="microseconds")[:-6] + "Z"
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
