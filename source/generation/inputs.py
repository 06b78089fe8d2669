"""A request's input files: resolved (paths and URLs are untrusted: `ctx.resolve_input` checks them), hashed
(the hashes go into the cache key and the sidecar), and decoded for engines that take pixels.

- images (image_start, image_end, image_refs[i]) are scaled to cover the target size and centre-cropped,
- control videos (video_guide, video_mask) are fitted the same way and truncated, or padded with their
  last frame, to the request's frame count (recorded in adjustments as `<what>_frames`); masks are
  binarised (>= 128 -> white = generate),
- LoRAs given as a path, URL or Hub id become local files with their content hash.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from source.errors import InvalidInput
from source.generation.engine import LoraRequest
from source.generation.hub import classify_hub_error, hf_cache_dir, hf_token, hub_file, hub_offline
from source.generation.request import GenerationRequest
from source.task_context import TaskContext

_hash_memo: dict[tuple, str] = {}


def sha256_file(path: Path | str) -> str:
    """SHA-256 of a file's bytes, memoised by (path, size, mtime): a warm worker re-hashes nothing unchanged."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _hash_memo:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _hash_memo[key] = h.hexdigest()
    return _hash_memo[key]


@dataclass
class Inputs:
    """What a request's files became. `pixels` is filled only for engines that take pixels (diffusers):
    start_image / end_image (PIL), guide / mask (lists of PIL frames), reference_images (list of PIL)."""

    hashes: dict[str, dict[str, str]] = field(default_factory=dict)   # what -> {"ref", "sha256"}
    paths: dict[str, Any] = field(default_factory=dict)               # what -> Path (image_refs: list)
    pixels: dict[str, Any] = field(default_factory=dict)
    loras: list[LoraRequest] = field(default_factory=list)
    seconds: float = 0.0

    def digest(self) -> dict[str, str]:
        return {k: v["sha256"] for k, v in sorted(self.hashes.items())}


def load_inputs(ctx: TaskContext, request: GenerationRequest, *, decode: bool) -> Inputs:
    """Resolve and hash every input file of `request` (and decode them when `decode`), then its LoRAs."""
    t0 = time.perf_counter()
    p = request.params
    out = Inputs()
    for what in ("image_start", "image_end", "video_guide", "video_mask"):
        if getattr(p, what):
            out.paths[what] = _resolve(ctx, getattr(p, what), what, out)
    if p.image_refs:
        out.paths["image_refs"] = [_resolve(ctx, ref, f"image_refs[{i}]", out) for i, ref in enumerate(p.image_refs)]
    if decode:
        out.pixels = _decode(out.paths, request)
    out.loras = [_lora(ctx, lp.path, lp.multiplier, lp.target) for lp in p.loras or []]
    out.seconds = time.perf_counter() - t0
    return out


def _resolve(ctx: TaskContext, ref: str, what: str, out: Inputs) -> Path:
    path = ctx.resolve_input(ref, kind=what)
    out.hashes[what] = {"ref": ref, "sha256": sha256_file(path)}
    return path


def _decode(paths: dict[str, Any], request: GenerationRequest) -> dict[str, Any]:
    size, frames, adjustments = request.size, request.frames, request.adjustments
    pixels: dict[str, Any] = {}
    if "image_start" in paths:
        pixels["start_image"] = load_image(paths["image_start"], size)
    if "image_end" in paths:
        pixels["end_image"] = load_image(paths["image_end"], size)
    if "video_guide" in paths:
        pixels["guide"] = load_video(paths["video_guide"], "video_guide", size, frames, adjustments)
    if "video_mask" in paths:
        pixels["mask"] = load_video(paths["video_mask"], "video_mask", size, frames, adjustments, mask=True)
    if "image_refs" in paths:
        pixels["reference_images"] = [load_image(path, size) for path in paths["image_refs"]]
    return pixels


def fit_image(arr: np.ndarray, width: int, height: int):
    """Scale to cover (width, height) and centre-crop: no stretching."""
    from PIL import Image, ImageOps

    return ImageOps.fit(Image.fromarray(arr), (width, height), method=Image.LANCZOS, centering=(0.5, 0.5))


def load_image(path: Path, size: tuple[int, int]):
    from source.media.images import load_image_rgb

    return fit_image(load_image_rgb(path), *size)


def load_video(path: Path, what: str, size: tuple[int, int], frames: int, adjustments: dict, *,
               mask: bool = False) -> list:
    from source.media.video_io import iter_frames

    out = []
    got = 0
    for arr in iter_frames(path):
        got += 1
        if len(out) < frames:  # later frames are counted, not decoded into images
            im = fit_image(arr, *size)
            out.append(im.convert("L").point(lambda v: 255 if v >= 128 else 0) if mask else im)
    if not out:
        raise InvalidInput(f"{what} {path.name!r} has no frames")
    if got != frames:
        adjustments[f"{what}_frames"] = [got, frames]  # truncated, or padded with its last frame
    while len(out) < frames:
        out.append(out[-1])
    return out


# -- LoRAs ---------------------------------------------------------------------------------------------------
_HF_URL = re.compile(r"^https?://(?:www\.)?huggingface\.co/([^/]+/[^/]+)/(?:resolve|blob)/([^/]+)/(.+?)(?:\?.*)?$")
_HUB_COLON = re.compile(r"^([\w.-]+/[\w.-]+):(.+)$")
_HUB_PATH = re.compile(r"^([\w.-]+)/([\w.-]+)/(.+\.(?:safetensors|bin|pt|pth|ckpt))$")


def _lora(ctx: TaskContext, ref: str, multiplier: float, target: str) -> LoraRequest:
    path = resolve_lora(ctx, ref)
    return LoraRequest(path=Path(path), multiplier=multiplier, sha256=sha256_file(path), target=target, ref=ref)


def resolve_lora(ctx: TaskContext, ref: str) -> Path:
    """A local file for a LoRA given as a path, URL, Hugging Face URL or Hub id ('owner/repo/file.safetensors',
    'hf://owner/repo/file.safetensors' or 'owner/repo:file.safetensors')."""
    ref = ref.strip()
    m = _HF_URL.match(ref)
    if m:
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(m.group(1), m.group(3), revision=m.group(2), cache_dir=hf_cache_dir(),
                                        token=hf_token(), local_files_only=hub_offline()))
        except Exception as exc:  # noqa: BLE001
            raise classify_hub_error(exc, f"LoRA {ref[:200]}") from None
    if ref.startswith("hf://"):
        parts = ref[5:].split("/", 2)
        if len(parts) < 3:
            raise InvalidInput(f"LoRA {ref[:200]!r}: expected hf://owner/repo/path/to/file.safetensors")
        return hub_file(f"{parts[0]}/{parts[1]}", parts[2])
    m = _HUB_COLON.match(ref)
    if m and not ref.startswith("/"):
        return hub_file(m.group(1), m.group(2))
    local = Path(ref).expanduser()
    for root in lora_dirs():  # the model cache and $HEADLESS_LORA_DIR are trusted; bare names are looked up there
        cand = (local if local.is_absolute() else root / local).resolve()
        if cand.is_relative_to(root.resolve()) and cand.is_file():
            return cand
    try:
        return ctx.resolve_input(ref, kind="LoRA")
    except InvalidInput:
        m = _HUB_PATH.match(ref)
        if m and not Path(ref).is_absolute():
            return hub_file(f"{m.group(1)}/{m.group(2)}", m.group(3))
        raise


def lora_dirs() -> list[Path]:
    from source.generation.tiny_models import model_cache_dir
    from source.settings import settings

    lora_dir = settings().lora_dir
    return ([lora_dir.expanduser()] if lora_dir else []) + [model_cache_dir()]
