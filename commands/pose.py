"""``mimic pose``: extract a driving video's poses once, reuse them for many references."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


app = typer.Typer()


@app.command()
def pose(
    video: Path = typer.Argument(..., help="Driving video."),
    out: Path = typer.Option(..., "-o", "--out", help="Pose file to write (.npz)."),
    preview: Optional[Path] = typer.Option(None, "--preview", help="Also render the skeletons as an .mp4 (+ a contact-sheet .png)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Upstream weights folder (uses DWPose/)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Built-in weights: tiny."),
    det_model: Optional[Path] = typer.Option(None, "--det-model", help="yolox_l.onnx (overrides --weights)."),
    pose_model: Optional[Path] = typer.Option(None, "--pose-model", help="dw-ll_ucoco_384.onnx (overrides --weights)."),
    sample_stride: int = typer.Option(2, min=1, help="Frame stride (times max(1, int(fps/24)))."),
    device: str = typer.Option("cpu", help="cpu | cuda."),
    batch_size: int = typer.Option(8, min=1, help="Frames per DWPose batch."),
) -> None:
    """Run DWPose on a video and save keypoints, scores and frame times to a .npz pose file."""
    from mimic.errors import InputError
    from mimic.mimicmotion_ref.presets import dwpose_paths
    from mimic.pose.extract import pose_command
    from mimic.media.video_reader import probe_video
    from mimic.media.video_writer import check_writable

    if out.suffix.lower() != ".npz":
        raise InputError(f"the pose file must end in .npz, got {out}")
    if preview is not None and preview.suffix.lower() not in (".mp4", ".mov", ".mkv"):
        raise InputError(f"--preview {preview}: use an .mp4/.mov/.mkv file")
    source = video.expanduser().resolve()
    for flag, target in (("--out", out), ("--preview", preview)):
        if target is not None and target.expanduser().resolve() == source:
            raise InputError(f"{flag} {target} is the input video: choose another output")
    probe_video(video)
    check_writable(out, what="--out")
    if preview is not None:
        check_writable(preview, what="--preview")
    det, pose_path = dwpose_paths(preset, weights, det_model, pose_model)
    summary = pose_command(video, out, det, pose_path, preview=preview, sample_stride=sample_stride, device=device, batch_size=batch_size)
    typer.echo(json.dumps(summary, indent=2))
