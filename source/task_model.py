"""Which model a task needs, and which model this worker holds: the two sides of model affinity.

A task's model is computed once, at insert, into the `model` column (NULL: any worker suits it). Only
task types that load a generation model have one: the model their params name (`model`, or the seed's
`model_name`), else the task type's default, resolved through the model catalog so aliases meet
(`vace_14B` and `wan2.1-vace-14b` are one model). A name the catalog does not know is kept as given.
Orchestrators and non-generating tasks count as "any". Direct SQL inserts get the same column from the
`headless_tasks_model` trigger (source/store/sql.py), which reads `model_names`, the catalog's names
written by workers (`name_pairs`).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from source.errors import InvalidInput
from source.generation.model_catalog import default_model_for_task, load_catalog

MODEL_KEYS = ("model", "model_name")  # params keys naming the model, in order (the seed's is model_name)
_GENERATE_TYPES = ("generate", "wgp", "t2v", "i2v", "vace", "flf2v")
# Task type -> the model it loads when params name none (None: then it counts as "any").
MODEL_TASK_TYPES: dict[str, str | None] = {
    **{t: default_model_for_task(t) for t in _GENERATE_TYPES},
    "travel_segment": None, "single_image": "t2v", "dp_final_gen": "vace_14B",
}


def named_model(task_type: str, params: Any) -> str | None:
    """The model name as the task gives it (params, else the type's default), before catalog lookup."""
    if task_type not in MODEL_TASK_TYPES:
        return None
    if isinstance(params, (str, bytes)):
        try:
            params = json.loads(params)
        except (ValueError, RecursionError):
            params = None  # the worker fails such a row with its reason; here it just names no model
    if isinstance(params, dict):
        for key in MODEL_KEYS:
            value = params.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
    return MODEL_TASK_TYPES[task_type]


def canonical(name: str | None) -> str | None:
    """A model name as the catalog calls it (aliases and case folded); unknown names stay as given."""
    if not name:
        return None
    try:
        spec = load_catalog().lookup(name)
    except InvalidInput:  # a broken user catalog file: the worker reports it; scheduling keeps the name
        spec = None
    return spec.name if spec is not None else name


def model_for_task(task_type: str, params: Any) -> str | None:
    """The `model` column of a new task: its catalog model, or None for "any"."""
    return canonical(named_model(task_type, params))


def name_pairs() -> dict[str, str]:
    """Every catalog name and alias, lower case, -> its catalog name (the `model_names` table)."""
    try:
        catalog = load_catalog()
    except InvalidInput:
        return {}
    pairs: dict[str, str] = {}
    for name in catalog.names():
        spec = catalog.lookup(name)
        if spec is not None:
            pairs.setdefault(name.lower(), spec.name)
    return pairs


def held_model() -> str | None:
    """The model this process's generation engine holds (None before any load). Reads the engine only
    when something already imported it, so a worker that never generates never imports torch."""
    engine_module = sys.modules.get("source.generation.engine")
    if engine_module is None:
        return None
    loaded = engine_module.get_engine().model
    return loaded.spec.name if loaded is not None else None
