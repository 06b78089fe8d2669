"""Warm instances: a model, a detector or a session made once per process and kept for its life.

Loading a model costs seconds (on a GPU, tens of seconds); a worker that runs for days loads each once.
`Warm(make)` makes the instance for a key on first use, under a lock (a heartbeat thread and a handler may
ask at once), and returns the same one after that. `keep=1` holds only the latest key: asking for another
first drops (and closes) the one held, so two large models are never in memory together.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class Warm(Generic[T]):
    def __init__(self, make: Callable[[Hashable], T], *, keep: int | None = None,
                 close: Callable[[T], None] | None = None) -> None:
        self._make = make
        self._keep = keep
        self._close = close
        self._held: dict[Hashable, T] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable = None, make: Callable[[], T] | None = None) -> T:
        """The instance for `key`, made by `make()` (else the factory given at construction) if missing."""
        with self._lock:
            if key in self._held:
                return self._held[key]
            if self._keep is not None:
                while len(self._held) >= self._keep:  # free the old one before loading the new
                    self._discard(next(iter(self._held)))
            instance = make() if make is not None else self._make(key)
            self._held[key] = instance
            return instance

    def held(self) -> list[T]:
        with self._lock:
            return list(self._held.values())

    def clear(self) -> None:
        """Drop (and close) every instance: the next get() makes a new one."""
        with self._lock:
            for key in list(self._held):
                self._discard(key)

    def _discard(self, key: Hashable) -> None:
        instance = self._held.pop(key)
        if self._close is not None:
            self._close(instance)
