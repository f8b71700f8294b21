"""Guidance in a limited interval (issue #24; Kynkaanniemi et al., NeurIPS 2024) and the UNet work in
the run report.

``--guidance-sigma-min``/``--guidance-sigma-max``: classifier-free guidance only at the steps whose
noise level is inside the interval; at the others the window's UNet call is the conditional half
alone (batch 1) and its prediction is the guided output. Unset (the default) is every step, the
released loop bit for bit. Checked on the feeds a recording backend receives (CPU, no model), on one
and two workers and across a resume; the report's UNet TFLOP per output frame follows the calls.
"""
from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import replace

import pytest
import torch

from _runtime_helpers import StepRecorder, denoise_inputs, make_inputs, one_torch_thread, run_settings
from mimic.errors import InputError
from mimic.model.config import GenerationConfig, settings_from_mapping
from mimic.model.flops import frozen_config, unet_call_flops
from mimic.model.scheduler import SchedulerConfig
from mimic.model import tiny
from mimic.runtime.denoise import WindowStepper, denoise, plan_denoise
from mimic.runtime.parallel import denoise_parallel
from mimic.runtime.report import JobReport, UnetWork
from mimic.spec import StageName
from mimic.spec import TensorName as N

FRAMES, H, W = 11, 4, 3  # latent frames (reference slot + 10), latent height and width
FEEDS = (N.SAMPLE, N.TIMESTEP, N.ENCODER_HIDDEN_STATES, N.ADDED_TIME_IDS, N.POSE_LATENTS)


class Recording:
    """A batch-agnostic stand-in: every output row depends on every feed of its row (so the
    unconditional and conditional halves differ) and on nothing of the other row; keeps a copy of
    each UNet call's feeds. ``blind``: the prediction ignores the conditioning (both halves equal)."""

    name = "fake"

    def __init__(self, blind: bool = False):
        self.device = torch.device("cpu")
        self.blind = blind
        self.unet: list[dict[str, torch.Tensor]] = []
        self.lock = threading.Lock()

    def run(self, stage, feeds, stream=None):
        if stage == StageName.POSE_NET:
            return {N.POSE_LATENTS: feeds[N.POSE_IMAGES][:, :2, ::8, ::8] * 0.37 + 0.1}
        assert stage == StageName.UNET, stage
        with self.lock:
            self.unet.append({k: feeds[k].clone() for k in FEEDS})
        x = feeds[N.SAMPLE]
        b, t, _, h, w = x.shape
        c = x[:, :, :4]
        out = torch.sin(3.1 * c) + 0.61 * c.mean(dim=1, keepdim=True)
        if self.blind:
            return {N.NOISE_PRED: out}
        pose = feeds[N.POSE_LATENTS].mean(dim=1).view(b, t, 1, h, w)
        extra = feeds[N.ENCODER_HIDDEN_STATES].mean(dim=(1, 2)) + 0.01 * feeds[N.ADDED_TIME_IDS].sum(dim=1) + 0.013 * feeds[N.TIMESTEP]
        return {N.NOISE_PRED: out + 0.29 * x[:, :, 4:8] + 0.17 * pose + extra.view(b, 1, 1, 1, 1)}

    def batches(self) -> list[int]:
        return [f[N.SAMPLE].shape[0] for f in self.unet]

    def close(self):
        pass


def _job(config: GenerationConfig, seed: int = 0):
    plan = plan_denoise(FRAMES, config, SchedulerConfig(), torch.float32, torch.device("cpu"), pose_cache_bytes=1 << 20)
    return (plan, *denoise_inputs(plan, FRAMES, H, W, seed))


BASE = GenerationConfig(steps=6, window=6, overlap=2, guidance_min=1.5, guidance_max=2.5)


def _middle(config: GenerationConfig = BASE) -> GenerationConfig:
    """``config`` guided at steps 2 and 3 only (the interval between their noise levels)."""
    sigmas = plan_denoise(FRAMES, config, SchedulerConfig(), torch.float32, torch.device("cpu")).schedule.sigmas
    return config.with_overrides(guidance_sigma_min=float(sigmas[3]), guidance_sigma_max=float(sigmas[2]))


def _run(config: GenerationConfig, backend=None, **kw):
    plan, cond, poses, latents = _job(config)
    backend = backend or Recording()
    calls: Counter = Counter()
    out = denoise(backend, plan, cond, poses, latents, calls=calls, **kw)
    return out, backend, calls, plan


def _released_contribution(self, latents, idx, frames, i, j):
    """The window contribution as it was before the guidance interval (every call the CFG pair)."""
    plan = self.plan
    sigma = plan.schedule.sigmas[i]
    c_in = 1.0 / ((sigma**2 + 1) ** 0.5)
    c = latents.shape[2]
    if self.sample is None:
        self.sample = torch.empty((2, plan.window, c + self.ref_latents.shape[1], *latents.shape[3:]), dtype=plan.dtype, device=latents.device)
        self.sample[:, :, c:] = self.ref_latents.unsqueeze(1)
    sample = self.sample
    torch.mul(latents[:, idx], c_in, out=sample[:1, :, :c])
    sample[1:, :, :c] = sample[:1, :, :c]
    pose = self.pose_cache.get(j)
    pair = self.pose_pair
    if pair is None or pair.shape[1:] != pose.shape[1:] or pair.dtype != pose.dtype:
        pair = self.pose_pair = torch.zeros((2 * pose.shape[0], *pose.shape[1:]), dtype=pose.dtype, device=pose.device)
    cond_half = pair[pose.shape[0]:]
    if not plan.pose_active(i):
        cond_half.zero_()
    elif plan.pose_strength != 1.0:
        torch.mul(pose, plan.pose_strength, out=cond_half)
    else:
        cond_half.copy_(pose)
    feeds = {N.SAMPLE: sample, N.TIMESTEP: self.timesteps[i].expand(2), N.ENCODER_HIDDEN_STATES: self.embeds,
             N.ADDED_TIME_IDS: self.ids, N.POSE_LATENTS: pair}
    out = self.backend.run(StageName.UNET, feeds, self.stream)[N.NOISE_PRED].to(plan.dtype)
    uncond, cond_pred = out[:1], out[1:]
    return (uncond + self.scales[:, frames] * (cond_pred - uncond)) * self.w5


def test_by_default_every_step_is_guided_exactly_as_released(monkeypatch):
    latents, backend, calls, plan = _run(BASE)
    assert plan.guided is None and set(backend.batches()) == {2}
    assert calls == Counter({2: plan.total_calls})
    with monkeypatch.context() as m:
        m.setattr(WindowStepper, "contribution", _released_contribution)
        released, released_backend, _, _ = _run(BASE)
    assert torch.equal(latents, released)  # bit for bit
    assert len(backend.unet) == len(released_backend.unet)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(backend.unet, released_backend.unet) for k in FEEDS)
    # an interval that holds every noise level of the schedule is the released loop too
    everywhere = BASE.with_overrides(guidance_sigma_min=0.001, guidance_sigma_max=1000.0)
    assert torch.equal(_run(everywhere)[0], released)


def test_outside_the_interval_the_unet_runs_the_conditional_half_alone():
    config = _middle()
    latents, backend, calls, plan = _run(config)
    windows = len(plan.windows)
    assert plan.guided == (False, False, True, True, False, False)
    assert backend.batches() == [b for b in (1, 1, 2, 2, 1, 1) for _ in range(windows)]
    assert calls == Counter({1: 4 * windows, 2: 2 * windows}) == plan.unet_calls(range(6))
    # step 0: each batch-1 call is exactly the conditional row of the released CFG pair, feed by feed
    _, released, _, _ = _run(BASE)
    for one, pair in zip(backend.unet[:windows], released.unet[:windows]):
        t = config.window
        for k in FEEDS:
            expected = pair[k][t:] if k == N.POSE_LATENTS else pair[k][1:]
            assert one[k].shape[0] == (t if k == N.POSE_LATENTS else 1) and torch.equal(one[k], expected), k
        assert one[N.POSE_LATENTS].any()  # the pose is there, not the unconditional zeros
    assert torch.isfinite(latents).all() and not torch.equal(latents, _run(BASE)[0])


def test_the_conditional_prediction_is_the_guided_output():
    """With a model that ignores the conditioning, guidance changes nothing (u + g (c - u) = u when
    c = u): a run guided nowhere gives the released latents bit for bit, so a batch-1 call's output
    enters the fusion as the guided output does (same tent weights, no other arithmetic)."""
    nowhere = BASE.with_overrides(guidance_sigma_min=0.001, guidance_sigma_max=0.001)  # below every sigma of the schedule
    blind_released, _, _, _ = _run(BASE, Recording(blind=True))
    blind_nowhere, backend, calls, plan = _run(nowhere, Recording(blind=True))
    assert set(backend.batches()) == {1} and calls == Counter({1: plan.total_calls})
    assert torch.equal(blind_released, blind_nowhere)


def test_two_workers_and_a_resume_give_the_same_bits_and_counts():
    config = _middle()
    one, _, calls, plan = _run(config)
    _, cond, poses, latents = _job(config)
    many_calls: Counter = Counter()
    backends = [Recording(), Recording()]
    many = denoise_parallel(backends, plan, cond, poses, latents.clone(), calls=many_calls)
    assert torch.equal(one, many) and many_calls == calls
    assert all(b.unet for b in backends) and Counter(backends[0].batches() + backends[1].batches()) == calls
    recorder = StepRecorder()
    _run(config, hooks=recorder)
    saved = recorder.saved
    resumed_calls: Counter = Counter()
    resumed = denoise(Recording(), replace(plan, start_step=3), cond, poses, saved[3].clone(), calls=resumed_calls)
    assert torch.equal(resumed, one)
    assert resumed_calls == plan.unet_calls(range(3, 6)) and resumed_calls + plan.unet_calls(range(3)) == calls


def test_the_reported_unet_work_follows_the_calls():
    key = frozen_config(tiny.UNET_CONFIG)
    windows = len(_job(BASE)[0].windows)
    per_pair = unet_call_flops(key, 6, 64, 64, batch=2)
    assert per_pair == 2 * unet_call_flops(key, 6, 64, 64, batch=1) > 0
    _, _, released_calls, _ = _run(BASE)
    _, _, interval_calls, _ = _run(_middle())
    full = JobReport(job=None, frames=10, unet=UnetWork(key, 6, 64, 64, dict(released_calls)))
    part = JobReport(job=None, frames=10, unet=UnetWork(key, 6, 64, 64, dict(interval_calls)))
    assert full.unet_tflop_per_output_frame == pytest.approx(6 * windows * per_pair / 10 / 1e12, rel=1e-12)
    # 2 of 6 steps guided: (2 x 2 + 4 x 1) / (6 x 2) of the UNet work
    assert part.unet_tflop_per_output_frame / full.unet_tflop_per_output_frame == pytest.approx(8 / 12, rel=1e-12)
    assert part.unet_tflop_per_output_frame_576x1024 / full.unet_tflop_per_output_frame_576x1024 == pytest.approx(8 / 12, rel=1e-12)
    # 576x1024: every frame-pass at 3.20 TFLOP (the released model in a 72-frame window)
    assert full.unet_tflop_per_output_frame_576x1024 == pytest.approx(6 * windows * 2 * 6 * 3.2000353553 / 10, rel=1e-9)
    assert part.unet_calls == {1: 4 * windows, 2: 2 * windows}
    # a resumed job reports the whole job: the checkpointed steps' calls from the plan
    resumed = UnetWork(key, 6, 64, 64, {1: 2 * windows, 2: windows}, earlier={1: 2 * windows, 2: windows})
    assert resumed.calls() == {(6, 1): 4 * windows, (6, 2): 2 * windows}


@pytest.fixture(scope="module")
def mm(tiny_cache):
    from mimic.runtime.api import MimicMotion, RuntimeOptions

    with MimicMotion.from_preset("tiny", RuntimeOptions(backend="torch")) as mm:
        yield mm


def test_the_run_report_and_end_line_give_the_unet_tflop_per_output_frame(mm, tmp_path):
    from mimic.runtime.jobs import Job

    ref, video = make_inputs(tmp_path / "in", frames=4)
    settings = {"steps": 4, "window": 4, "overlap": 1, "resolution": 64, "sample_stride": 1}
    with one_torch_thread():
        full = mm.render(Job(reference=ref, driving=video, out=tmp_path / "full", overrides=settings))
        half = mm.render(Job(reference=ref, driving=video, out=tmp_path / "half", overrides={**settings, "guidance_sigma_max": 5.0}))
    a, b = (json.loads((tmp_path / name / "report.json").read_text()) for name in ("full", "half"))
    windows = 2  # 4 frames + the reference slot in 4-frame windows overlapping by 1
    assert a["unet_calls_by_batch"] == {"1": 0, "2": 4 * windows} and a["config"]["guidance_sigma_max"] is None
    steps_guided = b["unet_calls_by_batch"]["2"] // windows
    assert b["unet_calls_by_batch"] == {"1": (4 - steps_guided) * windows, "2": steps_guided * windows} and 0 < steps_guided < 4
    ratio = (2 * steps_guided + (4 - steps_guided)) / 8
    for key in ("unet_tflop_per_output_frame", "unet_tflop_per_output_frame_576x1024"):
        assert a[key] > 0 and b[key] == pytest.approx(a[key] * ratio, rel=1e-5)
    # 576x1024: 2 windows x 4 steps x a CFG pair of 4 frames, each frame-pass 3.20 TFLOP, over 4 output frames
    assert a["unet_tflop_per_output_frame_576x1024"] == pytest.approx(2 * 4 * 2 * 4 * 3.2000354 / 4, rel=1e-6)
    assert full.unet_tflop_per_output_frame == pytest.approx(a["unet_tflop_per_output_frame"], rel=1e-5)
    assert half.unet_calls == {int(k): v for k, v in b["unet_calls_by_batch"].items()}
    assert f"UNet {full.unet_tflop_per_output_frame:.3g} TFLOP/frame at " in full.summary()
    assert f"({full.unet_tflop_per_output_frame_576x1024:.4g} at 576x1024)" in full.summary()


def test_the_interval_is_a_setting_of_the_cli_and_of_jobs_files(monkeypatch):
    overrides, warnings = settings_from_mapping({"guidance_sigma_min": 0.3, "guidance_sigma_max": 5})
    assert warnings == [] and overrides == {"guidance_sigma_min": 0.3, "guidance_sigma_max": 5}
    assert GenerationConfig().guidance_sigma_min is None and GenerationConfig().guidance_sigma_max is None  # released: every step
    assert GenerationConfig().with_overrides(**overrides).guidance_sigma_max == 5

    seen = run_settings(monkeypatch, "--guidance-sigma-min", "0.28", "--guidance-sigma-max", "2.9")
    assert seen == {"guidance_sigma_min": 0.28, "guidance_sigma_max": 2.9}


@pytest.mark.parametrize("mapping, message", [
    ({"guidance_sigma_max": 0}, "--guidance-sigma-max must be in 0.001..1000, got 0"),
    ({"guidance_sigma_min": 2000}, "--guidance-sigma-min must be in 0.001..1000, got 2000"),
    ({"guidance_sigma_min": "low"}, "--guidance-sigma-min must be a number, got 'low'"),
])
def test_bad_values_name_the_flag(mapping, message):
    with pytest.raises(InputError) as err:
        settings_from_mapping(mapping)
    assert str(err.value) == message


def test_a_minimum_above_the_maximum_is_refused_in_one_line():
    with pytest.raises(InputError) as err:
        GenerationConfig(guidance_sigma_min=5.0, guidance_sigma_max=1.0)
    assert str(err.value) == "--guidance-sigma-min (5) must not be above --guidance-sigma-max (1)"
