"""Noise schedules: Align Your Steps is exact to the published SVD sigmas, and the released defaults
(Karras, 25 steps) are unchanged."""
import math

import numpy as np
import pytest
import torch

from mimic.errors import InputError
from mimic.model.config import GenerationConfig
from mimic.model.scheduler import SchedulerConfig, make_schedule
from mimic.runtime.denoise import plan_denoise

PUBLISHED = [700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002]


def test_ays_ten_steps_are_the_published_sigmas_ending_at_zero():
    s = make_schedule(10, SchedulerConfig(), "ays")
    want = torch.tensor(PUBLISHED[:10] + [0.0], dtype=torch.float32)
    assert s.sigmas.dtype == torch.float32 and torch.equal(s.sigmas, want)
    assert torch.equal(s.timesteps, torch.stack([0.25 * v.log() for v in want[:10]]))
    assert s.init_noise_sigma == pytest.approx(math.sqrt(700.0**2 + 1))


def test_ays_other_step_counts_interpolate_in_log_sigma_on_a_uniform_grid():
    # 20 steps: 21 levels on the grid of 11, so every other level is a published one and the
    # levels between are geometric means of their neighbours; the last level is replaced by 0.
    s = make_schedule(20, SchedulerConfig(), "ays").sigmas.double().numpy()
    assert s[-1] == 0.0 and len(s) == 21
    np.testing.assert_allclose(s[0:20:2], PUBLISHED[:10], rtol=1e-6)
    np.testing.assert_allclose(s[1:20:2], np.sqrt(np.array(PUBLISHED[:-1]) * np.array(PUBLISHED[1:])), rtol=1e-6)
    # 5 steps: 6 levels at grid points 0, 0.2, ..., 1 = published indices 0, 2, 4, 6, 8, (10 -> 0)
    s5 = make_schedule(5, SchedulerConfig(), "ays").sigmas.double().numpy()
    np.testing.assert_allclose(s5[:5], [PUBLISHED[i] for i in (0, 2, 4, 6, 8)], rtol=1e-6)
    assert s5[-1] == 0.0
    assert np.all(np.diff(make_schedule(25, SchedulerConfig(), "ays").sigmas.numpy()) < 0)


def test_released_defaults_are_karras_with_25_steps():
    cfg = GenerationConfig()
    assert (cfg.schedule, cfg.steps) == ("karras", 25)
    s = make_schedule(25)
    ramp = np.linspace(0, 1, 25)
    karras = (700.0 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 700.0 ** (1 / 7))) ** 7
    assert torch.equal(s.sigmas, torch.cat([torch.from_numpy(karras.astype(np.float32)), torch.zeros(1)]))
    plan = plan_denoise(80, cfg, SchedulerConfig(), torch.float32, torch.device("cpu"), pose_cache_bytes=0)
    assert torch.equal(plan.schedule.sigmas, s.sigmas)


def test_the_runtime_plan_follows_the_schedule_setting():
    cfg = GenerationConfig(window=16, steps=10, schedule="ays")
    plan = plan_denoise(16, cfg, SchedulerConfig(), torch.float32, torch.device("cpu"), pose_cache_bytes=0)
    assert torch.equal(plan.schedule.sigmas, make_schedule(10, SchedulerConfig(), "ays").sigmas)
    assert not torch.equal(plan.schedule.sigmas, make_schedule(10).sigmas)


@pytest.mark.parametrize("value", ["Karras", "euler", 3, None])
def test_an_unknown_schedule_is_a_one_line_error_naming_the_flag(value):
    with pytest.raises(InputError, match=r"^--schedule must be one of karras, ays, got "):
        GenerationConfig(schedule=value)


def test_mimic_run_passes_schedule_through(capsys, tmp_path):
    from _runtime_helpers import run_cli

    code, _, stderr = run_cli(["run", "--preset", "tiny", "--ref", str(tmp_path / "r.png"), "--pose-frames", str(tmp_path),
                               "--out", str(tmp_path / "o.mp4"), "--schedule", "fast"], capsys)
    assert code == 2 and "--schedule must be one of karras, ays, got 'fast'" in stderr
