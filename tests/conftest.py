"""Shared pytest set-up. Fixture families live in their own modules, loaded as plugins."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"

# Test inputs that the product would otherwise download on first use.
if (SHARED / "models/pose/pose_landmarker_full.task").is_file():
    os.environ.setdefault("HEADLESS_POSE_MODEL", str(SHARED / "models/pose/pose_landmarker_full.task"))
if (SHARED / "models/rife/flownet.pkl").is_file():
    os.environ.setdefault("HEADLESS_RIFE_WEIGHTS", str(SHARED / "models/rife/flownet.pkl"))
os.environ.setdefault("HEADLESS_MODEL_CACHE", str(REPO / ".cache" / "models"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytest_plugins = [
    "tests.fixtures_db",
    "tests.fixtures_models",
]


@pytest.fixture(autouse=True)
def _fresh_settings():
    """Settings are read once per process; a test that changes the environment gets them read again."""
    from source import settings

    settings.reset()
    yield
    settings.reset()
