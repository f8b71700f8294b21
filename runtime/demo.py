"""``mimic demo``: the whole job on the embedded tiny preset with a built-in reference and dance,
through the production runtime (onnxruntime backend on the CPU)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def side_by_side(pose: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """(3, H, W) pose and output -> (H, 2W, 3) RGB preview."""
    return np.concatenate([pose.transpose(1, 2, 0), frame.transpose(1, 2, 0)], axis=1)


def write_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    tmp = path.with_name(f".{path.name}.part.png")
    cv2.imwrite(str(tmp), np.ascontiguousarray(rgb[:, :, ::-1]))
    tmp.replace(path)


def run_demo(out: Path, frames: int, steps: int | None, seed: int, backend: str, echo, timer) -> dict:
    from mimic.mimicmotion_ref.dwpose.draw import draw_pose
    from mimic.mimicmotion_ref.preprocess import target_size
    from mimic.runtime.inputs import JobInputs, pad_to_window
    from mimic.runtime.jobs import Job
    from mimic.runtime.pose_source import DrawnPoses
    from mimic.runtime.progress import ProgressLine
    from mimic.runtime.service import MimicMotion, RuntimeOptions
    from mimic.runtime.synthetic import synthetic_poses, synthetic_reference
    from mimic.runtime.video_writer import check_writable

    out = Path(out)
    video = out / "demo.mp4"
    check_writable(video)
    job = Job(reference=Path("<built-in>"), pose_frames=Path("<built-in>"), out=video, overrides={"seed": seed, **({"steps": steps} if steps else {})})
    with timer("load"):
        mm = MimicMotion.from_preset("tiny", RuntimeOptions(backend=backend), log=echo)
    config = job.config(mm.base_config)
    height, width = target_size(2, 1, config.resolution)  # portrait
    echo(f"mimic demo: tiny preset, {backend} backend, {frames} frames at {width}x{height}, {config.steps} steps, seed {seed}")
    with timer("poses"):
        reference = synthetic_reference(height, width)
        dance = synthetic_poses(frames + 1, (height, width))
        poses, warnings = pad_to_window(DrawnPoses(draw_pose(dance[0], height, width), dance[1:], height, width), config.window, pad=True)
    inputs = JobInputs(reference, poses, frames, config.output_fps, warnings=warnings)
    with timer("generate"):
        report = mm.render_inputs(inputs, job, progress=ProgressLine("  denoising"))
    mm.close()
    with timer("preview"):
        import av

        with av.open(str(video)) as container:
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        mid = len(decoded) // 2
        write_png(out / "preview.png", side_by_side(poses.get([1 + mid])[0], decoded[mid].transpose(2, 0, 1)))
    for stage, seconds in report.seconds.items():
        echo(f"    {stage:<12} {seconds:7.2f} s")
    echo(f"wrote {video} ({report.frames} frames, {width}x{height}, {config.output_fps:g} fps)")
    echo(f"wrote {out / 'preview.png'} (pose | output, frame {mid + 1})")
    return {"video": video, "preview": out / "preview.png", "frames": report.frames, "seconds": report.seconds}
