"""The analytic FLOP model (meta-device counts) against the published anchors (acceleration spec 8)."""
import pytest

from mimic.benchmarks.flops import (
    ModelConfigs,
    clip_flops,
    job_flops,
    released_unet_tflop_per_output_frame,
    stage_flops,
    unet_flops,
    unet_flops_per_frame,
    vae_decoder_flops,
    vae_encoder_flops,
)
from mimic.model.config import GenerationConfig

REAL = ModelConfigs.real()


def rel(a, b):
    return abs(a - b) / b


@pytest.mark.slow  # 11 s; the linear-scaling test checks the same FLOP model at small sizes
def test_real_unet_is_3_20_tflop_per_frame_per_pass_at_576x1024():
    assert rel(unet_flops_per_frame(REAL, 576, 1024, frames=16), 3.20e12) < 0.01
    assert rel(unet_flops_per_frame(REAL, 576, 1024, frames=72), 3.20e12) < 0.01
    assert rel(unet_flops(REAL, 72, 576, 1024, batch=2), 460.8e12) < 0.01  # one window's CFG pair


@pytest.mark.slow  # 17 s; the worked-example test checks the same FLOP model
def test_unet_scales_linearly_with_frames_and_batch():
    f16, f72 = unet_flops(REAL, 16, 576, 1024), unet_flops(REAL, 72, 576, 1024)
    assert rel(f72 / f16, 72 / 16) < 0.01
    assert unet_flops(REAL, 16, 576, 1024, batch=2) == 2 * f16  # batch-2 CFG = the two batch-1 passes


def test_other_real_components_match_the_published_counts():
    assert rel(vae_decoder_flops(REAL, 8, 576, 1024) / 8, 6.94e12) < 0.01
    assert rel(vae_encoder_flops(REAL, 576, 1024), 2.61e12) < 0.01
    assert rel(clip_flops(REAL), 0.335e12) < 0.01
    assert rel(vae_decoder_flops(REAL, 8, 576, 1024), 8 * vae_decoder_flops(REAL, 1, 576, 1024)) < 1e-6


def test_job_flops_worked_example_and_counts():
    # upstream 35 s demo: 525 output frames, T=72, O=6, 25 steps -> 8 windows, about 96 PFLOP
    job = job_flops(GenerationConfig(), 525, 576, 1024)
    assert job.frames == 526 and job.windows == 8 and job.unet_passes == 2 * 25 * 8
    assert rel(job.stages["unet"], 92.2e15) < 0.01
    assert rel(job.stages["vae_decoder"], 3.65e15) < 0.01
    assert rel(job.total, 96e15) < 0.01
    assert job.pose_net_calls == 8
    ref = job_flops(GenerationConfig(), 525, 576, 1024, pose_net_every_step=True)
    assert ref.pose_net_calls == 25 * 8 and ref.total > job.total
    assert rel(job.floor_seconds(790.0), 121.0) < 0.02  # spec: about 121 s at 790 TFLOP/s


def test_short_clips_are_padded_to_one_window():
    job = job_flops(GenerationConfig(window=16, overlap=4, steps=2), 3, 576, 1024)
    assert job.frames == 16 and job.windows == 1


def test_configs_read_from_a_weights_folder(tiny_layout):
    from mimic.model.weights import fetch_svd

    tiny = ModelConfigs.from_svd_dir(fetch_svd(tiny_layout.svd))
    assert tiny.name == "tiny" and tiny == ModelConfigs.tiny()
    assert stage_flops("unet", {"B": 2, "F": 4, "H": 64, "W": 128}, tiny) == unet_flops(tiny, 4, 64, 128, 2) > 0
    for stage, point in (("pose_net", {"N": 4, "H": 64, "W": 64}), ("vae_decoder", {"N": 2, "H": 64, "W": 64}),
                         ("vae_encoder", {"B": 1, "H": 64, "W": 64}), ("image_encoder", {"B": 1})):
        assert stage_flops(stage, point, tiny) > 0
    with pytest.raises(ValueError):
        stage_flops("dwpose_detector", {}, tiny)


def test_the_flop_model_lives_below_the_runtime_and_the_benchmarks_reexport_it():
    from mimic.benchmarks import flops as bench
    from mimic.model import flops as model

    assert bench.unet_flops is model.unet_flops and bench.ModelConfigs is model.ModelConfigs and bench.REAL_UNET_CONFIG is model.REAL_UNET_CONFIG


def test_the_pinned_real_unet_count_is_the_meta_device_count():
    """The run report's 576x1024 figure uses a pinned count (no 1.7 s count per process): it must be
    what torch's counter gives now (a change of torch, diffusers or the UNet code fails here)."""
    from mimic.model.flops import PINNED_UNET_FLOPS, count_unet_flops, count_unet_shallow_flops, reference_frame_pass_flops

    assert PINNED_UNET_FLOPS
    for (key, frames, height, width, batch, *depth), flops in PINNED_UNET_FLOPS.items():
        if depth:  # a cached step's shallow pass at that depth (deep-feature caching)
            assert count_unet_shallow_flops(key, frames, height, width, batch, depth[0]) == flops
        else:
            assert count_unet_flops(key, frames, height, width, batch) == flops
    assert rel(reference_frame_pass_flops(), 3.20e12) < 0.01


def test_the_released_defaults_cost_about_175_unet_tflop_per_output_frame():
    per_frame = unet_flops(REAL, 72, 576, 1024) / 72
    long = released_unet_tflop_per_output_frame()  # windows advance 66 frames: 72/66 frame-passes per output frame
    assert long == pytest.approx(2 * 25 * per_frame * 72 / 66 / 1e12, rel=1e-12) and rel(long, 174.55) < 1e-3
    demo = job_flops(GenerationConfig(), 525, 576, 1024)  # the 35 s demo: 8 windows of 72 frames for 525 frames
    assert demo.unet_calls == {2: 200, 1: 0}
    assert demo.unet_tflop_per_output_frame == pytest.approx(8 * 72 * 2 * 25 * per_frame / 525 / 1e12, rel=1e-12)
    assert demo.unet_tflop_per_output_frame_576x1024 == pytest.approx(demo.unet_tflop_per_output_frame, rel=1e-12)


def test_job_flops_count_the_conditional_half_outside_the_guidance_interval():
    from mimic.model.scheduler import SchedulerConfig, make_schedule

    sigmas = make_schedule(25, SchedulerConfig()).sigmas
    config = GenerationConfig(guidance_sigma_min=float(sigmas[15]), guidance_sigma_max=float(sigmas[5]))  # steps 5..15 guided
    full, part = job_flops(GenerationConfig(), 525, 576, 1024), job_flops(config, 525, 576, 1024)
    assert part.unet_calls == {2: 8 * 11, 1: 8 * 14} and part.unet_passes == 8 * (2 * 11 + 14)
    assert part.stages["unet"] / full.stages["unet"] == pytest.approx(36 / 50, rel=1e-12)
    assert part.unet_tflop_per_output_frame_576x1024 == pytest.approx(full.unet_tflop_per_output_frame_576x1024 * 36 / 50, rel=1e-12)
