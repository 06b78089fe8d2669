"""The worker loop: claim a ready task, run its handler under a renewed lease, record the outcome.

One task at a time per process (a GPU box runs one generation at a time; more GPUs = more workers).
A heartbeat thread renews the lease, writes throttled progress, and turns a cancel request, a timeout,
a lost lease or an expired shutdown grace period into the handler's cancellation check.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any

from source import __version__
from source.downloads import is_url
from source.event_log import EventLog
from source.handler_registry import run_handler
from source.storage import Storage
from source.store.task_store import Claim, TaskStore, parse_params
from source.store.wakeup import Waker, make_waker
from source.errors import FatalWorkerError, InvalidInput, TaskCancelled
from source.task_context import HandlerResult, TaskContext
from source.task_model import held_model
from source.task_status import TaskStatus


@dataclass
class WorkerConfig:
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    poll_interval: float = 2.0
    lease_seconds: float = 60.0
    max_tasks: int | None = None
    exit_when_idle: bool = False
    task_types: list[str] | None = None
    task_timeout: float | None = None  # default per-task time limit (params `timeout_seconds` overrides)
    shutdown_grace: float = 30.0
    retry_base_seconds: float = 10.0
    retry_max_seconds: float = 600.0
    listen: bool = True
    keep_work_dirs: bool = False
    progress_min_interval: float = 1.0
    affinity_max_wait: float = 300.0  # model affinity cut-off in seconds (0: strict priority + age order)


def _is_transient(exc: BaseException) -> bool:
    from source.errors import TransientError

    if isinstance(exc, (TransientError, OSError, MemoryError)):
        return True
    return type(exc).__name__ == "OutOfMemoryError"  # torch.cuda.OutOfMemoryError without importing torch


class TaskRun:
    """The live state of one claimed task, shared by the handler (main thread) and the heartbeat thread."""

    def __init__(self, claim: Claim, timeout: float | None) -> None:
        self.claim = claim
        self.started = time.monotonic()
        self.timeout = timeout
        self.progress: tuple[float, str | None] = (0.0, None)
        self.progress_dirty = False
        self.cancel_requested = False
        self.timed_out = False
        self.lease_lost = False
        self.hand_back = False
        self.done = False  # the handler returned or raised (read by the heartbeat thread)

    def should_stop(self) -> bool:
        return self.cancel_requested or self.timed_out or self.lease_lost or self.hand_back


class Worker:
    def __init__(self, store: TaskStore, storage: Storage, config: WorkerConfig, log: EventLog | None = None,
                 publisher: Any = None) -> None:
        self.store = store
        self.storage = storage
        self.publisher = publisher  # e.g. SupabaseOutputs: outputs become public URLs
        self.config = config
        self.log = log or EventLog(config.worker_id)
        self.stop_event = threading.Event()
        self.shutdown_started: float | None = None
        self.current: TaskRun | None = None
        self.next_claim: Claim | None = None  # claimed together with the previous task's completion
        self.tasks_done = 0
        self.exit_code = 0
        self._last_maintenance = 0.0
        self._last_seen = 0.0
        self.waker: Waker | None = None
        self._finished = threading.Event()
        self._reported_model: str | None = None

    # ------------------------------------------------------------------ the loop
    def run(self) -> int:
        cfg = self.config
        self.waker = make_waker(self.store.url, listen=cfg.listen, on_event=self.log.emit)
        self._db(lambda: self.store.register_worker(cfg.worker_id, socket.gethostname(), os.getpid(), __version__),
                 "register worker")
        self.log.emit("worker_started", pid=os.getpid(), host=socket.gethostname(), version=__version__,
                      database=self.store.dialect.name, lease_seconds=cfg.lease_seconds,
                      poll_interval=cfg.poll_interval, task_types=cfg.task_types,
                      listening=getattr(self.waker, "listening", self.store.is_sqlite and cfg.listen),
                      outputs=self.storage.files_dir.as_posix() if self.publisher is None else
                      getattr(self.publisher, "description", type(self.publisher).__name__))
        heartbeat = threading.Thread(target=self._heartbeat_loop, daemon=True, name="heartbeat")
        heartbeat.start()
        reason = "stopped"
        try:
            while not self.stop_event.is_set():
                if cfg.max_tasks is not None and self.tasks_done >= cfg.max_tasks:
                    reason = "max_tasks"
                    break
                self._maintenance()
                claim, self.next_claim = self.next_claim, None
                if claim is None:
                    model = self._held_model()
                    claim = self._db(lambda: self.store.claim(cfg.worker_id, cfg.lease_seconds, cfg.task_types,
                                                              model=model, affinity_max_wait=cfg.affinity_max_wait),
                                     "claim")
                if claim is None:
                    if cfg.exit_when_idle and not self._db(self._pending_work, "check pending work"):
                        reason = "idle"
                        break
                    self.waker.wait(cfg.poll_interval, self.stop_event)
                    continue
                self._run_task(claim)
                self.tasks_done += 1
            else:
                reason = "signal"
        finally:
            if self.next_claim is not None:  # claimed along with the last completion, never started
                claim, self.next_claim = self.next_claim, None
                ok = self._db(lambda: self.store.hand_back(claim), "hand back", retry_for=5)
                self.log.emit("task_handed_back", task_id=claim.id, attempt=claim.attempt, ok=ok,
                              reason="the worker stopped before starting it")
            self._finished.set()
            heartbeat.join(timeout=5)
            self._db(lambda: self.store.worker_seen(cfg.worker_id, None, "stopped"), "worker stopped", retry_for=5)
            self.log.emit("worker_stopped", reason=reason, tasks_done=self.tasks_done, exit_code=self.exit_code)
            self.waker.close()
        return self.exit_code

    def _held_model(self) -> str | None:
        """The model the generation engine holds, passed to every claim (affinity); the workers row
        shows it too."""
        model = held_model()
        if model != self._reported_model:
            self._reported_model = model
            self._db(lambda: self.store.worker_model(self.config.worker_id, model), "worker model")
            self.log.emit("worker_model", model=model)
        return model

    def _pending_work(self) -> bool:
        """Anything that could still become ready for us: tasks in progress anywhere (they may unblock
        children), or Queued tasks of our types (waiting on parents or a retry delay)."""
        counts = self.store.count_by_status()
        if counts.get(TaskStatus.IN_PROGRESS):
            return True
        if not counts.get(TaskStatus.QUEUED):
            return False
        if not self.config.task_types:
            return True
        return any(self.store.list_tasks(status=TaskStatus.QUEUED, task_type=t, limit=1)
                   for t in self.config.task_types)

    def _db(self, fn, what: str, retry_for: float | None = None):
        """Database calls of the worker survive outages: retry with backoff, logging each wait."""
        def on_retry(exc: BaseException, delay: float) -> None:
            self.log.emit("database_unavailable", operation=what, error=f"{type(exc).__name__}: {exc}"[:300],
                          retry_in_s=round(delay, 2))
        return self.store.run(fn, retry_for=retry_for, what=what, on_retry=on_retry)

    def _maintenance(self) -> None:
        now = time.monotonic()
        if now - self._last_maintenance < min(5.0, self.config.lease_seconds / 2):
            return
        self._last_maintenance = now
        for item in self._db(self.store.reclaim_expired, "reclaim expired leases"):
            self.log.emit("lease_expired_reclaimed", **item)
        for item in self._db(self.store.sweep_stranded, "sweep stranded tasks"):
            self.log.emit("task_failed", task_id=item["task_id"], error=item["reason"], stranded=True)
        if now - self._last_seen > 15:
            self._last_seen = now
            self._db(lambda: self.store.worker_seen(self.config.worker_id, None, "idle"), "worker seen")

    # ------------------------------------------------------------------ one task
    def _run_task(self, claim: Claim) -> None:
        cfg = self.config
        row = claim.row
        self.log.emit("task_claimed", task_id=claim.id, task_type=claim.task_type, attempt=claim.attempt,
                      max_attempts=row.get("max_attempts"))
        try:
            params = parse_params(row["params"])
        except (ValueError, TypeError) as exc:
            self._finish_failed(claim, str(exc))  # parse_params says why (not JSON, not UTF-8, too deep)
            return
        timeout = row.get("timeout_seconds") or (params.get("timeout_seconds") if isinstance(params, dict) else None)
        try:
            timeout = float(timeout) if timeout is not None else cfg.task_timeout
        except (TypeError, ValueError):
            timeout = cfg.task_timeout
        run = TaskRun(claim, timeout)
        self.current = run
        ctx = TaskContext(
            task_id=claim.id, task_type=claim.task_type, attempt=claim.attempt, worker_id=cfg.worker_id,
            storage=self.storage, project_id=row.get("project_id"), priority=row.get("priority") or 0,
            report_progress=lambda fraction, message: self._on_progress(run, fraction, message),
            is_cancelled=run.should_stop,
            task_output=lambda task_id: self._db(lambda: self.store.output_of(task_id), "read task output"),
            log=self.log.emit,
            cache_get=lambda key: self._db(lambda: self.store.cache_get(key), "cache lookup"),
            cache_put=lambda key, location: self._db(lambda: self.store.cache_put(key, location, claim.id),
                                                     "cache store"),
        )
        keep_work = cfg.keep_work_dirs
        try:
            result = run_handler(claim.task_type, params, ctx)
            if self.publisher is not None and result.output_location and not result.children:
                self._publish(claim, result)  # still under the renewed lease: uploads can take a while
            if isinstance(result.result, dict) and result.result.get("keep_intermediates"):
                keep_work = True
            run.done = True
            self._finish_ok(claim, run, result)
        except TaskCancelled:
            run.done = True
            self._finish_stopped(claim, run)
        except InvalidInput as exc:
            run.done = True
            self._finish_failed(claim, str(exc))
        except FatalWorkerError as exc:
            # Hand the task to a healthy worker, but count the attempt: a task that poisons every worker
            # it touches must end Failed, not loop through restarts forever.
            run.done = True
            message = f"worker {cfg.worker_id} hit a fatal fault: {exc}"
            if claim.attempt >= int(row.get("max_attempts") or 1):
                handed = False
                self._finish_failed(claim, f"gave up after {claim.attempt} attempt(s): {message}")
            else:
                handed = self._db(lambda: self.store.retry_later(claim, message[:4000], 0.0), "hand back")
            self.log.emit("worker_fatal_error", task_id=claim.id, error=str(exc), handed_back=handed)
            self.exit_code = 3
            self.stop_event.set()
        except Exception as exc:  # everything else: retry with backoff until max_attempts
            run.done = True
            if run.should_stop():
                self._finish_stopped(claim, run)
            else:
                detail = f"{type(exc).__name__}: {exc}"
                self.log.emit("task_error", task_id=claim.id, error=detail[:2000],
                              traceback=traceback.format_exc(limit=8)[-4000:], transient=_is_transient(exc))
                self._finish_retry(claim, detail)
        finally:
            run.done = True
            self.current = None
            if not keep_work:
                self.storage.remove_work_dir(claim.id)

    def _publish(self, claim: Claim, result: HandlerResult) -> None:
        """Upload the output (e.g. to Supabase Storage) and record its public URL instead of the local path."""
        if is_url(result.output_location):
            return
        path = self.storage.local_path(result.output_location)
        if not path.is_file():
            raise InvalidInput(f"the handler's output {result.output_location} is not a file, so it cannot be "
                               "published")
        started = time.monotonic()
        url = self.publisher.publish(path, claim.row.get("project_id"))
        self.log.emit("output_published", task_id=claim.id, local=str(path), url=url, bytes=path.stat().st_size,
                      seconds=round(time.monotonic() - started, 3))
        result.output_location = url

    def _on_progress(self, run: TaskRun, fraction: float, message: str | None) -> None:
        run.progress = (fraction, message)
        run.progress_dirty = True

    def _finish_ok(self, claim: Claim, run: TaskRun, result: HandlerResult) -> None:
        if result.children:
            ok = self._db(lambda: self.store.spawn_children(claim, result.children), "spawn children")
            event = "task_waiting_for_children" if ok else "stale_update_ignored"
            self.log.emit(event, task_id=claim.id, attempt=claim.attempt, children=len(result.children))
            return
        cfg = self.config
        # A worker that goes on claims its next task in the same call (on SQLite, the same transaction).
        goes_on = not self.stop_event.is_set() and (cfg.max_tasks is None or self.tasks_done + 1 < cfg.max_tasks)
        if goes_on:
            model = self._held_model()
            ok, self.next_claim = self._db(lambda: self.store.complete_and_claim(
                claim, result.output_location, result.result, worker_id=cfg.worker_id,
                lease_seconds=cfg.lease_seconds, task_types=cfg.task_types, model=model,
                affinity_max_wait=cfg.affinity_max_wait), "complete")
        else:
            ok = self._db(lambda: self.store.complete(claim, result.output_location, result.result), "complete")
        if ok:
            self.log.emit("task_completed", task_id=claim.id, task_type=claim.task_type, attempt=claim.attempt,
                          output_location=result.output_location,
                          seconds=round(time.monotonic() - run.started, 3))
        else:
            self.log.emit("stale_update_ignored", task_id=claim.id, attempt=claim.attempt, update="complete",
                          reason="the task is no longer held by this worker and attempt (lease lost or cancelled)")

    def _finish_failed(self, claim: Claim, message: str) -> None:
        ok = self._db(lambda: self.store.fail(claim, message[:4000]), "fail")
        self.log.emit("task_failed" if ok else "stale_update_ignored", task_id=claim.id, task_type=claim.task_type,
                      attempt=claim.attempt, error=message[:2000], **({} if ok else {"update": "fail"}))

    def _finish_retry(self, claim: Claim, message: str) -> None:
        max_attempts = int(claim.row.get("max_attempts") or 1)
        if claim.attempt >= max_attempts:
            self._finish_failed(claim, f"gave up after {claim.attempt} attempt(s): {message}")
            return
        cfg = self.config
        delay = min(cfg.retry_max_seconds, cfg.retry_base_seconds * 2 ** (claim.attempt - 1))
        delay *= random.uniform(0.75, 1.25)  # jitter: many failures at once do not retry in lockstep
        ok = self._db(lambda: self.store.retry_later(claim, message[:4000], delay), "retry later")
        self.log.emit("task_retry_scheduled" if ok else "stale_update_ignored", task_id=claim.id,
                      attempt=claim.attempt, max_attempts=max_attempts, delay_s=round(delay, 2), error=message[:2000])

    def _finish_stopped(self, claim: Claim, run: TaskRun) -> None:
        if run.lease_lost:
            self.log.emit("stale_update_ignored", task_id=claim.id, attempt=claim.attempt, update="stop",
                          reason="lease lost: another worker may own the task now")
        elif run.hand_back:
            ok = self._db(lambda: self.store.hand_back(claim), "hand back")
            self.log.emit("task_handed_back", task_id=claim.id, attempt=claim.attempt, ok=ok,
                          reason="shutdown grace period expired")
        elif run.timed_out:
            self._finish_failed(claim, f"timed out after {run.timeout:g} s (the task's time limit)")
        else:
            ok = self._db(lambda: self.store.mark_cancelled(claim, "cancelled on request while running"), "cancel")
            self.log.emit("task_cancelled" if ok else "stale_update_ignored", task_id=claim.id,
                          attempt=claim.attempt)

    # ------------------------------------------------------------------ heartbeat thread
    def _heartbeat_loop(self) -> None:
        """One thread for the worker's life (starting one per task would cost more than a short task)."""
        cfg = self.config
        interval = max(0.2, cfg.lease_seconds / 3)
        last_write: dict[str, float] = {}
        seen_task, seen_at = None, 0.0
        while not self._finished.wait(0.25):
            run = self.current
            now = time.monotonic()
            task_id = run.claim.id if run is not None and not run.done else None
            if task_id != seen_task and now - seen_at >= 1.0:  # the workers table: what this worker is doing
                try:
                    self.store.worker_seen(cfg.worker_id, task_id, "running" if task_id else "idle")
                    seen_task, seen_at = task_id, now
                except Exception:
                    pass
            if task_id is None:
                continue
            if run.timeout and not run.timed_out and now - run.started > run.timeout:
                run.timed_out = True
            if self.shutdown_started is not None and not run.hand_back \
                    and now - self.shutdown_started > cfg.shutdown_grace:
                run.hand_back = True
            last = last_write.setdefault(task_id, run.started)
            due = now - last >= interval
            progress_due = run.progress_dirty and now - last >= cfg.progress_min_interval
            if not (due or progress_due):
                continue
            fraction, message = run.progress
            run.progress_dirty = False
            try:
                ok, cancel = self.store.heartbeat(run.claim, cfg.lease_seconds, fraction, message)
            except Exception as exc:  # the database may be restarting: keep trying, the lease has slack
                self.log.emit("heartbeat_failed", task_id=task_id, error=f"{type(exc).__name__}: {exc}"[:300])
                continue
            last_write = {task_id: now}
            if not ok and not run.done:
                run.lease_lost = True
                self.log.emit("lease_lost", task_id=task_id, attempt=run.claim.attempt)
            elif cancel and not run.cancel_requested:
                run.cancel_requested = True
                self.log.emit("cancel_requested", task_id=task_id)

    # ------------------------------------------------------------------ signals
    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.shutdown_started is None:
            self.shutdown_started = time.monotonic()
            self.stop_event.set()
            self.log.emit("shutdown_requested", signal=signal.Signals(signum).name,
                          running_task=self.current.claim.id if self.current else None,
                          grace_s=self.config.shutdown_grace)
            return
        # A second signal: hand the task back (quickly, best effort) and exit at once.
        run = self.current
        held = ([run.claim] if run is not None and not run.done else []) + ([self.next_claim] if self.next_claim else [])
        handed = []
        for claim in held:
            try:
                if self.store.hand_back(claim):
                    handed.append(claim.id)
            except Exception:
                pass
        self.log.emit("worker_stopped", reason="second signal", handed_back=handed)
        os._exit(130)

