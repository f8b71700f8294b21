"""Turning a job's files into the arrays the generator needs, validated before any model loads.

Where the released script crashes, this does better and says so in the job's warnings:
driving clips shorter than a window are padded (last pose repeated) and the output trimmed back;
resolutions that are not multiples of 64 are rounded; multi-person / no-person clips are handled
by the retargeting's main-person tracking (``mimicmotion_ref.dwpose.retarget``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mimic.errors import InputError
from mimic.mimicmotion_ref.config import GenerationConfig
from mimic.mimicmotion_ref.preprocess import prepare_reference, resize_uint8
from mimic.runtime.jobs import Job
from mimic.runtime.pose_source import ArrayPoses, DrawnPoses, PaddedPoses, PoseImages

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


@dataclass
class JobInputs:
    reference: np.ndarray  # (H, W, 3) uint8, cropped to the output size
    poses: PoseImages  # F pose images served per window, frame 0 = reference pose
    num_output: int  # frames to keep (driving frames before padding)
    output_fps: float
    audio_source: Path | None = None  # the driving video, when it is the source
    audio_start_s: float = 0.0  # presentation time of the first sampled frame
    pose_fps: float | None = None  # rate that plays the sampled frames in real time
    warnings: list[str] = field(default_factory=list)


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 (h, w, 3) via PIL (as upstream's pil_loader), one-line error otherwise."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"image {path} does not exist")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB")).copy()
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise InputError(f"cannot read image {path}: {err.__class__.__name__}") from None


def rounded_resolution(resolution: int) -> tuple[int, str | None]:
    """The UNet needs multiples of 64 (upstream crashes at 720): round to the nearest, warn."""
    if resolution % 64 == 0:
        return resolution, None
    r = max(64, int(round(resolution / 64)) * 64)
    return r, f"resolution {resolution} is not a multiple of 64; using {r}"


def validate_job(job: Job) -> None:
    """Cheap checks of every input path and the output before models load."""
    from mimic.runtime.video_writer import check_writable

    if not Path(job.reference).is_file():
        raise InputError(f"reference image {job.reference} does not exist")
    read_image(job.reference)  # decodable
    for p in (job.driving, job.poses, job.pose_frames, job.ref_pose):
        if p is not None and not Path(p).exists():
            raise InputError(f"{p} does not exist")
    if job.driving is not None:
        from mimic.runtime.video_io import probe_video

        probe_video(job.driving)  # corrupt or zero-frame videos fail here, with their reason
    if job.poses is not None:
        from mimic.runtime.pose_files import load_poses

        load_poses(job.poses)
    if job.writes_png_sequence:
        check_writable(Path(job.out) / "frame_000001.png")
    else:
        if Path(job.out).suffix.lower() not in (".mp4", ".mov", ".mkv"):
            raise InputError(f"output {job.out}: use an .mp4/.mov/.mkv file or a folder (numbered PNGs)")
        check_writable(job.out)


def _read_pose_frames(source: Path, hw: tuple[int, int]) -> np.ndarray:
    """Already-drawn pose images from a folder of images or a video, resized to (H, W)."""
    import torch

    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"no images in pose-frames folder {source}")
        frames = (read_image(p) for p in files)
    else:
        from mimic.runtime.video_io import iter_sampled_frames

        frames = (rgb for _, rgb in iter_sampled_frames(source, 1))
    out = []
    for rgb in frames:
        chw = torch.from_numpy(rgb).permute(2, 0, 1)
        if tuple(chw.shape[1:]) != hw:
            chw = resize_uint8(chw, hw)
        out.append(chw.numpy())
    if not out:
        raise InputError(f"no frames in {source}")
    return np.stack(out)


def pad_to_window(poses: PoseImages, window: int, pad: bool) -> tuple[PoseImages, list[str]]:
    """Repeat the last driving pose until the clip fills one window (the output is trimmed back)."""
    if len(poses) >= window:
        return poses, []
    driving = len(poses) - 1
    if not pad:
        raise InputError(f"{driving} driving frames is shorter than the window ({window - 1} needed); allow padding or lower --window")
    return PaddedPoses(poses, window), [f"{driving} driving frames < window {window}: padded with the last pose to {window - 1}, output trimmed to {driving} frames"]


def load_job_inputs(job: Job, config: GenerationConfig, detector_factory, pad: bool = True, log=None) -> JobInputs:
    """Read and prepare one job. ``detector_factory()`` gives a DWPoseDetector (created only if needed)."""
    from mimic.mimicmotion_ref.dwpose.draw import draw_pose
    from mimic.mimicmotion_ref.dwpose.retarget import retarget_poses
    from mimic.runtime.poses import extract_video_poses

    warnings: list[str] = []
    reference = prepare_reference(read_image(job.reference), config.resolution)
    hw = reference.shape[:2]
    ref_pose_image = None
    if job.ref_pose is not None:
        single_image = Path(job.ref_pose).suffix.lower() in IMAGE_SUFFIXES
        ref_pose_image = _read_pose_frames_file(job.ref_pose, hw) if single_image else _read_pose_frames(job.ref_pose, hw)[0]
    audio, audio_start, pose_fps = None, 0.0, None
    if job.pose_frames is not None:
        driving = _read_pose_frames(job.pose_frames, hw)
        if ref_pose_image is None:
            ref_pose_image = draw_pose(detector_factory().detect_image(reference), *hw)
        poses: PoseImages = ArrayPoses(np.concatenate([ref_pose_image[None], driving]))
    else:
        if job.driving is not None:
            seq = extract_video_poses(detector_factory(), job.driving, config.sample_stride, log=log)
            audio, audio_start, pose_fps = Path(job.driving), float(seq.frame_times_s[0]) if seq.frame_times_s else 0.0, seq.pose_fps
        else:
            from mimic.runtime.pose_files import load_poses

            seq = load_poses(job.poses)
        if not seq.frames:
            raise InputError(f"no frames were sampled from {job.driving or job.poses}")
        ref_detect = detector_factory().detect_image(reference)
        retargeted = retarget_poses(ref_detect, seq.frames, hw, seq.video_hw)
        warnings += list(retargeted.warnings)
        first = ref_pose_image if ref_pose_image is not None else draw_pose(ref_detect, *hw)
        poses = DrawnPoses(first, retargeted.poses, *hw)
    num_output = len(poses) - 1
    poses, pad_warnings = pad_to_window(poses, config.window, pad)
    warnings += pad_warnings
    return JobInputs(reference, poses, num_output, config.output_fps, audio, audio_start, pose_fps, warnings)


def _read_pose_frames_file(path: Path, hw: tuple[int, int]) -> np.ndarray:
    import torch

    rgb = read_image(path)
    chw = torch.from_numpy(rgb).permute(2, 0, 1)
    return (resize_uint8(chw, hw) if tuple(chw.shape[1:]) != hw else chw).numpy()
