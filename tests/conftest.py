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


@pytest.fixture
def monkeypatch(monkeypatch):
    """pytest's monkeypatch, but a changed environment variable is seen by the next settings() call
    (settings are otherwise read once per process, as in production)."""
    from source import settings

    setenv, delenv = monkeypatch.setenv, monkeypatch.delenv

    def setenv_and_reread(*args, **kwargs):
        setenv(*args, **kwargs)
        settings.reset()

    def delenv_and_reread(*args, **kwargs):
        delenv(*args, **kwargs)
        settings.reset()

    monkeypatch.setenv, monkeypatch.delenv = setenv_and_reread, delenv_and_reread
    yield monkeypatch
    settings.reset()  # undone environment changes: read again
