"""The task store over a Supabase project's HTTP API: what a worker needs, with only a URL and a key.

No database password and no direct connection (so nothing to lose behind the transaction pooler): every
state change is one PostgREST RPC to a SECURITY DEFINER function of supabase/migrations/, guarded in SQL
exactly as the direct store's statements are (status, worker and attempt). The claim is the same
`headless_claim` function the direct PostgreSQL store calls. This module holds no SQL text.

The access token is the service-role key (every project) or a personal worker token (`hwt_...`: only
its owner's projects; sent as the functions' p_token argument beside the anon key). A refused key or
token raises WorkerRefused, which stops the worker (exit 2); network errors and PostgREST's own 5xx are
retried like a database outage.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any, TypeVar

from source import task_model
from source.store.dag import topological
from source.store.records import Claim, StoreError
from source.store.task_store import DEFAULT_AFFINITY_MAX_WAIT
from source.task_context import ChildTask, child_task_id

T = TypeVar("T")
API_VERSION = 2  # worker_api_version() of supabase/migrations/ this worker needs (2: fleet scheduling)
SIGNED_URL_SECONDS = 3600  # long enough for a download to start after the lookup


class NotPostgrest(ConnectionError):
    """A reply that is not PostgREST's (an HTML error page): at start, not a Supabase project; later, a
    proxy in trouble, retried like any outage."""


class WorkerRefused(Exception):
    """The project refused this worker (wrong key, revoked token, missing migration, not Supabase):
    retrying cannot help, the worker stops with exit code 2 and this one-line message."""


def is_personal_token(token: str) -> bool:
    return token.startswith("hwt_")


class SupabaseRestStore:
    """The TaskStore methods the worker uses, over supabase-py (PostgREST RPC)."""

    is_sqlite = False
    dialect = SimpleNamespace(name="supabase-rest")

    def __init__(self, url: str, access_token: str, *, anon_key: str | None = None, timeout_s: float = 30.0) -> None:
        from supabase import ClientOptions, create_client

        if not url.startswith(("http://", "https://")):
            raise WorkerRefused(f"--supabase-url must be the project's http(s) URL, got {url[:80]!r}")
        self.url = url.rstrip("/")
        self._token = access_token if is_personal_token(access_token) else None
        api_key = (anon_key or "") if self._token else access_token
        if self._token and not api_key:
            raise WorkerRefused("a personal worker token needs the project's anon key too: set SUPABASE_ANON_KEY "
                                "or pass --supabase-key")
        try:
            options = ClientOptions(postgrest_client_timeout=int(timeout_s), auto_refresh_token=False,
                                    persist_session=False)
            self._client = create_client(self.url, api_key, options=options)
        except Exception as exc:  # noqa: BLE001 - supabase-py refuses malformed keys itself
            raise WorkerRefused(f"the Supabase key was refused by the client: {type(exc).__name__}") from None

    # ------------------------------------------------------------------ calls
    def _rpc(self, name: str, params: dict[str, Any], *, scoped: bool = True) -> Any:
        from postgrest.exceptions import APIError

        if self._token is not None and scoped:
            params = {**params, "p_token": self._token}
        try:
            return self._client.rpc(name, params).execute().data
        except APIError as exc:
            code = str(exc.code or "")
            if exc.message == "JSON could not be generated":  # supabase-py's words for a non-JSON reply
                raise NotPostgrest(f"{self.url} answered HTTP {code} without PostgREST's JSON") from None
            if code.startswith("28") or code in ("401", "PGRST301", "PGRST302") or \
                    (code == "42501" and name.startswith("worker_")):
                raise WorkerRefused(f"Supabase refused the worker's key or token ({code}): {exc.message}") from None
            if code in ("PGRST202", "42883"):
                raise WorkerRefused(f"the Supabase project has no function {name}(): apply supabase/migrations "
                                    "(see supabase/README.md)") from None
            if code.startswith(("5", "PGRST00")):
                raise ConnectionError(f"Supabase API unavailable ({code}): {exc.message}") from None
            raise StoreError(f"{name}: {exc.message} ({code})") from None
        except ValueError as exc:  # a reply that is not PostgREST's JSON: not a Supabase project
            raise WorkerRefused(f"{self.url} did not answer as a Supabase project: {type(exc).__name__}") from None

    def check(self) -> None:
        """At start: the URL is a Supabase project with our migrations, and the key (or token) is accepted."""
        import httpx

        try:
            version = self._rpc("worker_api_version", {}, scoped=False)
            self._rpc("worker_counts", {"p_types": None})  # the key or token itself is accepted
        except NotPostgrest as exc:
            raise WorkerRefused(f"{exc}: is --supabase-url the project's URL (https://<ref>.supabase.co)?") from None
        except (httpx.TransportError, ConnectionError) as exc:
            raise WorkerRefused(f"cannot reach Supabase at {self.url}: {type(exc).__name__}") from None
        # Later migrations only add: a newer project still serves this worker.
        if not isinstance(version, int) or version < API_VERSION:
            raise WorkerRefused(f"the Supabase project's worker API is version {version!r}, this worker needs "
                                f"{API_VERSION} or later: apply supabase/migrations")

    def run(self, fn: Callable[[], T], *, retry_for: float | None = 30.0, what: str = "api call",
            on_retry: Callable[[BaseException, float], None] | None = None) -> T:
        """fn, retrying network problems with exponential backoff (forever when retry_for is None)."""
        import httpx

        delay, started = 0.2, time.monotonic()
        while True:
            try:
                return fn()
            except (httpx.TransportError, ConnectionError) as exc:
                if retry_for is not None and time.monotonic() - started > retry_for:
                    raise
                if on_retry:
                    on_retry(exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ claiming and the ends of a claim
    def claim(self, worker_id: str, lease_seconds: float, task_types: Sequence[str] | None = None, *,
              model: str | None = None, affinity_max_wait: float = DEFAULT_AFFINITY_MAX_WAIT) -> Claim | None:
        """The same claim as TaskStore.claim (headless_claim): `model` is the model the worker holds,
        `affinity_max_wait` the seconds after which the oldest ready task goes first whatever its model."""
        rows = self._rpc("worker_claim", {"p_worker": worker_id, "p_lease_seconds": lease_seconds,
                                          "p_types": list(task_types) if task_types else None,
                                          "p_model": model, "p_max_wait": max(0.0, float(affinity_max_wait))})
        return Claim(dict(rows[0])) if rows else None

    def _guard(self, claim: Claim) -> dict[str, Any]:
        return {"p_id": claim.id, "p_worker": claim.worker_id, "p_attempt": claim.attempt}

    def heartbeat(self, claim: Claim, lease_seconds: float, progress: float | None = None,
                  message: str | None = None) -> tuple[bool, bool]:
        reply = self._rpc("worker_heartbeat", {**self._guard(claim), "p_lease_seconds": lease_seconds,
                                               "p_progress": progress, "p_message": message})
        return bool(reply["owned"]), bool(reply["cancel_requested"])

    def complete(self, claim: Claim, output_location: str | None, result: dict | None = None) -> bool:
        return bool(self._rpc("worker_complete", {**self._guard(claim), "p_output_location": output_location,
                                                  "p_result": result}))

    def complete_and_claim(self, claim: Claim, output_location: str | None, result: dict | None, *,
                           worker_id: str, lease_seconds: float,
                           task_types: Sequence[str] | None = None, model: str | None = None,
                           affinity_max_wait: float = DEFAULT_AFFINITY_MAX_WAIT) -> tuple[bool, Claim | None]:
        """Two calls; a network problem on the claim returns no claim (the loop claims again), so the
        completion is never repeated."""
        import httpx

        completed = self.complete(claim, output_location, result)
        try:
            return completed, self.claim(worker_id, lease_seconds, task_types, model=model,
                                         affinity_max_wait=affinity_max_wait)
        except (httpx.TransportError, ConnectionError):
            return completed, None

    def fail(self, claim: Claim, message: str) -> bool:
        return bool(self._rpc("worker_end", {**self._guard(claim), "p_status": "Failed", "p_message": message}))

    def mark_cancelled(self, claim: Claim, message: str) -> bool:
        return bool(self._rpc("worker_end", {**self._guard(claim), "p_status": "Cancelled", "p_message": message}))

    def retry_later(self, claim: Claim, message: str, delay_seconds: float) -> bool:
        return bool(self._rpc("worker_retry_later", {**self._guard(claim), "p_message": message,
                                                     "p_delay_seconds": delay_seconds}))

    def hand_back(self, claim: Claim) -> bool:
        return bool(self._rpc("worker_hand_back", self._guard(claim)))

    def spawn_children(self, claim: Claim, children: Sequence[ChildTask]) -> bool:
        """The orchestrator's children, in sibling-dependency order with deterministic ids (as the direct
        store), inserted by one call in one transaction."""
        keys = [c.key for c in children]
        if len(set(keys)) != len(keys):
            raise StoreError("child task keys must be unique")
        if sum(1 for c in children if c.completes_parent) > 1:
            raise StoreError("at most one child task may complete the orchestrator")
        ids = {c.key: child_task_id(claim.id, c.key) for c in children}
        payload = [{"id": ids[c.key], "task_type": c.task_type,
                    "params": json.loads(c.params) if isinstance(c.params, str) else c.params,
                    "depends_on": [ids.get(d, d) for d in c.depends_on], "priority": c.priority,
                    "max_attempts": c.max_attempts, "completes_parent": 1 if c.completes_parent else 0}
                   for c in topological(children)]
        return bool(self._rpc("worker_spawn_children", {**self._guard(claim), "p_children": payload}))

    # ------------------------------------------------------------------ maintenance
    def reclaim_expired(self) -> list[dict[str, Any]]:
        return list(self._rpc("worker_reclaim_expired", {}) or [])

    def sweep_stranded(self) -> list[dict[str, Any]]:
        """Over HTTP, the deadline part only: Queued rows past start_by end Failed (worker_expire_unstarted).
        Orphans, cycles and unknown status words are swept by direct-URL workers
        (`add_task`/`headless.py --db postgresql://...`); see supabase/README.md."""
        return list(self._rpc("worker_expire_unstarted", {}) or [])

    # ------------------------------------------------------------------ reading
    def count_by_status(self) -> dict[str, int]:
        return {k: int(v) for k, v in (self._rpc("worker_counts", {"p_types": None}) or {}).items()}

    def list_tasks(self, *, status: str | None = None, task_type: str | None = None, limit: int = 50,
                   **_ignored: Any) -> list[dict[str, Any]]:
        """Only what the worker asks (is there a task of this type in this status?): one stand-in row per
        task counted, at most `limit`; over HTTP a worker reads no other task's columns."""
        counts = self._rpc("worker_counts", {"p_types": [task_type] if task_type else None}) or {}
        n = sum(int(v) for k, v in counts.items() if status is None or k == status)
        return [{"status": status, "task_type": task_type}] * min(n, limit)

    def output_of(self, task_id: str) -> str | None:
        """Another task's output. An object of a private bucket of this project comes back as a short-lived
        signed URL, so the bounded downloader fetches it like any URL, on any host."""
        location = self._rpc("worker_output_of", {"p_id": task_id})
        prefix = f"{self.url}/storage/v1/object/authenticated/"
        if not (isinstance(location, str) and location.startswith(prefix)):
            return location
        bucket, _, name = location[len(prefix):].partition("/")
        try:
            return self._client.storage.from_(bucket).create_signed_url(name, SIGNED_URL_SECONDS)["signedURL"]
        except Exception as exc:  # noqa: BLE001 - a personal token cannot sign; network: retried as a task
            raise StoreError(f"could not sign a URL for task {task_id}'s output in bucket {bucket!r}: "
                             f"{type(exc).__name__}") from None

    def cache_get(self, key: str) -> str | None:
        return self._rpc("worker_cache_get", {"p_key": key})

    def cache_put(self, key: str, location: str, task_id: str | None = None) -> None:
        self._rpc("worker_cache_put", {"p_key": key, "p_location": location, "p_task_id": task_id})

    # ------------------------------------------------------------------ workers
    def register_worker(self, worker_id: str, host: str, pid: int, version: str) -> None:
        self._rpc("worker_register", {"p_worker": worker_id, "p_host": host, "p_pid": pid, "p_version": version})

    def worker_model(self, worker_id: str, model: str | None) -> None:
        """Record the model the worker holds (what it claims first)."""
        self._rpc("worker_set_model", {"p_worker": worker_id, "p_model": model})

    def record_model_names(self) -> None:
        """The model catalog's names and aliases, for the trigger filling `model` on app inserts. Only the
        service role writes them (the function ignores a personal token's call)."""
        self._rpc("worker_record_model_names", {"p_names": task_model.name_pairs()})

    def worker_seen(self, worker_id: str, task_id: str | None, status: str = "running") -> None:
        self._rpc("worker_seen", {"p_worker": worker_id, "p_task_id": task_id, "p_status": status})
