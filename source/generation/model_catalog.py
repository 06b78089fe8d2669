"""Which checkpoint a model name means, and the sampling defaults that go with it.

Built-in entries cover the official Diffusers-format Wan repos on the Hugging Face Hub plus the tiny
random-weight presets used by tests and demos. The seed worker's (Wan2GP) names are aliases.

Users add or override entries without a code change in a JSON file named by $HEADLESS_MODEL_CATALOG
(or passed to load_catalog(path)):

    {
      "my-vace": {"base": "vace_14B", "path": "/models/Wan2.1-VACE-14B-diffusers"},
      "vace_14B": {"revision": "0123abcd..."},
      "t2v-fast": {"repo": "FastVideo/FastWan2.1-T2V-14B-Diffusers", "kind": "t2v", "steps": 4,
                   "guidance": 1.0, "aliases": ["fastwan"]}
    }

An entry whose name already exists is merged over it; "base" copies another entry first. Any field of
ModelSpec may be given; "resolution" is "WxH".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from source.errors import InvalidInput

# Pipeline kinds: which diffusers pipeline runs them and which inputs they take.
KINDS = {
    "t2v": "WanPipeline",                 # text only
    "t2v22": "WanPipeline",               # Wan 2.2 A14B: two experts (transformer_2, boundary_ratio)
    "i2v": "WanImageToVideoPipeline",     # start image (+ optional end image)
    "flf2v": "WanImageToVideoPipeline",   # first + last frame
    "i2v22": "WanImageToVideoPipeline",   # Wan 2.2 A14B I2V: two experts, no CLIP
    "vace": "WanVACEPipeline",            # control video + mask + reference images
    "ti2v": "WanPipeline",                # Wan 2.2 TI2V 5B: text, or text + start image (expand_timesteps)
}
IMAGE_KINDS = {"i2v", "flf2v", "i2v22"}  # a start image is required
TWO_EXPERT_KINDS = {"t2v22", "i2v22"}


@dataclass(frozen=True)
class SpeedLora:
    """A distillation LoRA (CausVid, LightX2V) and the sampling it was trained for."""

    repo: str | None = None           # Hub repo holding the file
    filename: str | None = None       # file inside the repo (or a URL / local path in `repo`=None)
    filename_2: str | None = None     # Wan 2.2: the low-noise expert's file (transformer_2)
    multiplier: float = 1.0
    steps: int = 4
    guidance: float = 1.0
    flow_shift: float = 5.0
    fixed_sigmas: bool = True         # use the evenly spaced, shifted sigmas the distillation was trained on


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str
    repo: str | None = None           # Hugging Face Hub repo id (Diffusers format)
    path: str | None = None           # a local Diffusers-format folder (wins over repo)
    revision: str | None = None       # Hub branch, tag or commit
    tiny: str | None = None           # tiny random-weight preset built offline (source.generation.tiny_models)
    width: int = 832
    height: int = 480
    frames: int = 81
    steps: int = 50
    guidance: float = 5.0
    guidance_2: float | None = None   # Wan 2.2 low-noise expert; None = same as guidance
    flow_shift: float = 3.0
    fps: float = 16.0
    boundary_ratio: float | None = None
    max_sequence_length: int = 512
    causvid: SpeedLora | None = None
    lightx2v: SpeedLora | None = None
    aliases: tuple[str, ...] = ()
    description: str = ""

    @property
    def pipeline_class(self) -> str:
        return KINDS[self.kind]

    @property
    def source(self) -> str:
        return self.path or self.repo or f"tiny:{self.tiny}"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["resolution"] = f"{self.width}x{self.height}"
        return d


_KIJAI = "Kijai/WanVideo_comfy"
CAUSVID_T2V_14B = SpeedLora(_KIJAI, "Wan21_CausVid_14B_T2V_lora_rank32_v2.safetensors", multiplier=1.0,
                            steps=9, guidance=1.0, flow_shift=7.0, fixed_sigmas=False)
CAUSVID_T2V_13B = SpeedLora(_KIJAI, "Wan21_CausVid_bidirect2_T2V_1_3B_lora_rank32.safetensors", multiplier=1.0,
                            steps=9, guidance=1.0, flow_shift=7.0, fixed_sigmas=False)
LIGHTX2V_T2V_14B = SpeedLora(_KIJAI, "Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors",
                             steps=4, guidance=1.0, flow_shift=5.0)
LIGHTX2V_I2V_480 = SpeedLora("lightx2v/Wan2.1-Distill-Loras", "wan2.1_i2v_lora_rank64_lightx2v_4step.safetensors",
                             steps=4, guidance=1.0, flow_shift=5.0)
LIGHTNING_I2V_22 = SpeedLora(_KIJAI, "Wan22-Lightning/Wan2.2-Lightning_I2V-A14B-4steps-lora_HIGH_fp16.safetensors",
                             filename_2="Wan22-Lightning/Wan2.2-Lightning_I2V-A14B-4steps-lora_LOW_fp16.safetensors",
                             steps=4, guidance=1.0, flow_shift=5.0)
LIGHTNING_T2V_22 = SpeedLora(_KIJAI, "Wan22-Lightning/Wan2.2-Lightning_T2V-A14B-4steps-lora_HIGH_fp16.safetensors",
                             filename_2="Wan22-Lightning/Wan2.2-Lightning_T2V-A14B-4steps-lora_LOW_fp16.safetensors",
                             steps=4, guidance=1.0, flow_shift=5.0)
# Tiny models: the presets' sampling settings apply without a LoRA file unless the user configures one.
TINY_CAUSVID = SpeedLora(None, None, steps=3, guidance=1.0, flow_shift=7.0, fixed_sigmas=False)
TINY_LIGHTX2V = SpeedLora(None, None, steps=4, guidance=1.0, flow_shift=5.0)


def _builtin() -> list[ModelSpec]:
    p720 = dict(width=1280, height=720, flow_shift=5.0)
    tiny = dict(width=64, height=64, frames=9, steps=2, guidance=5.0, flow_shift=3.0, max_sequence_length=16,
                causvid=TINY_CAUSVID, lightx2v=TINY_LIGHTX2V)
    return [
        ModelSpec("wan2.1-t2v-1.3b", "t2v", repo="Wan-AI/Wan2.1-T2V-1.3B-Diffusers", guidance=5.0,
                  causvid=CAUSVID_T2V_13B, aliases=("t2v_1.3B",), description="Wan 2.1 text-to-video 1.3B"),
        ModelSpec("wan2.1-t2v-14b", "t2v", repo="Wan-AI/Wan2.1-T2V-14B-Diffusers", causvid=CAUSVID_T2V_14B,
                  lightx2v=LIGHTX2V_T2V_14B, aliases=("t2v", "t2v_14B"), description="Wan 2.1 text-to-video 14B"),
        ModelSpec("wan2.1-i2v-14b-480p", "i2v", repo="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
                  causvid=CAUSVID_T2V_14B, lightx2v=LIGHTX2V_I2V_480, aliases=("i2v", "i2v_480p"),
                  description="Wan 2.1 image-to-video 14B, 480p"),
        ModelSpec("wan2.1-i2v-14b-720p", "i2v", repo="Wan-AI/Wan2.1-I2V-14B-720P-Diffusers",
                  causvid=CAUSVID_T2V_14B, lightx2v=LIGHTX2V_I2V_480, aliases=("i2v_720p",),
                  description="Wan 2.1 image-to-video 14B, 720p", **p720),
        ModelSpec("wan2.1-flf2v-14b-720p", "flf2v", repo="Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers",
                  causvid=CAUSVID_T2V_14B, lightx2v=LIGHTX2V_I2V_480, aliases=("flf2v_720p", "flf2v"),
                  description="Wan 2.1 first-last-frame-to-video 14B, 720p", **p720),
        ModelSpec("wan2.1-vace-1.3b", "vace", repo="Wan-AI/Wan2.1-VACE-1.3B-diffusers", causvid=CAUSVID_T2V_13B,
                  aliases=("vace_1.3B",), description="Wan 2.1 VACE 1.3B (control video, mask, references)"),
        ModelSpec("wan2.1-vace-14b", "vace", repo="Wan-AI/Wan2.1-VACE-14B-diffusers", causvid=CAUSVID_T2V_14B,
                  lightx2v=LIGHTX2V_T2V_14B, aliases=("vace_14B", "vace"),
                  description="Wan 2.1 VACE 14B (control video, mask, references)"),
        ModelSpec("wan2.2-t2v-a14b", "t2v22", repo="Wan-AI/Wan2.2-T2V-A14B-Diffusers", steps=40, guidance=4.0,
                  guidance_2=3.0, flow_shift=5.0, boundary_ratio=0.875, lightx2v=LIGHTNING_T2V_22,
                  aliases=("t2v_2_2",), description="Wan 2.2 text-to-video A14B (two experts)"),
        ModelSpec("wan2.2-i2v-a14b", "i2v22", repo="Wan-AI/Wan2.2-I2V-A14B-Diffusers", steps=40, guidance=3.5,
                  guidance_2=3.5, flow_shift=5.0, boundary_ratio=0.9, lightx2v=LIGHTNING_I2V_22,
                  aliases=("i2v_2_2",), description="Wan 2.2 image-to-video A14B (two experts)"),
        ModelSpec("wan2.2-ti2v-5b", "ti2v", repo="Wan-AI/Wan2.2-TI2V-5B-Diffusers", width=1280, height=704,
                  frames=121, steps=50, guidance=5.0, flow_shift=5.0, fps=24.0, aliases=("ti2v_2_2",),
                  description="Wan 2.2 text/image-to-video 5B"),
        ModelSpec("tiny-t2v", "t2v", tiny="t2v", description="tiny random-weight T2V (tests)", **tiny),
        ModelSpec("tiny-i2v", "i2v", tiny="i2v", description="tiny random-weight I2V (tests)", **tiny),
        ModelSpec("tiny-flf2v", "flf2v", tiny="flf2v", description="tiny random-weight FLF2V (tests)", **tiny),
        ModelSpec("tiny-vace", "vace", tiny="vace", description="tiny random-weight VACE (tests)", **tiny),
        ModelSpec("tiny-i2v22", "i2v22", tiny="i2v22", boundary_ratio=0.875,
                  description="tiny random-weight Wan 2.2 two-expert I2V (tests)", **tiny),
    ]


_FIELD_NAMES = {f.name for f in fields(ModelSpec)}


def _coerce(name: str, entry: dict[str, Any], base: ModelSpec | None, where: str) -> ModelSpec:
    entry = dict(entry)
    entry.pop("base", None)
    if "resolution" in entry:
        try:
            w, h = (int(x) for x in str(entry.pop("resolution")).lower().split("x"))
        except ValueError:
            raise InvalidInput(f"{where}: model {name!r}: resolution must be 'WxH'") from None
        entry["width"], entry["height"] = w, h
    for key in ("causvid", "lightx2v"):
        if isinstance(entry.get(key), dict):
            entry[key] = SpeedLora(**entry[key])
    if "aliases" in entry:
        entry["aliases"] = tuple(entry["aliases"])
    unknown = set(entry) - _FIELD_NAMES
    if unknown:
        raise InvalidInput(f"{where}: model {name!r}: unknown fields {sorted(unknown)}; "
                           f"known: {sorted(_FIELD_NAMES | {'resolution', 'base'})}")
    if base is not None:
        if ("path" in entry or "repo" in entry) and "tiny" not in entry:
            entry["tiny"] = None  # a new checkpoint location replaces the tiny preset
        if "path" in entry and "repo" not in entry:
            entry.setdefault("revision", None)
        spec = replace(base, name=name, **entry) if base.name != name else replace(base, **entry)
    else:
        if "kind" not in entry:
            raise InvalidInput(f"{where}: new model {name!r} needs a 'kind' ({', '.join(KINDS)}) or a 'base'")
        spec = ModelSpec(name=name, **entry)
    if spec.kind not in KINDS:
        raise InvalidInput(f"{where}: model {name!r}: kind {spec.kind!r} is not one of {', '.join(KINDS)}")
    if not (spec.path or spec.repo or spec.tiny):
        raise InvalidInput(f"{where}: model {name!r} needs a 'path' or a 'repo'")
    return spec


@dataclass
class Catalog:
    specs: dict[str, ModelSpec] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def add(self, spec: ModelSpec) -> None:
        self.specs[spec.name] = spec
        for a in spec.aliases:
            self.aliases[a] = spec.name

    def lookup(self, name: str) -> ModelSpec | None:
        if name in self.specs:
            return self.specs[name]
        if name in self.aliases:
            return self.specs[self.aliases[name]]
        low = {k.lower(): k for k in list(self.specs) + list(self.aliases)}
        key = low.get(name.lower())
        return self.lookup(key) if key else None

    def resolve(self, name: str) -> ModelSpec:
        spec = self.lookup(str(name or "").strip())
        if spec is None:
            shown = str(name)
            shown = repr(shown) if len(shown) <= 80 else repr(shown[:80]) + f"... ({len(shown)} characters)"
            raise InvalidInput(f"unknown model {shown}; known models: {', '.join(self.names())} "
                               f"(add your own in the JSON file named by $HEADLESS_MODEL_CATALOG)")
        return spec

    def names(self) -> list[str]:
        return sorted(set(self.specs) | set(self.aliases))

    def merge_file(self, path: Path) -> None:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise InvalidInput(f"model catalog file not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"model catalog {path} is not valid JSON: {exc}") from None
        if isinstance(data, dict) and isinstance(data.get("models"), dict):
            data = data["models"]
        if not isinstance(data, dict):
            raise InvalidInput(f"model catalog {path} must be a JSON object of name -> entry")
        for name, entry in data.items():
            if not isinstance(entry, dict):
                raise InvalidInput(f"model catalog {path}: entry {name!r} must be an object")
            base = None
            if "base" in entry:
                base = self.lookup(entry["base"])
                if base is None:
                    raise InvalidInput(f"model catalog {path}: {name!r} is based on unknown model {entry['base']!r}")
            else:
                base = self.lookup(name)
                if base is not None and base.name != name:
                    name = base.name  # an alias names the entry it points to
            spec = _coerce(name, entry, base, str(path))
            self.add(spec)


_cache: dict[tuple, Catalog] = {}


def load_catalog(path: str | Path | None = None) -> Catalog:
    """The built-in catalog merged with the user's file (path argument, else $HEADLESS_MODEL_CATALOG)."""
    if not path:
        from source.settings import settings

        path = settings().model_catalog
    key: tuple = (None,)
    if path:
        p = Path(path)
        try:
            st = p.stat()
            key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
        except OSError:
            key = (str(p), None, None)
    if key in _cache:
        return _cache[key]
    cat = Catalog()
    for spec in _builtin():
        cat.add(spec)
    if path:
        cat.merge_file(Path(path))
    _cache[key] = cat
    return cat


def resolve_model(name: str, catalog_path: str | Path | None = None) -> ModelSpec:
    return load_catalog(catalog_path).resolve(name)


def default_model_for_task(task_type: str) -> str:
    """The model a seed alias task type means when params name none."""
    return {"i2v": "i2v", "vace": "vace_14B", "flf2v": "flf2v_720p", "t2v": "t2v"}.get(task_type, "t2v")
