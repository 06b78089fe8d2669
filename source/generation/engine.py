"""One warm diffusers pipeline per process.

The engine keeps the last model loaded and reloads only when the model (or dtype / memory policy)
changes, freeing the old one first. LoRAs are peft adapters loaded once by content hash and switched
with set_adapters, so a different LoRA set never reloads the base model.

Settings (source.settings.settings(), read from these variables; Engine(...) keyword arguments win):
  HEADLESS_DEVICE      auto | cuda | cuda:N | cpu                  (auto: cuda when available)
  HEADLESS_DTYPE       auto | bfloat16 | float16 | float32         (auto: bfloat16 on CUDA, float32 on CPU)
  HEADLESS_MEMORY      auto | full | model_offload | group_offload | sequential_offload
                       (auto: whole pipeline on the GPU when it fits with room to spare, else model CPU offload,
                        else group offload with CUDA streams)
  HEADLESS_VAE_TILING  auto | 1 | 0                                (auto: on for GPUs under 40 GB)
  HEADLESS_VAE_FP32    1 | 0   decode with a float32 VAE (default 1; the Wan docs advise it)
  HEADLESS_ATTENTION   a diffusers attention backend name (e.g. flash, _flash_3, sage); default: native
  HEADLESS_COMPILE     1: transformer.compile_repeated_blocks() (costs warm-up per shape)
  HEADLESS_HF_CACHE    Hugging Face cache folder for checkpoints and LoRAs (default: huggingface_hub's)
  HF_TOKEN             for gated or private repos; HF_HUB_OFFLINE=1 never touches the network
  HEADLESS_MAX_LORAS   adapters kept loaded per transformer before unused ones are deleted (default 8)
"""

from __future__ import annotations

import gc
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from source.errors import FatalWorkerError, InvalidInput, TaskCancelled, TransientError
from source.generation.hub import classify_hub_error, hf_cache_dir, hf_token, hub_file, hub_offline
from source.generation.model_catalog import TWO_EXPERT_KINDS, ModelSpec, SpeedLora
from source.warm import Warm

_CUDA_FATAL_MARKERS = ("cuda error", "cublas", "cudnn_status", "device-side assert", "illegal memory access",
                       "unspecified launch failure", "nccl", "ecc error", "misaligned address")


@dataclass(frozen=True)
class LoraRequest:
    path: Path                 # local file
    multiplier: float
    sha256: str
    target: str = "both"       # two-expert models: "high" (transformer), "low" (transformer_2) or "both"
    ref: str = ""              # what the user asked for (path, URL, Hub id)

    @property
    def adapter(self) -> str:
        return "l" + self.sha256[:16]


@dataclass
class EngineSettings:
    device: str = "auto"
    dtype: str = "auto"
    memory: str = "auto"
    vae_tiling: str = "auto"
    vae_fp32: bool = True
    attention: str | None = None
    compile: bool = False
    max_loras: int = 8

    @classmethod
    def from_settings(cls, **over: Any) -> EngineSettings:
        """The process's settings (source.settings), keyword arguments winning where not None."""
        from source.settings import settings

        cfg = settings()
        s = cls(device=cfg.device, dtype=cfg.dtype, memory=cfg.memory, vae_tiling=cfg.vae_tiling,
                vae_fp32=cfg.vae_fp32, attention=cfg.attention, compile=cfg.compile, max_loras=cfg.max_loras)
        for k, v in over.items():
            if v is not None:
                setattr(s, k, v)
        return s


@dataclass
class LoadedModel:
    spec: ModelSpec
    pipe: Any
    model_dir: Path
    revision: str
    key: tuple
    device: str
    dtype: str
    memory: str
    load_seconds: float
    base_scheduler: Any = None
    derived: dict = field(default_factory=dict)  # e.g. the TI2V image pipeline sharing the same weights


def _fixed_sigma_scheduler_class():
    from diffusers import FlowMatchEulerDiscreteScheduler

    class FixedSigmaFlowMatchScheduler(FlowMatchEulerDiscreteScheduler):
        """Flow-match Euler on evenly spaced sigmas 1, 1-1/N, ..., 1/N, then shifted: the timesteps the LightX2V
        / Wan 2.2 Lightning distillations were trained on (4 steps, shift 5 -> t = 1000, 937.5, 833.3, 625)."""

        def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None, timesteps=None):
            if sigmas is None and timesteps is None and num_inference_steps:
                n = int(num_inference_steps)
                sigmas = [1.0 - k / n for k in range(n)]
            return super().set_timesteps(num_inference_steps=num_inference_steps, device=device, sigmas=sigmas,
                                         mu=mu, timesteps=timesteps)

    return FixedSigmaFlowMatchScheduler


class Engine:
    def __init__(self, **settings: Any) -> None:
        self.settings = EngineSettings.from_settings(**settings)
        self.model: LoadedModel | None = None
        self.load_count = 0
        self.loads: list[dict[str, Any]] = []  # {"model", "seconds"} per load, in order
        self.lock = threading.RLock()

    # -- device and dtype ------------------------------------------------------------------------
    def device(self) -> str:
        import torch

        d = self.settings.device
        if d == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if d.startswith("cuda") and not torch.cuda.is_available():
            raise FatalWorkerError(f"HEADLESS_DEVICE={d} but CUDA is not available in this process")
        return d

    def dtype_name(self, device: str) -> str:
        d = self.settings.dtype.lower()
        if d == "auto":
            if device.startswith("cuda"):
                import torch

                return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
            return "float32"
        aliases = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
        d = aliases.get(d, d)
        if d not in ("bfloat16", "float16", "float32"):
            raise InvalidInput(f"HEADLESS_DTYPE={self.settings.dtype!r}: use bfloat16, float16 or float32")
        return d

    # -- model files -----------------------------------------------------------------------------
    def locate(self, spec: ModelSpec) -> tuple[Path, str]:
        """(local folder, revision) for a catalog entry; downloads Hub checkpoints once."""
        if spec.tiny and not spec.path and not spec.repo:
            from source.generation.tiny_models import RECIPE_VERSION, ensure_tiny_model

            return ensure_tiny_model(spec.tiny), RECIPE_VERSION
        if spec.path:
            p = Path(spec.path).expanduser()
            if not (p / "model_index.json").is_file():
                raise InvalidInput(f"model {spec.name!r}: {p} is not a Diffusers-format folder (no model_index.json)")
            return p, spec.revision or ("local:" + _folder_fingerprint(p))
        from diffusers import DiffusionPipeline

        try:
            folder = DiffusionPipeline.download(spec.repo, revision=spec.revision, cache_dir=hf_cache_dir(),
                                                token=hf_token(), local_files_only=hub_offline())
        except Exception as exc:  # noqa: BLE001
            raise classify_hub_error(exc, f"model {spec.name!r} ({spec.repo})") from None
        folder = Path(folder)
        # the snapshot folder is named after the commit: that is the exact revision used
        return folder, folder.name if len(folder.name) == 40 else (spec.revision or "main")

    # -- loading -----------------------------------------------------------------------------------
    def ensure(self, spec: ModelSpec, *, log: Callable[..., None] | None = None) -> LoadedModel:
        with self.lock:
            device = self.device()
            dtype = self.dtype_name(device)
            key = (spec.name, spec.source, spec.revision, spec.kind, spec.boundary_ratio, device, dtype,
                   self.settings.memory)
            if self.model is not None and self.model.key == key:
                return self.model
            self.unload()
            t0 = time.perf_counter()
            folder, revision = self.locate(spec)
            pipe, memory = self._load_pipeline(spec, folder, device, dtype)
            seconds = time.perf_counter() - t0
            self.model = LoadedModel(spec=spec, pipe=pipe, model_dir=folder, revision=revision, key=key,
                                     device=device, dtype=dtype, memory=memory, load_seconds=seconds,
                                     base_scheduler=pipe.scheduler)
            self.load_count += 1
            self.loads.append({"model": spec.name, "seconds": round(seconds, 3)})
            if log is not None:
                log("model_loaded", model=spec.name, source=spec.source, revision=revision,
                    seconds=round(seconds, 3), device=device, dtype=dtype, memory=memory)
            return self.model

    def _load_pipeline(self, spec: ModelSpec, folder: Path, device: str, dtype_name: str):
        import diffusers
        import torch

        dtype = getattr(torch, dtype_name)
        cls = getattr(diffusers, spec.pipeline_class)
        dkey = "dtype" if tuple(int(x) for x in diffusers.__version__.split(".")[:2]) >= (0, 40) else "torch_dtype"
        kwargs: dict[str, Any] = {dkey: dtype, "local_files_only": True}
        if spec.boundary_ratio is not None and spec.kind in TWO_EXPERT_KINDS:
            kwargs["boundary_ratio"] = spec.boundary_ratio
        if spec.kind == "ti2v":
            kwargs["expand_timesteps"] = True
        try:
            from source.generation.tiny_models import quiet

            with quiet():
                if self.settings.vae_fp32 and dtype != torch.float32 and (folder / "vae").is_dir():
                    kwargs["vae"] = diffusers.AutoencoderKLWan.from_pretrained(folder, subfolder="vae",
                                                                               **{dkey: torch.float32})
                pipe = cls.from_pretrained(folder, **kwargs)
        except torch.cuda.OutOfMemoryError as exc:
            self._free()
            raise TransientError(f"out of memory loading {spec.name}: {exc}") from None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise InvalidInput(f"model {spec.name!r} at {folder} could not be loaded as {spec.pipeline_class}: "
                               f"{type(exc).__name__}: {exc}") from None
        pipe.set_progress_bar_config(disable=True)
        memory = self._place(pipe, device)
        if self.settings.attention:
            for name in ("transformer", "transformer_2"):
                model = getattr(pipe, name, None)
                if model is not None and hasattr(model, "set_attention_backend"):
                    model.set_attention_backend(self.settings.attention)
        if self.settings.compile and device.startswith("cuda"):
            for name in ("transformer", "transformer_2"):
                model = getattr(pipe, name, None)
                if model is not None and hasattr(model, "compile_repeated_blocks"):
                    model.compile_repeated_blocks(fullgraph=True)
        return pipe, memory

    def _place(self, pipe, device: str) -> str:
        """Apply the memory policy; returns the policy used."""
        import torch

        policy = self.settings.memory
        if not device.startswith("cuda"):
            pipe.to(device)
            return "cpu"
        dev = torch.device(device)
        total = torch.cuda.get_device_properties(dev).total_memory
        if policy == "auto":
            weights = sum(p.numel() * p.element_size() for name in pipe.components
                          for m in [getattr(pipe, name, None)] if isinstance(m, torch.nn.Module)
                          for p in m.parameters())
            largest = max((sum(p.numel() * p.element_size() for p in m.parameters())
                           for name in pipe.components for m in [getattr(pipe, name, None)]
                           if isinstance(m, torch.nn.Module)), default=0)
            if weights * 1.1 + 12e9 < total:
                policy = "full"
            elif largest * 1.2 + 8e9 < total:
                policy = "model_offload"
            else:
                policy = "group_offload"
        if policy == "full":
            pipe.to(device)
        elif policy == "model_offload":
            pipe.enable_model_cpu_offload(device=dev)
        elif policy == "group_offload":
            pipe.enable_group_offload(onload_device=dev, offload_device=torch.device("cpu"),
                                      offload_type="block_level", num_blocks_per_group=1, use_stream=True)
        elif policy == "sequential_offload":
            pipe.enable_sequential_cpu_offload(device=dev)
        else:
            raise InvalidInput(f"HEADLESS_MEMORY={policy!r}: use auto, full, model_offload, group_offload or "
                               f"sequential_offload")
        tiling = self.settings.vae_tiling
        if tiling == "1" or (tiling == "auto" and total < 40e9):
            if hasattr(pipe.vae, "enable_tiling"):
                pipe.vae.enable_tiling()
        return policy

    def unload(self) -> None:
        with self.lock:
            if self.model is None:
                return
            pipe = self.model.pipe
            self.model = None
            try:
                pipe.remove_all_hooks()
            except Exception:  # noqa: BLE001 - best effort before dropping the references
                pass
            del pipe
            self._free()

    @staticmethod
    def _free() -> None:
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            pass

    # -- LoRAs --------------------------------------------------------------------------------------
    def apply_loras(self, loras: list[LoraRequest]) -> None:
        """Make exactly these adapters active (multiplier 0 = not active); load new ones once by content hash."""
        m = self.model
        assert m is not None
        pipe = m.pipe
        components = ["transformer"] + (["transformer_2"] if getattr(pipe, "transformer_2", None) is not None else [])
        wanted: dict[str, list[tuple[str, float]]] = {c: [] for c in components}
        for lora in loras:
            if lora.multiplier == 0:
                continue
            for comp in components:
                if comp == "transformer" and lora.target == "low" and len(components) > 1:
                    continue
                if comp == "transformer_2" and lora.target == "high":
                    continue
                model = getattr(pipe, comp)
                present = set(getattr(model, "peft_config", None) or {})
                if lora.adapter not in present:
                    self._load_adapter(pipe, comp, lora)
                wanted[comp].append((lora.adapter, float(lora.multiplier)))
        for comp in components:
            model = getattr(pipe, comp)
            present = list(getattr(model, "peft_config", None) or {})
            if not present:
                continue
            names = [n for n, _ in wanted[comp]]
            if not names:
                model.disable_lora()
            else:
                model.enable_lora()
                model.set_adapters(names, [w for _, w in wanted[comp]])
            unused = [n for n in present if n not in names]
            if len(present) > self.settings.max_loras and unused:
                model.delete_adapters(unused)

    def _load_adapter(self, pipe, component: str, lora: LoraRequest) -> None:
        try:
            pipe.load_lora_weights(str(lora.path.parent), weight_name=lora.path.name, adapter_name=lora.adapter,
                                   load_into_transformer_2=(component == "transformer_2"))
        except (ValueError, KeyError, RuntimeError, OSError) as exc:
            if "out of memory" in str(exc).lower():
                raise TransientError(f"out of memory loading LoRA {lora.ref or lora.path.name}") from None
            raise InvalidInput(f"LoRA {lora.ref or lora.path.name} does not fit model {self.model.spec.name} "
                               f"({type(exc).__name__}: {str(exc)[:300]})") from None

    def speed_lora_files(self, preset: SpeedLora) -> list[tuple[Path, str, str]]:
        """(file, target, ref) for a speed preset's LoRA(s); empty when the preset has no file."""
        out = []
        if not preset.filename:
            return out
        two = self.model is not None and getattr(self.model.pipe, "transformer_2", None) is not None

        def get(fname: str) -> Path:
            if preset.repo:
                return hub_file(preset.repo, fname)
            return Path(fname)

        out.append((get(preset.filename), "high" if (two and preset.filename_2) else "both",
                    f"{preset.repo}/{preset.filename}" if preset.repo else preset.filename))
        if preset.filename_2 and two:
            out.append((get(preset.filename_2), "low",
                        f"{preset.repo}/{preset.filename_2}" if preset.repo else preset.filename_2))
        return out

    # -- running --------------------------------------------------------------------------------------
    def _scheduler_for(self, flow_shift: float, fixed_sigmas: bool):
        m = self.model
        base = m.base_scheduler
        key = ("fixed" if fixed_sigmas else "base", round(float(flow_shift), 6))
        if key in m.derived:
            return m.derived[key]
        if fixed_sigmas:
            cls = _fixed_sigma_scheduler_class()
            sched = cls(num_train_timesteps=base.config.get("num_train_timesteps", 1000), shift=float(flow_shift))
        elif "flow_shift" in base.config:
            sched = type(base).from_config(base.config, flow_shift=float(flow_shift))
        elif "shift" in base.config:
            sched = type(base).from_config(base.config, shift=float(flow_shift))
        else:
            sched = base
        m.derived[key] = sched
        return sched

    def generate(self, call: dict[str, Any], *, seed: int, flow_shift: float, fixed_sigmas: bool = False,
                 on_step: Callable[[int, int], None] | None = None, image_pipeline: bool = False):
        """Run the loaded pipeline; returns float frames (F, H, W, 3) in [0, 1]."""
        import torch

        with self.lock:
            m = self.model
            assert m is not None, "ensure() a model first"
            pipe = m.pipe
            if image_pipeline and m.spec.kind == "ti2v":
                if "i2v" not in m.derived:
                    from diffusers import WanImageToVideoPipeline

                    m.derived["i2v"] = WanImageToVideoPipeline.from_pipe(pipe)
                    m.derived["i2v"].set_progress_bar_config(disable=True)
                pipe = m.derived["i2v"]
            pipe.scheduler = self._scheduler_for(flow_shift, fixed_sigmas)
            total = int(call.get("num_inference_steps") or 1)

            def callback(p, i, t, kwargs):
                if on_step is not None:
                    on_step(i + 1, total)
                return {}

            try:
                out = pipe(**call, generator=torch.Generator("cpu").manual_seed(int(seed)), output_type="np",
                           callback_on_step_end=callback, return_dict=True)
            except TaskCancelled:
                raise
            except torch.cuda.OutOfMemoryError as exc:
                self._free()
                raise TransientError(f"GPU out of memory: {str(exc).splitlines()[0]}") from None
            except RuntimeError as exc:
                msg = str(exc).lower()
                if "out of memory" in msg:
                    self._free()
                    raise TransientError(f"out of memory: {str(exc).splitlines()[0]}") from None
                if any(marker in msg for marker in _CUDA_FATAL_MARKERS):
                    raise FatalWorkerError(f"CUDA failure, this process must restart: {exc}") from exc
                raise
            finally:
                try:
                    pipe.maybe_free_model_hooks()
                except Exception:  # noqa: BLE001
                    pass
            frames = out.frames[0]
            if hasattr(frames, "cpu"):
                frames = frames.float().cpu().numpy()
            return frames


def _folder_fingerprint(folder: Path) -> str:
    """A cheap identity for a local model folder: config files' bytes plus weight files' sizes and mtimes."""
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if not f.is_file():
            continue
        rel = f.relative_to(folder).as_posix()
        if f.suffix == ".json" and f.stat().st_size < 1_000_000:
            h.update(rel.encode() + b"\0" + f.read_bytes())
        else:
            st = f.stat()
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


_engine: Warm[Engine] = Warm(lambda _: Engine())


def get_engine() -> Engine:
    """The process's warm engine."""
    return _engine.get()


def library_versions() -> dict[str, str]:
    import platform
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("torch", "diffusers", "transformers", "peft", "accelerate", "huggingface_hub", "av"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    try:
        from source import __version__

        out["headless-wan"] = __version__
    except Exception:  # noqa: BLE001
        pass
    return out

