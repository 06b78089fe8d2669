"""The errors a handler (or anything below it) raises on purpose, named by what happens next.

A leaf module: it imports nothing from the project, so every layer (storage, downloads, media, handlers,
the worker) can raise and catch these without importing each other.
"""

from __future__ import annotations


class TaskError(Exception):
    """Base of the errors a handler raises on purpose. The message is shown to people: make it clear."""


class InvalidInput(TaskError):
    """The task can never succeed as given (bad params, missing file, wrong size): Failed at once."""


class TransientError(TaskError):
    """Worth another try later (I/O, network, out of memory): Queued again with backoff until max_attempts."""


class TaskCancelled(Exception):
    """Raised inside a handler when the task's cancel was requested; the worker marks it Cancelled."""


class FatalWorkerError(Exception):
    """The process is poisoned (e.g. a CUDA error): the task is handed back and the worker exits non-zero."""
