"""One registry from task_type to handler, with pydantic validation of params.

    @register("noop", params_model=NoopParams)
    def handle_noop(params: NoopParams, ctx: TaskContext) -> HandlerResult: ...

Aliases (the seed's names) map to the same handler. Validation errors become InvalidInput with a
message a person can act on.

Before validation, seed-era payloads go through source.seed_payloads (one translator per legacy type), so
handlers see only their own key names. Keys a task accepts but does not act on are logged once per task
(event `params_ignored`) and recorded as `ignored_keys` in its result; an orchestrator hands its list to the
child that completes it (reserved param PARENT_IGNORED_KEY), so the orchestrator's final result shows them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from source.errors import InvalidInput
from source.local_files import STAGED_FROM_KEY
from source.seed_payloads import QUEUE_KEYS, translate
from source.task_context import HandlerResult, TaskContext
from source.task_limits import clip, excerpt

# Set by the registry on the child that completes an orchestrator: the orchestrator's ignored keys.
PARENT_IGNORED_KEY = "parent_ignored_keys"

# Modules that register handlers when imported. Each task family lives in its own module.
HANDLER_MODULES = [
    "source.handlers.noop",
    "source.handlers.generate",
    "source.handlers.travel",
    "source.handlers.rife_interpolate",
    "source.handlers.openpose",
    "source.handlers.depth",
    "source.handlers.extract_frame",
    "source.handlers.single_image",
    "source.handlers.different_perspective",
    "source.handlers.speech",
    "source.handlers.compose",
    "source.handlers.narrated_video",
    "source.handlers.storyboard",
    "source.handlers.explainer",
    "source.handlers.join_clips",
    "source.handlers.inpaint_frames",
    "source.handlers.edit_video",
]


@dataclass(frozen=True)
class HandlerSpec:
    task_type: str
    func: Callable[[Any, TaskContext], HandlerResult]
    params_model: type[BaseModel] | None
    aliases: tuple[str, ...] = ()


_REGISTRY: dict[str, HandlerSpec] = {}
_loaded = False


def register(task_type: str, *aliases: str, params_model: type[BaseModel] | None = None):
    def decorator(func: Callable[[Any, TaskContext], HandlerResult]):
        spec = HandlerSpec(task_type, func, params_model, tuple(aliases))
        for name in (task_type, *aliases):
            existing = _REGISTRY.get(name)
            if existing is not None and existing.func is not func:
                raise RuntimeError(f"task type {name!r} is registered twice")
            _REGISTRY[name] = spec
        return func

    return decorator


_load_errors: dict[str, str] = {}
_imported: set[str] = set()


def _import(module: str) -> None:
    if module in _imported:
        return
    _imported.add(module)
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:  # the module exists but needs something missing
            _load_errors[module] = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001 - a broken handler module must not take the other task types down
        _load_errors[module] = f"{type(exc).__name__}: {exc}"


def load_handlers(until: str | None = None) -> None:
    """Import handler modules in order, stopping once `until` is registered (so a noop task never
    imports torch)."""
    global _loaded
    if _loaded or (until is not None and until in _REGISTRY):
        return
    for module in HANDLER_MODULES:
        _import(module)
        if until is not None and until in _REGISTRY:
            return
    _loaded = True


def known_task_types() -> list[str]:
    load_handlers()
    return sorted(_REGISTRY)


def get_handler(task_type: str) -> HandlerSpec:
    load_handlers(until=task_type)
    spec = _REGISTRY.get(task_type)
    if spec is None:
        broken = "".join(f"; handler module {m} failed to load ({e})" for m, e in _load_errors.items())
        raise InvalidInput(f"unknown task_type {excerpt(task_type)}; known types: {', '.join(sorted(_REGISTRY))}"
                           f"{broken}")
    return spec


def format_validation_error(task_type: str, exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(clip(p, 40) for p in err.get("loc", ())) or "params"
        problems.append(f"{clip(where, 120)}: {clip(err.get('msg', 'invalid'), 200)}")
    shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10:,} more" if len(problems) > 10 else "")
    return f"invalid params for {task_type}: {shown}"  # messages quote short excerpts, never whole values


def _validate(spec: HandlerSpec, task_type: str, params: Any) -> Any:
    if not isinstance(params, dict):
        raise InvalidInput(f"params of a {task_type} task must be a JSON object, got {type(params).__name__}")
    if spec.params_model is None:
        return params
    try:
        return spec.params_model.model_validate(params)
    except ValidationError as exc:
        raise InvalidInput(format_validation_error(task_type, exc)) from None
    except RecursionError:  # nesting past the validator's stack: the row is at fault, not the worker
        raise InvalidInput(f"params of a {task_type} task nest too deeply to validate") from None


def _field_names(model_cls: type[BaseModel]) -> set[str]:
    names: set[str] = set()
    for name, info in model_cls.model_fields.items():
        names.add(name)
        for alias in (info.alias, info.validation_alias):
            for choice in getattr(alias, "choices", None) or [alias]:
                if isinstance(choice, str):
                    names.add(choice)
    return names


def _extra_keys(model: Any, given: Any, prefix: str = "") -> list[str]:
    """Keys of `given` a params model has no field for: kept aside (extra="allow") or dropped
    (extra="ignore") alike, nested models included."""
    if not isinstance(model, BaseModel) or not isinstance(given, dict):
        return []
    known = _field_names(type(model))
    out = [prefix + k for k in given if k not in known]
    for name in type(model).model_fields:
        value = getattr(model, name, None)
        if isinstance(value, BaseModel):
            out += _extra_keys(value, given.get(name), f"{prefix}{name}.")
    return out


def prepare_params(task_type: str, params: Any) -> tuple[Any, list[str]]:
    """Translate seed names, validate: (the handler's params, the keys it will not act on)."""
    spec = get_handler(task_type)
    if not isinstance(params, dict):
        raise InvalidInput(f"params of a {task_type} task must be a JSON object, got {type(params).__name__}")
    # Keys we add (an orchestrator's ignored keys, the CLI's staging record) are not the task's own.
    params = {k: v for k, v in params.items() if k not in (PARENT_IGNORED_KEY, STAGED_FROM_KEY)}
    translation = translate(task_type, params)
    validated = _validate(spec, task_type, translation.params)
    ignored = translation.ignored_keys
    if ignored is None:
        ignored = _extra_keys(validated, translation.params)
    return validated, sorted({k for k in ignored if k not in QUEUE_KEYS})


def validate_params(task_type: str, params: Any) -> Any:
    """Check params (after seed translation) against the handler's model; raises InvalidInput with every
    problem listed."""
    return prepare_params(task_type, params)[0]


def run_handler(task_type: str, params: Any, ctx: TaskContext) -> HandlerResult:
    spec = get_handler(task_type)
    validated, ignored = prepare_params(task_type, params)
    if ignored:  # once per task, by name: a user sees what had no effect
        ctx.log("params_ignored", task_type=task_type, ignored_keys=ignored)
    inherited = params.get(PARENT_IGNORED_KEY) if isinstance(params, dict) else None
    inherited = [str(k) for k in inherited] if isinstance(inherited, list) else []
    result = spec.func(validated, ctx)
    if result is None:
        result = HandlerResult()
    if not isinstance(result, HandlerResult):
        raise TypeError(f"handler for {task_type} returned {type(result).__name__}, expected HandlerResult")
    recorded = sorted(set(inherited) | set(ignored))
    if recorded:
        result.result = {**(result.result or {}), "ignored_keys": recorded}
    for child in result.children or []:
        if child.completes_parent and ignored:
            child.params = {**child.params, PARENT_IGNORED_KEY: ignored}
    return result
