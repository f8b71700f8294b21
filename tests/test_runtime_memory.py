"""CI smoke for bounded host memory: decoded chunks are streamed to the writer one at a time (never
all held), and pose images are drawn per window instead of being held for the whole video. (The
full-size figure, growth per 100 frames at 576x1024, is measured by benchmarks/memory_growth.py:
benchmarks/RESULTS.md.) Counting held chunks, not tracemalloc: tracemalloc does not see torch's
allocations, so it could not fail when frames were held. The memory preflight counts every worker
and process (runtime/memory.py), and its estimate bounds a measured peak (slow)."""
import numpy as np
import pytest
import torch

from mimic.model.model_info import ModelInfo
from mimic.pose.images import ArrayPoses, DrawnPoses
from mimic.runtime.backend_torch import TorchBackend
from mimic.runtime.demo_assets import synthetic_poses
from mimic.runtime.inputs import JobInputs
from mimic.runtime.pipeline import Components, generate, in_memory_job
from mimic.model.config import GenerationConfig
from mimic.spec import StageName


class _DecodeCounter:
    def __init__(self, inner):
        self.inner, self.device, self.name = inner, inner.device, "counting"
        self.decoded_chunks = 0

    def run(self, stage, feeds, stream=None):
        if stage == StageName.VAE_DECODER:
            self.decoded_chunks += 1
        return self.inner.run(stage, feeds, stream)

    def close(self):
        pass


class _HeldChunks:
    """A sink that records how many decoded chunks existed but were not yet written."""

    def __init__(self, backend):
        self.backend, self.frames_written, self.max_pending = backend, 0, 0
        self.writes = 0

    def write(self, frames):
        self.writes += 1
        self.frames_written += len(frames)
        self.max_pending = max(self.max_pending, self.backend.decoded_chunks - self.writes)


def test_decoded_chunks_are_written_one_at_a_time(tiny_models):
    cfg = GenerationConfig(resolution=128, window=6, overlap=2, steps=1, decode_chunk=4)
    backend = _DecodeCounter(TorchBackend(tiny_models))
    components = Components(backend=backend, info=ModelInfo.from_models(tiny_models), dtype=torch.float32, base_config=cfg, detector=None)
    rs = np.random.RandomState(0)
    frames = 33
    inputs = JobInputs((rs.rand(192, 128, 3) * 255).astype(np.uint8), ArrayPoses((rs.rand(frames, 3, 192, 128) * 255).astype(np.uint8)), frames - 1, 15.0)
    sink = _HeldChunks(backend)
    generate(components, in_memory_job(cfg), inputs=inputs, sink=sink)
    assert backend.decoded_chunks == 9  # ceil(33 / 4)
    assert sink.frames_written == frames - 1
    assert sink.max_pending == 0  # each chunk reached the writer before the next one was decoded


def test_pose_images_are_drawn_per_window(monkeypatch):
    poses = synthetic_poses(40, (192, 128))
    source = DrawnPoses(np.zeros((3, 192, 128), np.uint8), poses[1:], 192, 128)
    calls = []
    original = source._drawer.__call__
    monkeypatch.setattr(source, "_drawer", lambda p: calls.append(p) or original(p))
    window = source.get([0, 5, 6, 7])
    assert window.shape == (4, 3, 192, 128)
    assert len(calls) == 3  # frame 0 is the stored reference pose; only the window's frames are drawn
    assert len(source) == 40


def test_preflight_counts_workers_and_processes(tiny_layout):
    """Each in-process worker adds its own weights and arenas (onnxruntime sessions per worker);
    each separate process holds all of it again; the refusal names the worker count."""

    from mimic.errors import InputError
    from mimic.runtime.memory import GB, estimate_cuda_job_memory, preflight

    cfg = GenerationConfig(resolution=192, window=16, overlap=6, steps=1)
    one, two, four = (preflight(tiny_layout, cfg, "onnxruntime", "cpu", True, available=64 * GB, workers=k).peak_bytes for k in (1, 2, 4))
    assert one < two < four and four - two == pytest.approx(2 * (two - one), abs=2)
    assert preflight(tiny_layout, cfg, "onnxruntime", "cpu", True, available=64 * GB, workers=2, processes=3).peak_bytes == pytest.approx(3 * two, abs=3)
    with pytest.raises(InputError) as err:
        preflight(tiny_layout, cfg, "onnxruntime", "cpu", True, available=4 * GB, workers=4)
    assert str(err.value) == (f"this job needs ~{four / GB:.1f} GB of host memory, 4.0 GB available "
                              "(--resolution 192, --window 16, onnxruntime, 4 workers): lower --resolution, --window or --decode-chunk")
    # CUDA: workers on one device add their activations; weights are passed in as all they hold there
    a, b = (estimate_cuda_job_memory({}, None, GenerationConfig(resolution=576, window=16), False, 0, k) for k in (1, 2))
    assert b.peak_bytes - a.peak_bytes == a.peak_bytes - 1 * GB


@pytest.mark.slow  # two tiny renders at 192 px in fresh processes (~40 s with the export)
def test_memory_estimate_bounds_the_measured_peak(tiny_cache, tiny_layout, tmp_path):
    """README's bound on the cheapest cell of benchmarks/preflight_bench.py: the estimate is never
    below the measured peak RSS and at most 5% above it, with 1 and 2 CPU workers (40 frames: 4
    windows and 5 decode chunks, every stage run at least twice per worker)."""
    from mimic.benchmarks.preflight_bench import estimate, make_clip, measure_peak, run_args
    from mimic.runtime.onnx_cache import ensure_onnx_graphs

    ensure_onnx_graphs(tiny_layout, "fp32", None)  # exported here, not inside a measured process
    ref, video = make_clip(tmp_path, 40)
    for workers in (1, 2):
        peak, _ = measure_peak(run_args(ref, video, tmp_path / "o.mp4", 192, workers))
        est = estimate(192, workers).peak_bytes
        assert peak <= est <= 1.05 * peak, (workers, est, peak)
