"""The toy data: deterministic puppets in DWPose's keypoint layout, drawn where their poses say,
dancing smoothly, with held-out samples the training never renders."""
import cv2
import numpy as np
import pytest

from mimic.pose.postprocess import NUM_KEYPOINTS
from mimic.toy.puppet import L_WRI, NECK, R_ANK, R_WRI
from mimic.toy.samples import DEMO_SEED, HELD_OUT_BASE, make_sample

HW = (192, 128)


@pytest.fixture(scope="module")
def sample():
    return make_sample(DEMO_SEED, HW, 12)


def test_a_sample_is_deterministic_for_its_seed_and_differs_between_seeds(sample):
    again = make_sample(DEMO_SEED, HW, 12)
    other = make_sample(DEMO_SEED + 1, HW, 12)
    assert np.array_equal(sample.frames, again.frames) and np.array_equal(sample.reference, again.reference)
    assert np.array_equal(sample.driving[5].keypoints, again.driving[5].keypoints)
    assert not np.array_equal(sample.frames, other.frames)
    assert not np.allclose(sample.driving[5].keypoints, other.driving[5].keypoints)


def test_shapes_and_the_whole_body_layout(sample):
    assert sample.reference.shape == (*HW, 3) and sample.reference.dtype == np.uint8
    assert sample.frames.shape == (12, *HW, 3) and sample.masks.shape == (12, *HW) and sample.masks.dtype == bool
    assert len(sample.driving) == 12
    for pose in (sample.ref_pose, *sample.driving):
        assert pose.keypoints.shape == (1, NUM_KEYPOINTS, 2) and pose.num_people == 1 and pose.image_hw == HW
        assert (pose.body_score > 0.3).all()  # every body joint is drawn
        assert len(pose.hands) == 2 and len(pose.faces) == 1
    images = sample.pose_images()
    assert images.shape == (13, 3, *HW) and images.dtype == np.uint8


def test_the_puppet_is_drawn_where_its_keypoints_are(sample):
    for frame, mask, pose in zip(sample.frames, sample.masks, sample.driving):
        pts = pose.keypoints[0] * [HW[1], HW[0]]
        for joint in (NECK, R_WRI, L_WRI, R_ANK):
            x, y = np.clip(np.round(pts[joint]).astype(int), 0, [HW[1] - 1, HW[0] - 1])
            assert mask[max(0, y - 2) : y + 3, max(0, x - 2) : x + 3].any(), f"joint {joint} off the puppet"
        assert 0.04 < mask.mean() < 0.4
        # a pixel beyond the silhouette's anti-aliased edge is the backdrop
        outside = ~cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        assert np.array_equal(frame[outside], sample.backdrop[outside])


def test_the_dance_is_smooth_and_moves(sample):
    pts = np.stack([p.keypoints[0, :18] * [HW[1], HW[0]] for p in sample.driving])
    steps = np.linalg.norm(np.diff(pts, axis=0), axis=-1)  # px per frame, per joint
    assert steps.max() < 0.12 * HW[0]  # no jumps
    assert (pts.max(0) - pts.min(0)).max() > 10  # a wrist or ankle travels
    # the reference is the rest pose, not the first dance frame
    assert not np.allclose(sample.ref_pose.keypoints[0, :18], sample.driving[0].keypoints[0, :18])


def test_held_out_seeds_are_outside_the_training_range():
    from mimic.toy.train import TrainConfig

    cfg = TrainConfig()
    assert cfg.seed * 100_000 + cfg.clips < HELD_OUT_BASE <= DEMO_SEED
