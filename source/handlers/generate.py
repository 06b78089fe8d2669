"""`generate` (aliases `wgp`, `t2v`, `i2v`, `vace`, `flf2v`): one video through the generation bridge.

Accepts the contract's names (source.generation.bridge.GenerationParams) and the seed worker's:
frames / video_length, steps / num_inference_steps, image_start_paths / image_end_paths / image_refs_paths
(lists), video_guide_path / video_mask_path, additional_loras {path_or_url: strength}, model_name.
When the task type is an alias such as `i2v` and no model is given, the model follows the alias.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from source.handler_registry import register
from source.errors import InvalidInput
from source.task_context import HandlerResult, TaskContext


class GenerateParams(BaseModel):
    """Loose on purpose: the seed's payloads carry many UI keys; the bridge validates what it uses."""

    model_config = ConfigDict(extra="allow")


def _first(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


def to_generation_params(raw: dict[str, Any], task_type: str) -> dict[str, Any]:
    """Map the seed's key names onto GenerationParams' names."""
    from source.generation.model_catalog import default_model_for_task

    p = dict(raw)
    if not p.get("model"):
        p["model"] = p.get("model_name") or default_model_for_task(task_type)
    if p.get("video_length") is None and p.get("frames") is not None:
        p["video_length"] = p.pop("frames")
    if p.get("num_inference_steps") is None and p.get("steps") is not None:
        p["num_inference_steps"] = p.pop("steps")
    for seed_key, key in (("image_start_paths", "image_start"), ("image_end_paths", "image_end")):
        if p.get(key) is None and p.get(seed_key):
            value = p[seed_key]
            if isinstance(value, (list, tuple)) and len(value) > 1:
                raise InvalidInput(f"{seed_key} has {len(value)} images; a generate task takes one "
                                   f"(use travel_between_images for several)")
            p[key] = _first(value)
    if p.get("image_refs") is None and p.get("image_refs_paths"):
        refs = p["image_refs_paths"]
        p["image_refs"] = list(refs) if isinstance(refs, (list, tuple)) else [refs]
    for seed_key, key in (("video_guide_path", "video_guide"), ("video_mask_path", "video_mask")):
        if p.get(key) is None and p.get(seed_key):
            p[key] = p[seed_key]
    if isinstance(p.get("image_refs"), str):
        p["image_refs"] = [p["image_refs"]]
    loras = list(p.get("loras") or [])
    extra = p.get("additional_loras")
    if isinstance(extra, dict):
        loras += [{"path": k, "multiplier": float(v)} for k, v in extra.items()]
    elif isinstance(extra, list):
        loras += [x if isinstance(x, dict) else {"path": str(x), "multiplier": 1.0} for x in extra]
    elif extra:
        raise InvalidInput("additional_loras must be an object {path_or_url: strength}")
    if loras:
        p["loras"] = loras
    if p.get("apply_causvid") and not p.get("use_causvid_lora"):
        p["use_causvid_lora"] = True
    return p


@register("generate", "wgp", "t2v", "i2v", "vace", "flf2v", params_model=GenerateParams)
def handle_generate(params: GenerateParams, ctx: TaskContext) -> HandlerResult:
    from source.generation.bridge import GenerationParams, generate_single_video

    raw = params.model_dump()
    gen = generate_single_video(ctx, GenerationParams.parse(to_generation_params(raw, ctx.task_type)))
    return HandlerResult(
        output_location=ctx.location_for(gen.video_path),
        result={"seed": gen.seed, "frames": gen.frames, "width": gen.width, "height": gen.height, "fps": gen.fps,
                "cache_hit": gen.cache_hit, "sidecar": ctx.location_for(gen.sidecar_path),
                "adjustments": gen.adjustments},
    )
