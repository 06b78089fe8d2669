"""Tiny model fixtures (built offline once per machine, loaded with from_pretrained).

- `tiny_models`: builds (or finds) every tiny pipeline in $HEADLESS_MODEL_CACHE/tiny and returns that folder,
  so tests can use model="tiny-t2v" / "tiny-i2v" / "tiny-flf2v" / "tiny-vace" / "tiny-i2v22" cheaply.
- `tiny_loras`: paths of tiny LoRA files ({"t2v_wan", "t2v_peft", "i2v_wan", "i2v22_wan"}).
- `gen_ctx`: a factory for TaskContexts on a temp Storage with a dict-backed output cache.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def tiny_models() -> Path:
    from source.generation.tiny_models import ensure_all_tiny_models

    return ensure_all_tiny_models()


@pytest.fixture(scope="session")
def tiny_loras(tiny_models) -> dict[str, Path]:
    from source.generation.tiny_models import ensure_tiny_lora

    return {
        "t2v_wan": ensure_tiny_lora("t2v", "wan"),
        "t2v_peft": ensure_tiny_lora("t2v", "peft"),
        "i2v_wan": ensure_tiny_lora("i2v", "wan"),
        "i2v22_wan": ensure_tiny_lora("i2v22", "wan"),
    }


class GenCtxFactory:
    """Builds TaskContexts sharing one storage, one dict cache and one event list."""

    def __init__(self, root: Path) -> None:
        from source.storage import Storage

        self.storage = Storage(root / "files", input_roots=[root])
        self.root = root
        self.cache: dict[str, str] = {}
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.progress: list[tuple[float, str | None]] = []
        self._ids = itertools.count(1)

    def __call__(self, *, task_type: str = "generate", is_cancelled=None, task_id: str | None = None):
        from source.task_context import TaskContext

        return TaskContext(
            task_id=task_id or f"t{next(self._ids)}", task_type=task_type, attempt=1, worker_id="test",
            storage=self.storage,
            report_progress=lambda f, m: self.progress.append((f, m)),
            is_cancelled=is_cancelled,
            log=lambda event, **fields: self.events.append((event, fields)),
            cache_get=self.cache.get,
            cache_put=self.cache.__setitem__,
        )

    def event_names(self) -> list[str]:
        return [e for e, _ in self.events]


@pytest.fixture
def gen_ctx(tmp_path, tiny_models) -> GenCtxFactory:
    return GenCtxFactory(tmp_path)
