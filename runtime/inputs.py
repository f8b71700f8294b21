"""Steps 1 and 2 of the pipeline: a job's files -> the reference and the pose images, plus the
checks that run before any model loads (``validate_job``).

Where the released script crashes, this does better and says so in the job's warnings:
driving clips shorter than a window are padded (last pose repeated) and the output trimmed back;
resolutions that are not multiples of 64 are rounded; multi-person / no-person clips are handled
by the retargeting's main-person tracking (``mimic.pose.retarget``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mimic.errors import InputError
from mimic.media.images import IMAGE_SUFFIXES, read_image
from mimic.media.video_reader import VideoInfo, iter_sampled_frames, probe_video
from mimic.media.video_writer import check_writable, foreign_files
from mimic.model.config import GenerationConfig
from mimic.model.preprocess import prepare_reference, resize_uint8
from mimic.pose.draw import draw_pose
from mimic.pose.extract import detection_warnings, extract_video_poses
from mimic.pose.files import load_poses
from mimic.pose.images import ArrayPoses, DrawnPoses, PaddedPoses, PoseImages
from mimic.pose.retarget import retarget_poses
from mimic.pose.sequence import PoseSequence
from mimic.runtime.jobs import Job

log = logging.getLogger(__name__)


@dataclass
class JobInputs:
    """What steps 3-7 need: the cropped reference and F pose images (frame 0 = the reference pose)."""

    reference: np.ndarray  # (H, W, 3) uint8, cropped to the output size
    poses: PoseImages  # F pose images served per window, frame 0 = reference pose
    num_output: int  # frames to keep (driving frames before padding)
    output_fps: float
    audio_source: Path | None = None  # the driving video, when it is the source
    audio_start_s: float = 0.0  # presentation time of the first sampled frame
    pose_fps: float | None = None  # rate that plays the sampled frames in real time
    warnings: list[str] = field(default_factory=list)


@dataclass
class RawInputs:
    """Step 1's result: every input of the job opened once."""

    job: Job
    reference: np.ndarray  # cropped to the output size
    ref_pose_image: np.ndarray | None = None  # (3, H, W): the reference's drawn pose, when given
    pose_frames: np.ndarray | None = None  # (F, 3, H, W): already-drawn driving poses
    pose_file: PoseSequence | None = None
    video: VideoInfo | None = None  # the driving video (decoded once, in step 2)


def rounded_resolution(resolution: int) -> tuple[int, str | None]:
    """The UNet needs multiples of 64 (upstream crashes at 720): round to the nearest, warn."""
    if not isinstance(resolution, int) or isinstance(resolution, bool) or not 64 <= resolution <= 4096 or resolution % 64 == 0:
        return resolution, None  # multiples of 64 as they are; nonsense is refused by GenerationConfig
    r = max(64, int(round(resolution / 64)) * 64)
    return r, f"resolution {resolution} is not a multiple of 64; using {r}"


# The flag that names each input of a job (messages say what the user typed).
INPUT_FLAGS = {"reference": "--ref", "driving": "--driving", "poses": "--pose", "pose_frames": "--pose-frames", "ref_pose": "--ref-pose"}


def validate_job(job: Job, audio: bool = False) -> None:
    """Cheap checks of every input path and the output before models load (nothing is created)."""
    read_image(job.reference, "--ref")  # exists, is a file, decodes
    for name, path in job.input_paths().items():
        flag = INPUT_FLAGS[name]
        if not path.exists():
            raise InputError(f"{flag} {path} does not exist")
        if path.is_dir() and name not in ("pose_frames",):
            raise InputError(f"{flag} {path} is a folder, not a file")
    if job.driving is not None:
        if Path(job.driving).suffix.lower() in IMAGE_SUFFIXES:
            raise InputError(f"--driving {job.driving} is an image, not a video: give a video (or --pose-frames for drawn pose images)")
        probe_video(job.driving)  # corrupt or zero-frame videos fail here, with their reason
    if job.poses is not None:
        load_poses(job.poses)
    check_output(job)
    if audio and job.writes_png_sequence:
        raise InputError(f"--audio needs a video output, but --out {job.out} is a folder of PNG frames")


def check_output(job: Job, others: list[Job] = ()) -> None:
    """The output can be written, and writing it cannot destroy an input of this or another job."""
    out = Path(job.out)
    target = _canonical(out)
    for other in (job, *others):
        for name, path in other.input_paths().items():
            source = _canonical(path)
            whose = "the job's" if other is job else f"another job's ({other.out})"
            if source == target:
                raise InputError(f"--out {out} is {whose} {INPUT_FLAGS[name]} input: choose another output")
            if job.writes_png_sequence and target in source.parents:
                raise InputError(f"--out {out} holds {whose} {INPUT_FLAGS[name]} input {path}: the folder is replaced when the frames are written")
    if job.writes_png_sequence:
        check_writable(out / "frame_000001.png", create=False, what="--out")
        check_writable(out, create=False, what="--out")  # the folder is swapped in whole
        foreign = foreign_files(out)
        if foreign:
            raise InputError(f"--out {out} holds other files ({', '.join(foreign[:3])}): PNG frames go to a new or frames-only folder")
    else:
        if out.suffix.lower() not in (".mp4", ".mov", ".mkv"):
            raise InputError(f"--out {out}: use an .mp4/.mov/.mkv file or a folder (numbered PNGs)")
        check_writable(out, create=False, what="--out")


def _canonical(path: Path) -> Path:
    return Path(path).expanduser().resolve()


def read_inputs(job: Job, config: GenerationConfig) -> RawInputs:
    """Step 1: the reference (cropped to the output size) and the driving source, each opened once."""
    reference = prepare_reference(read_image(job.reference, "--ref"), config.resolution)
    hw = reference.shape[:2]
    raw = RawInputs(job, reference)
    if job.ref_pose is not None:
        single_image = Path(job.ref_pose).suffix.lower() in IMAGE_SUFFIXES
        raw.ref_pose_image = _resized(read_image(job.ref_pose, "--ref-pose"), hw) if single_image else _read_pose_frames(job.ref_pose, hw)[0]
    if job.pose_frames is not None:
        raw.pose_frames = _read_pose_frames(job.pose_frames, hw)
    elif job.driving is not None:
        raw.video = probe_video(job.driving)
    else:
        raw.pose_file = load_poses(job.poses)
    return raw


def prepare_poses(raw: RawInputs, config: GenerationConfig, detector: Callable, pad: bool = True) -> JobInputs:
    """Step 2: DWPose on the driving video (or the pose file / drawn frames), retargeted to the
    reference, drawn lazily per window; padded to one window for short clips.
    ``detector()`` gives the DWPoseDetector (created only if needed)."""
    job, reference = raw.job, raw.reference
    hw = reference.shape[:2]
    warnings: list[str] = []
    ref_pose_image = raw.ref_pose_image
    audio, audio_start, pose_fps = None, 0.0, None
    if raw.pose_frames is not None:
        if ref_pose_image is None:
            ref_pose_image = draw_pose(detector().detect_image(reference), *hw)
        poses: PoseImages = ArrayPoses(np.concatenate([ref_pose_image[None], raw.pose_frames]))
    else:
        if raw.video is not None:
            seq = extract_video_poses(detector(), job.driving, config.sample_stride, info=raw.video)
            warnings += detection_warnings(seq)
            audio, audio_start, pose_fps = Path(job.driving), float(seq.frame_times_s[0]) if seq.frame_times_s else 0.0, seq.pose_fps
        else:
            seq = raw.pose_file
        if not seq.frames:
            raise InputError(f"no frames were sampled from {job.driving or job.poses}")
        ref_detect = detector().detect_image(reference)
        retargeted = retarget_poses(ref_detect, seq.frames, hw, seq.video_hw)
        warnings += list(retargeted.warnings)
        first = ref_pose_image if ref_pose_image is not None else draw_pose(ref_detect, *hw)
        poses = DrawnPoses(first, retargeted.poses, *hw)
    num_output = len(poses) - 1
    poses, pad_warnings = pad_to_window(poses, config.window, pad)
    warnings += pad_warnings
    return JobInputs(reference, poses, num_output, config.output_fps, audio, audio_start, pose_fps, warnings)


def pad_to_window(poses: PoseImages, window: int, pad: bool) -> tuple[PoseImages, list[str]]:
    """Repeat the last driving pose until the clip fills one window (the output is trimmed back)."""
    if len(poses) >= window:
        return poses, []
    driving = len(poses) - 1
    if not pad:
        raise InputError(f"{driving} driving frames is shorter than the window ({window - 1} needed); allow padding or lower --window")
    return PaddedPoses(poses, window), [f"{driving} driving frames < window {window}: padded with the last pose to {window - 1}, output trimmed to {driving} frames"]


def _resized(rgb: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(h, w, 3) RGB -> (3, H, W) at the output size."""
    chw = torch.from_numpy(rgb).permute(2, 0, 1)
    return (resize_uint8(chw, hw) if tuple(chw.shape[1:]) != hw else chw).numpy()


def _read_pose_frames(source: Path, hw: tuple[int, int]) -> np.ndarray:
    """Already-drawn pose images from a folder of images or a video, resized to (H, W)."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"no images in pose-frames folder {source}")
        frames = (read_image(p) for p in files)
    else:
        frames = (rgb for _, rgb in iter_sampled_frames(source, 1))
    out = [_resized(rgb, hw) for rgb in frames]
    if not out:
        raise InputError(f"no frames in {source}")
    return np.stack(out)
