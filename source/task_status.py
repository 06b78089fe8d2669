"""The status words of a task row, in one enum (a leaf module: no database or third-party imports).

The words are the seed's (Headless-Wan2GP) and are stored as text, so apps that read or write the
`tasks` table directly keep working. `TaskStatus` is a `str` enum: members compare equal to the stored
text (`TaskStatus.QUEUED == "Queued"`) and format as it.
"""

from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    QUEUED = "Queued"
    IN_PROGRESS = "In Progress"
    COMPLETE = "Complete"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


# A task in one of these never changes again on its own (only retry/regenerate re-queue it).
TERMINAL = (TaskStatus.COMPLETE, TaskStatus.FAILED, TaskStatus.CANCELLED)
# Ended without an output: whatever waits on such a task can never run.
ENDED_BADLY = (TaskStatus.FAILED, TaskStatus.CANCELLED)
