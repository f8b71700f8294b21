"""Driving-pose retargeting onto the reference image (spec §4.7), upstream-exact and robust.

Released behaviour (``upstream_exact=True``):

1. Reference id set K0 = [0, 1, 2, 5, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17] (no elbows or
   wrists), filtered to the ids whose score in the **first** reference person is > 0.3.
2. Fit set: driving frames with exactly one person; their K0 points, no per-frame filtering.
3. ``(a_y, b_y) = polyfit(driving y, tiled reference y, 1)`` over all (frame, K0) pairs;
   ``a_x = a_y / (H_v / W_v / H · W)`` (= a_y·(W_v/H_v)·(H/W): isotropic in pixels), with
   (H, W) the reference size and (H_v, W_v) the video frame size;
   ``b_x = mean(ref_x − a_x · det_x)``.
4. ``p' = p·(a_x, a_y) + (b_x, b_y)`` on every keypoint of every person of every frame.

The released code crashes when no frame has exactly one person ("need at least one array to
stack"). The default (robust) mode instead keeps one main person per frame — the largest box
first, then the person whose box overlaps the previous main person most (nearest centre when
none overlaps) — fits on those, lets frames without a person reuse the pose of the nearest frame
with one, and returns a warning for every such decision. A person counts only when at least one
body keypoint scores > 0.3. When every frame shows exactly one such person both modes give
identical results.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mimic.errors import InputError
from .postprocess import KEYPOINT_THRESHOLD, NUM_BODY, PoseFrame

REFERENCE_KEYPOINT_IDS = (0, 1, 2, 5, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17)
_LISTED_FRAMES = 10


@dataclass(frozen=True)
class RetargetTransform:
    """``p' = p·scale + offset`` in normalised coordinates; scale = (a_x, a_y), offset = (b_x, b_y)."""

    scale: tuple[float, float]
    offset: tuple[float, float]

    def apply(self, pose: PoseFrame) -> PoseFrame:
        return pose.transformed(np.array(self.scale), np.array(self.offset))


@dataclass(frozen=True)
class RetargetResult:
    """Retargeted driving poses plus what was decided on the way.

    ``main_people[i]`` is the person kept in frame i (None: every person kept, upstream mode, or
    no person); ``source_frames[i]`` is the frame whose pose frame i shows (≠ i when carried).
    """

    poses: tuple[PoseFrame, ...]
    transform: RetargetTransform
    fit_frames: tuple[int, ...]
    main_people: tuple[int | None, ...]
    source_frames: tuple[int, ...]
    warnings: tuple[str, ...]


def reference_keypoint_ids(ref_pose: PoseFrame) -> list[int]:
    """K0 filtered to the ids whose score in the first reference person is > 0.3."""
    if ref_pose.num_people == 0:
        return []
    return [i for i in REFERENCE_KEYPOINT_IDS if ref_pose.subset[0, i] >= 0.0]


def fit_transform(ref_points: np.ndarray, driving_points: np.ndarray, ref_hw: tuple[int, int],
                  video_hw: tuple[int, int]) -> RetargetTransform:
    """The released least-squares fit: ref_points (K, 2), driving_points (F, K, 2), normalised."""
    frames = len(driving_points)
    a_y, b_y = np.polyfit(driving_points[:, :, 1].flatten(), np.tile(ref_points[:, 1], frames), 1)
    (height, width), (video_h, video_w) = ref_hw, video_hw
    a_x = a_y / (video_h / video_w / height * width)
    b_x = np.mean(np.tile(ref_points[:, 0], frames) - driving_points[:, :, 0].flatten() * a_x)
    return RetargetTransform((float(a_x), float(a_y)), (float(b_x), float(b_y)))


def retarget_poses(ref_pose: PoseFrame, driving: Sequence[PoseFrame], ref_hw: tuple[int, int],
                   video_hw: tuple[int, int], upstream_exact: bool = False) -> RetargetResult:
    """Retarget ``driving`` poses (normalised to ``video_hw``) onto the reference (``ref_hw``).

    Raises :class:`InputError` when the reference has no retargeting keypoint, and in
    ``upstream_exact`` mode where the released code would crash.
    """
    ref_ids = reference_keypoint_ids(ref_pose)
    if not ref_ids:
        raise InputError("no person found in the reference image: none of the 14 retargeting "
                         "keypoints (nose, neck, shoulders, hips, knees, ankles, eyes, ears) scored above 0.3")
    warnings = []
    if ref_pose.num_people > 1:
        warnings.append(f"the reference image shows {ref_pose.num_people} people; retargeting uses the "
                        "first (highest detector score) and the reference pose image draws all of them")
    ref_points = ref_pose.candidate[ref_ids]
    if upstream_exact:
        return _retarget_upstream(ref_points, ref_ids, driving, ref_hw, video_hw, warnings)
    return _retarget_robust(ref_points, ref_ids, driving, ref_hw, video_hw, warnings)


def _retarget_upstream(ref_points: np.ndarray, ref_ids: list[int], driving: Sequence[PoseFrame],
                       ref_hw: tuple[int, int], video_hw: tuple[int, int], warnings: list[str]) -> RetargetResult:
    fit_frames = [i for i, pose in enumerate(driving) if pose.num_people == 1]
    if not fit_frames:
        raise InputError(f"none of the {len(driving)} driving frames shows exactly one person, which the "
                         "released retargeting needs ('need at least one array to stack'); "
                         "use the default (robust) retargeting instead")
    points = np.stack([driving[i].candidate for i in fit_frames])[:, ref_ids]
    transform = fit_transform(ref_points, points, ref_hw, video_hw)
    return RetargetResult(tuple(transform.apply(pose) for pose in driving), transform, tuple(fit_frames),
                          (None,) * len(driving), tuple(range(len(driving))), tuple(warnings))


def _retarget_robust(ref_points: np.ndarray, ref_ids: list[int], driving: Sequence[PoseFrame],
                     ref_hw: tuple[int, int], video_hw: tuple[int, int], warnings: list[str]) -> RetargetResult:
    count = len(driving)
    main = choose_main_people(driving)
    fit_frames = [i for i, person in enumerate(main) if person is not None]
    crowded = [i for i, pose in enumerate(driving) if len(_people_with_body(pose)) > 1]
    if crowded:
        warnings.append(f"{_frames(crowded, count)} show several people; kept one main person per frame "
                        "(largest box first, then the best overlap with the previous main person) "
                        "and dropped the others")
    if not fit_frames:
        warnings.append(f"no person detected in any of the {count} driving frames; the pose images are blank")
        empty = tuple(pose.select([]) for pose in driving)
        return RetargetResult(empty, RetargetTransform((1.0, 1.0), (0.0, 0.0)), (), tuple(main),
                              tuple(range(count)), tuple(warnings))
    if not any(pose.num_people == 1 for pose in driving):
        warnings.append("no driving frame shows exactly one person, where the released MimicMotion stops "
                        "('need at least one array to stack'); fitted on the main person of each frame")
    sources = _nearest_sources(fit_frames, count)
    carried = [i for i in range(count) if sources[i] != i]
    if carried:
        pairs = ", ".join(f"{i}<-{sources[i]}" for i in carried[:_LISTED_FRAMES])
        warnings.append(f"{_frames(carried, count)} show no person; each reuses the pose of the nearest "
                        f"frame with a person ({pairs}{', ...' if len(carried) > _LISTED_FRAMES else ''})")
    points = np.stack([driving[i].keypoints[main[i], :NUM_BODY] for i in fit_frames])[:, ref_ids]
    transform, degenerate = _robust_fit(ref_points, points, ref_hw, video_hw)
    if degenerate:
        warnings.append(f"the retargeting fit is degenerate ({degenerate}); kept the driving scale "
                        "(a_y = 1) and fitted the offsets only")
    poses = tuple(transform.apply(driving[sources[i]].select([main[sources[i]]])) for i in range(count))
    return RetargetResult(poses, transform, tuple(fit_frames), tuple(main), tuple(sources), tuple(warnings))


def _robust_fit(ref_points: np.ndarray, points: np.ndarray, ref_hw: tuple[int, int],
                video_hw: tuple[int, int]) -> tuple[RetargetTransform, str]:
    """:func:`fit_transform`, or offsets only (a_y = 1) when the y data cannot fix a scale."""
    if len(ref_points) < 2 or np.ptp(ref_points[:, 1]) == 0:
        reason = "fewer than two distinct reference keypoint heights"
    elif np.ptp(points[:, :, 1]) == 0:
        reason = "all driving keypoint heights are equal"
    else:
        return fit_transform(ref_points, points, ref_hw, video_hw), ""
    (height, width), (video_h, video_w) = ref_hw, video_hw
    a_y = 1.0
    a_x = a_y / (video_h / video_w / height * width)
    frames = len(points)
    b_y = np.mean(np.tile(ref_points[:, 1], frames) - points[:, :, 1].flatten() * a_y)
    b_x = np.mean(np.tile(ref_points[:, 0], frames) - points[:, :, 0].flatten() * a_x)
    return RetargetTransform((float(a_x), a_y), (float(b_x), float(b_y))), reason


def choose_main_people(driving: Sequence[PoseFrame]) -> list[int | None]:
    """Index of the main person of every frame (None where no person has a body keypoint > 0.3).

    The first frame with people takes the largest box (ties: higher mean body score); later
    frames take the person whose box overlaps the previous main box most (IoU), or whose box
    centre is nearest when none overlaps.
    """
    main: list[int | None] = []
    previous: np.ndarray | None = None
    for pose in driving:
        people = _people_with_body(pose)
        if not people:
            main.append(None)
            continue
        boxes = pose.boxes[people]
        if previous is None:
            areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            mean_scores = pose.body_score[people].mean(axis=1)
            pick = max(range(len(people)), key=lambda k: (areas[k], mean_scores[k]))
        else:
            overlaps = _iou(previous, boxes)
            if overlaps.max() > 0:
                pick = int(np.argmax(overlaps))
            else:
                centres = (boxes[:, :2] + boxes[:, 2:]) / 2
                pick = int(np.argmin(np.linalg.norm(centres - (previous[:2] + previous[2:]) / 2, axis=1)))
        main.append(people[pick])
        previous = boxes[pick]
    return main


def _people_with_body(pose: PoseFrame) -> list[int]:
    return [int(p) for p in np.flatnonzero((pose.body_score > KEYPOINT_THRESHOLD).any(axis=1))]


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    inter_w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    inter_h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = inter_w * inter_h
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _nearest_sources(good: list[int], count: int) -> list[int]:
    """For every frame, the nearest frame in ``good`` (itself if good; ties: the earlier one)."""
    good_arr = np.asarray(good)
    return [int(good_arr[np.argmin(np.abs(good_arr - i))]) for i in range(count)]


def _frames(indices: list[int], total: int) -> str:
    shown = ", ".join(str(i) for i in indices[:_LISTED_FRAMES])
    more = f", ... (+{len(indices) - _LISTED_FRAMES} more)" if len(indices) > _LISTED_FRAMES else ""
    return f"{len(indices)} of {total} driving frames ({shown}{more})"
