"""Engine execution and refit on a GPU: TensorRTBackend vs onnxruntime (through Polygraphy), CUDA
graphs (captured once and replayed: counts asserted, one context per shape), engines interleaved on
one shared memory block, feeds produced on a busy side stream without synchronisation, a second GPU,
capture while other threads enqueue, close with work in flight, Polygraphy's own TrtRunner as a
second opinion, the executor's overlap on the TensorRT backend, deserialization failures, and a UNet
checkpoint swap verified against a fresh build.

Every test here carries ``@pytest.mark.gpu`` and skips (with the reason) where there is no GPU or
no TensorRT flavour that can run on it (TensorRT-RTX plans do not run on sm_90/sm_100).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mimic.engine.gpu import RTX_DEFAULT_SMS, can_execute, gpu_info, trt_info
from mimic.errors import EngineError

pytestmark = pytest.mark.gpu

TINY_STAGES = ("image_encoder", "pose_net", "unet", "vae_decoder")


def usable_target() -> str | None:
    gpu = gpu_info(0)
    if gpu is None:
        return None
    if can_execute("tensorrt"):
        return "tensorrt"
    if can_execute("tensorrt-rtx") and gpu.compute_capability in RTX_DEFAULT_SMS:
        return "tensorrt-rtx"
    return None


def needs_tiny_preset() -> None:
    """Building tiny engines exports the tiny preset: diffusers, transformers and onnx are needed."""
    import importlib.util

    missing = [m for m in ("diffusers", "transformers", "onnx") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} to export the tiny preset (not installed here)")


@pytest.fixture(scope="module")
def target() -> str:
    t = usable_target()
    if t is None:
        gpu = gpu_info(0)
        pytest.skip(f"no TensorRT flavour can run engines here (GPU: {gpu.describe() if gpu else 'none'}; "
                    f"tensorrt {'present' if trt_info('tensorrt') else 'absent'}, tensorrt-rtx {'present' if trt_info('tensorrt-rtx') else 'absent'})")
    return t


@pytest.fixture(scope="module")
def engines(tiny_cache, tmp_path_factory, target) -> Path:
    from mimic.engine.build import build_engine_set

    needs_tiny_preset()
    out = tmp_path_factory.mktemp("gpu-engines")
    build_engine_set(out, preset="tiny", target=target, stages=TINY_STAGES, workspace_gb=2)
    return out


@pytest.fixture
def backend(engines):
    from mimic.runtime.backend_trt import TensorRTBackend

    b = TensorRTBackend(engines, device="cuda", stages=TINY_STAGES)
    yield b
    b.close()


def opt_feeds(engines: Path, stage: str, seed: int = 0) -> dict[str, torch.Tensor]:
    from mimic.engine.store import EngineStore
    from mimic.engine.validate import random_feeds

    m = EngineStore(engines).read_manifest(stage)
    return {k: v.cuda() for k, v in random_feeds(stage, m, "opt", seed, {}).items()}


def test_engines_match_onnxruntime(engines):
    from mimic.engine.validate import validate_engines

    rows = validate_engines(engines, stages=TINY_STAGES, points=("min", "opt", "max"))
    assert rows and all(r.passed for r in rows)


def test_backend_outputs_and_shared_memory(backend, engines):
    feeds = opt_feeds(engines, "unet")
    out = backend.run("unet", feeds)["noise_pred"]
    assert out.is_cuda and out.dtype == torch.float16 and out.shape == feeds["sample"].shape[:2] + (4,) + feeds["sample"].shape[3:]
    from mimic.engine.runner import shared_memory_size

    sizes = [r.device_memory_size for r in backend._runners.values()]
    assert len(sizes) == len(TINY_STAGES)
    # one block for all engines, sized by the largest: not one per engine
    assert backend.memory.allocated == backend.device_memory_bytes == shared_memory_size(sizes)


def test_input_checks_before_tensorrt(backend, engines):
    feeds = opt_feeds(engines, "unet")
    big = dict(feeds, sample=torch.zeros(2, 99, *feeds["sample"].shape[2:], device="cuda"))
    with pytest.raises(EngineError, match="outside the engine's profile"):
        backend.run("unet", big)
    with pytest.raises(EngineError, match="missing 'timestep'"):
        backend.run("unet", {k: v for k, v in feeds.items() if k != "timestep"})


def test_side_stream_and_cuda_graph_match_plain_run(engines):
    from mimic.runtime.backend_trt import TensorRTBackend

    feeds = opt_feeds(engines, "vae_decoder")
    plain = TensorRTBackend(engines, stages=["vae_decoder"])
    ref = plain.run("vae_decoder", feeds)["frames"].clone()
    r = plain.runner("vae_decoder")
    assert r.stream is not None and r.stream != torch.cuda.default_stream()  # never the legacy default stream
    side = torch.cuda.Stream()
    got = plain.run("vae_decoder", feeds, stream=side)["frames"]
    with torch.cuda.stream(side):
        got = got.clone()  # the results were handed back to `side` with an event
    side.synchronize()
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    plain.close()
    graphed = TensorRTBackend(engines, stages=["vae_decoder"], use_cuda_graph=True)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        outs = [graphed.run("vae_decoder", feeds)["frames"].clone() for _ in range(4)]  # capture, then replays
    torch.cuda.synchronize()
    g = graphed.runner("vae_decoder")
    # a graph really was captured and reused: a silent fallback to plain execution fails here
    assert (g.executions, g.captures, g.replays) == (1, 1, 3), (g.executions, g.captures, g.replays)
    for out in outs:
        torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3)
    graphed.close()


def test_two_shapes_two_graphs_on_two_contexts(engines):
    """The decoder alternates a chunk and a remainder: one graph (and one context) per shape."""
    from mimic.engine.store import EngineStore
    from mimic.engine.validate import random_feeds
    from mimic.runtime.backend_trt import TensorRTBackend

    m = EngineStore(engines).read_manifest("vae_decoder")
    shapes = {p: {k: v.cuda() for k, v in random_feeds("vae_decoder", m, p, 3, {}).items()} for p in ("min", "max")}
    plain = TensorRTBackend(engines, stages=["vae_decoder"])
    refs = {p: plain.run("vae_decoder", f)["frames"].clone() for p, f in shapes.items()}
    torch.cuda.synchronize()
    plain.close()
    b = TensorRTBackend(engines, stages=["vae_decoder"], use_cuda_graph=True)
    got = [(p, b.run("vae_decoder", shapes[p])["frames"].clone()) for p in ("min", "max", "min", "max", "min")]
    torch.cuda.synchronize()
    r = b.runner("vae_decoder")
    assert (r.captures, r.replays, r.graph_count) == (2, 3, 2)
    assert len({id(g.context) for g in r._graphs.values()}) == 2 and all(g.context is not r.context for g in r._graphs.values())
    for p, out in got:
        torch.testing.assert_close(out, refs[p], rtol=1e-3, atol=1e-3)
    b.close()


def test_interleaved_engines_on_one_block_match_separate_runs(engines):
    """unet -> vae_decoder -> unet -> vae_decoder on one shared block (with and without graphs):
    a block released before the work using it finished would corrupt the other engine's run."""
    from mimic.runtime.backend_trt import TensorRTBackend

    feeds = {"unet": opt_feeds(engines, "unet", 1), "vae_decoder": opt_feeds(engines, "vae_decoder", 2)}
    out_name = {"unet": "noise_pred", "vae_decoder": "frames"}
    alone = {}
    for stage, f in feeds.items():
        b = TensorRTBackend(engines, stages=[stage])
        alone[stage] = b.run(stage, f)[out_name[stage]].clone()
        torch.cuda.synchronize()
        b.close()
    for graphs in (False, True):
        b = TensorRTBackend(engines, stages=["unet", "vae_decoder"], use_cuda_graph=graphs)
        order = ["unet", "vae_decoder", "unet", "vae_decoder", "unet"]
        got = [(s, b.run(s, feeds[s])[out_name[s]].clone()) for s in order]
        torch.cuda.synchronize()
        assert len(b._memories) == 1 and b.memory.allocated == b.device_memory_bytes
        for stage, out in got:
            torch.testing.assert_close(out, alone[stage], rtol=1e-3, atol=1e-3, msg=lambda m: f"{stage} (graphs={graphs}): {m}")
        b.close()


def test_feeds_from_a_busy_side_stream_are_waited_for(engines):
    """Feeds written at the end of a long queue on another stream, no host synchronisation before
    run(): the engine must wait for them (event), and the caller's stream must wait for the results."""
    from mimic.runtime.backend_trt import TensorRTBackend

    b = TensorRTBackend(engines, stages=["unet"])
    feeds = opt_feeds(engines, "unet", 4)
    ref = b.run("unet", feeds)["noise_pred"].clone()
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        late = {k: torch.full_like(v, float("nan")) for k, v in feeds.items()}
        x = torch.randn(4096, 4096, device="cuda")
        for _ in range(40):  # keep the side stream busy for a while
            x = torch.tanh(x @ x)
        for k in late:
            late[k].copy_(feeds[k])
    got = b.run("unet", late, stream=side)["noise_pred"]
    with torch.cuda.stream(side):
        got = got.clone()
    side.synchronize()
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    b.close()


def test_capture_while_other_threads_enqueue(engines):
    """Thread-local capture mode: another thread's CUDA work during the capture stays legal."""
    import threading

    from mimic.runtime.backend_trt import TensorRTBackend

    stop, errors = threading.Event(), []

    def busy():
        try:
            s = torch.cuda.Stream()
            with torch.cuda.stream(s):
                x = torch.randn(1024, 1024, device="cuda")
                while not stop.is_set():
                    x = torch.tanh(x @ x)
                    torch.empty(1 << 20, device="cuda")  # allocations too
            s.synchronize()
        except Exception as err:  # "operation not permitted when stream is capturing" in global mode
            errors.append(err)

    t = threading.Thread(target=busy)
    t.start()
    try:
        b = TensorRTBackend(engines, stages=["vae_decoder"], use_cuda_graph=True)
        feeds = opt_feeds(engines, "vae_decoder")
        for _ in range(3):
            b.run("vae_decoder", feeds)
        torch.cuda.synchronize()
        assert b.runner("vae_decoder").captures == 1
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    b.close()


def test_close_with_work_in_flight(engines):
    from mimic.runtime.backend_trt import TensorRTBackend

    feeds = opt_feeds(engines, "unet", 5)
    b = TensorRTBackend(engines, stages=["unet"], use_cuda_graph=True)
    ref = b.run("unet", feeds)["noise_pred"].clone()
    torch.cuda.synchronize()
    outs = [b.run("unet", feeds)["noise_pred"] for _ in range(3)]
    b.close()  # no synchronisation before: close waits for the enqueued work, then destroys
    torch.cuda.synchronize()
    for out in outs:
        torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3)


def test_second_gpu_from_a_worker_thread(engines):
    """``--device cuda:1``: the runner makes its device current in every call, whatever the
    calling thread has current."""
    import threading

    from mimic.runtime.backend_trt import TensorRTBackend

    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    feeds0 = opt_feeds(engines, "unet", 6)
    b0 = TensorRTBackend(engines, stages=["unet"], device="cuda:0")
    ref = b0.run("unet", feeds0)["noise_pred"].float().cpu()
    b0.close()
    b1 = TensorRTBackend(engines, stages=["unet"], device="cuda:1", strict_gpu_name=False)
    out = {}

    def work():
        torch.cuda.set_device(0)  # the thread's current device is the other GPU
        out["x"] = b1.run("unet", {k: v.to("cuda:1") for k, v in feeds0.items()})["noise_pred"]
        torch.cuda.synchronize(1)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert out["x"].device == torch.device("cuda", 1)
    torch.testing.assert_close(out["x"].float().cpu(), ref, rtol=1e-3, atol=1e-3)
    b1.close()


def test_polygraphy_trt_runner_agrees_with_ours(engines, target):
    """Polygraphy's own TrtRunner (its context, its stream, its buffers) as an independent opinion."""
    from mimic.engine.runner import SharedDeviceMemory, TrtRunner, open_engine
    from mimic.engine.store import EngineStore

    if target == "tensorrt-rtx":
        from polygraphy import config as poly_config

        poly_config.USE_TENSORRT_RTX = True
    try:
        from polygraphy.backend.trt import TrtRunner as PolygraphyTrtRunner
    except ImportError as err:
        pytest.skip(f"Polygraphy's TensorRT backend is not importable: {err}")
    store = EngineStore(engines)
    for stage in ("unet", "vae_decoder"):
        feeds = opt_feeds(engines, stage, 7)
        opened = open_engine(store, stage)
        memory = SharedDeviceMemory("cuda")
        ours = TrtRunner(stage, opened.engine, opened.trt, memory, keepalive=opened.keepalive)
        got = {k: v.float().cpu().numpy() for k, v in ours.run(feeds).items()}
        torch.cuda.synchronize()
        ours.close()
        memory.free()
        with PolygraphyTrtRunner(opened.engine) as theirs:
            ref = theirs.infer({k: v.cpu().numpy() for k, v in feeds.items()})
        for name, arr in got.items():
            import numpy as np

            np.testing.assert_allclose(arr, np.asarray(ref[name], dtype=np.float32), rtol=1e-3, atol=1e-3)


@pytest.fixture(scope="module")
def pipeline_engines(tiny_cache, tmp_path_factory, target) -> Path:
    from mimic.engine.build import build_engine_set
    from mimic.spec import STAGE_NAMES

    needs_tiny_preset()
    out = tmp_path_factory.mktemp("gpu-pipeline-engines")
    build_engine_set(out, preset="tiny", target=target, stages=list(STAGE_NAMES), workspace_gb=2)
    return out


def test_executor_overlap_on_tensorrt_is_byte_identical_to_sequential(pipeline_engines, tmp_path):
    """Three jobs overlapped (a CUDA stream per job, one shared activation block) give the same
    frames as the same jobs one after the other."""
    from gpu_helpers import pose_frame_jobs, read_png_frames
    from mimic.runtime.executor import JobExecutor
    from mimic.runtime.api import MimicMotion, RuntimeOptions

    jobs = {mode: pose_frame_jobs(tmp_path / mode, 3) for mode in ("sequential", "overlap")}
    with MimicMotion.from_preset("tiny", RuntimeOptions(backend="tensorrt", engines=pipeline_engines, device="cuda")) as mm:
        for mode, overlap in (("sequential", False), ("overlap", True)):
            reports = JobExecutor(mm, overlap=overlap).run(jobs[mode])
            assert all(r.error is None for r in reports), [r.error for r in reports]
    for a, b in zip(jobs["sequential"], jobs["overlap"]):
        assert (read_png_frames(a.out) == read_png_frames(b.out)).all()


def test_garbage_plan_is_an_error_not_none(target):
    from mimic.engine.builder import load_trt
    from mimic.engine.runner import deserialize_engine

    trt = load_trt(target)
    with pytest.raises(EngineError, match="could not deserialize|invalid"):
        deserialize_engine(trt, b"\x00garbage" * 1000, "garbage.plan")


def test_foreign_gpu_in_manifest_refused_before_deserialize(engines, tmp_path, monkeypatch):
    import shutil

    from mimic.engine import runner
    from mimic.runtime.backend_trt import TensorRTBackend

    out = Path(shutil.copytree(engines, tmp_path / "e"))
    m = json.loads((out / "pose_net.manifest.json").read_text())
    m["gpu"] = {"name": "NVIDIA Imaginary 9000", "compute_capability": "1.0"} if m["tensorrt"]["flavour"] == "tensorrt" else {"name": "any", "compute_capability": ["1.0"]}
    (out / "pose_net.manifest.json").write_text(json.dumps(m))
    called = []
    monkeypatch.setattr(runner, "deserialize_engine", lambda *a, **k: called.append(a))
    with pytest.raises(EngineError, match="rebuild with `mimic build-engines"):
        TensorRTBackend(out, stages=["pose_net"])
    assert not called


def test_refit_swaps_checkpoint_without_rebuild(tiny_cache, tmp_path, target):
    """Build the UNet refittable from checkpoint A, refit with checkpoint B, compare with a fresh B build."""
    from mimic.engine.build import build_engine_set
    from mimic.engine.refit import swap_weights
    from mimic.runtime.backend_trt import TensorRTBackend
    from mimic.export.exporter import export_weight_set
    from mimic.model.tiny import write_tiny_weights

    needs_tiny_preset()
    out = tmp_path / "refit"
    build_engine_set(out, preset="tiny", target=target, stages=["unet"], refittable=True)
    feeds = opt_feeds(out, "unet")
    a = TensorRTBackend(out, stages=["unet"])
    before = a.run("unet", feeds)["noise_pred"].float().clone()
    a.close()

    other = write_tiny_weights(tmp_path / "weights-b", seed=12345)  # same architecture, other values
    new_onnx = export_weight_set(tmp_path / "onnx-b", layout=other, precision="fp16", stages=["unet"]).results[0].path
    manifest = swap_weights(out, new_onnx, "unet", verify=True)
    assert manifest["refit"]["verified_max_rel"] <= 1e-2

    b = TensorRTBackend(out, stages=["unet"])
    after = b.run("unet", feeds)["noise_pred"].float()
    b.close()
    assert (after - before).abs().max() > 1e-3  # the weights really changed


def test_caching_pair_on_tensorrt(tiny_cache, tmp_path, target):
    """Deep-feature caching's engines: loaded lazily, unet_features' noise_pred is the unet engine's
    (same graph maths, same fp16 weights; bound 1e-2 of the peak) and unet_shallow fed that step's
    own feature reproduces it."""
    from mimic.engine.build import build_engine_set
    from mimic.runtime.backend_trt import TensorRTBackend
    from mimic.spec import CACHE_STAGES

    needs_tiny_preset()
    out = tmp_path / "pair"
    build_engine_set(out, preset="tiny", target=target, stages=["unet", *CACHE_STAGES], workspace_gb=2)
    b = TensorRTBackend(out)
    try:
        assert set(b._runners) == {"unet"} and b.cache_depths() == (1,)  # the pair loads on first use
        feeds = opt_feeds(out, "unet", 3)
        ref = b.run("unet", feeds)["noise_pred"].float()
        full = b.run("unet_features", {**feeds, "cache_depth": 1})
        cheap = b.run("unet_shallow", {**feeds, "deep_features": full["deep_features"], "cache_depth": 1})["noise_pred"].float()
        peak = float(ref.abs().max())
        assert float((full["noise_pred"].float() - ref).abs().max()) <= 1e-2 * peak
        assert float((cheap - full["noise_pred"].float()).abs().max()) <= 1e-2 * peak
        assert set(b._runners) == {"unet", *CACHE_STAGES}
    finally:
        b.close()


def test_refit_unet_covers_the_caching_pair(tiny_cache, tmp_path, target):
    """`mimic refit-unet` refits every engine with UNet weights, each verified against a fresh build."""
    from mimic.engine.build import build_engine_set, refit_unet_engine
    from mimic.model.tiny import write_tiny_weights
    from mimic.spec import CACHE_STAGES

    needs_tiny_preset()
    out = tmp_path / "refit-pair"
    build_engine_set(out, preset="tiny", target=target, stages=["unet", *CACHE_STAGES], refittable=True)
    other = write_tiny_weights(tmp_path / "weights-b", seed=12345)
    manifests = refit_unet_engine(out, preset="tiny", checkpoint=other.checkpoint)
    assert set(manifests) == {"unet", *CACHE_STAGES}
    assert all(m["refit"]["verified_max_rel"] <= 1e-2 for m in manifests.values())
