"""Inputs for the GPU tests that need no video codec (a bare GPU machine may lack PyAV): pose frames
as PNG folders, outputs as PNG sequences."""
from __future__ import annotations

from pathlib import Path

import numpy as np

SMALL = {"steps": 2, "window": 6, "overlap": 2, "resolution": 128}


def pose_frame_jobs(folder: Path, n: int, frames: int = 9):
    """``n`` jobs (different seeds) on one reference and one folder of drawn pose frames."""
    from mimic.media.images import write_png
    from mimic.pose.draw import draw_pose
    from mimic.runtime.demo_assets import synthetic_poses, synthetic_reference
    from mimic.runtime.jobs import Job

    folder = Path(folder)
    (folder / "poses").mkdir(parents=True, exist_ok=True)
    h, w = 192, 128
    write_png(folder / "ref.png", synthetic_reference(h, w))
    poses = synthetic_poses(frames + 1, (h, w))
    write_png(folder / "ref_pose.png", draw_pose(poses[0], h, w).transpose(1, 2, 0))
    for i, pose in enumerate(poses[1:]):
        write_png(folder / "poses" / f"{i:04d}.png", draw_pose(pose, h, w).transpose(1, 2, 0))
    return [Job(reference=folder / "ref.png", pose_frames=folder / "poses", ref_pose=folder / "ref_pose.png", out=folder / f"out{k}",
                overrides={**SMALL, "seed": 100 + k}) for k in range(n)]


def read_png_frames(folder: Path) -> np.ndarray:
    from mimic.media.images import read_image

    files = sorted(Path(folder).glob("*.png"))
    assert files, f"no frames in {folder}"
    return np.stack([read_image(p) for p in files])


class TorchFakeBackend:
    """Deterministic stand-in stages in plain torch ops on ``device`` (no weights, no host syncs):
    each call is enqueued on the stream it is given. ``sleep_cycles``: the decoder first spins the
    GPU that long (``torch.cuda._sleep``), so a reader not ordered after it sees the placeholder."""

    name = "fake"

    def __init__(self, device="cuda", sleep_cycles: int = 0):
        import torch

        self.device, self.sleep_cycles = torch.device(device), sleep_cycles

    def run(self, stage, feeds, stream=None):
        import contextlib

        import torch

        from mimic.spec import StageName
        from mimic.spec import TensorName as N

        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            if stage == StageName.POSE_NET:
                return {N.POSE_LATENTS: feeds[N.POSE_IMAGES][:, :2, ::8, ::8] * 0.37}
            if stage == StageName.UNET:
                x = feeds[N.SAMPLE]
                c = x[:, :, :4]
                pose = feeds[N.POSE_LATENTS].mean(dim=1, keepdim=True).unsqueeze(0)
                out = torch.sin(3.1 * c) + 0.61 * c.mean(dim=1, keepdim=True) + 0.29 * x[:, :, 4:8]
                return {N.NOISE_PRED: out + 0.17 * pose.reshape(2, -1, 1, *c.shape[3:]) + 0.013 * feeds[N.TIMESTEP].view(2, 1, 1, 1, 1)}
            if stage == StageName.VAE_DECODER:
                z = feeds[N.LATENTS]
                out = torch.full((z.shape[0], 3, *z.shape[2:]), 3.0, dtype=torch.float32, device=z.device)  # placeholder: 255
                if self.sleep_cycles:
                    torch.cuda._sleep(self.sleep_cycles)
                out.copy_(torch.tanh(z[:, :3].float()))
                return {N.FRAMES: out}
        raise AssertionError(stage)

    def close(self):
        pass


def expected_frames(latents, scaling_factor: float):
    """What ``TorchFakeBackend``'s decoder and ``decode_chunk`` make of ``latents`` (uint8, host)."""
    import torch

    z = latents.flatten(0, 1) / scaling_factor
    return ((torch.tanh(z[:, :3].float()) / 2 + 0.5).clamp(0, 1) * 255.0).to(torch.uint8).cpu().numpy()


def count_syncs_per_window(device="cuda", steps: int = 4, num_frames: int = 23, window: int = 8, overlap: int = 5) -> dict:
    """Host synchronisations of ``denoise`` (``TorchFakeBackend`` on ``device``, fp16, on a side
    stream), counted with ``torch.cuda.set_sync_debug_mode("warn")``, per step. The first step also
    uploads PoseNet's inputs and the job's index tensors; every later step should have one (its
    NaN/Inf check). -> {"windows", "per_step": [syncs], "later_per_window": max later-step syncs /
    windows}."""
    import warnings

    import numpy as np
    import torch

    from mimic.model.config import GenerationConfig
    from mimic.model.scheduler import SchedulerConfig
    from mimic.pose.images import ArrayPoses
    from mimic.runtime.denoise import Conditioning, denoise, plan_denoise

    dev = torch.device(device)
    torch.manual_seed(0)
    h, w = 4, 3
    config = GenerationConfig(window=window, overlap=overlap, steps=steps, guidance_min=1.5, guidance_max=2.5)
    plan = plan_denoise(num_frames, config, SchedulerConfig(), torch.float16, dev, pose_cache_bytes=1 << 30)
    cond = Conditioning(torch.randn(2, 1, 8, device=dev), torch.randn(2, 4, h, w, device=dev), torch.randn(2, 3, device=dev))
    poses = ArrayPoses(np.random.default_rng(0).integers(0, 255, (num_frames, 3, 8 * h, 8 * w), dtype=np.uint8))
    latents = (torch.randn(1, num_frames, 4, h, w, device=dev) * plan.schedule.init_noise_sigma).half()
    stream = torch.cuda.Stream(dev)
    torch.cuda.synchronize(dev)
    marks: list[int] = []

    def syncs(caught) -> int:
        return sum("synchroniz" in str(x.message) for x in caught)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        class Hooks:
            def on_progress(self, done, total):
                pass

            def poll(self):
                pass

            def on_step_end(self, step, num_steps, lat):
                marks.append(syncs(caught))

        old = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with torch.cuda.device(dev), torch.cuda.stream(stream):
                denoise(TorchFakeBackend(dev), plan, cond, poses, latents, Hooks(), stream)
        finally:
            torch.cuda.set_sync_debug_mode(old)
    torch.cuda.synchronize(dev)
    per_step = [b - a for a, b in zip([0] + marks, marks)]
    n = len(plan.windows)
    return {"windows": n, "per_step": per_step, "later_per_window": max(per_step[1:], default=0) / n}


def cpu_noise_everywhere(monkeypatch) -> None:
    """Jobs on any device draw their seeded noise on the CPU (then move it to the device), so a CUDA
    job and a CPU job of one seed start from the same noise and only the numerics differ."""
    import torch

    from mimic.runtime import determinism, pipeline

    def job_noise(seed, device, *shapes):
        return tuple(t.to(device) for t in determinism.job_noise(seed, torch.device("cpu"), *shapes))

    monkeypatch.setattr(pipeline, "job_noise", job_noise)
