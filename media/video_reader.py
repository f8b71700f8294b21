"""Video reading with PyAV: streamed, rotation-aware, sampled by timestamp.

Sampling follows the released reader's stride ``sample_stride · max(1, int(avg_fps / 24))``
(spec §4.7 step 2) but picks frames **by presentation time**: for target times
``k · stride / avg_fps`` (k = 0, 1, ... while the target is not after the last frame), the frame
whose timestamp (relative to the first frame) is nearest is emitted (ties: the earlier frame).
On a constant-frame-rate file this is exactly frames 0, stride, 2·stride, ...; on a variable
frame rate file the samples stay evenly spaced in time. Frames are decoded one at a time and
only the emitted ones are converted to RGB, so a video is never held in memory.

Display rotation (the display-matrix side data of phone videos) is honoured: the decoded frame
is rotated counter-clockwise by ``frame.rotation`` (rounded to a multiple of 90°), the way
players show it; mirroring in the matrix is ignored. The released reader (decord) ignores it.

Writing lives in :mod:`mimic.media.video_writer`.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from mimic.errors import InputError

if TYPE_CHECKING:  # PyAV is imported where a video is opened: modules that import this one load without it
    import av

REFERENCE_FPS = 24


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learns. ``width``/``height`` are after display rotation."""

    path: str
    width: int
    height: int
    fps: float
    frame_count: int | None
    duration_s: float | None
    rotation_deg: int
    has_audio: bool


def frame_stride(sample_stride: int, fps: float) -> int:
    """Frames between samples: ``sample_stride · max(1, int(fps / 24))`` (30 fps → 2 for 2)."""
    return sample_stride * max(1, int(fps / REFERENCE_FPS))


def probe_video(path: str | Path) -> VideoInfo:
    """Read the metadata and decode the first frame (for its rotation and to prove it decodes)."""
    with _open_video(path) as (container, stream):
        first = next(_decoded_frames(container, stream, path), None)
        if first is None:
            raise InputError(f"no decodable video frames in {path}")
        rotation = _quarter_turns(first) * 90
        width, height = first.width, first.height
        if rotation in (90, 270):
            width, height = height, width
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000  # container durations are in AV_TIME_BASE (microseconds)
        return VideoInfo(str(path), width, height, float(_average_rate(stream, path)),
                         stream.frames or None, duration, rotation, bool(container.streams.audio))


def iter_sampled_frames(path: str | Path, sample_stride: int) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(timestamp_s, rgb uint8 (H, W, 3))`` for the time-sampled frames of ``path``.

    Timestamps are relative to the first frame. Raises :class:`InputError` for a missing,
    unreadable or frameless video, or when decoding fails midway.
    """
    if sample_stride < 1:
        raise InputError(f"sample stride must be >= 1, got {sample_stride}")
    with _open_video(path) as (container, stream):
        fps = _average_rate(stream, path)
        step = Fraction(frame_stride(sample_stride, float(fps))) / fps
        target = Fraction(0)
        previous: tuple[Fraction, av.VideoFrame] | None = None
        start: Fraction | None = None
        converted: tuple[av.VideoFrame, np.ndarray] | None = None
        for frame in _decoded_frames(container, stream, path):
            if frame.pts is None:
                time = previous[0] + 1 / fps if previous else Fraction(0)
            else:
                absolute = Fraction(frame.pts) * frame.time_base
                start = absolute if start is None else start
                time = absolute - start
            while target <= time:
                chosen_time, chosen = (previous if previous is not None and target - previous[0] <= time - target
                                       else (time, frame))
                if converted is None or converted[0] is not chosen:
                    converted = (chosen, _to_rgb(chosen))
                yield float(chosen_time), converted[1]
                target += step
            previous = (time, frame)
        if previous is None:
            raise InputError(f"no decodable video frames in {path}")


def _pyav():
    try:
        import av
    except ImportError:
        raise InputError("reading a video needs PyAV, which is not installed here: `pip install av` "
                         "(or give the motion as --pose POSES.npz or a --pose-frames folder of PNGs)") from None
    return av


@contextmanager
def _open_video(path: str | Path) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"video not found: {path}")
    av = _pyav()
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise InputError(f"cannot read video {path}: {_reason(err)}") from err
    try:
        if not container.streams.video:
            raise InputError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        yield container, stream
    finally:
        container.close()


def _decoded_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                    path: str | Path) -> Iterator[av.VideoFrame]:
    av = _pyav()
    count = 0
    try:
        for frame in container.decode(stream):
            count += 1
            yield frame
    except av.error.FFmpegError as err:
        raise InputError(f"corrupt video {path}: decoding failed after {count} frames ({_reason(err)})") from err


def _average_rate(stream: av.video.stream.VideoStream, path: str | Path) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        raise InputError(f"cannot determine the frame rate of {path}")
    return Fraction(rate)


def _quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise display rotation of ``frame`` in quarter turns (0-3)."""
    return round((frame.rotation or 0) / 90) % 4


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    rgb = frame.to_ndarray(format="rgb24")
    turns = _quarter_turns(frame)
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _reason(err: Exception) -> str:
    return (getattr(err, "strerror", None) or str(err)).splitlines()[0]
