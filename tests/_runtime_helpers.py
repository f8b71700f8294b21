"""Shared test inputs for the runtime tests: a reference image, a dance video, CLI runner."""
from __future__ import annotations

import contextlib
from pathlib import Path

import cv2

import numpy as np

from mimic.media.video_writer import write_rgb_video
from mimic.pose.draw import draw_pose
from mimic.runtime.demo_assets import synthetic_poses, synthetic_reference

SMALL_ARGS = ["--steps", "2", "--window", "6", "--overlap", "2", "--resolution", "128", "--sample-stride", "1"]


def write_synthetic_driving_video(path, num_frames: int = 24, size_hw: tuple[int, int] = (320, 192), fps: float = 24.0):
    """A dancer video: the synthetic skeleton drawn thick on a plain backdrop (H.264)."""
    frames = []
    for pose in synthetic_poses(num_frames, size_hw):
        drawn = draw_pose(pose, *size_hw).transpose(1, 2, 0)
        frames.append(np.maximum(drawn, 30).astype(np.uint8))
    return write_rgb_video(path, frames, fps)


def write_video_with_audio(path, frames: int = 12, fps: int = 24):
    """``frames`` dancer frames at ``fps`` with a 440 Hz tone as long as the video."""
    import av

    seconds = frames / fps
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = 192, 320, "yuv420p"
        a = c.add_stream("aac", rate=44100)
        a.layout = "mono"
        for pose in synthetic_poses(frames, (320, 192)):
            rgb = np.maximum(draw_pose(pose, 320, 192).transpose(1, 2, 0), 30).astype(np.uint8)
            for p in v.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                c.mux(p)
        n = int(44100 * seconds)
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / 44100)).astype(np.float32)[None]
        for k in range(0, n, 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, k : k + 1024]), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, k
            for p in a.encode(frame):
                c.mux(p)
        for s in (v, a):
            for p in s.encode():
                c.mux(p)
    return path


def make_inputs(folder: Path, frames: int = 10) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    ref = folder / "ref.png"
    cv2.imwrite(str(ref), synthetic_reference(400, 224)[:, :, ::-1])
    video = folder / "drive.mp4"
    write_synthetic_driving_video(video, frames, (320, 192), fps=24.0)
    return ref, video


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run `mimic ...` in-process through the real entry point; returns (exit code, stdout, stderr)."""
    from mimic.cli import main

    try:
        main(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def decode_frames(path: Path):
    import av
    import numpy as np

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@contextlib.contextmanager
def one_torch_thread():
    """One intra-op thread while rendering: on cores other processes keep busy (``make test -n 2``),
    spinning OpenMP threads make the toy model ~10x slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_settings(monkeypatch, *flags: str) -> dict:
    """The generation settings ``mimic run ... FLAGS`` hands its command (typer parses the generated
    options; nothing is loaded or rendered)."""
    from typer.testing import CliRunner

    from mimic import cli
    from mimic.commands import run as run_module

    seen: dict = {}

    def fake_run_command(**kwargs):
        seen.update(kwargs["overrides"])
        return 0

    monkeypatch.setattr(run_module, "run_command", fake_run_command)
    result = CliRunner().invoke(cli.app, ["run", "--preset", "tiny", "--ref", "r.png", "--driving", "d.mp4", "--out", "o.mp4", *flags])
    assert result.exit_code == 0, result.output
    return seen


class StepRecorder:
    """Denoising-loop hooks that keep a copy of the latents after every step (``saved[step]``)."""

    def __init__(self):
        self.saved: dict = {}

    def on_progress(self, done, total):
        pass

    def on_step_end(self, step, num_steps, latents):
        self.saved[step] = latents.clone()

    def poll(self):
        pass


def denoise_inputs(plan, frames: int, h: int, w: int, seed: int = 0):
    """Random conditioning (CFG halves [uncond, cond]), drawn pose images and scaled initial latents
    for a denoising loop over ``frames`` latent frames of ``h`` x ``w`` (no model)."""
    import numpy as np
    import torch

    from mimic.pose.images import ArrayPoses
    from mimic.runtime.denoise import Conditioning

    g = torch.Generator().manual_seed(seed)
    embeds = torch.randn(1, 1, 8, generator=g)
    ref = torch.randn(1, 4, h, w, generator=g)
    cond = Conditioning(torch.cat([torch.zeros_like(embeds), embeds]), torch.cat([torch.zeros_like(ref), ref]),
                        torch.tensor([[6.0, 127.0, 0.0]]).repeat(2, 1))
    poses = ArrayPoses(np.random.default_rng(seed).integers(0, 255, (frames, 3, 8 * h, 8 * w), dtype=np.uint8))
    latents = torch.randn(1, frames, 4, h, w, generator=g) * plan.schedule.init_noise_sigma
    return cond, poses, latents
