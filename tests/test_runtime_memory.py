"""CI smoke for bounded host memory: decoded chunks are streamed to the writer one at a time (never
all held), and pose images are drawn per window instead of being held for the whole video. (The
full-size figure, growth per 100 frames at 576x1024, is measured by benchmarks/memory_growth.py:
benchmarks/RESULTS.md.) Counting held chunks, not tracemalloc: tracemalloc does not see torch's
allocations, so it could not fail when frames were held."""
import numpy as np
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
