"""Deep-feature caching (issue #24; DeepCache, Ma et al., CVPR 2024) and the speed presets.

``--cache-interval N`` runs a full UNet pass every N steps; the steps between run only the outer
level(s) (``--cache-depth``) around the deep features the window's last full pass kept. Checked:
the split UNet reproduces the full one exactly; the step pattern (with the guidance interval); the
stages a recording backend receives and what each window keeps; on the tiny torch model the deep
blocks really do not run on cached steps (forward-hook call counts); the default path makes the
released calls; checkpoints only where the next step is a full pass, so a resumed ``--speed fast``
job writes the same bytes; the FLOP model counts only the blocks that ran; ``--speed`` as a flag,
a jobs-file key and a config; one-line refusals.
"""
from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import replace

import pytest
import torch

from _runtime_helpers import SMALL_ARGS, StepRecorder, denoise_inputs, make_inputs, one_torch_thread, run_cli, run_settings
from mimic.errors import InputError
from mimic.model import tiny
from mimic.model.config import SPEED_PRESETS, GenerationConfig, settings_from_mapping
from mimic.model.scheduler import SchedulerConfig
from mimic.runtime.denoise import (FeatureCache, cache_pattern, check_cache_support, denoise,
                                   plan_denoise, resume_points)
from mimic.runtime.parallel import denoise_parallel
from mimic.runtime.report import UnetWork
from mimic.spec import StageName
from mimic.spec import TensorName as N

FRAMES, H, W = 11, 4, 3  # latent frames (reference slot + 10), latent height and width


# ------------------------------------------------------------------------------------ the split UNet
def _unet(config: dict):
    from mimic.model.unet import PoseUNet

    torch.manual_seed(0)
    model = PoseUNet.from_config(config).eval()
    for p in model.parameters():
        p.data.normal_(0.0, 0.05)
    return model


FOUR_LEVELS = {**tiny.UNET_CONFIG, "block_out_channels": [32, 32, 64, 64], "num_attention_heads": [2, 2, 2, 2],
               "down_block_types": ["CrossAttnDownBlockSpatioTemporal"] * 3 + ["DownBlockSpatioTemporal"],
               "up_block_types": ["UpBlockSpatioTemporal"] + ["CrossAttnUpBlockSpatioTemporal"] * 3}


@pytest.mark.parametrize("config", [tiny.UNET_CONFIG, FOUR_LEVELS], ids=["tiny", "four-levels"])
def test_the_split_unet_reproduces_the_full_one_exactly(config):
    from mimic.model.unet import cache_depths, feature_channels, feature_scale

    model = _unet(dict(config))
    b, f, h, w = 2, 3, 16, 16
    g = torch.Generator().manual_seed(1)
    args = (torch.randn(b, f, 8, h, w, generator=g), torch.tensor([0.7, 0.7]), torch.randn(b, 1, config["cross_attention_dim"], generator=g),
            torch.randn(b, 3, generator=g), torch.randn(b * f, config["block_out_channels"][0], h, w, generator=g))
    with torch.no_grad():
        full = model(*args)
        depths = cache_depths(config["block_out_channels"])
        assert list(depths) == list(range(1, len(config["block_out_channels"])))
        for depth in depths:
            out, features = model.forward_with_features(*args, depth)
            scale = feature_scale(depth)
            assert features.shape == (b * f, feature_channels(config["block_out_channels"], depth), h // scale, w // scale)
            assert torch.equal(out, full)
            assert torch.equal(model.forward_shallow(*args, features, depth), full)  # same inputs, same features: same bits
            other = model.forward_shallow(*args, features * 1.01, depth)
            assert not torch.equal(other, full)  # the output does depend on the cached feature
        with pytest.raises(ValueError, match="cache depth 9 outside"):
            model.forward_shallow(*args, features, 9)


# ------------------------------------------------------------------------------------ the plan
def test_the_step_pattern_runs_a_full_pass_every_interval_and_where_a_cfg_half_is_missing():
    assert cache_pattern(1, (True,) * 4) == (True,) * 4
    assert cache_pattern(2, (True,) * 5) == (True, False, True, False, True)
    assert cache_pattern(3, (True,) * 7) == (True, False, False, True, False, False, True)
    # an unguided (batch-1) full pass cannot serve a guided step: that step runs in full
    assert cache_pattern(3, (False, True, True, True, False, False)) == (True, True, False, False, True, False)
    # a guided full pass serves the unguided steps after it (their conditional half's rows)
    assert cache_pattern(2, (True, False, False, False)) == (True, False, True, False)


def test_checkpoints_are_resumable_only_before_a_full_pass():
    config = GenerationConfig(steps=5, cache_interval=2)
    assert resume_points(config, SchedulerConfig()) == (True, False, True, False, True, True)
    assert all(resume_points(GenerationConfig(steps=5), SchedulerConfig()))


class Recording:
    """A stand-in for the three UNet stages: the "deep" part is a function of the sample alone, the
    "shallow" part adds what depends on the step's other feeds, so a cached step (stale deep
    feature) differs from a full pass. Records (stage, batch) per call and the features it handed out."""

    name = "fake"

    def __init__(self):
        self.device = torch.device("cpu")
        self.calls: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def cache_depths(self):
        return (1,)

    @staticmethod
    def _deep(x):
        c = x[:, :, :4]
        return torch.sin(3.1 * c) + 0.61 * c.mean(dim=1, keepdim=True)

    @staticmethod
    def _shallow(x, deep, feeds):
        b, t, _, h, w = x.shape
        pose = feeds[N.POSE_LATENTS].mean(dim=1).view(b, t, 1, h, w)
        extra = feeds[N.ENCODER_HIDDEN_STATES].mean(dim=(1, 2)) + 0.013 * feeds[N.TIMESTEP]
        return deep + 0.29 * x[:, :, 4:8] + 0.17 * pose + extra.view(b, 1, 1, 1, 1)

    def run(self, stage, feeds, stream=None):
        if stage == StageName.POSE_NET:
            return {N.POSE_LATENTS: feeds[N.POSE_IMAGES][:, :2, ::8, ::8] * 0.37 + 0.1}
        x = feeds[N.SAMPLE]
        with self.lock:
            self.calls.append((stage, x.shape[0]))
        if stage == StageName.UNET_SHALLOW:
            assert feeds[N.CACHE_DEPTH] == 1
            deep = feeds[N.DEEP_FEATURES].view(x.shape[0], x.shape[1], 4, *x.shape[3:])
            return {N.NOISE_PRED: self._shallow(x, deep, feeds)}
        deep = self._deep(x)
        out = {N.NOISE_PRED: self._shallow(x, deep, feeds)}
        if stage == StageName.UNET_FEATURES:
            out[N.DEEP_FEATURES] = deep.flatten(0, 1)
        return out

    def close(self):
        pass


def _job(config: GenerationConfig, seed: int = 0, feature_bytes: int | None = 1 << 30):
    plan = plan_denoise(FRAMES, config, SchedulerConfig(), torch.float32, torch.device("cpu"), pose_cache_bytes=1 << 20,
                        feature_cache_bytes=feature_bytes)
    return (plan, *denoise_inputs(plan, FRAMES, H, W, seed))


BASE = GenerationConfig(steps=6, window=6, overlap=2)
CACHED = BASE.with_overrides(cache_interval=3)


def _run(config: GenerationConfig, backend=None, feature_bytes: int | None = 1 << 30, hooks=None):
    plan, cond, poses, latents = _job(config, feature_bytes=feature_bytes)
    backend = backend or Recording()
    calls: Counter = Counter()
    out = denoise(backend, plan, cond, poses, latents, hooks=hooks, calls=calls)
    return out, backend, calls, plan


def test_the_default_plan_caches_nothing_and_calls_the_plain_unet():
    out, backend, calls, plan = _run(BASE)
    assert plan.cache is None
    assert {stage for stage, _ in backend.calls} == {StageName.UNET}
    assert calls == Counter({2: 6 * len(plan.windows)})


def test_cached_steps_run_the_shallow_stage_around_the_features_of_the_last_full_pass():
    plain, _, _, _ = _run(BASE)
    out, backend, calls, plan = _run(CACHED)
    n = len(plan.windows)
    assert plan.cache.full == (True, False, False, True, False, False)
    per_step = [backend.calls[i * n:(i + 1) * n] for i in range(6)]
    assert per_step[0] == per_step[3] == [(StageName.UNET_FEATURES, 2)] * n  # full passes that keep features
    assert all(s == [(StageName.UNET_SHALLOW, 2)] * n for s in (per_step[1], per_step[2], per_step[4], per_step[5]))
    assert calls == Counter({2: 2 * n, (2, 1): 4 * n}) == plan.unet_calls(range(6))
    assert not torch.equal(out, plain)  # stale deep features: an approximation, not the released output
    assert torch.isfinite(out).all()


def test_cached_steps_with_the_guidance_interval_reuse_the_conditional_rows():
    from mimic.runtime.denoise import guided_steps

    sigmas_config = CACHED.with_overrides(cache_interval=2)
    schedule_sigmas = plan_denoise(FRAMES, sigmas_config, SchedulerConfig(), torch.float32, torch.device("cpu"), pose_cache_bytes=0).schedule.sigmas
    config = sigmas_config.with_overrides(guidance_sigma_min=float(schedule_sigmas[3]), guidance_sigma_max=float(schedule_sigmas[0]))
    guided = guided_steps(config, SchedulerConfig())
    assert guided == (True, True, True, True, False, False)
    out, backend, calls, plan = _run(config)
    n = len(plan.windows)
    assert plan.cache.full == (True, False, True, False, True, False)
    batches = [backend.calls[i * n][1] for i in range(6)]
    assert batches == [2, 2, 2, 2, 1, 1]  # the guidance interval still halves the batch outside it
    assert calls == Counter({2: 2 * n, (2, 1): 2 * n, 1: n, (1, 1): n})


def test_a_window_whose_features_fit_no_budget_runs_its_cached_steps_in_full(caplog):
    plain, _, _, _ = _run(BASE)
    with caplog.at_level("WARNING"):
        out, backend, calls, plan = _run(CACHED, feature_bytes=0)
    assert "fit neither the device budget" in caplog.text
    n = len(plan.windows)
    assert calls == Counter({2: 6 * n})  # every pass in full: the same maths as without caching
    assert torch.equal(out, plain)


def test_the_feature_cache_keeps_one_tensor_per_window_and_the_conditional_rows():
    cache = FeatureCache(torch.device("cpu"), budget_bytes=6 * 4 * 4, host_budget_bytes=0)  # one fp32 pair below
    pair = torch.arange(2 * 3 * 4, dtype=torch.float32).view(6, 4)  # a CFG pair of 3 frames, batch-major rows
    cache.put(0, pair, 2)
    assert torch.equal(cache.get(0, 2), pair) and torch.equal(cache.get(0, 1), pair[3:])
    cache.put(0, pair + 1, 2)  # refreshed in place
    assert torch.equal(cache.get(0, 2), pair + 1)
    cache.put(1, pair, 2)  # over the budget (one pair fits): refused
    assert cache.fits(0) and not cache.fits(1) and not cache.has(1) and cache.refused == 1


def test_several_workers_and_a_resume_give_the_same_bits_and_counts():
    config = CACHED
    one, _, calls, plan = _run(config)
    _, cond, poses, latents = _job(config)
    many_calls: Counter = Counter()
    many = denoise_parallel([Recording(), Recording()], plan, cond, poses, latents.clone(), calls=many_calls)
    assert torch.equal(one, many) and many_calls == calls
    recorder = StepRecorder()
    _run(config, hooks=recorder)
    saved = recorder.saved
    points = resume_points(config, SchedulerConfig())
    assert points[3] and not points[2]
    resumed_calls: Counter = Counter()
    resumed = denoise(Recording(), replace(plan, start_step=3), cond, poses, saved[3].clone(), calls=resumed_calls)
    assert torch.equal(resumed, one)  # resumed before a full pass: the same bits
    assert resumed_calls + plan.unet_calls(range(3)) == calls
    # resumed before a cached step (no checkpoint is ever taken there): no features are kept, so it runs in full
    early = denoise(Recording(), replace(plan, start_step=2), cond, poses, saved[2].clone())
    assert not torch.equal(early, one)


def test_the_checkpoint_saver_skips_steps_a_resumed_process_could_not_repeat():
    from mimic.runtime.checkpoint import CheckpointHooks

    class Store:
        def __init__(self):
            self.steps = []

        def save(self, step, num_steps, latents):
            self.steps.append(step)

    points = resume_points(GenerationConfig(steps=7, cache_interval=3), SchedulerConfig())  # full at 0, 3, 6
    for every, expected in ((1, [3, 6, 7]), (2, [3, 6, 7]), (4, [6, 7])):
        store = Store()
        saver = CheckpointHooks(store, every, points)
        for step in range(1, 8):
            saver.on_step_end(step, 7, None)
        assert store.steps == expected, every
    store = Store()
    plain = CheckpointHooks(store, 2, resume_points(GenerationConfig(steps=5), SchedulerConfig()))
    for step in range(1, 6):
        plain.on_step_end(step, 5, None)
    assert store.steps == [2, 4, 5]  # without caching: every 2 steps and the last, as before


# ------------------------------------------------------------------------------------ the FLOPs
def test_the_flop_model_counts_only_the_blocks_a_cached_step_runs():
    from mimic.model.flops import frozen_config, reference_frame_pass_flops, unet_call_flops, unet_work_flops

    key = frozen_config(tiny.UNET_CONFIG)
    full, shallow = unet_call_flops(key, 6, 64, 64, 2), unet_call_flops(key, 6, 64, 64, 2, depth=1)
    assert 0 < shallow < full and shallow == 2 * unet_call_flops(key, 6, 64, 64, 1, depth=1)
    assert unet_work_flops(key, {(6, 2): 3, (6, 2, 1): 5}, 64, 64) == 3 * full + 5 * shallow
    # the released model at 576x1024: a depth-1 shallow pass is 41.5 % of a full one (pinned; test_bench_flops checks the pins)
    assert reference_frame_pass_flops(1) / reference_frame_pass_flops() == pytest.approx(0.41530, abs=1e-4)
    work = UnetWork(key, 6, 64, 64, {2: 4, (2, 1): 8}, earlier={2: 2, (2, 1): 4})
    assert work.calls() == {(6, 2): 6, (6, 2, 1): 12}
    assert work.tflop() == pytest.approx((6 * full + 12 * shallow) / 1e12, rel=1e-12)
    assert work.tflop_576x1024() == pytest.approx(6 * 2 * 6 * (reference_frame_pass_flops() + 2 * reference_frame_pass_flops(1)) / 1e12, rel=1e-12)


# ------------------------------------------------------------------------------------ the torch model
@pytest.fixture(scope="module")
def mm(tiny_cache):
    from mimic.runtime.api import MimicMotion, RuntimeOptions

    with MimicMotion.from_preset("tiny", RuntimeOptions(backend="torch")) as mm:
        yield mm


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"), frames=4)


SETTINGS = {"steps": 4, "window": 4, "overlap": 1, "resolution": 64, "sample_stride": 1}


def test_cached_steps_do_not_run_the_deep_blocks_of_the_torch_unet(mm, inputs, tmp_path):
    from mimic.runtime.jobs import Job

    unet = mm.backend.models.unet
    counts = Counter()
    deep, outer = unet.mid_block, unet.up_blocks[-1]
    handles = [deep.register_forward_hook(lambda *a: counts.update(["deep"])),
               outer.register_forward_hook(lambda *a: counts.update(["outer"])),
               unet.down_blocks[-1].register_forward_hook(lambda *a: counts.update(["deep_down"]))]
    ref, video = inputs
    try:
        with one_torch_thread():
            report = mm.render(Job(reference=ref, driving=video, out=tmp_path / "cached", overrides={**SETTINGS, "cache_interval": 2}))
    finally:
        for h in handles:
            h.remove()
    windows = 2  # 4 frames + the reference slot in 4-frame windows overlapping by 1
    assert counts["outer"] == 4 * windows  # every step runs the outermost level
    assert counts["deep"] == counts["deep_down"] == 2 * windows  # only the two full passes run the deep blocks
    data = json.loads((tmp_path / "cached" / "report.json").read_text())
    assert data["unet_calls_by_batch"] == {"1": 0, "2": 2 * windows} and data["unet_cached_calls_by_batch"] == {"2@1": 2 * windows}
    full = unet.config.block_out_channels
    assert report.unet_tflop_per_output_frame < report.unet_tflop_per_output_frame_576x1024 and len(full) == 2


def test_a_depth_the_backend_cannot_run_is_one_line_before_any_work(mm, inputs, tmp_path):
    from mimic.runtime.jobs import Job

    ref, video = inputs
    job = Job(reference=ref, driving=video, out=tmp_path / "deep", overrides={**SETTINGS, "cache_interval": 2, "cache_depth": 2})
    with pytest.raises(InputError, match=r"^--cache-depth 2: this model's UNet runs depth 1 only$"):
        mm.admit(job)

    class Plain:
        name = "onnxruntime"

    with pytest.raises(InputError, match=r"^--cache-interval 2: the onnxruntime backend has no cached UNet graphs \(unet_features, "
                                         r"unet_shallow\); export them again"):
        check_cache_support(Plain(), GenerationConfig(cache_interval=2))
    check_cache_support(Plain(), GenerationConfig())  # no caching: nothing to check

    class Graphs(Plain):
        def cache_depths(self):
            return (1,)

    with pytest.raises(InputError, match=r"^--cache-depth 3: the onnxruntime graphs run depth 1 only; use --backend torch for another depth$"):
        check_cache_support(Graphs(), GenerationConfig(cache_interval=2, cache_depth=3))


def test_a_resumed_fast_job_writes_the_same_bytes(tiny_cache, inputs, tmp_path, capsys, monkeypatch):
    from mimic.errors import Interrupted
    from mimic.runtime import checkpoint

    ref, video = inputs
    small = [a for k, a in enumerate(SMALL_ARGS) if "--steps" not in SMALL_ARGS[max(k - 1, 0):k + 1]]  # fast's own steps
    job = ["run", "--preset", "tiny", "--backend", "torch", "--ref", str(ref), "--driving", str(video), *small, "--speed", "fast"]
    assert SPEED_PRESETS["fast"]["steps"] == 6 and SPEED_PRESETS["fast"]["cache_interval"] == 2  # full passes at steps 0, 2, 4
    code, _, stderr = run_cli([*job, "--out", str(tmp_path / "fresh.mp4")], capsys)
    assert code == 0, stderr
    saved = []
    save = checkpoint.CheckpointStore.save

    def save_then_stop(self, step, num_steps, latents):
        save(self, step, num_steps, latents)
        saved.append(step)
        raise Interrupted("SIGTERM", 143)

    with monkeypatch.context() as m:
        m.setattr(checkpoint.CheckpointStore, "save", save_then_stop)
        code, _, _ = run_cli([*job, "--out", str(tmp_path / "resumed.mp4")], capsys)
    assert code == 143 and saved == [2]  # after step 1 the next step is a cached one: no checkpoint there
    # the resumed run repeats steps 3-6 (two of them cached, around features of its own full passes)
    code, stdout, stderr = run_cli([*job, "--out", str(tmp_path / "resumed.mp4")], capsys)
    assert code == 0, stderr
    assert "resumed from the checkpoint saved after step 2" in stdout
    assert (tmp_path / "resumed.mp4").read_bytes() == (tmp_path / "fresh.mp4").read_bytes()


# ------------------------------------------------------------------------------------ --speed
def test_a_speed_preset_sets_its_settings_and_settings_given_beside_it_win():
    fast = GenerationConfig().with_overrides(speed="fast")
    assert fast.speed == "fast" and all(getattr(fast, k) == v for k, v in SPEED_PRESETS["fast"].items())
    mine = GenerationConfig().with_overrides(speed="fast", steps=12)
    assert mine.steps == 12 and mine.cache_interval == SPEED_PRESETS["fast"]["cache_interval"]
    back = fast.with_overrides(guidance_sigma_min=0.5, guidance_sigma_max=20.0).with_overrides(speed="exact")  # exact unsets the bounds too
    assert (back.steps, back.schedule, back.cache_interval, back.guidance_sigma_min, back.guidance_sigma_max) == (25, "karras", 1, None, None)
    assert GenerationConfig().speed is None


def test_speed_is_a_flag_a_jobs_file_key_and_a_config_key(monkeypatch, tmp_path):
    assert run_settings(monkeypatch, "--speed", "balanced", "--steps", "8") == {"speed": "balanced", "steps": 8}
    overrides, warnings = settings_from_mapping({"speed": "fast"})
    assert overrides == {"speed": "fast"} and warnings == []
    with pytest.raises(InputError, match=r"^job 1: --speed must be one of exact, balanced, fast, got 'quick'$"):
        settings_from_mapping({"speed": "quick"}, "job 1: ")
    with pytest.raises(InputError, match=r"^--cache-interval must be in 1\.\.1000, got 0$"):
        settings_from_mapping({"cache_interval": 0})


def test_the_cli_refuses_a_bad_speed_in_one_line(capsys):
    code, _, stderr = run_cli(["run", "--preset", "tiny", "--ref", "r.png", "--driving", "d.mp4", "--out", "o.mp4", "--speed", "quick"], capsys)
    assert code == 2 and "--speed must be one of exact, balanced, fast, got 'quick'" in stderr and "Traceback" not in stderr


def test_the_comfyui_sampler_offers_speed_with_a_none_entry_and_a_preset_replaces_its_widgets():
    from mimic.comfyui import settings as comfy

    choices, options = comfy.widget("speed")
    assert choices == ["none", "exact", "balanced", "fast"] and options["default"] == "none"
    assert "cache_interval" in comfy.sampler_fields() and "speed" in comfy.sampler_fields()
    widgets = {"steps": 20, "schedule": "karras", "cache_interval": 1, "seed": 3}
    assert comfy.overrides(["steps", "schedule", "cache_interval", "seed", "speed"], {**widgets, "speed": "none"}) == {**widgets, "speed": None}
    # every widget is always sent, so a chosen preset replaces the ones it sets (the seed stays)
    assert comfy.overrides(["steps", "schedule", "cache_interval", "seed", "speed"], {**widgets, "speed": "fast"}) == {"seed": 3, "speed": "fast"}


def test_the_speed_rule_picks_per_tier_the_closest_output_within_the_flop_cap():
    from mimic.benchmarks.quality_bench import VariantResult
    from mimic.benchmarks.speed_choice import markdown_lines, speed_choice

    def row(name, tflop, psnr, truth=18.9, iou=0.56, seam=1.0, backend="torch", settings=None, seconds=10.0):
        return VariantResult(name, backend, "fp32", 10, "ays", 4, "2", seconds, 40, psnr, 0.99, truth, 0.7, iou, seam, 10.0,
                             settings=settings or {}, unet_tflop_per_frame_576x1024=tflop)

    ref = row("karras-25", 100.0, float("inf"), seconds=100.0)
    rows = [ref, row("a", 40.0, 50.0), row("b", 30.0, 52.0, truth=18.5),  # b loses 0.4 dB against the truth: out
            row("c", 35.0, 49.0), row("d", 19.0, 36.0), row("e", 15.0, 30.0), row("f", 10.0, 40.0, seam=1.2),  # f adds seams: out
            row("g", 18.0, 39.0, backend="onnxruntime"),  # another backend: not a candidate
            row("speed=fast", 18.0, 38.0, settings={"speed": "fast"}, seconds=25.0)]
    chosen = speed_choice(rows, "karras-25")
    assert chosen["balanced"]["name"] == "a" and chosen["balanced"]["meets_floor"]
    assert chosen["fast"]["name"] == "speed=fast" and chosen["fast"]["flop_share"] == pytest.approx(0.18)
    text = "\n".join(markdown_lines(rows, "karras-25"))
    assert "Speed preset `fast`: **speed=fast**, 18.0% of the karras-25 UNet FLOPs per frame (cap 20%), 38.0 dB" in text
    assert "torch fp32: speed=fast took 25% of karras-25's seconds for 18% of its UNet FLOPs (same run)." in text
    missed = speed_choice([ref, row("h", 15.0, 30.0)], "karras-25")
    assert missed["fast"]["name"] == "h" and not missed["fast"]["meets_floor"] and missed["balanced"]["name"] == "h"
    assert "MISSES by 5.0 dB the 35 dB target" in "\n".join(markdown_lines([ref, row("h", 15.0, 30.0)], "karras-25"))


def test_a_speed_variant_of_the_quality_bench_runs_the_preset_not_the_reference_sampler():
    from mimic.benchmarks.quality_bench import Variant

    fast = Variant.parse("speed=fast+onnxruntime")
    assert fast.backend == "onnxruntime" and (fast.steps, fast.schedule) == (SPEED_PRESETS["fast"]["steps"], "ays")
    assert GenerationConfig().with_overrides(**fast.overrides()).cache_interval == SPEED_PRESETS["fast"]["cache_interval"]
    assert Variant.parse("speed=fast+karras-8").steps == 8  # a part given beside it wins


def test_the_speed_paragraph_of_a_run_with_the_reference_alone_says_no_variant_fits():
    from mimic.benchmarks.quality_bench import VariantResult
    from mimic.benchmarks.speed_choice import markdown_lines

    ref = VariantResult("karras-25", "torch", "fp32", 25, "karras", 4, "2", 10.0, 100, float("inf"), 1.0, 18.9, 0.7, 0.56,
                        unet_tflop_per_frame_576x1024=320.0)
    lines = markdown_lines([ref], "karras-25")
    assert "Speed preset `balanced`: no variant within its FLOP cap keeps the quality against the truth and the seams." in lines
