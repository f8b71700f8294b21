"""Stage specs: names, shapes, profiles, tolerances; full-size shape plumbing on the meta device."""
from __future__ import annotations

import pytest
import torch

from mimic.errors import InputError
from mimic.export import specs
from mimic.export.specs import ALL_STAGES, DWPOSE_STAGES, STAGES, ModelDims, profiles_for

TINY = ModelDims(embed_dim=32, pose_channels=32)
REAL = ModelDims(embed_dim=1024, pose_channels=320)

# The contract the runtime and the engines rely on (the brief's names, in order).
EXPECTED_IO = {
    "image_encoder": (("pixel_values",), ("image_embeds",)),
    "vae_encoder": (("image",), ("latent_mean",)),
    "pose_net": (("pose_images",), ("pose_latents",)),
    "unet": (("sample", "timestep", "encoder_hidden_states", "added_time_ids", "pose_latents"), ("noise_pred",)),
    "vae_decoder": (("latents",), ("frames",)),
    "dwpose_detector": (("images",), ("output",)),
    "dwpose_pose": (("input",), ("simcc_x", "simcc_y")),
}


def test_stage_names_match_the_runtime():
    from mimic.runtime.backend_api import STAGE_NAMES

    assert tuple(STAGES) == STAGE_NAMES
    assert set(ALL_STAGES) == set(EXPECTED_IO)


@pytest.mark.parametrize("name", sorted(EXPECTED_IO))
def test_tensor_names(name):
    spec = ALL_STAGES[name]
    assert (spec.input_names, spec.output_names) == EXPECTED_IO[name]


def test_real_shapes_at_the_released_portrait_size():
    p = {"B": 2, "F": 72, "H": 1024, "W": 576}
    unet = STAGES["unet"]
    assert unet.input_shapes(p, REAL) == {
        "sample": (2, 72, 8, 128, 72),
        "timestep": (2,),
        "encoder_hidden_states": (2, 1, 1024),
        "added_time_ids": (2, 3),
        "pose_latents": (144, 320, 128, 72),
    }
    assert unet.output_shapes(p, REAL) == {"noise_pred": (2, 72, 4, 128, 72)}
    assert STAGES["vae_decoder"].output_shapes({"N": 8, "H": 1024, "W": 576}, REAL) == {"frames": (8, 3, 1024, 576)}
    assert STAGES["image_encoder"].output_shapes({"B": 1}, REAL) == {"image_embeds": (1, 1024)}
    assert STAGES["pose_net"].output_shapes({"N": 72, "H": 576, "W": 1024}, REAL) == {"pose_latents": (72, 320, 72, 128)}


def test_dtypes_per_precision():
    unet = STAGES["unet"]
    assert {t.name: t.dtype("fp16") for t in unet.inputs} == {
        "sample": "float16", "timestep": "float32", "encoder_hidden_states": "float16", "added_time_ids": "float32", "pose_latents": "float16",
    }
    for spec in STAGES.values():
        assert all(t.dtype("fp32") == "float32" for t in (*spec.inputs, *spec.outputs))
        assert all(t.dtype("fp16") == "float16" for t in spec.outputs)
    for spec in DWPOSE_STAGES.values():
        assert spec.precisions == ("fp32",) and not spec.exported


def test_dynamic_axes():
    assert STAGES["unet"].dynamic_axes()["sample"] == {0: "batch", 1: "frames", 3: "latent_height", 4: "latent_width"}
    assert STAGES["unet"].dynamic_axes()["pose_latents"] == {0: "batch_frames", 2: "latent_height", 3: "latent_width"}
    assert STAGES["vae_decoder"].dynamic_axes()["latents"] == {0: "images", 2: "latent_height", 3: "latent_width"}
    assert STAGES["image_encoder"].dynamic_axes() == {"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}}
    assert all(not s.dynamic_axes() for s in DWPOSE_STAGES.values())


@pytest.mark.parametrize("name", sorted(STAGES))
def test_validation_points_differ_from_the_export_point(name):
    spec = STAGES[name]
    assert len(spec.validation_points) >= 2
    for p in spec.validation_points:
        assert dict(p) != dict(spec.export_point)
        assert set(p) == set(spec.export_point)


@pytest.mark.parametrize("profile_set,dims", [("tiny", TINY), ("real", REAL)])
@pytest.mark.parametrize("name", sorted(STAGES))
def test_profiles_are_ordered_and_in_latent_units(name, profile_set, dims):
    spec = STAGES[name]
    profiles = profiles_for(spec, dims, profile_set)
    assert profiles and all(set(p) == set(spec.input_names) for p in profiles)
    for prof in profiles:
        for mn, opt, mx in prof.values():
            assert len(mn) == len(opt) == len(mx)
            assert all(a <= b <= c for a, b, c in zip(mn, opt, mx))
    for ranges in spec.profile_points(profile_set):  # pixel bounds: multiples of 64 -> latent multiples of 8
        for sym in ("H", "W"):
            if sym in ranges:
                r = ranges[sym]
                assert r.min % 64 == 0 and r.opt % 64 == 0 and r.max % 64 == 0


def test_real_profiles_cover_the_released_windows_and_both_orientations():
    profiles = STAGES["unet"].profile_points("real")
    assert [p["F"].opt for p in profiles] == [72, 16]  # one profile per released window, 72 first
    for ranges in profiles:
        assert ranges["B"].min == 1 and ranges["B"].max == 2 and ranges["B"].opt == 2
        for h, w in ((1024, 576), (576, 1024), (512, 512), (256, 448)):
            assert ranges["H"].min <= h <= ranges["H"].max and ranges["W"].min <= w <= ranges["W"].max
    prof72, prof16 = profiles_for(STAGES["unet"], REAL)
    assert prof72["sample"][1] == (2, 72, 8, 128, 72)  # opt = CFG batch 2, 72 frames, portrait
    assert prof72["pose_latents"][2] == (144, 320, 128, 128)
    assert prof16["sample"][0] == (1, 16, 8, 32, 32)


def test_profile_index_for():
    profiles = profiles_for(STAGES["unet"], REAL)
    shapes = lambda b, f, h, w: STAGES["unet"].input_shapes({"B": b, "F": f, "H": h, "W": w}, REAL)  # noqa: E731
    assert specs.profile_index_for(profiles, shapes(2, 72, 1024, 576)) == 0
    assert specs.profile_index_for(profiles, shapes(1, 16, 576, 1024)) == 1
    with pytest.raises(InputError, match="no optimization profile"):
        specs.profile_index_for(profiles, shapes(2, 24, 576, 1024))
    tiny = profiles_for(STAGES["unet"], TINY)
    assert len(tiny) == 1 and specs.profile_index_for(tiny, STAGES["unet"].input_shapes({"B": 1, "F": 6, "H": 128, "W": 64}, TINY)) == 0


def test_profile_set_follows_the_model():
    assert REAL.profile_set == "real" and TINY.profile_set == "tiny"
    assert profiles_for(STAGES["pose_net"], TINY)[0]["pose_images"][2][0] == 32
    assert profiles_for(DWPOSE_STAGES["dwpose_pose"], REAL) == []  # static: no profile needed
    with pytest.raises(InputError, match="unknown profile set"):
        profiles_for(STAGES["unet"], REAL, "huge")


def test_tolerances():
    for spec in STAGES.values():
        assert spec.tol_fp32.max_abs <= 1e-4
        assert spec.tol_fp16 is not None and spec.tol_fp16.max_abs >= spec.tol_fp32.max_abs


def test_dummy_inputs_are_deterministic_and_ranged():
    spec = STAGES["unet"]
    a = spec.dummy_inputs(spec.export_point, TINY, "fp16", seed=3)
    b = spec.dummy_inputs(spec.export_point, TINY, "fp16", seed=3)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["sample"].dtype == torch.float16 and a["timestep"].dtype == torch.float32
    ids = a["added_time_ids"]
    assert (ids[:, 1] >= 0).all() and (ids[:, 1] <= 255).all()
    px = STAGES["vae_encoder"].dummy_inputs({"B": 1, "H": 64, "W": 64}, TINY)["image"]
    assert px.min() >= -1 and px.max() <= 1


def test_bad_shape_points_are_clear():
    with pytest.raises(InputError, match="multiple of 8"):
        STAGES["unet"].input_shapes({"B": 1, "F": 2, "H": 100, "W": 64}, TINY)
    with pytest.raises(InputError, match="lacks 'F'"):
        STAGES["unet"].input_shapes({"B": 1, "H": 64, "W": 64}, TINY)
    with pytest.raises(InputError, match="unknown stage"):
        specs.get_stage("clip")


def test_onnx_filename():
    assert specs.onnx_filename("unet", "fp16") == "fp16/unet.onnx"
    with pytest.raises(InputError):
        specs.onnx_filename("unet", "int8")


# ------------------------------------------------------------------ full size, meta device (cheap)

SVD_UNET = dict(
    in_channels=8, out_channels=4, block_out_channels=[320, 640, 1280, 1280],
    down_block_types=["CrossAttnDownBlockSpatioTemporal"] * 3 + ["DownBlockSpatioTemporal"],
    up_block_types=["UpBlockSpatioTemporal"] + ["CrossAttnUpBlockSpatioTemporal"] * 3,
    layers_per_block=2, transformer_layers_per_block=1, num_attention_heads=[5, 10, 20, 20], cross_attention_dim=1024,
    addition_time_embed_dim=256, projection_class_embeddings_input_dim=768, num_frames=25, sample_size=96,
)
SVD_VAE = dict(
    in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512],
    layers_per_block=2, latent_channels=4, sample_size=768, scaling_factor=0.18215, force_upcast=True,
)


def _on_meta(build):
    with torch.device("meta"):
        model = build()
    return model.to("meta").eval()  # some buffers are created on the CPU regardless of the context


def _check_meta(stage, model, points, dims):
    from mimic.export.fp16 import convert_to_fp16
    from mimic.export.wrappers import wrap

    spec = STAGES[stage]
    wrapper = convert_to_fp16(wrap(stage, model), copy=False)
    for point in points:
        feeds = spec.dummy_inputs(point, dims, "fp16", device="meta")
        with torch.no_grad():
            out = wrapper(*feeds.values())
        assert tuple(out.shape) == spec.output_shapes(point, dims)[spec.output_names[0]]
        assert out.dtype == torch.float16


def _opt_max(stage):
    ranges = STAGES[stage].profile_points("real")[0]
    return [{k: getattr(r, which) for k, r in ranges.items()} for which in ("opt", "max")]


def test_full_size_unet_shape_plumbing_on_meta():
    """The 1.5 B-parameter MimicMotion UNet, fp16 with fp32 norms, at the real profile's opt and max
    (2 x 72 frames, 1024x576 and 1024x1024): shapes only, no memory, no compute."""
    from mimic.mimicmotion_ref.unet import PoseUNet

    unet = _on_meta(lambda: PoseUNet.from_config(SVD_UNET))
    dims = ModelDims.from_module("unet", unet)
    assert dims == REAL and dims.profile_set == "real"
    _check_meta("unet", unet, _opt_max("unet"), dims)


def test_full_size_vae_clip_posenet_shape_plumbing_on_meta():
    from diffusers import AutoencoderKLTemporalDecoder
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from mimic.mimicmotion_ref.pose_net import PoseNet

    vae = _on_meta(lambda: AutoencoderKLTemporalDecoder.from_config(SVD_VAE))
    _check_meta("vae_encoder", vae, _opt_max("vae_encoder"), REAL)
    _check_meta("vae_decoder", vae, _opt_max("vae_decoder"), REAL)
    clip_cfg = CLIPVisionConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                                patch_size=14, image_size=224, projection_dim=1024, hidden_act="gelu")
    clip = _on_meta(lambda: CLIPVisionModelWithProjection(clip_cfg))
    _check_meta("image_encoder", clip, _opt_max("image_encoder"), ModelDims.from_module("image_encoder", clip))
    _check_meta("pose_net", _on_meta(lambda: PoseNet(320)), _opt_max("pose_net"), REAL)
