"""The one front door for seed-era (Headless-Wan2GP) payloads: key names and shapes -> ours.

The handler registry calls `translate(task_type, params)` before validating a task's params, so every
handler sees only its own (canonical) names and no handler carries seed aliases of its own. There is one
translator per legacy task family:

- `generate` and its aliases, including `standard_wgp_task` (the seed's plain generation, also the type its
  migration gave untyped rows): frames/steps/`*_paths` lists/`additional_loras`/`model_name` -> the
  generation bridge's names; the model follows an alias task type (`i2v` -> the i2v model);
- `single_image`: `orchestrator_details` flattened in (top level wins), `num_inference_steps` -> `steps`,
  `additional_loras` -> `loras`;
- `different_perspective_orchestrator`: `model` -> `model_name`, `num_inference_steps` -> `steps`;
- `travel_orchestrator`: `apply_causvid` -> `use_causvid_lora`, `steps` -> `num_inference_steps` inside
  `orchestrator_details` (the seed's frame arithmetic is the planner's, in source.travel_plan).

Everywhere `use_lightx2v_lora` (the peer's later spelling) means `use_lighti2x_lora`.

A translation also names the keys the task will accept but not act on (`ignored_keys`): the registry logs
them once per task (event `params_ignored`) and records them in the task's result, so a user sees what had
no effect instead of having it dropped without a word. Keys the queue itself reads (`task_id`,
`timeout_seconds`, ...) are not reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from source.errors import InvalidInput

# Read by the queue/worker, not by handlers: never reported as ignored.
QUEUE_KEYS = frozenset({"task_id", "task_type", "timeout_seconds", "project_id", "dependant_on", "priority",
                        "max_attempts"})

GENERATE_TYPES = ("generate", "wgp", "t2v", "i2v", "vace", "flf2v", "standard_wgp_task")


@dataclass
class Translation:
    params: dict[str, Any]
    # None: the handler's params model decides (its extra keys are the ignored ones, see handler_registry)
    ignored_keys: list[str] | None = None
    renamed: dict[str, str] = field(default_factory=dict)  # seed key -> our key, for the debug log


def _rename(p: dict[str, Any], old: str, new: str, renamed: dict[str, str]) -> None:
    """Move p[old] to p[new] unless p[new] is already given (our name wins)."""
    if old not in p:
        return
    value = p.pop(old)
    if p.get(new) is None and value is not None:
        p[new] = value
        renamed[old] = new


def _first(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


def loras_from_additional(extra: Any, what: str = "additional_loras") -> list[dict[str, Any]]:
    """The seed's `additional_loras` {path_or_url: strength} (or a list) -> [{path, multiplier}]."""
    if extra is None or extra == {} or extra == []:
        return []
    if isinstance(extra, dict):
        out = []
        for path, strength in extra.items():
            try:
                out.append({"path": str(path), "multiplier": float(strength)})
            except (TypeError, ValueError):
                raise InvalidInput(f"{what}[{str(path)[:80]!r}]: strength {str(strength)[:20]!r} is not a number") \
                    from None
        return out
    if isinstance(extra, list):
        return [x if isinstance(x, dict) else {"path": str(x), "multiplier": 1.0} for x in extra]
    raise InvalidInput(f"{what} must be an object {{path_or_url: strength}}")


def _generation_keys() -> set[str]:
    """Every name the generation bridge acts on (fields and their aliases)."""
    from source.generation.bridge import GenerationParams

    names: set[str] = set()
    for name, info in GenerationParams.model_fields.items():
        names.add(name)
        alias = info.validation_alias
        for choice in getattr(alias, "choices", None) or ([alias] if isinstance(alias, str) else []):
            if isinstance(choice, str):
                names.add(choice)
    return names


def translate_generate(task_type: str, params: dict[str, Any]) -> Translation:
    from source.generation.model_catalog import default_model_for_task

    p = dict(params)
    renamed: dict[str, str] = {}
    _rename(p, "model_name", "model", renamed)
    if not p.get("model"):
        p["model"] = default_model_for_task(task_type)
    _rename(p, "frames", "video_length", renamed)
    _rename(p, "steps", "num_inference_steps", renamed)
    _rename(p, "use_lightx2v_lora", "use_lighti2x_lora", renamed)
    for seed_key, key in (("image_start_paths", "image_start"), ("image_end_paths", "image_end")):
        if seed_key in p:
            value = p.pop(seed_key)
            if isinstance(value, (list, tuple)) and len(value) > 1:
                raise InvalidInput(f"{seed_key} has {len(value)} images; a generate task takes one "
                                   f"(use travel_between_images for several)")
            if p.get(key) is None and _first(value):
                p[key], renamed[seed_key] = _first(value), key
    if "image_refs_paths" in p:
        refs = p.pop("image_refs_paths")
        if p.get("image_refs") is None and refs:
            p["image_refs"], renamed["image_refs_paths"] = list(refs) if isinstance(refs, (list, tuple)) else [refs], \
                "image_refs"
    if isinstance(p.get("image_refs"), str):
        p["image_refs"] = [p["image_refs"]]
    _rename(p, "video_guide_path", "video_guide", renamed)
    _rename(p, "video_mask_path", "video_mask", renamed)
    if "additional_loras" in p:
        extra = loras_from_additional(p.pop("additional_loras"))
        if extra:
            p["loras"] = list(p.get("loras") or []) + extra
            renamed["additional_loras"] = "loras"
    if "apply_causvid" in p:
        if p.pop("apply_causvid") and not p.get("use_causvid_lora"):
            p["use_causvid_lora"] = True
        renamed["apply_causvid"] = "use_causvid_lora"
    known = _generation_keys()
    ignored = sorted(k for k in p if k not in known and k not in QUEUE_KEYS)
    return Translation(p, ignored, renamed)


def translate_single_image(task_type: str, params: dict[str, Any]) -> Translation:
    p = dict(params)
    renamed: dict[str, str] = {}
    details = p.pop("orchestrator_details", None)
    if isinstance(details, dict):  # the seed's single_image read its settings from here too; top level wins
        merged = dict(details)
        merged.update(p)
        p = merged
    elif details is not None:
        p["orchestrator_details"] = details  # not an object: let validation say so
    _rename(p, "num_inference_steps", "steps", renamed)
    _rename(p, "use_lightx2v_lora", "use_lighti2x_lora", renamed)
    _rename(p, "model_name", "model", renamed)
    if "additional_loras" in p:
        extra = loras_from_additional(p.pop("additional_loras"))
        if extra:
            p["loras"] = list(p.get("loras") or []) + extra
            renamed["additional_loras"] = "loras"
    return Translation(p, None, renamed)


def translate_different_perspective(task_type: str, params: dict[str, Any]) -> Translation:
    p = dict(params)
    renamed: dict[str, str] = {}
    _rename(p, "model", "model_name", renamed)
    _rename(p, "num_inference_steps", "steps", renamed)
    _rename(p, "use_lightx2v_lora", "use_lighti2x_lora", renamed)
    return Translation(p, None, renamed)


def translate_travel_orchestrator(task_type: str, params: dict[str, Any]) -> Translation:
    p = dict(params)
    renamed: dict[str, str] = {}
    details = p.get("orchestrator_details")
    if isinstance(details, dict):
        d = dict(details)
        if "apply_causvid" in d:
            if d.pop("apply_causvid") and not d.get("use_causvid_lora"):
                d["use_causvid_lora"] = True
            renamed["orchestrator_details.apply_causvid"] = "use_causvid_lora"
        for old, new in (("steps", "num_inference_steps"), ("use_lightx2v_lora", "use_lighti2x_lora")):
            sub: dict[str, str] = {}
            _rename(d, old, new, sub)
            renamed.update({f"orchestrator_details.{k}": v for k, v in sub.items()})
        p["orchestrator_details"] = d
    return Translation(p, None, renamed)


TRANSLATORS: dict[str, Callable[[str, dict[str, Any]], Translation]] = {
    **{t: translate_generate for t in GENERATE_TYPES},
    "single_image": translate_single_image,
    "different_perspective_orchestrator": translate_different_perspective,
    "different_perspective": translate_different_perspective,
    "travel_orchestrator": translate_travel_orchestrator,
}


def translate(task_type: str, params: dict[str, Any]) -> Translation:
    """Seed names -> ours for one task's params (a copy; the row's params are never changed)."""
    fn = TRANSLATORS.get(task_type)
    if fn is None:
        return Translation(dict(params), None)
    return fn(task_type, params)
