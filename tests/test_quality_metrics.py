"""The quality bench's measures on constructed videos whose answers are known."""
import math

import numpy as np

from mimic.media import quality as qm
from mimic.model.windows import window_indices


def _video(n=12, h=24, w=16, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h, w, 3)).astype(np.float64)
    return np.stack([np.clip(base + 3 * k, 0, 255) for k in range(n)]).astype(np.uint8)  # steady drift


def test_psnr_and_ssim():
    v = _video()
    assert np.isinf(qm.psnr(v, v)).all() and np.allclose(qm.ssim(v, v), 1.0)
    noisy = np.clip(v.astype(int) + 10, 0, 255).astype(np.uint8)
    p = qm.psnr(v, noisy)
    assert np.all((p > 20) & (p < 29))  # an offset of <= 10 levels: >= 28.1 dB where unclipped
    assert abs(qm.psnr(v[:1], np.clip(v[:1].astype(int) + 16, 0, 255).astype(np.uint8))[0] - 20 * math.log10(255 / 16)) < 3
    rng = np.random.default_rng(1)
    scrambled = rng.permuted(v, axis=2)
    assert qm.ssim(v, scrambled).max() < 0.5 < qm.ssim(v, noisy).min()


def test_silhouette_iou():
    back = np.full((10, 10, 3), 100, np.uint8)
    a = np.repeat(back[None], 2, 0)
    a[:, 2:6, 2:6] = 250  # a 4x4 figure
    truth = np.zeros((2, 10, 10), bool)
    truth[0, 2:6, 2:6] = True
    truth[1, 2:6, 4:8] = True  # shifted by 2 columns: overlap 8 of 24
    mask = qm.silhouette(a, back)
    assert mask[0].sum() == 16 and np.allclose(qm.iou(mask, truth), [1.0, 8 / 24])


def test_seam_score_sees_a_jump_at_window_boundaries():
    windows = window_indices(17, 8, 2)  # 16 driving frames
    bounds = qm.window_boundaries(windows)
    assert bounds and all(1 <= b < 16 for b in bounds)
    smooth = _video(16)
    assert abs(qm.seam_score(smooth, bounds) - 1.0) < 0.05
    jumpy = smooth.astype(int)
    for b in bounds:
        jumpy[b:] += 12
    assert qm.seam_score(np.clip(jumpy, 0, 255).astype(np.uint8), bounds) > 2.0


def test_flicker_counts_change_that_does_not_continue_the_motion():
    smooth = _video(10)
    flicker = smooth.astype(int)
    flicker[::2] += 8
    flicker = np.clip(flicker, 0, 255).astype(np.uint8)
    assert qm.flicker_score(smooth) < 1.0 < 10.0 < qm.flicker_score(flicker)
    assert abs(qm.flicker_score(smooth, reference=smooth)) < 1e-9
