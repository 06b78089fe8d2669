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

from source.generation.engines.protocol import GenerationEngine, Loaded, Rendered, StepCallback

__all__ = ["GenerationEngine", "Loaded", "Rendered", "StepCallback", "get_engine"]


def get_engine(name: str) -> GenerationEngine:
    if name == "wan2gp":
        from source.generation.engines.wan2gp import Wan2GPEngine

        return Wan2GPEngine()
    from source.generation.engines.diffusers import DiffusersEngine

    return DiffusersEngine()
