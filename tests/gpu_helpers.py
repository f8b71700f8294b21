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
