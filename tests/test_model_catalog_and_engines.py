"""Catalog, handler mapping, engine errors, tiny-model building and the optional Wan2GP adapter."""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
import textwrap
from pathlib import Path

import pytest

from source.generation.model_catalog import load_catalog, resolve_model
from source.task_context import InvalidInput


# -- catalog -------------------------------------------------------------------------------------------
def test_builtin_catalog_names_and_aliases():
    cat = load_catalog()
    for alias, repo in [("vace_14B", "Wan-AI/Wan2.1-VACE-14B-diffusers"), ("vace_1.3B", "Wan-AI/Wan2.1-VACE-1.3B-diffusers"),
                        ("t2v", "Wan-AI/Wan2.1-T2V-14B-Diffusers"), ("t2v_1.3B", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"),
                        ("i2v", "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"),
                        ("i2v_720p", "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers"),
                        ("flf2v_720p", "Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers"),
                        ("i2v_2_2", "Wan-AI/Wan2.2-I2V-A14B-Diffusers"), ("t2v_2_2", "Wan-AI/Wan2.2-T2V-A14B-Diffusers"),
                        ("ti2v_2_2", "Wan-AI/Wan2.2-TI2V-5B-Diffusers")]:
        assert cat.resolve(alias).repo == repo
    assert cat.resolve("i2v_2_2").boundary_ratio == 0.9 and cat.resolve("t2v_2_2").boundary_ratio == 0.875
    assert cat.resolve("i2v_720p").width == 1280 and cat.resolve("ti2v_2_2").fps == 24
    for t in ("tiny-t2v", "tiny-i2v", "tiny-flf2v", "tiny-vace", "tiny-i2v22"):
        assert cat.resolve(t).tiny
    with pytest.raises(InvalidInput, match="unknown model"):
        cat.resolve("nope")


def test_user_catalog_file_adds_and_overrides(tmp_path, monkeypatch):
    f = tmp_path / "catalog.json"
    f.write_text(json.dumps({
        "vace_14B": {"revision": "abc123", "steps": 20},
        "my-vace": {"base": "vace_14B", "path": str(tmp_path / "local"), "aliases": ["mine"]},
        "fast": {"repo": "FastVideo/FastWan2.1-T2V-14B-Diffusers", "kind": "t2v", "steps": 4, "guidance": 1.0,
                 "resolution": "832x480"},
    }))
    monkeypatch.setenv("HEADLESS_MODEL_CATALOG", str(f))
    v = resolve_model("vace_14B")
    assert v.revision == "abc123" and v.steps == 20 and v.repo == "Wan-AI/Wan2.1-VACE-14B-diffusers"
    mine = resolve_model("mine")
    assert mine.name == "my-vace" and mine.path == str(tmp_path / "local") and mine.kind == "vace"
    assert mine.steps == 20
    fast = resolve_model("fast")
    assert fast.steps == 4 and (fast.width, fast.height) == (832, 480)
    f.write_text(json.dumps({"bad": {"repo": "x/y"}}))
    with pytest.raises(InvalidInput, match="kind"):
        load_catalog(f)
    f.write_text(json.dumps({"t2v": {"colour": "red"}}))
    with pytest.raises(InvalidInput, match="unknown fields"):
        load_catalog(f)


def test_catalog_local_path_model_loads_through_from_pretrained(tmp_path, monkeypatch, gen_ctx, tiny_models):
    from source.generation.bridge import generate_single_video

    f = tmp_path / "catalog.json"
    f.write_text(json.dumps({"my-t2v": {"base": "tiny-t2v", "path": str(tiny_models / "t2v")}}))
    monkeypatch.setenv("HEADLESS_MODEL_CATALOG", str(f))
    res = generate_single_video(gen_ctx(), dict(model="my-t2v", resolution="32x32", video_length=5,
                                                num_inference_steps=2, seed=1))
    side = json.loads(res.sidecar_path.read_text())
    assert side["model"]["revision"].startswith("local:") and res.frames == 5


# -- engine errors --------------------------------------------------------------------------------------
def test_hub_model_not_available_offline_is_invalid_input(tmp_path, monkeypatch, gen_ctx):
    from source.generation.bridge import generate_single_video

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HEADLESS_HF_CACHE", str(tmp_path / "hf"))
    with pytest.raises(InvalidInput, match="offline"):
        generate_single_video(gen_ctx(), dict(model="t2v_1.3B", resolution="64x64", video_length=5, seed=1))


def test_local_path_without_model_index_is_invalid(tmp_path, monkeypatch):
    from source.generation.engine import Engine

    f = tmp_path / "catalog.json"
    f.write_text(json.dumps({"broken": {"kind": "t2v", "path": str(tmp_path)}}))
    with pytest.raises(InvalidInput, match="model_index.json"):
        Engine().locate(load_catalog(f).resolve("broken"))


def test_cuda_errors_are_fatal_and_oom_transient(monkeypatch):
    from source.generation.engine import Engine
    from source.task_context import FatalWorkerError, TransientError

    eng = Engine()

    class FakePipe:
        scheduler = None

        def __init__(self, exc):
            self.exc = exc

        def __call__(self, **kw):
            raise self.exc

        def maybe_free_model_hooks(self):
            pass

    from source.generation.engine import LoadedModel

    spec = resolve_model("tiny-t2v")
    for exc, expected in [(RuntimeError("CUDA error: an illegal memory access was encountered"), FatalWorkerError),
                          (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), TransientError)]:
        eng.model = LoadedModel(spec=spec, pipe=FakePipe(exc), model_dir=Path("."), revision="x", key=(),
                                device="cpu", dtype="float32", memory="cpu", load_seconds=0)
        monkeypatch.setattr(eng, "_scheduler_for", lambda *a: None)
        with pytest.raises(expected):
            eng.generate({"num_inference_steps": 1}, seed=1, flow_shift=3.0)
    eng.model = None


# -- tiny model building -------------------------------------------------------------------------------
def _build_in_child(cache: str, q) -> None:
    import os

    os.environ["HEADLESS_MODEL_CACHE"] = cache
    from source.generation.tiny_models import ensure_tiny_model

    q.put(str(ensure_tiny_model("t2v")))


def test_tiny_model_built_once_by_concurrent_processes(tmp_path):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_build_in_child, args=(str(tmp_path), q)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    paths = {q.get(timeout=5) for _ in procs}
    assert paths == {str(tmp_path / "tiny" / "t2v")}
    assert (tmp_path / "tiny" / "t2v" / "model_index.json").is_file()
    leftovers = [p.name for p in (tmp_path / "tiny").iterdir() if p.name.startswith(".t2v.") and p.is_dir()]
    assert leftovers == []


# -- handler -----------------------------------------------------------------------------------------------
def test_generate_handler_end_to_end(gen_ctx, tmp_path):
    import numpy as np

    from source.handler_registry import run_handler
    from source.media.images import save_png

    save_png(np.full((64, 64, 3), 120, np.uint8), tmp_path / "s.png")
    ctx = gen_ctx(task_type="i2v")
    res = run_handler("i2v", {"model": "tiny-i2v", "frames": 10, "steps": 2, "resolution": "64x64", "seed": 3,
                              "image_start_paths": [str(tmp_path / "s.png")], "prompt": "x"}, ctx)
    assert res.output_location and res.output_location.endswith(".mp4")
    r = res.result
    assert (r["frames"], r["width"], r["height"], r["seed"], r["cache_hit"]) == (9, 64, 64, 3, False)
    assert r["adjustments"] == {"video_length": [10, 9]} and r["sidecar"].endswith(".json")


# -- Wan2GP adapter -----------------------------------------------------------------------------------------
FAKE_API = '''
import shutil, types
from pathlib import Path
CALLS = []

class _Events:
    def __init__(self, n): self.n = n
    def iter(self, timeout=0.2):
        for k in range(1, self.n + 1):
            yield types.SimpleNamespace(kind="progress", data=types.SimpleNamespace(current_step=k, total_steps=self.n))

class _Job:
    def __init__(self, settings, out):
        self.settings, self.out, self.cancelled = settings, out, False
        self.events = _Events(settings["num_inference_steps"])
    def cancel(self): self.cancelled = True
    def result(self):
        if self.cancelled:
            return types.SimpleNamespace(generated_files=[], errors=[], cancelled=True)
        dst = Path(self.out) / "wgp_out.mp4"
        shutil.copyfile(SAMPLE, dst)
        return types.SimpleNamespace(generated_files=[str(dst)], errors=[], cancelled=False)

class _Session:
    def __init__(self, output_dir): self.output_dir = output_dir
    def submit_task(self, settings):
        CALLS.append(settings)
        return _Job(settings, self.output_dir)

def init(root, cli_args=None, output_dir=None, console_output=True, **kw):
    return _Session(output_dir)
'''


@pytest.fixture
def fake_wan2gp(tmp_path, monkeypatch):
    import numpy as np

    from source.generation import wan2gp_engine
    from source.media.video_io import write_video

    root = tmp_path / "Wan2GP"
    (root / "shared").mkdir(parents=True)
    sample = tmp_path / "sample.mp4"
    write_video([np.full((48, 64, 3), 90, np.uint8)] * 9, sample)
    (root / "shared" / "__init__.py").write_text("")
    (root / "shared" / "api.py").write_text(f"SAMPLE = {str(sample)!r}\n" + textwrap.dedent(FAKE_API))
    monkeypatch.setenv("WAN2GP_DIR", str(root))
    for mod in [m for m in sys.modules if m == "shared" or m.startswith("shared.")]:
        monkeypatch.delitem(sys.modules, mod)
    wan2gp_engine.reset_session()
    yield root
    wan2gp_engine.reset_session()
    for mod in [m for m in sys.modules if m == "shared" or m.startswith("shared.")]:
        sys.modules.pop(mod, None)
    if str(root) in sys.path:
        sys.path.remove(str(root))


def test_wan2gp_adapter_passes_settings_and_reports_progress(gen_ctx, fake_wan2gp, tmp_path):
    import numpy as np

    from source.generation.bridge import generate_single_video
    from source.media.images import save_png

    save_png(np.full((48, 64, 3), 10, np.uint8), tmp_path / "ref.png")
    res = generate_single_video(gen_ctx(), dict(model="vace_14B", engine="wan2gp", prompt="p", resolution="64x48",
                                                video_length=9, num_inference_steps=3, seed=5,
                                                image_refs=[str(tmp_path / "ref.png")]))
    from shared import api  # the fake

    s = api.CALLS[-1]
    assert s["model_type"] == "vace_14B" and s["resolution"] == "64x48" and s["video_length"] == 9
    assert s["num_inference_steps"] == 3 and s["seed"] == 5 and s["video_prompt_type"] == "I"
    assert (res.frames, res.width, res.height) == (9, 64, 48)
    assert any(m == "step 3 of 3" for _, m in gen_ctx.progress)
    side = json.loads(res.sidecar_path.read_text())
    assert side["engine"] == "wan2gp"


def test_wan2gp_selected_but_missing_is_a_clear_error(gen_ctx, tmp_path, monkeypatch):
    from source.generation import wan2gp_engine
    from source.generation.bridge import generate_single_video

    wan2gp_engine.reset_session()
    monkeypatch.setenv("WAN2GP_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("HEADLESS_ENGINE", "wan2gp")
    with pytest.raises(InvalidInput, match="not mounted"):
        generate_single_video(gen_ctx(), dict(model="t2v", resolution="64x64", video_length=5, seed=1))


def test_wan2gp_not_imported_by_default():
    import subprocess

    code = ("import source.handlers.generate, source.generation.bridge, sys; "
            "print('source.generation.wan2gp_engine' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "False", out.stderr


# -- offline and not cached is permanent --------------------------------------------------------------
def test_offline_missing_depth_model_fails_once_with_a_clear_message(db_url, tmp_path):
    """HF_HUB_OFFLINE=1 and an empty Hugging Face cache: the default depth model can never load here, so the
    task fails on its first attempt (it used to be retried three times over ~32 s as a transient error)."""
    import numpy as np

    from source.media.images import save_png
    from source.store.task_store import TaskStore
    from tests.worker_process import WorkerProcess

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    save_png(np.full((32, 48, 3), 90, np.uint8), inputs / "a.png")
    store = TaskStore(db_url)
    tid = store.add_task("generate_depth", {"input_image_path": str(inputs / "a.png")}, max_attempts=3)
    hf = tmp_path / "hf"
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(hf), "HF_HUB_CACHE": str(hf / "hub"),
           "HEADLESS_HF_CACHE": str(hf / "hub")}
    w = WorkerProcess(db_url, tmp_path / "logs", "--exit-when-idle", "--poll-interval", "0.2", "--input-root",
                      str(inputs), "--output-dir", str(tmp_path / "outputs"), worker_id="offline", env=env)
    try:
        assert w.wait(120) == 0, w.stderr_tail()
    finally:
        w.stop()
    row = store.get(tid)
    assert row["status"] == "Failed" and row["attempts"] == 1, (row["status"], row["attempts"])
    message = row["error_message"]
    assert "depth model depth-anything-v2-small" in message and "offline (HF_HUB_OFFLINE=1)" in message
    assert len(message) < 600
    assert not w.events("task_retry_scheduled") and len(w.events("task_failed")) == 1
    store.close()


def test_hub_errors_are_classified_by_what_happens_next(monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    from source import settings as settings_module
    from source.generation.hub import classify_hub_error
    from source.task_context import TransientError

    def wrapped(inner: Exception) -> OSError:  # transformers / diffusers wrap Hub errors in OSError
        try:
            try:
                raise inner
            except Exception as exc:
                raise OSError("We couldn't connect to 'https://huggingface.co' to load the files") from exc
        except OSError as outer:
            return outer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings_module.reset()
    assert isinstance(classify_hub_error(wrapped(LocalEntryNotFoundError("no cache")), "m"), InvalidInput)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    settings_module.reset()
    online = classify_hub_error(wrapped(ConnectionError("reset by peer")), "m")
    assert isinstance(online, TransientError) and "will retry" in str(online)
