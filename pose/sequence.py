"""``PoseSequence``: the poses of a driving video's sampled frames, shared by pose extraction
(:mod:`mimic.pose.extract`) and pose files (:mod:`mimic.pose.files`)."""
from __future__ import annotations

from dataclasses import dataclass

from .postprocess import PoseFrame


@dataclass(frozen=True, eq=False)
class PoseSequence:
    """The poses of a driving video's sampled frames and how they were sampled.

    ``video_hw`` is the (height, width) of the frames given to DWPose (after display rotation);
    ``fps`` is the source's average frame rate, ``frame_stride`` the source frames per sample
    (``sample_stride · max(1, int(fps / 24))``); ``frame_times_s`` the sampled frames'
    presentation times. ``detect_frames_per_s`` records the extraction throughput;
    ``extraction_warnings`` what was logged when the poses were extracted (the tiny preset's random
    DWPose weights), for the job's report (not stored in pose files).
    """

    frames: tuple[PoseFrame, ...]
    frame_times_s: tuple[float, ...]
    video_hw: tuple[int, int]
    fps: float
    sample_stride: int
    frame_stride: int
    source: str = ""
    detect_frames_per_s: float = 0.0
    extraction_warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.frames) != len(self.frame_times_s):
            raise ValueError(f"{len(self.frames)} poses but {len(self.frame_times_s)} frame times")

    @property
    def pose_fps(self) -> float:
        """Frame rate that plays the sampled poses at the source's speed."""
        return self.fps / self.frame_stride
