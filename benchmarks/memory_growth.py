"""Host-memory growth of the runtime itself against video length, at full size (576x1024).

Model compute is replaced by a stub backend (zeros of the right shapes), so the measurement isolates
what the runtime holds per frame (latents, accumulators, pose images, pose-latent cache, decoded
frames, the encoder queue) from model activations, which are per-window and do not grow with the
video. Each length runs in its own process; peak RSS is sampled. Usage:

    python -m benchmarks.memory_growth --frames 72 --frames 272      (prints MB per 100 frames)
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from mimic.spec import StageName as S
from mimic.spec import TensorName as N


class StubBackend:
    name = "stub"

    def __init__(self, pose_channels: int = 320):
        import torch

        self.device = torch.device("cpu")
        self.c = pose_channels

    def run(self, stage, feeds, stream=None):
        import torch

        if stage == S.UNET:
            b, f, _, h, w = feeds["sample"].shape
            return {N.NOISE_PRED: torch.zeros(b, f, 4, h, w)}
        if stage == S.POSE_NET:
            n, _, hh, ww = feeds[N.POSE_IMAGES].shape
            return {N.POSE_LATENTS: torch.zeros(n, self.c, hh // 8, ww // 8)}
        if stage == S.VAE_DECODER:
            n, _, h, w = feeds["latents"].shape
            return {"frames": torch.zeros(n, 3, h * 8, w * 8)}
        if stage == S.IMAGE_ENCODER:
            return {N.IMAGE_EMBEDS: torch.zeros(1, 1024)}
        if stage == S.VAE_ENCODER:
            _, _, hh, ww = feeds["image"].shape
            return {N.LATENT_MEAN: torch.zeros(1, 4, hh // 8, ww // 8)}
        raise KeyError(stage)

    def close(self):
        pass


def child(frames: int, height: int, width: int, window: int, pose_channels: int) -> dict:
    import psutil
    import torch

    from mimic.model.config import GenerationConfig
    from mimic.pose.draw import draw_pose
    from mimic.media.video_writer import VideoWriter
    from mimic.model.model_info import ModelInfo
    from mimic.pose.images import DrawnPoses
    from mimic.runtime.demo_assets import synthetic_poses, synthetic_reference
    from mimic.runtime.inputs import JobInputs
    from mimic.runtime.pipeline import Components, generate, in_memory_job

    proc = psutil.Process()
    peak = [proc.memory_info().rss]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.005)

    threading.Thread(target=sample, daemon=True).start()
    info = ModelInfo(4, pose_channels, 1024, 0.18215, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 0.002, 700.0)
    config = GenerationConfig(resolution=min(height, width), window=window, overlap=6, steps=2)
    components = Components(backend=StubBackend(pose_channels), info=info, dtype=torch.float32, base_config=config, detector=lambda: None)
    dance = synthetic_poses(frames + 1, (height, width))
    poses = DrawnPoses(draw_pose(dance[0], height, width), dance[1:], height, width)
    base = proc.memory_info().rss
    t0 = time.perf_counter()
    inputs = JobInputs(synthetic_reference(height, width), poses, frames, config.output_fps)
    with tempfile.TemporaryDirectory() as tmp, VideoWriter(Path(tmp) / "o.mp4", 15, (height, width)) as writer:
        generate(components, in_memory_job(config), inputs=inputs, sink=writer)
    stop.set()
    return {"frames": frames, "peak_rss_mb": peak[0] / 2**20, "base_rss_mb": base / 2**20, "seconds": time.perf_counter() - t0}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, action="append", help="output frames (repeat)")
    ap.add_argument("--size", default="1024x576", help="HxW")
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--pose-channels", type=int, default=32, help="PoseNet width (tiny preset: 32; real: 320)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    height, width = (int(v) for v in args.size.split("x"))
    if args.child:
        print(json.dumps(child(args.frames[0], height, width, args.window, args.pose_channels)))
        return
    rows = []
    for n in args.frames or [72, 272]:
        cmd = [sys.executable, "-m", "mimic.benchmarks.memory_growth", "--child", "--frames", str(n), "--size", args.size, "--window", str(args.window), "--pose-channels", str(args.pose_channels)]
        rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]))
        print(f"{n:5d} frames  peak RSS {rows[-1]['peak_rss_mb']:8.1f} MB  ({rows[-1]['seconds']:.1f} s)")
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        growth = (b["peak_rss_mb"] - a["peak_rss_mb"]) / (b["frames"] - a["frames"]) * 100
        print(f"growth: {growth:.1f} MB per 100 extra output frames at {args.size}")


if __name__ == "__main__":
    main()
