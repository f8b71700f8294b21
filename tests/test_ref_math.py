"""Pure math of the reference: scheduler table, diffusers agreement, windows, weights, preprocessing."""
import numpy as np
import pytest
import torch

from mimic.errors import InputError
from mimic.model import preprocess as pre
from mimic.model.scheduler import (
    SchedulerConfig,
    discard_step_noise,
    euler_step,
    make_schedule,
    scale_model_input,
    sigma_table,
)
from mimic.model.tiny import SCHEDULER_CONFIG
from mimic.model.windows import guidance_scales, tent_weights, tile_noise, window_indices

# spec 3.5 (sigma, t, c_in), written out there independently of this code
SPEC_TABLE = [
    (700.0, 1.6378, 0.001429), (545.729, 1.5755, 0.001832), (421.569, 1.5110, 0.002372),
    (322.454, 1.4440, 0.003101), (244.023, 1.3743, 0.004098), (182.547, 1.3018, 0.005478),
    (134.854, 1.2261, 0.007415), (98.267, 1.1469, 0.010176), (70.541, 1.0641, 0.014175),
    (49.810, 0.9771, 0.020072), (34.537, 0.8855, 0.028943), (23.468, 0.7889, 0.042573),
    (15.590, 0.6867, 0.064012), (10.097, 0.5781, 0.098556), (6.3543, 0.4623, 0.155461),
    (3.8697, 0.3383, 0.250199), (2.2691, 0.2049, 0.403275), (1.2732, 0.0604, 0.617687),
    (0.67815, -0.0971, 0.827639), (0.33938, -0.2702, 0.946952), (0.15740, -0.4622, 0.987837),
    (0.06640, -0.6780, 0.997803), (0.02480, -0.9242, 0.999693), (0.00788, -1.2108, 0.999969),
    (0.00200, -1.5537, 0.999998),
]


def test_sigma_table_matches_spec():
    ours = sigma_table(25)
    assert len(ours) == 25
    for (s, t, c), (es, et, ec) in zip(ours, SPEC_TABLE):
        # rel 1e-4; the spec prints small sigmas with 5 decimals, so allow half a unit of that digit
        assert s == pytest.approx(es, rel=1e-4, abs=5e-6)
        assert t == pytest.approx(et, rel=1e-4, abs=1e-4)
        assert c == pytest.approx(ec, rel=1e-4, abs=1e-6)
    sched = make_schedule(25)
    assert sched.init_noise_sigma == pytest.approx(700.000714, rel=1e-7)
    assert float(sched.sigmas[-1]) == 0.0


def _diffusers_scheduler(steps):
    from diffusers import EulerDiscreteScheduler

    sch = EulerDiscreteScheduler.from_config(SCHEDULER_CONFIG)
    sch.set_timesteps(steps)
    return sch


@pytest.mark.parametrize("steps", [25, 8])
def test_scheduler_agrees_with_diffusers(steps):
    ref = _diffusers_scheduler(steps)
    ours = make_schedule(steps, SchedulerConfig.from_json_dict(SCHEDULER_CONFIG))
    assert torch.equal(ours.sigmas, ref.sigmas)
    assert torch.equal(ours.timesteps, ref.timesteps)
    assert ours.init_noise_sigma == pytest.approx(float(ref.init_noise_sigma), rel=1e-7)
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float16):
        ref = _diffusers_scheduler(steps)
        sample = torch.randn(1, 3, 4, 5, 6, generator=g).to(dtype) * 50
        for i, t in enumerate(ref.timesteps):
            out = torch.randn(1, 3, 4, 5, 6, generator=g).to(dtype)
            x_ref = ref.scale_model_input(sample, t)
            assert torch.equal(scale_model_input(sample, ours, i), x_ref)
            prev_ref = ref.step(out, t, sample).prev_sample
            prev = euler_step(out, sample, ours, i)
            assert prev.dtype == prev_ref.dtype
            assert torch.equal(prev, prev_ref)
            sample = prev


def test_step_noise_draw_follows_diffusers_027():
    # diffusers 0.27 (upstream's pin) drew randn(model_output.shape, dtype) every Euler step even with
    # s_churn = 0; diffusers >= 0.31 (PR #9616) draws only when gamma > 0. The reference keeps 0.27's
    # consumption so a seeded generator stays in step with the released pipeline.
    out = torch.zeros(1, 3, 4, 5, 6, dtype=torch.float16)
    g, expect = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    discard_step_noise(out, g)
    torch.randn(out.shape, generator=expect, dtype=torch.float16)
    assert torch.equal(torch.randn(4, generator=g), torch.randn(4, generator=expect))


def test_windows_released_demo_case():
    w = window_indices(526, 72, 6)
    starts = [0, 66, 132, 198, 264, 330, 396]
    assert len(w) == 8
    for win, s in zip(w, starts):
        assert win == [0] + list(range(s + 1, s + 72))
    assert w[-1] == [0] + list(range(455, 526))
    assert all(len(x) == 72 for x in w)
    # consecutive regular windows share overlap-1 = 5 real frames
    assert len(set(w[0][1:]) & set(w[1][1:])) == 5


def test_windows_tail_and_exact_fit():
    assert window_indices(20, 8, 2) == [
        [0, 1, 2, 3, 4, 5, 6, 7],
        [0, 7, 8, 9, 10, 11, 12, 13],
        [0, 13, 14, 15, 16, 17, 18, 19],
    ]
    assert window_indices(22, 8, 2)[-1] == [0, 15, 16, 17, 18, 19, 20, 21]  # tail window
    assert window_indices(8, 8, 2) == [[0, 1, 2, 3, 4, 5, 6, 7]]  # F == T: one window, no tail


def test_windows_shorter_than_window_is_clear_error():
    with pytest.raises(InputError, match="shorter than the window of 72"):
        window_indices(63, 72, 6)


def test_tent_weights():
    w = tent_weights(72, torch.float64)
    assert w[0] == pytest.approx(1 / 72) and w[35] == pytest.approx(71 / 72) and w[36] == pytest.approx(71 / 72)
    assert torch.allclose(w, w.flip(0))
    assert tent_weights(16, torch.float64).tolist() == pytest.approx([(2 * k + 1) / 16 for k in range(8)] + [(15 - 2 * k) / 16 for k in range(8)])


def test_tile_noise_is_periodic():
    n = torch.randn(1, 4, 2, 3, 3)
    t = tile_noise(n, 10)
    assert t.shape == (1, 10, 2, 3, 3)
    for f in range(10):
        assert torch.equal(t[0, f], n[0, f % 4])


def test_guidance_linspace():
    g = guidance_scales(5, 1.0, 3.0)
    assert g.shape == (1, 5, 1, 1, 1)
    assert g.flatten().tolist() == pytest.approx([1.0, 1.5, 2.0, 2.5, 3.0])


@pytest.mark.parametrize(
    "shape,res,target",
    [((1080, 1920), 576, (576, 1024)), ((1920, 1080), 576, (1024, 576)), ((500, 500), 576, (576, 1024)), ((900, 600), 512, (896, 512))],
)
def test_target_size(shape, res, target):
    assert pre.target_size(*shape, res) == target


def test_prepare_reference_cover_resize_and_centre_crop():
    # a 200x100 image with a column ramp: cover-resize to 1024 high is x5.12 -> 1024x512, too narrow
    # for 576: the free side becomes ceil(576*200/100)=1152 -> crop rows (1152-1024)/2 = 64 from top
    img = np.zeros((200, 100, 3), np.uint8)
    img[:, :, 0] = np.arange(200, dtype=np.uint8)[:, None]
    out = pre.prepare_reference(img, 576)
    assert out.shape == (1024, 576, 3)
    assert pre.cover_resize_size(200, 100, 1024, 576) == (1152, 576)
    # row r of the output is row r+64 of the 1152-high resize, whose source coordinate is (r+64+0.5)/5.76-0.5
    for r in (0, 500, 1023):
        src = (r + 64 + 0.5) * 200 / 1152 - 0.5
        lo = int(np.floor(src))
        expect = lo + (src - lo)  # linear ramp value = source coordinate
        assert abs(int(out[r, 10, 0]) - round(min(max(expect, 0), 199))) <= 1


def test_clip_resize_matches_diffusers():
    from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing

    x = torch.rand(1, 3, 320, 192) * 2 - 1
    assert torch.equal(pre.resize_with_antialiasing(x, (224, 224)), _resize_with_antialiasing(x, (224, 224)))


def test_upstream_roundtrip_is_lossy_in_fp16_only_by_truncation():
    img = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    for dtype in (torch.float16, torch.float32):
        out = pre.upstream_pixel_roundtrip(img, dtype)
        diff = img.astype(int) - out.astype(int)
        assert diff.min() >= 0 and diff.max() <= 1  # truncation only ever rounds down by one level
    assert (pre.upstream_pixel_roundtrip(img, torch.float16) != img).any()
