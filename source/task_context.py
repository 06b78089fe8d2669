"""What a handler gets and what it may raise or return.

A handler is `handle(params, ctx) -> HandlerResult`. It never talks to the database: progress,
cancellation, file locations and other tasks' outputs all come through the context.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from source.errors import (  # noqa: F401 - re-exported: handlers import them from here
    FatalWorkerError,
    InvalidInput,
    TaskCancelled,
    TaskError,
    TransientError,
)

if TYPE_CHECKING:  # pragma: no cover
    from source.storage import Storage


_CHILD_NAMESPACE = uuid.UUID("5b0f3d1e-3c4e-4c55-9a51-6f1d8c1e2a77")


def child_task_id(parent_id: str, key: str) -> str:
    """The deterministic id of an orchestrator's child, so re-running the orchestrator cannot duplicate it."""
    return str(uuid.uuid5(_CHILD_NAMESPACE, f"{parent_id}/{key}"))


@dataclass
class ChildTask:
    """A task an orchestrator asks to enqueue. `key` is unique within the parent and makes the child's id
    deterministic, so re-running the orchestrator never duplicates children."""

    key: str
    task_type: str
    params: dict[str, Any]
    depends_on: list[str] = field(default_factory=list)  # keys of sibling children, or ids of existing tasks
    priority: int | None = None  # default: the parent's priority
    completes_parent: bool = False  # when this child completes, the parent completes with its output
    max_attempts: int | None = None


@dataclass
class HandlerResult:
    output_location: str | None = None  # what goes in the row's output_location (see Storage.location_for)
    result: dict[str, Any] | None = None  # JSON stored in the row's result column
    children: list[ChildTask] | None = None  # orchestrators: enqueue these and wait (no worker is held)


class TaskContext:
    """The small surface a handler sees."""

    def __init__(
        self,
        *,
        task_id: str,
        task_type: str,
        attempt: int,
        worker_id: str,
        storage: Storage,
        project_id: str | None = None,
        report_progress: Callable[[float, str | None], None] | None = None,
        is_cancelled: Callable[[], bool] | None = None,
        task_output: Callable[[str], str | None] | None = None,
        log: Callable[..., None] | None = None,
        priority: int = 0,
        cache_get: Callable[[str], str | None] | None = None,
        cache_put: Callable[[str, str], None] | None = None,
    ) -> None:
        self.task_id = task_id
        self.task_type = task_type
        self.attempt = attempt
        self.worker_id = worker_id
        self.storage = storage
        self.project_id = project_id
        self.priority = priority
        self._report_progress = report_progress or (lambda fraction, message: None)
        self._is_cancelled = is_cancelled or (lambda: False)
        self._task_output = task_output or (lambda task_id: None)
        self._log = log or (lambda event, **fields: None)
        # The output cache shared by every worker on the same database: key (SHA-256 hex) -> output location.
        self.cache_get = cache_get or (lambda key: None)
        self.cache_put = cache_put or (lambda key, location: None)
        self.started_monotonic = time.monotonic()

    # -- cancellation and progress -------------------------------------------------------------
    @property
    def cancel_requested(self) -> bool:
        return bool(self._is_cancelled())

    def check_cancelled(self) -> None:
        """Raise TaskCancelled if a cancel was requested (or the task's time ran out)."""
        if self._is_cancelled():
            raise TaskCancelled(f"task {self.task_id} was cancelled")

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress in [0, 1] (written to the row, throttled) and honour a cancel request."""
        fraction = min(1.0, max(0.0, float(fraction)))
        self._report_progress(fraction, message)
        self.check_cancelled()

    # -- files -------------------------------------------------------------------------------
    @property
    def work_dir(self) -> Path:
        """A private scratch folder for this task (inside the output root)."""
        return self.storage.work_dir(self.task_id)

    def output_path(self, suffix: str, stem: str | None = None) -> Path:
        """A final output path unique to this task, e.g. output_path('.mp4')."""
        return self.storage.output_path(self.task_id, suffix, stem=stem)

    def location_for(self, path: Path) -> str:
        return self.storage.location_for(path)

    def resolve_input(self, ref: str, *, kind: str = "file") -> Path:
        """A local, readable path for an untrusted path or URL from params (downloads are bounded)."""
        # The cancellation check (it includes the task's time limit) can stop a download mid-body.
        return self.storage.resolve_input(ref, kind=kind, should_stop=self._is_cancelled)

    def output_of(self, task_id: str) -> Path:
        """The local file of another task's output (it must be Complete)."""
        location = self._task_output(task_id)
        if not location:
            raise InvalidInput(f"task {task_id} has no output (it does not exist or is not Complete)")
        return self.storage.resolve_input(location, kind="task output", should_stop=self._is_cancelled)

    def log(self, event: str, **fields: Any) -> None:
        self._log(event, task_id=self.task_id, **fields)
