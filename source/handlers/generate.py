"""`generate` (aliases `wgp`, `t2v`, `i2v`, `vace`, `flf2v`, `standard_wgp_task`): one video through the
generation bridge.

Takes the bridge's names (source.generation.bridge.GenerationParams). The seed worker's names (frames,
steps, image_*_paths lists, additional_loras, model_name, ...) and the model an alias task type implies are
translated before validation by source.seed_payloads, which also names the keys that have no effect here
(the registry records them as `ignored_keys`). `standard_wgp_task` is the seed's name for a plain
generation, and the task type its migration gave rows that had none.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from source.handler_registry import register
from source.task_context import HandlerResult, TaskContext


class GenerateParams(BaseModel):
    """Loose on purpose: the bridge validates what it uses; the translator reports the rest."""

    model_config = ConfigDict(extra="allow")


@register("generate", "wgp", "t2v", "i2v", "vace", "flf2v", "standard_wgp_task", params_model=GenerateParams)
def handle_generate(params: GenerateParams, ctx: TaskContext) -> HandlerResult:
    from source.generation.bridge import GenerationParams, generate_single_video

    gen = generate_single_video(ctx, GenerationParams.parse(params.model_dump()))
    return HandlerResult(
        output_location=ctx.location_for(gen.video_path),
        result={"seed": gen.seed, "frames": gen.frames, "width": gen.width, "height": gen.height, "fps": gen.fps,
                "cache_hit": gen.cache_hit, "sidecar": ctx.location_for(gen.sidecar_path),
                "adjustments": gen.adjustments},
    )
