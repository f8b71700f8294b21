"""The analytic FLOP model (meta-device counts) against the published anchors (acceleration spec 8)."""
import pytest

from mimic.benchmarks.flops import (
    ModelConfigs,
    clip_flops,
    job_flops,
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
