"""Retargeting: closed-form least squares, the released path, and the robust person policy."""
from __future__ import annotations

import numpy as np
import pytest

from mimic.errors import InputError
from mimic.pose.draw import draw_pose
from mimic.pose.postprocess import PoseFrame
from mimic.pose.retarget import choose_main_people, reference_keypoint_ids, retarget_poses
from mimic.pose.extract import render_pose_images

REF_HW, VIDEO_HW = (1024, 576), (720, 1280)
K0 = [0, 1, 2, 5, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]


def person(rng: np.random.Generator, centre=(0.5, 0.5), size=0.3, score=0.9):
    """One person's 134 keypoints around ``centre`` and its box (pixels of VIDEO_HW)."""
    keypoints = np.array(centre) + rng.uniform(-size / 2, size / 2, (134, 2))
    scores = np.full(134, float(score))
    h, w = VIDEO_HW
    box = np.array([(centre[0] - size / 2) * w, (centre[1] - size / 2) * h,
                    (centre[0] + size / 2) * w, (centre[1] + size / 2) * h])
    return keypoints, scores, box


def pose_of(*people, detected=True, hw=VIDEO_HW) -> PoseFrame:
    if not people:
        return PoseFrame(np.zeros((0, 134, 2)), np.zeros((0, 134)), np.zeros((0, 4)), detected, hw)
    return PoseFrame(np.stack([p[0] for p in people]), np.stack([p[1] for p in people]),
                     np.stack([p[2] for p in people]), detected, hw)


def closed_form(ref: np.ndarray, ids: list[int], bodies: list[np.ndarray]):
    """Least squares by the textbook formulas: y_ref ≈ a_y·y_det + b_y, a_x from a_y, b_x mean residual."""
    x = np.concatenate([b[ids, 1] for b in bodies])
    y = np.tile(ref[ids, 1], len(bodies))
    a_y = np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2)
    b_y = y.mean() - a_y * x.mean()
    a_x = a_y * (VIDEO_HW[1] / VIDEO_HW[0]) * (REF_HW[0] / REF_HW[1])
    b_x = np.mean(np.tile(ref[ids, 0], len(bodies)) - np.concatenate([b[ids, 0] for b in bodies]) * a_x)
    return np.array([a_x, a_y]), np.array([b_x, b_y])


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.fixture
def ref(rng):
    keypoints, scores, box = person(rng, size=0.6)
    scores[9] = 0.2           # right knee not visible: leaves K0
    scores[3] = 0.1           # an elbow: never in K0 anyway
    return pose_of((keypoints, scores, box), hw=REF_HW)


def test_reference_keypoint_set(rng, ref):
    keypoints, scores, box = person(rng)
    assert reference_keypoint_ids(pose_of((keypoints, scores, box), hw=REF_HW)) == K0
    assert reference_keypoint_ids(ref) == [0, 1, 2, 5, 8, 10, 11, 12, 13, 14, 15, 16, 17]   # knee 9 at 0.2
    second_only = pose_of((keypoints, np.zeros(134), box), (keypoints, scores, box), hw=REF_HW)
    assert reference_keypoint_ids(second_only) == []        # only the first person counts


def test_fit_equals_closed_form_least_squares(rng, ref):
    driving = [pose_of(person(rng, centre=(0.4 + 0.05 * i, 0.5))) for i in range(5)]
    result = retarget_poses(ref, driving, REF_HW, VIDEO_HW, upstream_exact=True)
    ids = [i for i in K0 if i != 9]
    scale, offset = closed_form(ref.keypoints[0], ids, [d.keypoints[0] for d in driving])
    assert result.transform.scale == pytest.approx(scale, rel=1e-9)
    assert result.transform.offset == pytest.approx(offset, rel=1e-9, abs=1e-12)
    for pose, original in zip(result.poses, driving):   # body, feet, face and both hands
        assert pose.keypoints == pytest.approx(original.keypoints * scale + offset, rel=1e-9, abs=1e-12)
        assert np.array_equal(pose.scores, original.scores)
    assert result.fit_frames == (0, 1, 2, 3, 4) and result.warnings == ()


def test_robust_equals_upstream_on_a_normal_clip(rng, ref):
    driving = [pose_of(person(rng, centre=(0.5, 0.45 + 0.02 * i))) for i in range(6)]
    upstream = retarget_poses(ref, driving, REF_HW, VIDEO_HW, upstream_exact=True)
    robust = retarget_poses(ref, driving, REF_HW, VIDEO_HW)
    assert robust.transform == upstream.transform and robust.warnings == ()
    for a, b in zip(robust.poses, upstream.poses):
        assert np.array_equal(a.keypoints, b.keypoints)
    images_a, _ = render_pose_images(ref, driving, REF_HW, VIDEO_HW)
    images_b, _ = render_pose_images(ref, driving, REF_HW, VIDEO_HW, upstream_exact=True)
    assert np.array_equal(images_a, images_b)


def test_multi_person_frames(rng, ref):
    a0, a1, a2, a3 = (person(rng, centre=(0.3, 0.5), size=0.4) for _ in range(4))
    b1, b2 = (person(rng, centre=(0.8, 0.5), size=0.2) for _ in range(2))
    driving = [pose_of(a0), pose_of(a1, b1), pose_of(b2, a2), pose_of(a3)]
    robust = retarget_poses(ref, driving, REF_HW, VIDEO_HW)
    assert robust.main_people == (0, 0, 1, 0)              # person A tracked through frame 2
    assert all(p.num_people == 1 for p in robust.poses)
    assert any("2 of 4 driving frames (1, 2) show several people" in w for w in robust.warnings)
    ids = [i for i in K0 if i != 9]
    scale, offset = closed_form(ref.keypoints[0], ids, [a[0] for a in (a0, a1, a2, a3)])
    assert robust.transform.scale == pytest.approx(scale, rel=1e-9)
    assert robust.poses[2].keypoints[0] == pytest.approx(a2[0] * scale + offset)
    upstream = retarget_poses(ref, driving, REF_HW, VIDEO_HW, upstream_exact=True)
    assert upstream.fit_frames == (0, 3)                  # the released fit: single-person frames
    scale, offset = closed_form(ref.keypoints[0], ids, [a0[0], a3[0]])
    assert upstream.transform.scale == pytest.approx(scale, rel=1e-9)
    assert [p.num_people for p in upstream.poses] == [1, 2, 2, 1]


def test_first_main_person_is_the_largest_box(rng):
    small, large = person(rng, centre=(0.2, 0.5), size=0.2), person(rng, centre=(0.7, 0.5), size=0.5)
    far = person(rng, centre=(0.25, 0.5), size=0.2)
    near = person(rng, centre=(0.75, 0.55), size=0.45)
    assert choose_main_people([pose_of(small, large), pose_of(far, near)]) == [1, 1]


def test_only_multi_person_frames(rng, ref):
    driving = [pose_of(person(rng, centre=(0.3, 0.5)), person(rng, centre=(0.7, 0.5))) for _ in range(3)]
    with pytest.raises(InputError, match="need at least one array to stack"):
        retarget_poses(ref, driving, REF_HW, VIDEO_HW, upstream_exact=True)
    result = retarget_poses(ref, driving, REF_HW, VIDEO_HW)
    assert len(result.poses) == 3 and result.fit_frames == (0, 1, 2)
    assert any("released MimicMotion stops" in w for w in result.warnings)


def test_frames_without_person_carry_the_nearest_pose(rng, ref):
    low = person(rng)
    low[1][:] = 0.1                                       # whole-image fallback with nothing confident
    driving = [pose_of(person(rng)), pose_of(low, detected=False), pose_of(),
               pose_of(person(rng)), pose_of(low, detected=False)]
    result = retarget_poses(ref, driving, REF_HW, VIDEO_HW)
    assert result.main_people == (0, None, None, 0, None)
    assert result.source_frames == (0, 0, 3, 3, 3) and result.fit_frames == (0, 3)
    assert any("3 of 5 driving frames (1, 2, 4) show no person" in w and "1<-0, 2<-3, 4<-3" in w
               for w in result.warnings)
    assert np.array_equal(result.poses[2].keypoints, result.poses[3].keypoints)


def test_no_person_in_any_frame_gives_blank_images(ref):
    driving = [pose_of(), pose_of()]
    images, warnings = render_pose_images(ref, driving, REF_HW, VIDEO_HW)
    assert images.shape == (3, 3, *REF_HW)
    assert images[0].any() and not images[1:].any()
    assert any("no person detected in any of the 2 driving frames" in w for w in warnings)


def test_single_frame_clip(rng, ref):
    driving = [pose_of(person(rng))]
    result = retarget_poses(ref, driving, REF_HW, VIDEO_HW)
    scale, _ = closed_form(ref.keypoints[0], [i for i in K0 if i != 9], [driving[0].keypoints[0]])
    assert result.transform.scale == pytest.approx(scale, rel=1e-9) and len(result.poses) == 1


def test_reference_problems(rng):
    nobody = pose_of(person(rng, score=0.1), hw=REF_HW)
    with pytest.raises(InputError, match="no person found in the reference image"):
        retarget_poses(nobody, [pose_of(person(rng))], REF_HW, VIDEO_HW)
    keypoints, scores, box = person(rng)
    scores[:18] = 0.1
    scores[0] = 0.9                                       # only the nose: no scale can be fitted
    single = pose_of((keypoints, scores, box), hw=REF_HW)
    result = retarget_poses(single, [pose_of(person(rng)) for _ in range(2)], REF_HW, VIDEO_HW)
    assert result.transform.scale[1] == 1.0 and any("degenerate" in w for w in result.warnings)


def test_render_pose_images_layout(rng, ref):
    driving = [pose_of(person(rng)) for _ in range(3)]
    images, warnings = render_pose_images(ref, driving, REF_HW, VIDEO_HW)
    result = retarget_poses(ref, driving, REF_HW, VIDEO_HW)
    assert images.shape == (4, 3, *REF_HW) and images.dtype == np.uint8 and warnings == []
    assert np.array_equal(images[0], draw_pose(ref, *REF_HW))          # reference, not retargeted
    for index, pose in enumerate(result.poses, start=1):
        assert np.array_equal(images[index], draw_pose(pose, *REF_HW))
