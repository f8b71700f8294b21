"""Driving-video poses: batched extraction, retargeted rendering, previews, the ``mimic pose`` job.

Pose images follow spec §4.6-§4.7: frame 0 is the reference pose drawn at the reference size
without retargeting, frames 1..N are the driving poses retargeted onto the reference and drawn
at the same size, so F = 1 + N.

The preview (:func:`write_pose_preview`, from :mod:`mimic.pose.preview`) draws the poses over the
source frames, for people checking them.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from time import monotonic

import numpy as np

from mimic.errors import InputError
from mimic.media.video_reader import VideoInfo, frame_stride, iter_sampled_frames, probe_video
from .detector import DWPoseDetector
from .draw import ALL_PARTS, DrawParts, PoseDrawer
from .files import save_poses
from .postprocess import PoseFrame
from .preview import PANEL_LONG_SIDE, write_pose_preview
from .retarget import retarget_poses
from .sequence import PoseSequence

log = logging.getLogger(__name__)
PREVIEW_LONG_SIDE = PANEL_LONG_SIDE
__all__ = ["extract_video_poses", "expected_samples", "render_pose_images", "write_pose_preview", "pose_command",
           "detection_warnings"]
PROGRESS_EVERY_S = 5.0  # at most one progress line per this many seconds


def extract_video_poses(detector: DWPoseDetector, video_path: str | Path, sample_stride: int = 2,
                        batch_size: int = 8, info: VideoInfo | None = None,
                        progress: Callable[[int, int | None], None] | None = None) -> PoseSequence:
    """Stream the time-sampled frames of ``video_path`` through ``detector`` in batches. ``info`` is
    the video's :func:`probe_video` result when the caller has it.

    A long video takes minutes, so progress is logged (INFO) at most every
    :data:`PROGRESS_EVERY_S` and at the end: frames done of the expected total (from the probed
    length), frames per second (decoding included) and an ETA. ``progress(done, total)`` is called
    after every batch, for callers that draw a bar (``total`` None where the length is unknown).

    A detector with random weights (``detector.weights_warning``: the tiny preset's) is warned about
    first, once per extraction, and the warning is kept in the sequence's ``extraction_warnings``
    (:func:`detection_warnings` lists it, so it reaches the job's report)."""
    if batch_size < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}")
    info = info if info is not None else probe_video(video_path)
    name = Path(video_path).name
    total = expected_samples(info, sample_stride)
    notes = tuple(w for w in (getattr(detector, "weights_warning", None),) if w)
    for note in notes:
        log.warning(note)
    log.info(f"DWPose: extracting {'the' if total is None else total} sampled frames of {name}")
    times: list[float] = []

    def sampled() -> Iterator[np.ndarray]:
        for timestamp, rgb in iter_sampled_frames(video_path, sample_stride):
            times.append(timestamp)
            yield rgb

    frames = sampled()
    poses: list[PoseFrame] = []
    start = logged = monotonic()
    while batch := list(islice(frames, batch_size)):
        poses.extend(detector.detect_frames(batch, batch_size))
        total = max(total, len(poses)) if total is not None else None
        if progress is not None:
            progress(len(poses), total)
        now = monotonic()
        if now - logged >= PROGRESS_EVERY_S:
            log.info(_progress_line(name, len(poses), total, now - start))
            logged = now
    elapsed = monotonic() - start
    if progress is not None and total != len(poses):
        progress(len(poses), len(poses))
    rate = len(poses) / elapsed if elapsed > 0 else 0.0
    log.info(f"DWPose: {len(poses)} frames of {name} in {elapsed:.1f} s ({rate:.1f} frames/s including decoding)")
    return PoseSequence(tuple(poses), tuple(times), (info.height, info.width), info.fps, sample_stride,
                        frame_stride(sample_stride, info.fps), str(Path(video_path).resolve()), rate, notes)


def expected_samples(info: VideoInfo, sample_stride: int) -> int | None:
    """How many frames :func:`iter_sampled_frames` yields (one every ``frame_stride`` frames), from
    the probed frame count or duration; None where the container states neither."""
    stride = frame_stride(sample_stride, info.fps)
    frames = info.frame_count or (round(info.duration_s * info.fps) if info.duration_s and info.fps > 0 else 0)
    return -(-frames // stride) if frames > 0 else None


def _progress_line(name: str, done: int, total: int | None, elapsed_s: float) -> str:
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    if total is None:
        return f"DWPose: {done} frames of {name}, {rate:.1f} frames/s"
    eta = f"ETA {_duration(max(0, total - done) / rate)}" if rate > 0 else "ETA unknown"
    return f"DWPose: {done}/{total} frames of {name} ({100 * done // total}%), {rate:.1f} frames/s, {eta}"


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def render_pose_images(ref_pose: PoseFrame, driving_poses: Sequence[PoseFrame], ref_hw: tuple[int, int],
                       video_hw: tuple[int, int], upstream_exact: bool = False,
                       parts: DrawParts = ALL_PARTS) -> tuple[np.ndarray, list[str]]:
    """Pose images (1 + N, 3, H, W) uint8 RGB at the reference size, and the retargeting warnings
    (returned, not logged: the caller reports them).

    Frame 0 draws ``ref_pose`` as detected; frames 1..N the retargeted driving poses
    (:func:`~mimic.pose.retarget.retarget_poses`). ``parts``: which parts are drawn (all by default).
    """
    result = retarget_poses(ref_pose, driving_poses, ref_hw, video_hw, upstream_exact)
    drawer = PoseDrawer(*ref_hw, parts)
    images = np.empty((1 + len(result.poses), 3, *ref_hw), dtype=np.uint8)
    images[0] = drawer(ref_pose)
    for index, pose in enumerate(result.poses, start=1):
        images[index] = drawer(pose)
    return images, list(result.warnings)


def pose_command(video: str | Path, out_npz: str | Path, det_model: str | Path, pose_model: str | Path,
                 preview: str | Path | None = None, sample_stride: int = 2, device: str = "cpu",
                 batch_size: int = 8) -> dict:
    """``mimic pose``: extract a video's poses to ``out_npz`` (+ optional preview MP4 and PNG sheet).

    The preview (:func:`write_pose_preview`) shows every sampled frame's raw detections (all
    people, no retargeting) over the source frame, at the pose frame rate; the contact sheet goes
    next to it with a ``.png`` suffix. Returns a JSON-ready summary; its warnings are also logged
    (the random-weights one at the start of the extraction, the others at the end).
    """
    if preview is not None and Path(preview).suffix.lower() != ".mp4":
        raise InputError(f"the pose preview must be an .mp4 path, got {preview}")
    detector = DWPoseDetector(det_model, pose_model, device=device)
    poses = extract_video_poses(detector, video, sample_stride, batch_size)
    save_poses(out_npz, poses)
    no_box = [i for i, f in enumerate(poses.frames) if not f.person_detected]
    crowded = [i for i, f in enumerate(poses.frames) if f.num_people > 1]
    warnings = detection_warnings(poses)
    summary = {
        "video": str(video),
        "poses_file": str(out_npz),
        "frames": len(poses.frames),
        "video_size": [poses.video_hw[1], poses.video_hw[0]],
        "source_fps": poses.fps,
        "sample_stride": poses.sample_stride,
        "frame_stride": poses.frame_stride,
        "pose_fps": poses.pose_fps,
        "frames_with_one_person": len(poses.frames) - len(no_box) - len(crowded),
        "frames_without_person_box": len(no_box),
        "frames_with_several_people": len(crowded),
        "detect_frames_per_s": round(poses.detect_frames_per_s, 2),
        "provider": detector.detector.provider,
        "batching": {"detector": detector.detector.batching, "pose": detector.pose_model.batching},
        "preview": None,
        "contact_sheet": None,
        "warnings": warnings,
    }
    if preview is not None:
        summary["preview"], summary["contact_sheet"] = (str(p) for p in write_pose_preview(poses, video, preview))
    for warning in warnings:
        if warning not in poses.extraction_warnings:  # logged when the extraction started
            log.warning(warning)
    return summary


def detection_warnings(poses: PoseSequence) -> list[str]:
    """What a user must know about a driving clip's detections (``mimic pose`` and ``mimic run``)."""
    no_box = sum(1 for f in poses.frames if not f.person_detected)
    crowded = sum(1 for f in poses.frames if f.num_people > 1)
    warnings = list(poses.extraction_warnings)
    if no_box:
        warnings.append(f"{no_box} of {len(poses.frames)} frames have no detected person box (DWPose used the whole frame)")
    if crowded:
        warnings.append(f"{crowded} of {len(poses.frames)} frames show several people (retargeting keeps one main person per frame)")
    return warnings


def _write_previews(poses: PoseSequence, preview: Path, video: str | Path | None = None) -> tuple[Path, Path]:
    """The preview video and contact sheet (:func:`write_pose_preview`; no ``video``: on black)."""
    return write_pose_preview(poses, video, preview)
