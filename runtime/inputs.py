"""Steps 1 and 2 of the pipeline: a job's files -> the reference and the pose images, plus the
inputs opened once (``open_inputs``: what ``mimic.runtime.admission`` keeps from its checks, so a
job's reference is decoded and its driving video probed once).

Where the released script crashes, this does better and says so in the job's warnings:
driving clips shorter than a window are padded (last pose repeated) and the output trimmed back;
resolutions that are not multiples of 64 are rounded; multi-person / no-person clips are handled
by the retargeting's main-person tracking (``mimic.pose.retarget``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mimic.errors import InputError
from mimic.media.images import IMAGE_SUFFIXES, read_image
from mimic.media.video_reader import VideoInfo, iter_sampled_frames, probe_video
from mimic.model.config import RELEASED_FPS, GenerationConfig
from mimic.model.preprocess import cover_resize_size, prepare_reference, resize_uint8
from mimic.pose.draw import DrawParts, draw_pose
from mimic.pose.extract import detection_warnings, extract_video_poses
from mimic.pose.files import load_poses
from mimic.pose.images import ArrayPoses, DrawnPoses, PaddedPoses, PoseImages
from mimic.pose.postprocess import PoseFrame
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
    output_fps: float | None  # None: the motion's rate (pose_fps), else the released 15 fps
    audio_source: Path | None = None  # the driving video, when it is the source
    audio_start_s: float = 0.0  # presentation time of the first sampled frame
    pose_fps: float | None = None  # rate that plays the sampled frames in real time
    warnings: list[str] = field(default_factory=list)
    sequence: PoseSequence | None = None  # the driving poses as detected (video or pose file), before retargeting
    source: Path | None = None  # the video they were detected in, when it is at hand (previews)

    def __post_init__(self) -> None:
        if self.output_fps is None:  # a config's default (None): the motion's rate, else the released 15 fps
            self.output_fps = float(self.pose_fps or RELEASED_FPS)


@dataclass(frozen=True)
class RawInputs:
    """Step 1's result: every input of the job opened once. Admission holds the cheap part (the
    cropped reference, the probed video, the loaded pose file) for as long as the job waits; the
    drawn pose images (``ref_pose_image``, ``pose_frames``: possibly large) stay None until
    ``read_inputs`` reads them at render time."""

    job: Job
    reference: np.ndarray  # cropped to the output size
    ref_pose_image: np.ndarray | None = None  # (3, H, W): the reference's drawn pose, when given
    pose_frames: np.ndarray | None = None  # (F, 3, H, W): already-drawn driving poses
    pose_file: PoseSequence | None = None
    video: VideoInfo | None = None  # the driving video (probed once; decoded once, in step 2)
    ref_pose_frame: PoseFrame | None = None  # the reference's pose from a pose file (--ref-pose REF.npz), in the cropped frame


def open_inputs(job: Job, config: GenerationConfig) -> RawInputs:
    """The cheap part of step 1, what admission keeps: the reference decoded and cropped to the
    output size, the driving video probed, the pose file loaded (drawn pose images: ``read_inputs``)."""
    rgb, video, pose_file = _open_sources(job)
    reference = prepare_reference(rgb, config.resolution)
    ref_pose = _reference_pose(Path(job.ref_pose), rgb.shape[:2], reference.shape[:2]) if is_pose_file(job.ref_pose) else None
    return RawInputs(job, reference, pose_file=pose_file, video=video, ref_pose_frame=ref_pose)


def is_pose_file(path) -> bool:
    return path is not None and Path(path).suffix.lower() == ".npz"


def _reference_pose(path: Path, image_hw: tuple[int, int], out_hw: tuple[int, int]) -> PoseFrame:
    """``--ref-pose REF.npz``: the reference image's pose (the first frame of a pose file made from
    it), moved into the output crop the way the image is (cover-resize, centre crop): retargeting
    and frame 0 then use it instead of running DWPose on the reference."""
    seq = load_poses(path)
    if not seq.frames:
        raise InputError(f"--ref-pose {path} holds no poses")
    if tuple(seq.video_hw) != tuple(image_hw):
        raise InputError(f"--ref-pose {path} was made from a {seq.video_hw[1]}x{seq.video_hw[0]} image, but --ref is "
                         f"{image_hw[1]}x{image_hw[0]}: give the reference's own pose file")
    pose = seq.frames[0]
    (h, w), (th, tw) = image_hw, out_hw
    rh, rw = cover_resize_size(h, w, th, tw)
    top, left = int(round((rh - th) / 2.0)), int(round((rw - tw) / 2.0))
    scale, offset = np.array([rw / w, rh / h]), np.array([left, top], dtype=np.float64)
    keypoints = (pose.keypoints * [w, h] * scale - offset) / [tw, th]
    boxes = pose.boxes * np.tile(scale, 2) - np.tile(offset, 2)
    return PoseFrame(keypoints, pose.scores, boxes, pose.person_detected, (th, tw))


def _open_sources(job: Job) -> tuple[np.ndarray, VideoInfo | None, PoseSequence | None]:
    """The reference decoded (exists, is a file, decodes), the driving video probed (corrupt or
    zero-frame videos fail here, with their reason), the pose file loaded."""
    rgb = read_image(job.reference, "--ref")
    video = probe_video(job.driving) if job.driving is not None else None
    pose_file = load_poses(job.poses) if job.poses is not None else None
    return rgb, video, pose_file


def read_inputs(job: Job, config: GenerationConfig, raw: RawInputs | None = None) -> RawInputs:
    """Step 1: the reference (cropped to the output size) and the driving source, each opened once.
    ``raw``: what admission opened already; only the drawn pose images are read here."""
    raw = raw if raw is not None else open_inputs(job, config)
    hw = raw.reference.shape[:2]
    ref_pose_image, pose_frames = raw.ref_pose_image, raw.pose_frames
    if job.ref_pose is not None and ref_pose_image is None and raw.ref_pose_frame is None:
        single_image = Path(job.ref_pose).suffix.lower() in IMAGE_SUFFIXES
        ref_pose_image = resize_pose_image(read_image(job.ref_pose, "--ref-pose", background=0), hw) if single_image else _read_pose_frames(job.ref_pose, hw)[0]
    if job.pose_frames is not None and pose_frames is None:
        pose_frames = _read_pose_frames(job.pose_frames, hw)
    return replace(raw, ref_pose_image=ref_pose_image, pose_frames=pose_frames)


def prepare_poses(raw: RawInputs, config: GenerationConfig, detector: Callable, pad: bool = True) -> JobInputs:
    """Step 2: DWPose on the driving video (or the pose file / drawn frames), retargeted to the
    reference, drawn lazily per window; padded to one window for short clips.
    ``detector()`` gives the DWPoseDetector (created only if needed)."""
    job, reference = raw.job, raw.reference
    hw = reference.shape[:2]
    warnings: list[str] = []
    ref_pose_image = raw.ref_pose_image
    audio, audio_start, pose_fps = None, 0.0, None
    parts = DrawParts.from_settings(config)

    def reference_pose() -> PoseFrame:
        """The reference's pose: from --ref-pose REF.npz, else DWPose on the reference (said when its weights are random)."""
        if raw.ref_pose_frame is not None:
            return raw.ref_pose_frame
        found = detector()
        if getattr(found, "weights_warning", None):
            warnings.append("the reference's pose comes from DWPose with random weights (meaningless): give --ref-pose REF.npz, "
                            "or real DWPose weights")
        return found.detect_image(reference)

    if raw.pose_frames is not None:
        if not (config.draw_body and config.draw_hands and config.draw_face):
            warnings.append("--draw-body/--draw-hands/--draw-face do not apply to --pose-frames (already drawn): the images are used as they are")
        if ref_pose_image is None:
            ref_pose_image = draw_pose(reference_pose(), *hw, parts)
        poses: PoseImages = ArrayPoses(np.concatenate([ref_pose_image[None], raw.pose_frames]))
        pose_fps = _frames_fps(job.pose_frames)
    else:
        if raw.video is not None:
            seq = extract_video_poses(detector(), job.driving, config.sample_stride, info=raw.video)
            warnings += detection_warnings(seq)
            audio = Path(job.driving)
        else:
            seq = raw.pose_file
            audio = pose_file_source(job.poses, seq)
            warnings += [f"{Path(job.poses).name}: {w}" for w in seq.extraction_warnings]  # e.g. extracted with random DWPose weights
        if not seq.frames:
            raise InputError(f"no frames were sampled from {job.driving or job.poses}")
        audio_start, pose_fps = (float(seq.frame_times_s[0]) if seq.frame_times_s else 0.0), seq.pose_fps
        ref_detect = reference_pose()
        retargeted = retarget_poses(ref_detect, seq.frames, hw, seq.video_hw)
        warnings += list(retargeted.warnings)
        first = ref_pose_image if ref_pose_image is not None else draw_pose(ref_detect, *hw, parts)
        poses = DrawnPoses(first, retargeted.poses, *hw, parts)
    num_output = len(poses) - 1
    poses, pad_warnings = pad_to_window(poses, config.window, pad)
    warnings += pad_warnings
    sequence = seq if raw.pose_frames is None else None
    return JobInputs(reference, poses, num_output, config.fps_for(pose_fps), audio, audio_start, pose_fps, warnings, sequence, audio)


def pose_file_source(pose_file: Path, seq: PoseSequence) -> Path | None:
    """The video a pose file was extracted from, for ``--audio``: its recorded path, or a file of that
    name beside the pose file (pose files move with their videos); None when neither exists."""
    if not seq.source:
        return None
    recorded = Path(seq.source)
    for candidate in (recorded, Path(pose_file).parent / recorded.name):
        if candidate.is_file():
            return candidate
    return None


def _frames_fps(source: Path) -> float | None:
    """The frame rate of drawn pose frames given as a video (a folder of images has none)."""
    source = Path(source)
    return None if source.is_dir() else (probe_video(source).fps or None)


def pad_to_window(poses: PoseImages, window: int, pad: bool) -> tuple[PoseImages, list[str]]:
    """Repeat the last driving pose until the clip fills one window (the output is trimmed back)."""
    if len(poses) >= window:
        return poses, []
    driving = len(poses) - 1
    if not pad:
        raise InputError(f"{driving} driving frames is shorter than the window ({window - 1} needed); allow padding or lower --window")
    return PaddedPoses(poses, window), [f"{driving} driving frames < window {window}: padded with the last pose to {window - 1}, output trimmed to {driving} frames"]


def resize_pose_image(rgb: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
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
        frames = (read_image(p, background=0) for p in files)
    else:
        frames = (rgb for _, rgb in iter_sampled_frames(source, 1))
    out = [resize_pose_image(rgb, hw) for rgb in frames]
    if not out:
        raise InputError(f"no frames in {source}")
    return np.stack(out)
