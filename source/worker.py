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
from enum import Enum
from typing import Any

from source import __version__
from source.downloads import is_url
from source.errors import FatalWorkerError, InvalidInput, TaskCancelled, TransientError
from source.event_log import EventLog
from source.handler_registry import run_handler
from source.storage import Storage
from source.store.records import UndecodableText, parse_params
from source.store.task_store import Claim, TaskStore
from source.store.wakeup import Waker, make_waker
from source.task_context import HandlerResult, TaskContext
from source.task_limits import clip, excerpt, read_params
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
    if isinstance(exc, (TransientError, OSError, MemoryError)):
        return True
    return type(exc).__name__ == "OutOfMemoryError"  # torch.cuda.OutOfMemoryError without importing torch


class StopReason(Enum):
    """Why the heartbeat thread told a running task to stop. When several apply, the earliest listed wins."""

    LEASE_LOST = "lease lost: another worker may own the task now"
    SHUTDOWN_GRACE = "shutdown grace period expired"
    TIMED_OUT = "timed out"
    CANCEL_REQUESTED = "cancelled on request while running"


class OutcomeKind(Enum):
    """How a task run ends; each kind is one store call (or none) and one event (`Worker._record`)."""

    COMPLETED = "complete"
    WAITING_FOR_CHILDREN = "spawn children"
    FAILED = "fail"
    RETRY = "retry later"
    CANCELLED = "cancel"
    HANDED_BACK = "hand back"  # shutdown grace expired: back to the queue, the attempt not spent
    FATAL_HAND_BACK = "fatal hand back"  # the process is poisoned: back to the queue, the attempt counted
    ABANDONED = "abandoned"  # the lease was lost: no write, another worker may own the task


@dataclass
class Outcome:
    kind: OutcomeKind
    message: str = ""  # error_message for FAILED / RETRY / FATAL_HAND_BACK
    result: HandlerResult | None = None
    delay: float = 0.0  # RETRY: seconds before the task is ready again
    fatal: str | None = None  # a FatalWorkerError's text: the worker exits after recording
    error: dict[str, Any] | None = None  # an unexpected exception: the task_error event's fields


class TaskRun:
    """The live state of one claimed task, shared by the handler (main thread) and the heartbeat thread."""

    def __init__(self, claim: Claim, timeout: float | None = None) -> None:
        self.claim = claim
        self.started = time.monotonic()
        self.timeout = timeout
        self.progress: tuple[float, str | None] = (0.0, None)
        self.progress_dirty = False
        self.stops: set[StopReason] = set()
        self.done = False  # the handler returned or raised (read by the heartbeat thread)

    def request_stop(self, reason: StopReason) -> bool:
        """Record a reason to stop; True the first time this reason is given."""
        if reason in self.stops:
            return False
        self.stops.add(reason)
        return True

    def stop_reason(self) -> StopReason | None:
        return next((reason for reason in StopReason if reason in self.stops), None)

    def should_stop(self) -> bool:
        return bool(self.stops)


def classify(run: TaskRun, result: HandlerResult | None, exc: BaseException | None,
             config: WorkerConfig) -> Outcome:
    """The one place that decides how a run ends, from what the handler did and why it was told to stop."""
    claim = run.claim
    if exc is None:
        kind = OutcomeKind.WAITING_FOR_CHILDREN if result.children else OutcomeKind.COMPLETED
        return Outcome(kind, result=result)
    reason = run.stop_reason()
    if isinstance(exc, TaskCancelled) or (reason is not None and not isinstance(exc, (InvalidInput, FatalWorkerError))):
        # A handler told to stop may raise anything on its way out: the stop reason decides.
        if reason is StopReason.LEASE_LOST:
            return Outcome(OutcomeKind.ABANDONED, reason.value)
        if reason is StopReason.SHUTDOWN_GRACE:
            return Outcome(OutcomeKind.HANDED_BACK, reason.value)
        if reason is StopReason.TIMED_OUT:
            return Outcome(OutcomeKind.FAILED, f"timed out after {run.timeout:g} s (the task's time limit)")
        return Outcome(OutcomeKind.CANCELLED, StopReason.CANCEL_REQUESTED.value)
    if isinstance(exc, InvalidInput):
        return Outcome(OutcomeKind.FAILED, str(exc))
    exhausted = claim.attempt >= int(claim.row.get("max_attempts") or 1)
    if isinstance(exc, FatalWorkerError):
        # Hand the task to a healthy worker, but count the attempt: a task that poisons every worker
        # it touches must end Failed, not loop through restarts forever.
        message = f"worker {config.worker_id} hit a fatal fault: {exc}"
        if exhausted:
            return Outcome(OutcomeKind.FAILED, f"gave up after {claim.attempt} attempt(s): {message}", fatal=str(exc))
        return Outcome(OutcomeKind.FATAL_HAND_BACK, message, fatal=str(exc))
    # Everything else: retry with backoff until max_attempts.
    detail = f"{type(exc).__name__}: {exc}"
    error = {"error": detail[:2000], "transient": _is_transient(exc),
             "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=8))[-4000:]}
    if exhausted:
        return Outcome(OutcomeKind.FAILED, f"gave up after {claim.attempt} attempt(s): {detail}", error=error)
    delay = min(config.retry_max_seconds, config.retry_base_seconds * 2 ** (claim.attempt - 1))
    delay *= random.uniform(0.75, 1.25)  # jitter: many failures at once do not retry in lockstep
    return Outcome(OutcomeKind.RETRY, detail, delay=delay, error=error)


def _storable(message: str) -> str:
    """An error_message any database column takes: PostgreSQL text refuses NUL characters."""
    # and a lone surrogate (from a JSON "\\ud800") cannot be encoded for either database
    return message.replace("\x00", "\\0").encode("utf-8", "replace").decode("utf-8")[:4000]


class _Stopping(Exception):
    """The worker was told to stop while an interruptible database call waited out an outage."""


@dataclass
class _HeartbeatState:
    seen_task: str | None = None  # what the workers table last said this worker runs
    seen_at: float = 0.0
    last_write: dict[str, float] = field(default_factory=dict)  # task id -> last heartbeat write


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
            reason = self._loop()
        except _Stopping:  # a signal arrived while a database outage was being waited out
            reason = "signal"
        finally:
            if self.next_claim is not None:  # claimed along with the last completion, never started
                claim, self.next_claim = self.next_claim, None
                ok = self._db(lambda: self.store.hand_back(claim), "hand back", retry_for=5)
                self.log.emit("task_handed_back", task_id=claim.id, attempt=claim.attempt, ok=ok,
                              reason="the worker stopped before starting it")
            self._finished.set()
            heartbeat.join(timeout=5)
            try:
                self._db(lambda: self.store.worker_seen(cfg.worker_id, None, "stopped"), "worker stopped",
                         retry_for=5)
            except Exception as exc:  # noqa: BLE001 - the database is down: still stop cleanly, with our exit code
                self.log.emit("database_unavailable", operation="worker stopped", error=clip(f"{exc}", 300))
            self.log.emit("worker_stopped", reason=reason, tasks_done=self.tasks_done, exit_code=self.exit_code)
            self.waker.close()
        return self.exit_code

    def _loop(self) -> str:
        """Claim and run tasks until told to stop; returns why it stopped."""
        cfg = self.config
        while not self.stop_event.is_set():
            if cfg.max_tasks is not None and self.tasks_done >= cfg.max_tasks:
                return "max_tasks"
            self._maintenance()
            claim, self.next_claim = self.next_claim, None
            if claim is None:
                model = self._held_model()
                claim = self._db(lambda model=model: self.store.claim(
                    cfg.worker_id, cfg.lease_seconds, cfg.task_types, model=model,
                    affinity_max_wait=cfg.affinity_max_wait), "claim", interruptible=True)
            if claim is None:
                if cfg.exit_when_idle and not self._db(self._pending_work, "check pending work", interruptible=True):
                    return "idle"
                self.waker.wait(cfg.poll_interval, self.stop_event)
                continue
            self._run_task(claim)
            self.tasks_done += 1
        return "signal"

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

    def _db(self, fn, what: str, retry_for: float | None = None, interruptible: bool = False):
        """Database calls of the worker survive outages: retry with backoff, logging each wait. An
        interruptible call (one that holds nothing: claim, maintenance) gives up once the worker is told to
        stop, so a signal is not ignored for as long as the database stays unreachable."""
        def on_retry(exc: BaseException, delay: float) -> None:
            self.log.emit("database_unavailable", operation=what, error=f"{type(exc).__name__}: {exc}"[:300],
                          retry_in_s=round(delay, 2))
            if interruptible and self.stop_event.is_set():
                raise _Stopping
        return self.store.run(fn, retry_for=retry_for, what=what, on_retry=on_retry)

    def _maintenance(self) -> None:
        now = time.monotonic()
        if now - self._last_maintenance < min(5.0, self.config.lease_seconds / 2):
            return
        self._last_maintenance = now
        for item in self._db(self.store.reclaim_expired, "reclaim expired leases", interruptible=True):
            self.log.emit("lease_expired_reclaimed", **item)
        for item in self._db(self.store.sweep_stranded, "sweep stranded tasks", interruptible=True):
            self.log.emit("task_failed", task_id=item["task_id"], error=item["reason"], stranded=True)
        if now - self._last_seen > 15:
            self._last_seen = now
            self._db(lambda: self.store.worker_seen(self.config.worker_id, None, "idle"), "worker seen",
                     interruptible=True)

    # ------------------------------------------------------------------ one task
    def _run_task(self, claim: Claim) -> None:
        """Claimed -> params read under the row caps -> handler (+ publish) -> one outcome, recorded once."""
        self.log.emit("task_claimed", task_id=claim.id, task_type=clip(claim.task_type),
                      attempt=claim.attempt, max_attempts=claim.row.get("max_attempts"))
        run, result, error = TaskRun(claim), None, None
        try:
            try:
                raw = claim.row["params"]
                if isinstance(raw, UndecodableText):  # not UTF-8: parse_params says where, as InvalidInput
                    try:
                        parse_params(raw)
                    except ValueError as exc:
                        raise InvalidInput(str(exc)) from None
                params = read_params(raw)  # anything wrong in the row: InvalidInput
                run.timeout = self._time_limit(claim.row, params)
                self.current = run
                result = run_handler(claim.task_type, params, self._context(run))
                if self.publisher is not None and result.output_location and not result.children:
                    self._publish(claim, result)  # still under the renewed lease: uploads can take a while
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - nothing a task does may end the process
                error = exc
            finally:
                run.done = True
            outcome = classify(run, result, error, self.config)
            self._record(run, outcome)
        finally:
            self.current = None
            keep = self.config.keep_work_dirs or (result is not None and isinstance(result.result, dict)
                                                  and bool(result.result.get("keep_intermediates")))
            if not keep:
                self.storage.remove_work_dir(claim.id)

    def _time_limit(self, row: dict[str, Any], params: Any) -> float | None:
        """The row's timeout_seconds, else params' timeout_seconds, else the worker's --task-timeout."""
        limit = row.get("timeout_seconds") or (params.get("timeout_seconds") if isinstance(params, dict) else None)
        try:
            return float(limit) if limit is not None else self.config.task_timeout
        except (TypeError, ValueError, OverflowError):
            return self.config.task_timeout

    def _context(self, run: TaskRun) -> TaskContext:
        claim, row, cfg = run.claim, run.claim.row, self.config
        return TaskContext(
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

    # ------------------------------------------------------------------ recording an outcome
    def _record(self, run: TaskRun, outcome: Outcome) -> None:
        """Write the outcome; a fatal fault then stops the worker."""
        try:
            ok = self._write(run, outcome)
        except Exception as exc:  # noqa: BLE001 - e.g. a result the database refuses: the task fails, not the worker
            detail = f"{type(exc).__name__}: {excerpt(str(exc), 300)}"
            self.log.emit("outcome_not_recorded", task_id=run.claim.id, outcome=outcome.kind.value, error=detail)
            ok = self._write(run, Outcome(OutcomeKind.FAILED, f"the worker could not record the task's outcome "
                                                               f"({outcome.kind.value}): {detail}"))
        if outcome.fatal is not None:
            self.log.emit("worker_fatal_error", task_id=run.claim.id, error=outcome.fatal,
                          handed_back=bool(ok) and outcome.kind is OutcomeKind.FATAL_HAND_BACK)
            self.exit_code = 3
            self.stop_event.set()

    def _write(self, run: TaskRun, outcome: Outcome) -> bool:
        """The outcome's one guarded store call and its one event (stale_update_ignored when the guard
        refused: the task is no longer held by this worker and attempt). Returns whether the write applied."""
        claim, kind = run.claim, outcome.kind
        if outcome.error is not None:
            self.log.emit("task_error", task_id=claim.id, **outcome.error)
        message = _storable(outcome.message)
        fields: dict[str, Any] = {"task_id": claim.id}
        stale: dict[str, Any] | None = None  # the stale_update_ignored fields when the guard refuses
        if kind is OutcomeKind.COMPLETED:
            ok = self._complete(claim, outcome.result)
            event = "task_completed"
            fields.update(task_type=claim.task_type, attempt=claim.attempt,
                          output_location=outcome.result.output_location,
                          seconds=round(time.monotonic() - run.started, 3))
            stale = {"task_id": claim.id, "attempt": claim.attempt, "update": "complete",
                     "reason": "the task is no longer held by this worker and attempt (lease lost or cancelled)"}
        elif kind is OutcomeKind.WAITING_FOR_CHILDREN:
            children = outcome.result.children
            ok = self._db(lambda: self.store.spawn_children(claim, children), "spawn children")
            event = "task_waiting_for_children"
            fields.update(attempt=claim.attempt, children=len(children))
            stale = fields
        elif kind is OutcomeKind.FAILED:
            ok = self._db(lambda: self.store.fail(claim, message), "fail")
            event = "task_failed"
            fields.update(task_type=clip(claim.task_type), attempt=claim.attempt, error=message[:2000])
            stale = {**fields, "update": "fail"}
        elif kind is OutcomeKind.RETRY:
            ok = self._db(lambda: self.store.retry_later(claim, message, outcome.delay), "retry later")
            event = "task_retry_scheduled"
            fields.update(attempt=claim.attempt, max_attempts=int(claim.row.get("max_attempts") or 1),
                          delay_s=round(outcome.delay, 2), error=message[:2000])
            stale = fields
        elif kind is OutcomeKind.CANCELLED:
            ok = self._db(lambda: self.store.mark_cancelled(claim, message), "cancel")
            event = "task_cancelled"
            fields.update(attempt=claim.attempt)
            stale = fields
        elif kind is OutcomeKind.HANDED_BACK:  # reported as handed back either way, with ok
            ok = self._db(lambda: self.store.hand_back(claim), "hand back")
            event = "task_handed_back"
            fields.update(attempt=claim.attempt, ok=ok, reason=message)
        elif kind is OutcomeKind.FATAL_HAND_BACK:  # reported by worker_fatal_error below
            ok = self._db(lambda: self.store.retry_later(claim, message, 0.0), "hand back")
            event = None
        else:  # ABANDONED: writing anything could overwrite the new owner's work
            ok, event = False, None
            stale = {"task_id": claim.id, "attempt": claim.attempt, "update": "stop", "reason": message}
        if not ok and stale is not None:
            self.log.emit("stale_update_ignored", **stale)
        elif event is not None:
            self.log.emit(event, **fields)
        return bool(ok)

    def _complete(self, claim: Claim, result: HandlerResult) -> bool:
        """Complete the task; a worker that goes on claims its next task in the same call (on SQLite, the
        same transaction)."""
        cfg = self.config
        goes_on = not self.stop_event.is_set() and (cfg.max_tasks is None or self.tasks_done + 1 < cfg.max_tasks)
        if not goes_on:
            return self._db(lambda: self.store.complete(claim, result.output_location, result.result), "complete")
        model = self._held_model()
        ok, self.next_claim = self._db(lambda: self.store.complete_and_claim(
            claim, result.output_location, result.result, worker_id=cfg.worker_id,
            lease_seconds=cfg.lease_seconds, task_types=cfg.task_types, model=model,
            affinity_max_wait=cfg.affinity_max_wait), "complete")
        return ok

    # ------------------------------------------------------------------ heartbeat thread
    def _heartbeat_loop(self) -> None:
        """One thread for the worker's life (starting one per task would cost more than a short task).
        Every quarter second: report what the worker is doing, turn limits into stop reasons, and renew the
        lease (writing progress, reading cancel requests) when due."""
        beat = _HeartbeatState()
        while not self._finished.wait(0.25):
            run = self.current
            run = run if run is not None and not run.done else None
            now = time.monotonic()
            self._report_activity(beat, run, now)
            if run is None:
                continue
            self._check_limits(run, now)
            if self._renewal_due(beat, run, now):
                self._renew_lease(beat, run, now)

    def _report_activity(self, beat: _HeartbeatState, run: TaskRun | None, now: float) -> None:
        """The workers table says which task this worker runs (at most once a second)."""
        task_id = run.claim.id if run is not None else None
        if task_id == beat.seen_task or now - beat.seen_at < 1.0:
            return
        try:
            self.store.worker_seen(self.config.worker_id, task_id, "running" if task_id else "idle")
            beat.seen_task, beat.seen_at = task_id, now
        except Exception:  # noqa: BLE001 - best effort: the next beat tries again
            pass

    def _check_limits(self, run: TaskRun, now: float) -> None:
        """The task's time limit and the shutdown grace period become stop reasons."""
        if run.timeout and now - run.started > run.timeout:
            run.request_stop(StopReason.TIMED_OUT)
        if self.shutdown_started is not None and now - self.shutdown_started > self.config.shutdown_grace:
            run.request_stop(StopReason.SHUTDOWN_GRACE)

    def _renewal_due(self, beat: _HeartbeatState, run: TaskRun, now: float) -> bool:
        """A third of the lease has passed since the last write, or fresh progress waited long enough."""
        last = beat.last_write.setdefault(run.claim.id, run.started)
        if now - last >= max(0.2, self.config.lease_seconds / 3):
            return True
        return run.progress_dirty and now - last >= self.config.progress_min_interval

    def _renew_lease(self, beat: _HeartbeatState, run: TaskRun, now: float) -> None:
        """One guarded write: lease + progress. It reports a lost lease or a cancel request."""
        fraction, message = run.progress
        run.progress_dirty = False
        try:
            ok, cancel = self.store.heartbeat(run.claim, self.config.lease_seconds, fraction, message)
        except Exception as exc:  # noqa: BLE001 - the database may be restarting: keep trying, the lease has slack
            self.log.emit("heartbeat_failed", task_id=run.claim.id, error=f"{type(exc).__name__}: {exc}"[:300])
            return
        beat.last_write = {run.claim.id: now}
        if not ok and not run.done:
            if run.request_stop(StopReason.LEASE_LOST):
                self.log.emit("lease_lost", task_id=run.claim.id, attempt=run.claim.attempt)
        elif cancel and run.request_stop(StopReason.CANCEL_REQUESTED):
            self.log.emit("cancel_requested", task_id=run.claim.id)

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
        held = [run.claim] if run is not None and not run.done else []
        held += [self.next_claim] if self.next_claim else []
        handed = []
        for claim in held:
            try:
                if self.store.hand_back(claim):
                    handed.append(claim.id)
            except Exception:  # noqa: BLE001 - best effort: the process exits now either way
                pass
        self.log.emit("worker_stopped", reason="second signal", handed_back=handed)
        os._exit(130)

