"""CI smoke for bounded host memory: decoding streams chunks to the encoder, and pose images are
drawn per window instead of being held for the whole video. (The full-size figure, growth per 100
frames at 576x1024, is measured by the scaling benchmark: benchmarks/RESULTS.md.)"""
import tracemalloc

import numpy as np
import torch

from mimic.runtime.backend_torch import TorchBackend
from mimic.runtime.model_info import ModelInfo
from mimic.runtime.pose_source import DrawnPoses
from mimic.runtime.renderer import Renderer
from mimic.runtime.synthetic import synthetic_poses
from mimic.runtime.video_writer import VideoWriter


def _peak_decode_bytes(renderer, num_frames, tmp_path):
    latents = torch.randn(1, num_frames, 4, 24, 16) * 0.5
    tracemalloc.start()
    tracemalloc.reset_peak()
    with VideoWriter(tmp_path / f"v{num_frames}.mp4", 15, (192, 128), max_queued_chunks=2) as writer:
        for _, frames in renderer.decode_chunks(latents, 4):
            writer.write(frames)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_decode_and_encode_hold_a_bounded_number_of_frames(tiny_models, tmp_path):
    renderer = Renderer(TorchBackend(tiny_models), ModelInfo.from_models(tiny_models), torch.float32)
    frame_bytes = 3 * 192 * 128
    short = _peak_decode_bytes(renderer, 12, tmp_path)
    long = _peak_decode_bytes(renderer, 48, tmp_path)
    # holding the 36 extra frames would add 36 * 73 KB = 2.6 MB; streaming adds (almost) nothing
    assert long - short < 8 * frame_bytes, (short, long)


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
