"""The pose preview people check a driving video's poses with: an MP4 and a contact sheet PNG.

Video (one picture per sampled frame, at the pose frame rate, so it plays in real time): the source
frame on the left and the skeleton over the dimmed source on the right (:func:`mimic.pose.sheet.overlay_pose`),
each half named above it ("source" | "pose"), and under both the 1-based frame number, the frame
count, the time from the first sampled frame and what the detector found ("no person box": DWPose
ran on the whole frame; "3 people"). Side by side because a skeleton drawn over a limb hides that
limb: the untouched frame next to it shows what the skeleton should follow, while the overlay shows
where it lies on the body. Each half is the video's aspect ratio with its long side
:data:`PANEL_LONG_SIDE`.

Contact sheet (``<preview>.png``, :func:`mimic.pose.sheet.contact_sheet`): up to 32 evenly spaced
frames, the skeleton over each frame only (no side by side: a 160-px tile of each is what fits a
screen), labelled with frame number and time.

:func:`write_pose_preview` writes both from a :class:`~mimic.pose.sequence.PoseSequence` and its
source video (decoded once more, streamed: memory does not grow with the video's length); without a
source video the skeletons are drawn on black.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mimic.errors import InputError
from mimic.media.preview import FOOTER, HEADER, label_strip, text_scale
from mimic.media.video_reader import iter_sampled_frames, probe_video
from mimic.media.video_writer import write_rgb_video

from .draw import ALL_PARTS, DrawParts
from .postprocess import PoseFrame
from .sequence import PoseSequence
from .sheet import draw_preview_pose, fit, overlay_pose, pick_frames, tile_size, write_contact_sheet

log = logging.getLogger(__name__)
PANEL_LONG_SIDE = 640
DIVIDER = 2  # px between the two halves
DIVIDER_GREY = 96
PANEL_LABELS = ("source", "pose")
PROGRESS_EVERY_S = 5.0  # a long video's preview takes a while too: a line at most this often


def panel_size(video_hw: tuple[int, int], long_side: int = PANEL_LONG_SIDE) -> tuple[int, int]:
    """(height, width) of each half: the video's aspect ratio, long side ``long_side``, even sizes."""
    height, width = video_hw
    scale = long_side / max(height, width)
    return max(2, 2 * round(height * scale / 2)), max(2, 2 * round(width * scale / 2))


def frame_caption(number: int, total: int, time_s: float, pose: PoseFrame) -> str:
    """``frame 12 of 240   t = 0.50 s``, then what the detector found when it is not one person."""
    text = f"frame {number} of {total}   t = {time_s:.2f} s"
    if not pose.person_detected:
        text += "   no person box (whole frame used)"
    elif pose.num_people > 1:
        text += f"   {pose.num_people} people"
    return text


def preview_picture(source: np.ndarray, pose: PoseFrame, caption: str, parts: DrawParts = ALL_PARTS) -> np.ndarray:
    """One picture of the preview video: (HEADER + h + FOOTER, 2w + DIVIDER, 3) uint8 RGB for a
    source frame (h, w, 3) already at the panel size: the frame | the pose over it, named above,
    ``caption`` below."""
    height, width = source.shape[:2]
    scale = text_scale(width)
    total = 2 * width + DIVIDER
    out = np.full((HEADER + height + FOOTER, total, 3), DIVIDER_GREY, dtype=np.uint8)
    overlay = overlay_pose(source, pose, parts)
    for k, (panel, label) in enumerate(zip((source, overlay), PANEL_LABELS)):
        x = k * (width + DIVIDER)
        out[:HEADER, x:x + width] = label_strip(label, width, HEADER, scale)
        out[HEADER:HEADER + height, x:x + width] = panel
    out[HEADER + height:] = label_strip(caption, total, FOOTER, scale)
    return out


def write_pose_preview(poses: PoseSequence, video_path: str | Path | None, preview_path: str | Path, *,
                       parts: DrawParts = ALL_PARTS, long_side: int = PANEL_LONG_SIDE) -> tuple[Path, Path]:
    """Write the preview of ``poses`` (an H.264 MP4 at ``preview_path``) and its contact sheet (the
    same path with ``.png``); returns (video, sheet).

    ``video_path``: the video the poses were extracted from (sampled again with the poses' own
    sample stride; its size must be the poses' ``video_hw``); None draws the skeletons on black (a
    pose file whose video is gone). ``parts``: which parts are drawn (e.g. the generation's
    ``draw_body``/``draw_hands``/``draw_face``). ``long_side``: of each half of the video."""
    preview_path = Path(preview_path)
    total = len(poses.frames)
    if total == 0:
        raise InputError(f"no poses to preview in {preview_path}")
    if video_path is not None:
        info = probe_video(video_path)
        if (info.height, info.width) != tuple(poses.video_hw):
            raise InputError(f"{video_path} is {info.width}x{info.height} but the poses were extracted from a "
                             f"{poses.video_hw[1]}x{poses.video_hw[0]} video: give the video the poses came from")
    size = panel_size(poses.video_hw, long_side)
    tile_hw = tile_size(poses.video_hw)
    picks = {int(i) for i in pick_frames(total)}
    tiles: dict[int, np.ndarray] = {}
    times = poses.frame_times_s
    shown = 0
    logged = time.monotonic()

    def pictures() -> Iterator[np.ndarray]:
        nonlocal shown, logged
        decoded = iter_sampled_frames(video_path, poses.sample_stride) if video_path is not None else None
        try:
            for index, pose in enumerate(poses.frames):
                caption = frame_caption(index + 1, total, times[index] - times[0], pose)
                if decoded is None:
                    picture = _black_picture(draw_preview_pose(pose, *size, parts=parts), caption)
                else:
                    _, rgb = next(decoded, (None, None))
                    if rgb is None:
                        return
                    if index in picks:
                        tiles[index] = fit(rgb, tile_hw)
                    picture = preview_picture(fit(rgb, size), pose, caption, parts)
                shown = index + 1
                yield picture
                if time.monotonic() - logged >= PROGRESS_EVERY_S:
                    log.info(f"pose preview: {shown}/{total} frames written to {preview_path.name}")
                    logged = time.monotonic()
        finally:
            if decoded is not None:
                decoded.close()

    video = write_rgb_video(preview_path, pictures(), poses.pose_fps)
    if shown < total:
        log.warning(f"{video_path} gave {shown} sampled frames for {total} poses: the preview shows the first {shown}")
    sheet = write_contact_sheet(poses.frames, poses.video_hw, preview_path.with_suffix(".png"), times_s=times,
                                frames=tiles if video_path is not None else None, parts=parts)
    return video, sheet


def _black_picture(skeleton: np.ndarray, caption: str) -> np.ndarray:
    """A preview picture without a source frame: the skeleton on black, captioned."""
    height, width = skeleton.shape[:2]
    scale = text_scale(width)
    out = np.empty((HEADER + height + FOOTER, width, 3), dtype=np.uint8)
    out[:HEADER] = label_strip("pose", width, HEADER, scale)
    out[HEADER:HEADER + height] = skeleton
    out[HEADER + height:] = label_strip(caption, width, FOOTER, scale)
    return out
