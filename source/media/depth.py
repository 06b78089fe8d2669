"""Monocular depth maps with a transformers depth-estimation model from a small catalog.

`get_depth_estimator(name)` keeps one model warm per process (reloaded only when the name changes).
`estimator.depth_maps(frames)` yields (H, W, 3) uint8 RGB greyscale maps at each input's size, near = bright
(the convention of Depth Anything / MiDaS relative depth), normalised per frame to 0-255.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from source.errors import InvalidInput
from source.settings import settings
from source.warm import Warm

# name -> Hugging Face Hub repo id. "tiny-depth" is a random-weight model built locally (tests, demos).
DEPTH_MODELS: dict[str, str] = {
    "depth-anything-v2-small": "depth-anything/Depth-Anything-V2-Small-hf",
    "dpt-hybrid": "Intel/dpt-hybrid-midas",
    "dpt-large": "Intel/dpt-large",
    "tiny-depth": "tiny-depth",
}
_ALIASES = {
    "depth_anything_v2_small": "depth-anything-v2-small",
    "depth-anything": "depth-anything-v2-small",
    "depth_anything": "depth-anything-v2-small",
    "dpt_hybrid": "dpt-hybrid",
    "midas": "dpt-hybrid",
    "dpt_large": "dpt-large",
    "tiny_depth": "tiny-depth",
}
DEFAULT_DEPTH_MODEL = "depth-anything-v2-small"
TINY_DEPTH_DIR = "depth-anything-tiny"
TINY_DEPTH_RECIPE = "tiny-depth-v1"


def canonical_depth_model(name: str | None) -> str:
    """The catalog name for a name, alias or catalog Hub id; InvalidInput for anything else."""
    name = (name or DEFAULT_DEPTH_MODEL).strip()
    if name in DEPTH_MODELS:
        return name
    key = name.lower()
    if key in DEPTH_MODELS:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    for catalog_name, repo in DEPTH_MODELS.items():
        if repo.lower() == key:
            return catalog_name
    raise InvalidInput(f"unknown depth_model {name!r}; known: {', '.join(DEPTH_MODELS)}")


# ----------------------------------------------------------------------------- tiny model
def _tiny_root() -> Path:
    d = settings().model_cache / "tiny"  # the one model cache default lives in Settings
    d.mkdir(parents=True, exist_ok=True)
    return d


def build_tiny_depth_model(target: Path) -> Path:
    """A tiny random-weight Depth Anything (DINOv2 backbone) + processor saved with save_pretrained."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    torch.manual_seed(0)
    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            patch_size=14, image_size=56, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[16, 16, 32, 32],
                              fusion_hidden_size=16, head_hidden_size=8, patch_size=14,
                              depth_estimation_type="relative")
    model = DepthAnythingForDepthEstimation(cfg).eval()
    proc = DPTImageProcessor(do_resize=True, size={"height": 56, "width": 56}, keep_aspect_ratio=True,
                             ensure_multiple_of=14, do_normalize=True, image_mean=[0.485, 0.456, 0.406],
                             image_std=[0.229, 0.224, 0.225], resample=3)
    model.save_pretrained(target)
    proc.save_pretrained(target)
    (Path(target) / "RECIPE").write_text(TINY_DEPTH_RECIPE + "\n")
    return Path(target)


def ensure_tiny_depth_model() -> Path:
    """$HEADLESS_MODEL_CACHE/tiny/depth-anything-tiny, built once (atomically, under a file lock) if missing."""
    from source.files import build_once

    return build_once(_tiny_root() / TINY_DEPTH_DIR, build_tiny_depth_model,
                      ready=lambda target: (target / "RECIPE").is_file())


# ----------------------------------------------------------------------------- estimator
def normalize_depth(depth: np.ndarray) -> np.ndarray:
    """A float depth map -> (H, W, 3) uint8 greyscale RGB, min..max stretched to 0..255 (flat -> black)."""
    d = np.nan_to_num(np.asarray(depth, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(d.min()), float(d.max())
    if hi - lo < 1e-8:
        g = np.zeros(d.shape, dtype=np.uint8)
    else:
        g = ((d - lo) * (255.0 / (hi - lo)) + 0.5).clip(0, 255).astype(np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


class DepthEstimator:
    def __init__(self, name: str, device: str | None = None) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        self.name = canonical_depth_model(name)
        self._torch = torch
        from source.generation.hub import classify_hub_error, hub_offline

        if self.name == "tiny-depth":
            source, kw = str(ensure_tiny_depth_model()), {"local_files_only": True}
        else:
            source, kw = DEPTH_MODELS[self.name], {"local_files_only": hub_offline()}
        self.source = source
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            self.processor = AutoImageProcessor.from_pretrained(source, **kw)
            model = AutoModelForDepthEstimation.from_pretrained(source, **kw)
        except OSError as exc:  # not in the cache: permanent when offline, worth a retry when the network failed
            raise classify_hub_error(exc, f"depth model {self.name} ({source})") from None
        dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.model = model.to(self.device, dtype=dtype).eval()
        self.dtype = dtype
        self._lock = threading.Lock()

    def predict(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """Raw float depth (H, W) per frame, at each frame's own size."""
        if not frames:
            return []
        torch = self._torch
        with self._lock, torch.inference_mode():
            inputs = self.processor(images=list(frames), return_tensors="pt")
            pixel_values = inputs["pixel_values"].to(self.device, dtype=self.dtype)
            out = self.model(pixel_values=pixel_values)
            pred = out.predicted_depth.float()
            if pred.ndim == 3:
                pred = pred[:, None]
            maps = []
            for i, frame in enumerate(frames):
                h, w = frame.shape[:2]
                up = torch.nn.functional.interpolate(pred[i:i + 1], size=(h, w), mode="bicubic", align_corners=False)
                maps.append(up[0, 0].cpu().numpy())
        return maps

    def depth_map(self, frame: np.ndarray) -> np.ndarray:
        return normalize_depth(self.predict([frame])[0])

    def depth_maps(self, frames: Iterable[np.ndarray], batch_size: int = 4) -> Iterator[np.ndarray]:
        """Stream uint8 RGB depth maps for a frame sequence (small batches, memory stays flat)."""
        batch: list[np.ndarray] = []
        for frame in frames:
            batch.append(frame)
            if len(batch) >= batch_size:
                yield from (normalize_depth(d) for d in self.predict(batch))
                batch = []
        if batch:
            yield from (normalize_depth(d) for d in self.predict(batch))


_estimators: Warm[DepthEstimator] = Warm(DepthEstimator, keep=1)  # a new model replaces the old


def get_depth_estimator(name: str | None = None) -> DepthEstimator:
    """The process-wide warm estimator (reloaded only when the model changes)."""
    return _estimators.get(canonical_depth_model(name))


__all__ = ["DEPTH_MODELS", "DEFAULT_DEPTH_MODEL", "canonical_depth_model", "ensure_tiny_depth_model",
           "normalize_depth", "DepthEstimator", "get_depth_estimator"]
