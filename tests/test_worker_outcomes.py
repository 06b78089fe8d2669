"""The worker's one decision table: what the handler did plus why it was told to stop -> one outcome.
(The outcomes' store calls and events are exercised through real worker processes in test_queue_workers.)"""

from __future__ import annotations

import pytest

from source.errors import FatalWorkerError, InvalidInput, TaskCancelled, TransientError
from source.store.task_store import Claim
from source.task_context import ChildTask, HandlerResult
from source.worker import OutcomeKind, StopReason, TaskRun, WorkerConfig, classify

CONFIG = WorkerConfig(worker_id="W", retry_base_seconds=10.0, retry_max_seconds=600.0)


def run_of(attempt: int = 1, max_attempts: int = 3, stops: tuple[StopReason, ...] = (), timeout=None) -> TaskRun:
    run = TaskRun(Claim({"id": "t", "task_type": "noop", "attempts": attempt, "max_attempts": max_attempts,
                         "worker_id": "W"}), timeout)
    for reason in stops:
        run.request_stop(reason)
    return run


@pytest.mark.parametrize("stops, exc, kind", [
    ((), None, OutcomeKind.COMPLETED),
    ((StopReason.CANCEL_REQUESTED,), None, OutcomeKind.COMPLETED),  # finished anyway: the guard decides
    ((), InvalidInput("bad"), OutcomeKind.FAILED),
    ((StopReason.CANCEL_REQUESTED,), InvalidInput("bad"), OutcomeKind.FAILED),
    ((), TransientError("later"), OutcomeKind.RETRY),
    ((), RuntimeError("bug"), OutcomeKind.RETRY),
    ((StopReason.CANCEL_REQUESTED,), TaskCancelled(), OutcomeKind.CANCELLED),
    ((), TaskCancelled(), OutcomeKind.CANCELLED),
    ((StopReason.CANCEL_REQUESTED,), RuntimeError("stopping"), OutcomeKind.CANCELLED),
    ((StopReason.TIMED_OUT,), TaskCancelled(), OutcomeKind.FAILED),
    ((StopReason.SHUTDOWN_GRACE, StopReason.TIMED_OUT), TaskCancelled(), OutcomeKind.HANDED_BACK),
    ((StopReason.CANCEL_REQUESTED, StopReason.LEASE_LOST), TaskCancelled(), OutcomeKind.ABANDONED),
    ((), FatalWorkerError("cuda"), OutcomeKind.FATAL_HAND_BACK),
])
def test_classify(stops, exc, kind):
    outcome = classify(run_of(stops=stops, timeout=5.0), None if exc else HandlerResult(), exc, CONFIG)
    assert outcome.kind is kind


def test_outcome_details():
    waiting = classify(run_of(), HandlerResult(children=[ChildTask("a", "noop", {})]), None, CONFIG)
    assert waiting.kind is OutcomeKind.WAITING_FOR_CHILDREN
    timed = classify(run_of(stops=(StopReason.TIMED_OUT,), timeout=2.5), None, TaskCancelled(), CONFIG)
    assert timed.message == "timed out after 2.5 s (the task's time limit)"
    retry = classify(run_of(attempt=2), None, OSError("disk"), CONFIG)
    assert 15 <= retry.delay <= 25 and retry.error["transient"] and "OSError: disk" in retry.message
    last = classify(run_of(attempt=3), None, OSError("disk"), CONFIG)
    assert last.kind is OutcomeKind.FAILED and last.message.startswith("gave up after 3 attempt(s): OSError")
    fatal = classify(run_of(attempt=3), None, FatalWorkerError("cuda"), CONFIG)
    assert fatal.kind is OutcomeKind.FAILED and fatal.fatal == "cuda" and "fatal fault" in fatal.message
