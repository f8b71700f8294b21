"""Toy samples: a reference image (the costume in the rest pose), its pose, a driving pose sequence
and the ground truth (the same costume in those poses), all deterministic for a seed.

Seeds below :data:`HELD_OUT_BASE` are for training; the demo and the tests use seeds from
:data:`HELD_OUT_BASE` on (costumes, backdrops and dances the model never saw).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mimic.pose.draw import PoseDrawer
from mimic.pose.postprocess import PoseFrame
from mimic.toy.dance import DANCE_FPS, Dance, random_dance
from mimic.toy.puppet import NUM_BACKDROPS, REST, Build, Costume, PoseState, backdrop, draw_puppet, keypoints, pose_frame, random_costume

HELD_OUT_BASE = 1_000_000
DEMO_SEED = HELD_OUT_BASE + 1


@dataclass(frozen=True)
class Sample:
    reference: np.ndarray  # (H, W, 3) uint8 RGB: the costume in the rest pose
    ref_pose: PoseFrame
    driving: tuple[PoseFrame, ...]  # one per driving frame
    frames: np.ndarray  # (N, H, W, 3) uint8 ground truth
    masks: np.ndarray  # (N, H, W) bool: where the puppet is in the ground truth
    backdrop: np.ndarray  # (H, W, 3) uint8, the background without the puppet
    fps: float = DANCE_FPS

    @property
    def hw(self) -> tuple[int, int]:
        return self.reference.shape[:2]

    def pose_images(self) -> np.ndarray:
        """(1 + N, 3, H, W) uint8: the reference pose, then the driving poses, drawn as DWPose draws."""
        h, w = self.hw
        drawer = PoseDrawer(h, w)
        return np.stack([drawer(p) for p in (self.ref_pose, *self.driving)])


@dataclass(frozen=True)
class Puppet:
    build: Build
    costume: Costume
    backdrop: np.ndarray

    def render(self, state: PoseState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image, mask, keypoints) of the puppet in ``state`` over its backdrop."""
        h, w = self.backdrop.shape[:2]
        points = keypoints(self.build, state)
        image = self.backdrop.copy()
        mask = np.zeros((h, w), dtype=np.uint8)
        draw_puppet(image, points, self.costume, self.build.height, mask)
        return image, mask > 127, points


def random_puppet(rng: np.random.Generator, hw: tuple[int, int]) -> Puppet:
    h, w = hw
    height = h * rng.uniform(0.64, 0.76)
    from mimic.toy.puppet import SHIN, THIGH

    feet = h * rng.uniform(0.86, 0.92)
    build = Build(height=height, hip_x=w * rng.uniform(0.42, 0.58), hip_y=feet - (THIGH + SHIN) * height)
    back = backdrop(int(rng.integers(NUM_BACKDROPS)), hw)
    return Puppet(build=build, costume=random_costume(rng, back.reshape(-1, 3).mean(0)), backdrop=back)


def make_sample(seed: int, hw: tuple[int, int], num_frames: int, start: float | None = None, dance: Dance | None = None) -> Sample:
    """Sample ``seed``: a puppet and a dance of ``num_frames`` driving frames at ``hw`` = (H, W)."""
    rng = np.random.default_rng([int(seed), 14])
    puppet = random_puppet(rng, hw)
    dance = dance or random_dance(rng)
    t0 = float(rng.uniform(0, 4)) if start is None else start
    ref_img, _, ref_pts = puppet.render(REST)
    frames, masks, driving = [], [], []
    for state in dance.states(num_frames, t0):
        img, mask, pts = puppet.render(state)
        frames.append(img)
        masks.append(mask)
        driving.append(pose_frame(pts, hw))
    return Sample(
        reference=ref_img, ref_pose=pose_frame(ref_pts, hw), driving=tuple(driving), frames=np.stack(frames), masks=np.stack(masks),
        backdrop=puppet.backdrop,
    )


def write_sample_inputs(sample: Sample, folder, stem: str = "puppet") -> dict[str, Path]:
    """A sample as the files a user gives ``mimic run``: ``{stem}-ref.png`` (the reference image) with
    its pose ``{stem}-ref.npz`` (for ``--ref-pose``), ``{stem}-dance.mp4`` (the ground-truth dance,
    H.264 at the sample's fps) and ``{stem}-dance.npz`` (its poses, a pose file recording that video
    as its source, so ``--audio`` and previews find it). The poses are the puppet's true keypoints,
    so the toy preset (whose DWPose has random weights) is driven by real motion. Returns the paths
    by kind (reference, ref_pose, video, poses)."""
    from mimic.media.images import write_png
    from mimic.media.video_writer import write_rgb_video
    from mimic.pose.files import save_poses
    from mimic.pose.sequence import PoseSequence

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"reference": folder / f"{stem}-ref.png", "ref_pose": folder / f"{stem}-ref.npz", "video": folder / f"{stem}-dance.mp4",
             "poses": folder / f"{stem}-dance.npz"}
    write_png(paths["reference"], sample.reference)
    save_poses(paths["ref_pose"], PoseSequence((sample.ref_pose,), (0.0,), sample.hw, float(sample.fps), 1, 1, str(paths["reference"].resolve())))
    write_rgb_video(paths["video"], list(sample.frames), sample.fps)
    times = tuple(i / sample.fps for i in range(len(sample.driving)))
    save_poses(paths["poses"], PoseSequence(sample.driving, times, sample.hw, float(sample.fps), 1, 1, str(paths["video"].resolve())))
    return paths
