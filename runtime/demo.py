"""``mimic demo``: the whole job on the embedded tiny preset with a built-in reference and dance,
through the one pipeline (onnxruntime backend on the CPU)."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from mimic.media.images import write_png
from mimic.media.video_writer import check_writable
from mimic.mimicmotion_ref.preprocess import target_size
from mimic.pose.draw import draw_pose
from mimic.pose.images import DrawnPoses
from mimic.runtime.demo_assets import synthetic_poses, synthetic_reference
from mimic.runtime.inputs import JobInputs, pad_to_window
from mimic.runtime.jobs import Job
from mimic.runtime.pipeline import generate
from mimic.runtime.progress import ProgressHooks
from mimic.runtime.service import MimicMotion, RuntimeOptions

log = logging.getLogger(__name__)

BUILT_IN = Path("<built-in>")


def side_by_side(pose: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """(3, H, W) pose and output -> (H, 2W, 3) RGB preview."""
    return np.concatenate([pose.transpose(1, 2, 0), frame.transpose(1, 2, 0)], axis=1)


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Stage:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, exc_type, exc, tb):
                if exc_type is None:
                    timer.seconds[name] = time.perf_counter() - self.t0
                    log.info(f"  {name:<10} {timer.seconds[name]:7.2f} s")

        return _Stage()


def run_demo(out: Path, frames: int, steps: int | None, seed: int, backend: str) -> dict:
    out = Path(out)
    video = out / "demo.mp4"
    check_writable(video, what="--out")
    timer = _Timer()
    job = Job(reference=BUILT_IN, pose_frames=BUILT_IN, out=video, overrides={"seed": seed, **({"steps": steps} if steps else {})})
    with timer("load"):
        mm = MimicMotion.from_preset("tiny", RuntimeOptions(backend=backend))
    with mm:
        config = job.config(mm.base_config)
        height, width = target_size(2, 1, config.resolution)  # portrait
        log.info(f"mimic demo: tiny preset, {backend} backend, {frames} frames at {width}x{height}, {config.steps} steps, seed {seed}")
        with timer("poses"):
            reference = synthetic_reference(height, width)
            dance = synthetic_poses(frames + 1, (height, width))
            poses, warnings = pad_to_window(DrawnPoses(draw_pose(dance[0], height, width), dance[1:], height, width), config.window, pad=True)
        inputs = JobInputs(reference, poses, frames, config.output_fps, warnings=warnings)
        with timer("generate"):
            report = generate(mm.components, job, inputs=inputs, hooks=ProgressHooks("  denoising"))
    with timer("preview"):
        import av

        with av.open(str(video)) as container:
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        mid = len(decoded) // 2
        write_png(out / "preview.png", side_by_side(poses.get([1 + mid])[0], decoded[mid].transpose(2, 0, 1)))
    for stage, seconds in report.seconds.items():
        log.info(f"    {stage:<12} {seconds:7.2f} s")
    log.info(f"wrote {video} ({report.frames} frames, {width}x{height}, {config.output_fps:g} fps)")
    log.info(f"wrote {out / 'preview.png'} (pose | output, frame {mid + 1})")
    return {"video": video, "preview": out / "preview.png", "frames": report.frames, "seconds": report.seconds}
