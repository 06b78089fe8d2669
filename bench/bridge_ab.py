"""A/B of the generation bridge's own time against a reference version of bridge.py, in one process.

    .venv/bin/python bench/bridge_ab.py [--reference 7c3c25e] [--rounds 6] [--size 64] [--frames 9] [--steps 2]

The reference bridge.py (default: the commit before the bridge was split into request / inputs / cache /
engines) is loaded from git beside the current one; both drive the same warm engine. Rounds alternate
reference and current on each mode, so machine load (a shared 2-core box) hits both alike. Measured per task:
`outside_ms` = wall time of generate_single_video minus the pipeline's own `generate_s` and `load_s` (from the
sidecar): request, inputs, cache key, encode, sidecar (min and median per mode; the sum compares minimums).
Also a VACE cache hit's wall time, and `bridge_only_ms`: whole calls with the denoiser stubbed out (zeros of
the right shape), the least noisy view of the bridge's own cost. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bridge_bench import REPO, _inputs, _params

MODES = ("t2v", "i2v", "flf2v", "vace", "i2v22")


def _load_reference(rev: str):
    """The reference bridge.py as a module; names it imported from engine.py that moved are provided."""
    import source.generation.engine as engine
    from source.generation import hub, inputs

    engine.sha256_file = inputs.sha256_file
    engine._classify_hub_error = hub.classify_hub_error
    text = subprocess.run(["git", "show", f"{rev}:source/generation/bridge.py"], cwd=REPO, check=True,
                          capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="bridge_ref_")) / "bridge_reference.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("bridge_reference", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bridge_reference"] = module  # dataclasses and pydantic look their module up
    spec.loader.exec_module(module)
    return module


def _outside_ms(run, ctx, params) -> float:
    t = time.perf_counter()
    res = run(ctx, params)
    wall = time.perf_counter() - t
    tm = json.loads(res.sidecar_path.read_text())["timings"]
    return 1000 * (wall - tm.get("generate_s", 0.0) - tm.get("load_s", 0.0))


def _stubbed(versions, factory, media, base, rounds: int) -> dict:
    """Whole-call wall time with the denoiser replaced by zeros of the right shape (the model is loaded for
    real first): what is left is the bridge itself, encode and sidecar included, with little noise."""
    import numpy as np

    from source.generation.engine import get_engine

    engine, out = get_engine(), {}
    for mode in ("t2v", "i2v", "vace"):
        for run in versions.values():
            run(factory(), _params(mode, media, base, 1) | {"use_cache": False})
        real = engine.generate
        engine.generate = lambda call, **kw: np.zeros((call["num_frames"], call["height"], call["width"], 3),
                                                      np.float32)
        rows: dict[str, list[float]] = {k: [] for k in versions}
        try:
            for i in range(rounds):
                for name, run in (list(versions.items()) if i % 2 == 0 else list(reversed(versions.items()))):
                    t = time.perf_counter()
                    run(factory(), _params(mode, media, base, 100 + i) | {"use_cache": False})
                    rows[name].append(1000 * (time.perf_counter() - t))
        finally:
            engine.generate = real
        out[mode] = {k: {"min": round(min(v), 2), "median": round(statistics.median(v), 2)} for k, v in rows.items()}
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference", default="7c3c25e")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--steps", type=int, default=2)
    a = ap.parse_args(argv)

    from source.generation import bridge
    from source.generation.tiny_models import ensure_all_tiny_models
    from tests.fixtures_models import GenCtxFactory

    ensure_all_tiny_models()
    reference = _load_reference(a.reference)
    versions = {"reference": reference.generate_single_video, "current": bridge.generate_single_video}
    root = Path(tempfile.mkdtemp(prefix="bridge_ab_"))
    media = _inputs(root, a.size, a.frames)
    base = dict(prompt="a cat walking", resolution=f"{a.size}x{a.size}", video_length=a.frames,
                num_inference_steps=a.steps)
    factory = GenCtxFactory(root)
    out: dict = {"reference": a.reference, "rounds": a.rounds,
                 "sizes": {"resolution": base["resolution"], "frames": a.frames, "steps": a.steps}, "outside_ms": {}}
    for mode in MODES:
        rows: dict[str, list[float]] = {k: [] for k in versions}
        for run in versions.values():  # warm the model and both code paths (not measured)
            run(factory(), _params(mode, media, base, 1) | {"use_cache": False})
        for i in range(a.rounds):
            order = list(versions.items()) if i % 2 == 0 else list(reversed(versions.items()))
            for name, run in order:
                params = _params(mode, media, base, 100 + i) | {"use_cache": False}
                rows[name].append(_outside_ms(run, factory(), params))
        # the minimum is the least disturbed by other processes; the median is shown beside it
        out["outside_ms"][mode] = {k: {"min": round(min(v), 1), "median": round(statistics.median(v), 1)}
                                   for k, v in rows.items()}
    hits: dict[str, list[float]] = {k: [] for k in versions}
    cached = {name: _params("vace", media, base, 4242 + i) for i, name in enumerate(versions)}
    for name, run in versions.items():
        run(factory(), cached[name])  # fills the cache
    for i in range(4 * a.rounds):
        for name, run in (list(versions.items()) if i % 2 == 0 else list(reversed(versions.items()))):
            t = time.perf_counter()
            assert run(factory(), cached[name]).cache_hit
            hits[name].append(1000 * (time.perf_counter() - t))
    out["cache_hit_ms"] = {k: {"min": round(min(v), 2), "median": round(statistics.median(v), 2)}
                           for k, v in hits.items()}
    out["bridge_only_ms"] = _stubbed(versions, factory, media, base, 4 * a.rounds)
    ref_total = sum(m["reference"]["min"] for m in out["outside_ms"].values())
    cur_total = sum(m["current"]["min"] for m in out["outside_ms"].values())
    out["outside_ms_sum"] = {"reference": round(ref_total, 1), "current": round(cur_total, 1),
                             "ratio": round(cur_total / ref_total, 3) if ref_total else None}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
