"""Webhook delivery from the outbox (source/store/api_sql.py fills it by trigger): Standard Webhooks
signatures (the `standardwebhooks` library, per-project `whsec_` secret), retries with backoff for over
an hour, each attempt recorded, a stable `webhook-id` per event.

The target URL is untrusted: it gets the download checks of source/downloads.py (http/https only, every
resolved address public unless private networks are allowed, the connection pinned to the checked
addresses), a short deadline, no redirects followed, and at most RESPONSE_BYTES of the answer read.
Any server (serve.py runs a WebhookDeliverer thread) may deliver; the outbox hands each attempt to one.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook

from source.downloads import (
    DownloadLimits,
    _check_hop,
    _PinnedHTTP,
    _PinnedHTTPS,
    _Watchdog,
    private_networks_from,
)
from source.errors import InvalidInput, TransientError
from source.event_log import mask_url
from source.store.api_store import WebhookStore

# Seconds before each retry: 9 attempts over about 4 hours (the first 8 span more than an hour).
BACKOFF_SECONDS = (5, 30, 120, 300, 900, 1800, 3600, 7200)
DEADLINE_SECONDS = 10.0
RESPONSE_BYTES = 4096


def webhook_limits(allow_private: bool) -> DownloadLimits:
    return DownloadLimits(private_networks=private_networks_from("1" if allow_private else ""),
                          timeout_s=DEADLINE_SECONDS)


def check_webhook_url(url: str, limits: DownloadLimits) -> None:
    """At create time: scheme and host (InvalidInput); addresses are checked at each delivery."""
    if len(url) > 2000:
        raise InvalidInput("webhook_url is longer than 2000 characters")
    _check_hop(url, limits, "webhook_url", time.monotonic() + DEADLINE_SECONDS, resolve=False)


def payload_of(message: dict[str, Any]) -> str:
    created = message["created_at"]
    data = {"task_id": message["task_id"], "status": message["status"], "project_id": message["project_id"],
            "output_location": message["output_location"], "error": message["error_message"]}
    return json.dumps({"type": message["event_type"],
                       "timestamp": created.isoformat() if isinstance(created, datetime) else str(created),
                       "data": data}, separators=(",", ":"))


def post(url: str, body: str, headers: dict[str, str], limits: DownloadLimits) -> int:
    """One POST under the checks above; returns the HTTP status. Raises InvalidInput (the URL is refused)
    or TransientError (could not reach it)."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    parsed, port, addresses = _check_hop(url, limits, "webhook", deadline)
    watchdog = _Watchdog(deadline, None)
    conn_class = _PinnedHTTPS if parsed.scheme.lower() == "https" else _PinnedHTTP
    conn = conn_class(parsed.hostname, port, addresses, watchdog)
    try:
        path = urllib.parse.quote(parsed.path or "/", safe="/%:@!$&'()*+,;=[]")
        if parsed.query:
            path += "?" + parsed.query
        conn.connect()
        conn.request("POST", path, body=body.encode("utf-8"),
                     headers={**headers, "Content-Type": "application/json", "User-Agent": "headless-wan-webhooks"})
        response = conn.getresponse()
        response.read(RESPONSE_BYTES)  # the answer is not needed: a bounded read, then close
        return response.status
    except (OSError, http.client.HTTPException) as exc:
        raise TransientError(f"{type(exc).__name__}: {str(exc)[:200]}" if not watchdog.fired
                             else f"no answer within {DEADLINE_SECONDS:g} s") from None
    finally:
        watchdog.close()
        conn.close()


class WebhookDeliverer:
    def __init__(self, hooks: WebhookStore, limits: DownloadLimits, backoff_scale: float = 1.0,
                 on_attempt: Callable[[str], None] | None = None) -> None:
        self.hooks, self.limits, self.backoff_scale = hooks, limits, backoff_scale
        self.on_attempt = on_attempt  # metrics: "delivered", "retry" or "gave_up"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def deliver_one(self) -> bool:
        """Attempt the next due message, if any. Returns whether there was one."""
        message = self.hooks.take_due()
        if message is None:
            return False
        started = time.monotonic()
        status, error, permanent = None, None, False
        secret = self.hooks.secret_of(message["project_id"])
        try:
            if secret is None:
                raise InvalidInput(f"project {message['project_id']!r} has no webhook secret"
                                   " (add_task.py webhook-secret --project P)")
            body = payload_of(message)
            signature = Webhook(secret).sign(message["id"], datetime.now(UTC), body)
            headers = {"webhook-id": message["id"], "webhook-timestamp": str(int(time.time())),
                       "webhook-signature": signature}
            status = post(message["url"], body, headers, self.limits)
            if status in (301, 302, 303, 307, 308):
                error = f"HTTP {status}: redirects are not followed"
            elif not 200 <= status < 300:
                error = f"HTTP {status}"
        except (InvalidInput, TransientError) as exc:
            permanent = isinstance(exc, InvalidInput)  # a refused URL or no secret: retrying cannot help
            error = str(exc).replace(message["url"], mask_url(message["url"]))[:500]
        except Exception as exc:  # noqa: BLE001 - a bad secret or row: recorded, the loop goes on
            error = f"{type(exc).__name__}: {str(exc)[:200]}"
        attempt = int(message["attempts"])
        retry_in = (BACKOFF_SECONDS[attempt - 1] * self.backoff_scale
                    if error is not None and not permanent and attempt <= len(BACKOFF_SECONDS) else None)
        self.hooks.finish_attempt(message, status_code=status, error=error,
                                  duration_ms=int((time.monotonic() - started) * 1000), retry_in=retry_in)
        if self.on_attempt is not None:
            self.on_attempt("delivered" if error is None else "retry" if retry_in is not None else "gave_up")
        return True

    def start(self, interval: float = 0.5) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                try:
                    while self.deliver_one() and not self._stop.is_set():
                        pass
                except Exception:  # noqa: BLE001 - the database may be away: try again next round
                    pass
                self._stop.wait(interval)
        self._thread = threading.Thread(target=loop, daemon=True, name="webhook-deliverer")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)


def start_for_worker(store) -> WebhookDeliverer:
    """headless.py --deliver-webhooks: a worker delivers too, under the worker's download rules for
    private addresses (--allow-private-urls / HEADLESS_ALLOW_PRIVATE_URLS)."""
    from source.store.api_store import ApiStore

    deliverer = WebhookDeliverer(WebhookStore(ApiStore(store)), DownloadLimits(timeout_s=DEADLINE_SECONDS))
    deliverer.start()
    return deliverer
