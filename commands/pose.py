"""``mimic pose``: extract a driving video's poses once, reuse them for many references.

Its stdout is the JSON summary alone (``mimic pose ... | jq`` works): progress and warnings go to
stderr (``mimic.logs.info_to_stderr``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from mimic.commands import options as opt

from mimic.commands.conventions import DEVICE_HELP, DEVICE_METAVAR, check_device, check_range, in_range

app = typer.Typer()


@app.command()
def pose(
    video: Path = typer.Argument(..., help="Driving video."),
    out: Path = typer.Option(..., "-o", "--out", help="Pose file to write (.npz)."),
    preview: Optional[Path] = typer.Option(None, "--preview", help="Also write a preview .mp4 (each frame | its skeleton over it) and a labelled contact-sheet .png beside it."),
    weights: opt.Weights = None,
    preset: opt.Preset = None,
    det_model: opt.DetModel = None,
    pose_model: opt.PoseModel = None,
    sample_stride: int = typer.Option(2, "--sample-stride", help=f"Frame stride (times max(1, int(fps/24))). {in_range(1, 1000)}"),
    device: str = typer.Option("cpu", "--device", metavar=DEVICE_METAVAR, help=DEVICE_HELP),
    batch_size: int = typer.Option(8, "--batch-size", help=f"Frames per DWPose batch. {in_range(1)}"),
) -> None:
    """Run DWPose on a video and save keypoints, scores and frame times to a .npz pose file."""
    from mimic import logs
    from mimic.errors import InputError
    from mimic.media.images import IMAGE_SUFFIXES
    from mimic.model.presets import dwpose_paths
    from mimic.pose.extract import pose_command
    from mimic.media.video_reader import probe_video
    from mimic.media.video_writer import check_writable

    to_stderr = getattr(logs, "info_to_stderr", None)  # stdout: the JSON summary only
    if to_stderr is not None:
        to_stderr()
    check_range("--sample-stride", sample_stride, 1, 1000)
    check_range("--batch-size", batch_size, 1)
    check_device(device)
    if out.suffix.lower() != ".npz":
        raise InputError(f"the pose file must end in .npz, got {out}")
    if preview is not None and preview.suffix.lower() != ".mp4":
        raise InputError(f"--preview {preview}: use an .mp4 file (the contact sheet goes beside it as .png)")
    source = video.expanduser().resolve()
    for flag, target in (("--out", out), ("--preview", preview)):
        if target is not None and target.expanduser().resolve() == source:
            raise InputError(f"{flag} {target} is the input video: choose another output")
    if video.is_file() and video.suffix.lower() in IMAGE_SUFFIXES:  # FFmpeg reads it as one frame at an invented 25 fps
        raise InputError(f"{video} is an image, not a video: give a driving video")
    probe_video(video)
    check_writable(out, what="--out")
    if preview is not None:
        check_writable(preview, what="--preview")
    det, pose_path = dwpose_paths(preset, weights, det_model, pose_model)
    summary = pose_command(video, out, det, pose_path, preview=preview, sample_stride=sample_stride, device=device, batch_size=batch_size)
    typer.echo(json.dumps(summary, indent=2))
