"""Generation engines behind one small protocol, so the bridge never knows an engine's call signature.

An engine:
- `name`, and `decodes_inputs` (True: the bridge's inputs step decodes images / videos into pixels for it;
  False: it gets resolved paths only),
- `revision(spec)`: the model revision that goes into the cache key, known before loading,
- `load(spec, log)` -> `Loaded`: make the model warm (a no-op where the engine loads lazily),
- `render(request, inputs, *, on_step, is_cancelled, work_dir, output_path)` -> `Rendered`: run it,
  calling `on_step(k, n)` after each denoising step (which raises TaskCancelled on a cancel request).
  `work_dir()` gives the task's scratch folder (a call: asking creates it, and most engines never need it).
  A render returns float frames for the bridge to encode, or a finished video at `output_path`.

`get_engine(name)` imports the engine on first use: Wan2GP is never imported unless selected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

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


def get_engine(name: str) -> GenerationEngine:
    if name == "wan2gp":
        from source.generation.engines.wan2gp import Wan2GPEngine

        return Wan2GPEngine()
    from source.generation.engines.diffusers import DiffusersEngine

    return DiffusersEngine()
