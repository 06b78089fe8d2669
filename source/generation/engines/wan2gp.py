"""The optional Wan2GP engine behind the engine protocol: input paths (not pixels) and the request go to
WanGP as its settings dict; WanGP writes the video itself. See `source.generation.wan2gp_engine`."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from source.generation.engines.protocol import Loaded, Rendered, StepCallback
from source.generation.inputs import Inputs
from source.generation.model_catalog import ModelSpec
from source.generation.request import GenerationRequest


class Wan2GPEngine:
    name = "wan2gp"
    decodes_inputs = False

    def revision(self, spec: ModelSpec) -> str | None:
        return spec.revision

    def load(self, spec: ModelSpec, log: Callable[..., None]) -> Loaded:
        return Loaded(spec.revision)  # WanGP loads (and swaps) models inside its own job runner

    def render(self, request: GenerationRequest, inputs: Inputs, *, on_step: StepCallback,
               is_cancelled: Callable[[], bool], work_dir: Callable[[], Path], output_path: Path) -> Rendered:
        from source.generation import wan2gp_engine

        t0 = time.perf_counter()
        video = wan2gp_engine.generate(wan2gp_engine.build_settings(request, inputs.paths, inputs.loras),
                                       work_dir=work_dir(), output_path=output_path, on_step=on_step,
                                       is_cancelled=is_cancelled)
        return Rendered(video=video, runtime={"engine": "wan2gp"}, timings={"generate_s": time.perf_counter() - t0})
