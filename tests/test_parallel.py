"""One job on several workers (``--device cpu,cpu``): the windows of each step split over them,
the frames bit-identical to one worker (runtime/parallel.py explains why that is exact)."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from _runtime_helpers import SMALL_ARGS, make_inputs, run_cli
from mimic.errors import InputError
from mimic.model.config import GenerationConfig
from mimic.model.scheduler import SchedulerConfig
from mimic.pose.images import ArrayPoses
from mimic.runtime import parallel
from mimic.runtime.denoise import Conditioning, denoise, plan_denoise
from mimic.runtime.parallel import assign_windows, decode_parallel, denoise_parallel, plan_shares
from mimic.runtime.api import RuntimeOptions
from mimic.spec import StageName
from mimic.spec import TensorName as N


class FakeBackend:
    """Deterministic stand-in stages with cross-frame mixing (like temporal attention) and values
    whose sums round differently when regrouped; records which thread ran each UNet call."""

    name = "fake"

    def __init__(self, device="cpu"):
        self.device = torch.device(device)
        self.threads: list[str] = []
        self.lock = threading.Lock()

    def run(self, stage, feeds, stream=None):
        if stage == StageName.POSE_NET:
            return {N.POSE_LATENTS: feeds[N.POSE_IMAGES][:, :2, ::8, ::8] * 0.37}
        if stage == StageName.UNET:
            with self.lock:
                self.threads.append(threading.current_thread().name)
            x = feeds[N.SAMPLE]
            c = x[:, :, :4]
            mixed = torch.sin(3.1 * c) + 0.61 * c.mean(dim=1, keepdim=True) + 0.29 * x[:, :, 4:8]
            pose = feeds[N.POSE_LATENTS].mean(dim=1, keepdim=True).unsqueeze(0)
            return {N.NOISE_PRED: mixed + 0.17 * pose.reshape(2, -1, 1, *c.shape[3:]) + 0.013 * feeds[N.TIMESTEP].view(2, 1, 1, 1, 1)}
        if stage == StageName.VAE_DECODER:
            z = feeds[N.LATENTS]
            return {N.FRAMES: torch.tanh(z[:, :3].repeat_interleave(8, 2).repeat_interleave(8, 3))}
        raise AssertionError(stage)

    def close(self):
        pass


def _job(num_frames=23, window=8, overlap=5, steps=3, seed=0, device="cpu"):
    torch.manual_seed(seed)
    h, w = 4, 3
    config = GenerationConfig(window=window, overlap=overlap, steps=steps, guidance_min=1.5, guidance_max=2.5)
    plan = plan_denoise(num_frames, config, SchedulerConfig(), torch.float32, torch.device(device), pose_cache_bytes=1 << 20)
    cond = Conditioning(torch.randn(2, 1, 8), torch.randn(2, 4, h, w), torch.randn(2, 3))
    poses = ArrayPoses(np.random.default_rng(seed).integers(0, 255, (num_frames, 3, 8 * h, 8 * w), dtype=np.uint8))
    latents = torch.randn(1, num_frames, 4, h, w) * plan.schedule.init_noise_sigma
    return plan, cond, poses, latents.to(device)


def test_windows_are_split_in_contiguous_balanced_blocks():
    assert assign_windows(8, 3) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert assign_windows(2, 3) == [[0], [1], []]
    assert assign_windows(5, 1) == [[0, 1, 2, 3, 4]]


def test_frames_summed_by_the_main_thread_are_those_regrouping_could_change():
    windows = [[0, 1, 2, 3], [0, 3, 4, 5], [0, 5, 6, 7]]
    shares = plan_shares(windows, [[0, 1], [2]])
    # frame 0 is in three windows of two workers: handed over per window; 3 and 5 are in two: summed by workers
    assert shares[0].hand == {0: [0], 1: [0]} and shares[1].hand == {2: [0]}
    assert shares[0].frames == (0, 1, 2, 3, 4, 5) and shares[1].frames == (0, 5, 6, 7)
    assert all(not h for s in plan_shares(windows, [[0, 1, 2]]) for h in s.hand.values())  # one worker: nothing handed


@pytest.mark.parametrize("overlap", [2, 5, 7])  # 7 of 8: every frame in up to 7 windows
@pytest.mark.parametrize("workers", [2, 3])
def test_parallel_denoise_equals_one_worker_bit_for_bit(overlap, workers):
    plan, cond, poses, latents = _job(overlap=overlap)
    one = denoise(FakeBackend(), plan, cond, poses, latents.clone())
    backends = [FakeBackend() for _ in range(workers)]
    many = denoise_parallel(backends, plan, cond, poses, latents.clone())
    assert torch.equal(one, many)
    assert all(len(b.threads) > 0 for b in backends)  # every worker ran windows, on its own thread
    assert len({b.threads[0] for b in backends}) == workers
    assert sum(len(b.threads) for b in backends) == plan.total_calls


def test_regrouping_the_shared_frames_would_change_bits(monkeypatch):
    """Why the main thread sums the shared frames: letting the workers regroup them is not exact
    (so the test above can fail)."""
    plan, cond, poses, latents = _job(overlap=7)
    one = denoise(FakeBackend(), plan, cond, poses, latents.clone())
    real = parallel.plan_shares

    def regrouping(windows, blocks):
        shares = real(windows, blocks)
        return [parallel.WorkerShare(s.windows, s.frames, s.local, {j: list(range(len(windows[j]))) for j in s.windows},
                                     {j: [] for j in s.windows}) for s in shares]

    monkeypatch.setattr(parallel, "plan_shares", regrouping)
    many = denoise_parallel([FakeBackend(), FakeBackend()], plan, cond, poses, latents.clone())
    assert not torch.equal(one, many) and torch.allclose(one, many, rtol=1e-4, atol=1e-4)


def test_parallel_decode_yields_every_chunk_in_order():
    latents = torch.randn(1, 21, 4, 2, 3)
    from mimic.runtime.decode import decode_frames

    one = list(decode_frames(FakeBackend(), latents, 0.18215, 4))
    many = list(decode_parallel([FakeBackend(), FakeBackend(), FakeBackend()], latents, 0.18215, 4))
    assert [s for s, _ in many] == [0, 4, 8, 12, 16, 20]
    assert all(a[0] == b[0] and np.array_equal(a[1], b[1]) for a, b in zip(one, many))


def test_resume_and_progress_work_across_workers():
    plan, cond, poses, latents = _job(steps=4)
    saved, progress = {}, []

    class Hooks:
        def on_progress(self, done, total):
            progress.append((done, total))

        def on_step_end(self, step, num_steps, lat):
            saved[step] = lat.clone()

        def poll(self):
            pass

    full = denoise_parallel([FakeBackend(), FakeBackend()], plan, cond, poses, latents.clone(), Hooks())
    assert [d for d, _ in progress] == list(range(1, plan.total_calls + 1))
    from dataclasses import replace

    resumed = denoise_parallel([FakeBackend(), FakeBackend()], replace(plan, start_step=2), cond, poses, saved[2].clone())
    assert torch.equal(full, resumed)


def test_a_failing_or_cancelled_worker_stops_the_step():
    plan, cond, poses, latents = _job()

    class Broken(FakeBackend):
        def run(self, stage, feeds, stream=None):
            if stage == StageName.UNET:
                raise RuntimeError("device lost")
            return super().run(stage, feeds, stream)

    with pytest.raises(RuntimeError, match="device lost"):
        denoise_parallel([FakeBackend(), Broken()], plan, cond, poses, latents.clone())

    class Stop(Exception):
        pass

    class Cancel:
        def on_progress(self, done, total):
            pass

        def on_step_end(self, *a):
            pass

        def poll(self):
            raise Stop()

    with pytest.raises(Stop):
        denoise_parallel([FakeBackend(), FakeBackend()], plan, cond, poses, latents.clone(), Cancel())


@pytest.mark.parametrize("value, message", [
    ("cpu,cuda", "--device: 'cpu,cuda' mixes cpu and cuda; list devices of one kind"),
    ("cpu,gpu", "--device: unknown device 'gpu'; use cpu, cuda[:N] or a comma-separated list (cuda:0,cuda:1)"),
    ("cuda:x", "--device: unknown device 'cuda:x'; use cpu, cuda[:N] or a comma-separated list (cuda:0,cuda:1)"),
])
def test_bad_device_lists_are_refused(value, message):
    with pytest.raises(InputError) as err:
        RuntimeOptions(device=value)
    assert str(err.value) == message
    assert RuntimeOptions(device="cpu, cpu").devices == ("cpu", "cpu")


def _pngs(folder):
    import cv2

    return [cv2.imread(str(p)) for p in sorted(folder.glob("*.png"))]


def test_cli_cpu_cpu_renders_the_same_png_frames_as_cpu(tmp_path, capsys):
    """The issue's check: `mimic run --preset tiny --device cpu,cpu` equals `--device cpu`
    (3 windows, so frame 0 is summed across workers)."""
    ref, video = make_inputs(tmp_path / "in", frames=10)
    outs = {}
    for name, device in (("one", "cpu"), ("two", "cpu,cpu")):
        out = tmp_path / name
        code, stdout, stderr = run_cli(["run", "--preset", "tiny", "--device", device, "--ref", str(ref),
                                        "--driving", str(video), "--out", f"{out}/", *SMALL_ARGS], capsys)
        assert code == 0, stderr
        outs[name] = _pngs(out)
    assert len(outs["one"]) == 10
    assert all(np.array_equal(a, b) for a, b in zip(outs["one"], outs["two"]))  # repeats: the torch test below


def test_torch_backend_on_two_workers_renders_the_same_frames():
    """The torch backend (modules shared by the two CPU workers) through the one pipeline."""
    from dataclasses import replace

    from mimic.model.preprocess import target_size
    from mimic.pose.draw import draw_pose
    from mimic.pose.images import DrawnPoses
    from mimic.runtime.demo_assets import synthetic_poses, synthetic_reference
    from mimic.runtime.inputs import JobInputs, pad_to_window
    from mimic.runtime.pipeline import FrameCollector, generate, in_memory_job
    from mimic.runtime.api import MimicMotion

    with MimicMotion.from_preset("tiny", RuntimeOptions(backend="torch", device="cpu,cpu")) as mm:
        config = mm.base_config.with_overrides(steps=2, window=6, overlap=2, resolution=128)
        h, w = target_size(2, 1, config.resolution)
        dance = synthetic_poses(11, (h, w))
        poses, _ = pad_to_window(DrawnPoses(draw_pose(dance[0], h, w), dance[1:], h, w), config.window, pad=True)
        inputs = JobInputs(synthetic_reference(h, w), poses, 10, 8.0, warnings=[])
        assert len(mm.workers) == 1 and mm.workers[0].models is mm.backend.models
        frames = {}
        for name, components in (("one", replace(mm.components, workers=())), ("two", mm.components), ("again", mm.components)):
            sink = FrameCollector()
            generate(components, in_memory_job(config), inputs=inputs, sink=sink)
            frames[name] = sink.frames()
    assert frames["one"].shape[0] == 10
    assert np.array_equal(frames["one"], frames["two"]) and np.array_equal(frames["two"], frames["again"])
