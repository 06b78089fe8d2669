"""Optional engine: the upstream Wan2GP (WanGP) through its in-process API, `shared/api.py`.

Only used when selected ($HEADLESS_ENGINE=wan2gp or param engine="wan2gp") and mounted at ./Wan2GP or
$WAN2GP_DIR (settings().wan2gp_dir); never imported otherwise. Wan2GP is not Apache-licensed (see
Wan2GP/README.md): it stays out of the default install. `source.generation.engines.wan2gp` passes the
resolved request as a WanGP settings dict (`build_settings`):

    session = shared.api.init(root=WAN2GP_DIR, cli_args=[...], output_dir=..., console_output=False)
    job = session.submit_task(settings)
    for event in job.events.iter(timeout=0.2): ...   # progress -> ctx.progress; a cancel -> job.cancel()
    result = job.result()                             # .generated_files / .errors / .cancelled

Extra start-up flags for WanGP come from $WAN2GP_ARGS, settings().wan2gp_args (e.g. "--attention sage2").
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from source.errors import InvalidInput, TaskCancelled, TransientError
from source.generation.request import GenerationRequest
from source.warm import Warm

# Our catalog names -> WanGP model types (other names are passed through unchanged).
WAN2GP_TYPES = {
    "wan2.1-t2v-1.3b": "t2v_1.3B", "wan2.1-t2v-14b": "t2v", "wan2.1-i2v-14b-480p": "i2v",
    "wan2.1-i2v-14b-720p": "i2v_720p", "wan2.1-flf2v-14b-720p": "flf2v_720p", "wan2.1-vace-1.3b": "vace_1.3B",
    "wan2.1-vace-14b": "vace_14B", "wan2.2-t2v-a14b": "t2v_2_2", "wan2.2-i2v-a14b": "i2v_2_2",
    "wan2.2-ti2v-5b": "ti2v_2_2",
}

_session: Warm[Any] = Warm(lambda _: None)  # made by get_session (it needs the output folder)


def wan2gp_dir() -> Path:
    from source.settings import settings

    return Path(settings().wan2gp_dir or (Path.cwd() / "Wan2GP")).expanduser().resolve()


def _import_api(root: Path):
    if not (root / "shared" / "api.py").is_file():
        raise InvalidInput(
            f"engine 'wan2gp' was selected but Wan2GP is not mounted at {root} (no shared/api.py). Clone "
            f"https://github.com/deepbeepmeep/Wan2GP there (or set WAN2GP_DIR), install its requirements, or "
            f"use the default engine 'diffusers'. See Wan2GP/README.md.")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        from shared import api  # type: ignore[import-not-found]
    except Exception as exc:  # noqa: BLE001
        raise InvalidInput(f"Wan2GP at {root} could not be imported ({type(exc).__name__}: {exc}); check its "
                           f"requirements are installed in this environment") from None
    return api


def get_session(output_dir: Path):
    def start():
        from source.settings import settings

        root = wan2gp_dir()
        api = _import_api(root)
        return api.init(root=root, cli_args=shlex.split(settings().wan2gp_args), output_dir=output_dir,
                        console_output=False)

    return _session.get(make=start)


def reset_session() -> None:
    _session.clear()


def build_settings(request: GenerationRequest, inputs: dict[str, Any], loras: list) -> dict[str, Any]:
    """A WanGP settings dict for a resolved request and its resolved input paths."""
    s: dict[str, Any] = {
        "model_type": WAN2GP_TYPES.get(request.spec.name, request.params.model), "prompt": request.params.prompt,
        "negative_prompt": request.params.negative_prompt, "resolution": f"{request.width}x{request.height}",
        "video_length": request.frames, "num_inference_steps": request.steps, "guidance_scale": request.guidance,
        "flow_shift": request.flow_shift, "seed": request.seed, "force_fps": request.fps,
    }
    if request.guidance_2 is not None:
        s["guidance2_scale"] = request.guidance_2
    image_prompt = ""
    if inputs.get("image_start"):
        s["image_start"] = str(inputs["image_start"])
        image_prompt += "S"
    if inputs.get("image_end"):
        s["image_end"] = str(inputs["image_end"])
        image_prompt += "E"
    if image_prompt:
        s["image_prompt_type"] = image_prompt
    video_prompt = ""
    if inputs.get("video_guide"):
        s["video_guide"] = str(inputs["video_guide"])
        video_prompt += "V"  # a pre-rendered control video: no re-annotation (no P/D letters)
    if inputs.get("video_mask"):
        s["video_mask"] = str(inputs["video_mask"])
        video_prompt += "A"
    if inputs.get("image_refs"):
        s["image_refs"] = [str(p) for p in inputs["image_refs"]]
        video_prompt += "I"
    if video_prompt:
        s["video_prompt_type"] = video_prompt
    if loras:
        s["activated_loras"] = [str(r.path) for r in loras]
        s["loras_multipliers"] = " ".join(f"{r.multiplier:g}" for r in loras)
    return s


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def generate(settings: dict[str, Any], *, work_dir: Path, output_path: Path, on_step: Callable[[int, int], None],
             is_cancelled: Callable[[], bool]) -> Path:
    """Run one WanGP job; its video ends up at `output_path`. `on_step` may raise TaskCancelled."""
    out_dir = work_dir / "wan2gp"
    out_dir.mkdir(parents=True, exist_ok=True)
    session = get_session(out_dir)
    if hasattr(session, "output_dir"):
        try:
            session.output_dir = out_dir
        except Exception:  # noqa: BLE001
            pass
    job = session.submit_task(settings)
    cancelled = False
    for event in job.events.iter(timeout=0.2):
        if is_cancelled() and not cancelled:
            job.cancel()
            cancelled = True
        if _get(event, "kind") == "progress":
            data = _get(event, "data")
            k, n = _get(data, "current_step"), _get(data, "total_steps")
            if k is not None and n:
                try:
                    on_step(int(k), int(n))
                except TaskCancelled:
                    job.cancel()
                    cancelled = True
    result = job.result()
    if cancelled or _get(result, "cancelled"):
        raise TaskCancelled("the task was cancelled")
    errors = _get(result, "errors") or []
    files = [Path(f) for f in (_get(result, "generated_files") or []) if str(f).endswith(".mp4")]
    if errors or not files:
        msg = "; ".join(str(_get(e, "message", e)) for e in errors)[:2000] or "Wan2GP produced no video"
        if "out of memory" in msg.lower() or "oom" in msg.lower().split():
            raise TransientError(f"Wan2GP: {msg}")
        raise InvalidInput(f"Wan2GP failed: {msg}")
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_path.with_name(f".{output_path.name}.tmp")
    shutil.copyfile(files[0], tmp)
    os.replace(tmp, output_path)
    return output_path
