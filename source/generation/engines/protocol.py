"""The engine protocol and what its calls return (see the package docstring for the contract)."""


from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from source.generation.inputs import Inputs
from source.generation.model_catalog import ModelSpec
from source.generation.request import GenerationRequest

StepCallback = Callable[[int, int], None]


@dataclass
class Loaded:
    revision: str | None
    seconds: float = 0.0   # 0 when the model was already warm


@dataclass
class Rendered:
    frames: np.ndarray | None = None        # (F, H, W, 3) floats in [0, 1], for the bridge to encode
    video: Path | None = None               # or a finished video (at the requested output path)
    runtime: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    extra_loras: list[dict[str, Any]] = field(default_factory=list)  # e.g. a speed preset's files, for the sidecar


class GenerationEngine(Protocol):
    name: str
    decodes_inputs: bool

    def revision(self, spec: ModelSpec) -> str | None: ...

    def load(self, spec: ModelSpec, log: Callable[..., None]) -> Loaded: ...

    def render(self, request: GenerationRequest, inputs: Inputs, *, on_step: StepCallback,
               is_cancelled: Callable[[], bool], work_dir: Callable[[], Path], output_path: Path) -> Rendered: ...
