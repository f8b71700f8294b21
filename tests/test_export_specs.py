"""Stage specs: names, shapes, engine profiles, tolerances; full-size shape plumbing on the meta device."""
from __future__ import annotations

import pytest
import torch

from mimic import spec as specs
from mimic.errors import InputError
from mimic.export.dummy import dims_from_module, dummy_inputs
from mimic.spec import ALL_STAGES, DWPOSE_STAGES, STAGES, ModelDims, engine_profile, engine_ranges

TINY = ModelDims(embed_dim=32, pose_channels=32, cache_channels=64)
REAL = ModelDims(embed_dim=1024, pose_channels=320, cache_channels=640)
_UNET_IN = ("sample", "timestep", "encoder_hidden_states", "added_time_ids", "pose_latents")

# The contract the runtime and the engines rely on (the brief's names, in order).
EXPECTED_IO = {
    "image_encoder": (("pixel_values",), ("image_embeds",)),
    "vae_encoder": (("image",), ("latent_mean",)),
    "pose_net": (("pose_images",), ("pose_latents",)),
    "unet": (_UNET_IN, ("noise_pred",)),
    "unet_features": (_UNET_IN, ("noise_pred", "deep_features")),
    "unet_shallow": ((*_UNET_IN, "deep_features"), ("noise_pred",)),
    "vae_decoder": (("latents",), ("frames",)),
    "dwpose_detector": (("images",), ("output",)),
    "dwpose_pose": (("input",), ("simcc_x", "simcc_y")),
}


def test_stage_names():
    assert tuple(STAGES) == specs.STAGE_NAMES == ("image_encoder", "vae_encoder", "pose_net", "unet", "unet_features", "unet_shallow", "vae_decoder")
    assert set(ALL_STAGES) == set(EXPECTED_IO)
    assert specs.CACHE_STAGES == ("unet_features", "unet_shallow") and specs.GRAPH_CACHE_DEPTH == 1


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
    # deep-feature caching at depth 1: the feature entering the last up block, C1 = block_out_channels[1]
    assert STAGES["unet_features"].output_shapes(p, REAL) == {"noise_pred": (2, 72, 4, 128, 72), "deep_features": (144, 640, 128, 72)}
    assert STAGES["unet_shallow"].input_shapes(p, REAL) == {**unet.input_shapes(p, REAL), "deep_features": (144, 640, 128, 72)}
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
    window = 16 if spec.window_axis else None
    profile = engine_profile(spec, dims, profile_set, window)
    assert profile and set(profile) == set(spec.input_names)
    for mn, opt, mx in profile.values():
        assert len(mn) == len(opt) == len(mx)
        assert all(a <= b <= c for a, b, c in zip(mn, opt, mx))
    ranges = spec.profile_ranges(profile_set)  # pixel bounds: multiples of 64 -> latent multiples of 8
    for sym in ("H", "W"):
        if sym in ranges:
            r = ranges[sym]
            assert r.min % 64 == 0 and r.opt % 64 == 0 and r.max % 64 == 0


def test_real_profile_covers_the_released_windows_and_both_orientations():
    ranges = STAGES["unet"].profile_ranges("real")
    assert (ranges["F"].min, ranges["F"].opt, ranges["F"].max) == (16, 72, 72)  # both released windows
    assert ranges["B"].min == 1 and ranges["B"].max == 2 and ranges["B"].opt == 2
    for h, w in ((1024, 576), (576, 1024), (512, 512), (256, 448)):
        assert ranges["H"].min <= h <= ranges["H"].max and ranges["W"].min <= w <= ranges["W"].max
    prof72 = engine_profile(STAGES["unet"], REAL, "real", 72)
    assert prof72["sample"][1] == (2, 72, 8, 128, 72)  # opt = CFG batch 2, 72 frames, portrait
    assert prof72["pose_latents"][2] == (144, 320, 128, 128)
    prof16 = engine_profile(STAGES["unet"], REAL, "real", 16)
    assert prof16["sample"][0] == (1, 16, 8, 32, 32)


def test_engine_ranges_fix_the_window():
    """One profile per engine: the window axis (UNet F, PoseNet N) is fixed to the window."""
    for stage, axis in (("unet", "F"), ("pose_net", "N")):
        r = engine_ranges(STAGES[stage], "real", 16)[axis]
        assert (r.min, r.opt, r.max) == (16, 16, 16)
        r = engine_ranges(STAGES[stage], "tiny", 6)[axis]
        assert (r.min, r.opt, r.max) == (6, 6, 6)
    # stages without a window axis keep their ranges; no window keeps the spec's range
    assert engine_ranges(STAGES["vae_decoder"], "real", 72)["N"] == STAGES["vae_decoder"].profile_ranges("real")["N"]
    assert engine_ranges(STAGES["unet"], "real")["F"] == STAGES["unet"].profile_ranges("real")["F"]
    prof = engine_profile(STAGES["unet"], REAL, "real", 16)
    assert prof["sample"][0][1] == prof["sample"][1][1] == prof["sample"][2][1] == 16
    assert prof["pose_latents"][0][0] == 16 and prof["pose_latents"][2][0] == 32  # B*F: 1*16 .. 2*16


def test_window_outside_the_range_is_an_input_error():
    with pytest.raises(InputError) as err:
        engine_ranges(STAGES["unet"], "real", 40 * 2)
    assert str(err.value) == "unet: a 80-frame window is outside the supported 16..72 (real profile set)"
    with pytest.raises(InputError, match=r"pose_net: a 72-frame window is outside the supported 1\.\.32 \(tiny profile set\)"):
        engine_profile(STAGES["pose_net"], TINY, "tiny", 72)
    with pytest.raises(InputError, match="a 8-frame window is outside the supported 16..72"):
        engine_ranges(STAGES["unet"], "real", 8)


def test_hw_sizes_narrow_height_and_width():
    sizes = [(1024, 576), (576, 1024)]
    r = engine_ranges(STAGES["unet"], "real", 72, sizes)
    assert (r["H"].min, r["H"].opt, r["H"].max) == (576, 1024, 1024)
    assert (r["W"].min, r["W"].opt, r["W"].max) == (576, 576, 1024)
    assert (r["F"].min, r["F"].opt, r["F"].max) == (72, 72, 72)
    prof = engine_profile(STAGES["unet"], REAL, "real", 16, [(1024, 576)])
    assert prof["sample"] == ((1, 16, 8, 128, 72), (2, 16, 8, 128, 72), (2, 16, 8, 128, 72))
    assert prof["pose_latents"][2] == (32, 320, 128, 72)  # B*F at max
    assert engine_profile(STAGES["pose_net"], REAL, "real", 72, [(576, 1024)])["pose_images"][1] == (72, 3, 576, 1024)
    assert "H" not in engine_ranges(STAGES["image_encoder"], "real", 72, sizes)  # no spatial axes: untouched


def test_static_graphs_have_no_profile():
    for spec in DWPOSE_STAGES.values():
        assert engine_profile(spec, REAL, "real", 72) is None
        assert engine_profile(spec, TINY, "tiny", 16, [(1024, 576)]) is None


def test_profile_set_follows_the_model():
    assert REAL.profile_set == "real" and TINY.profile_set == "tiny"
    assert engine_profile(STAGES["pose_net"], TINY)["pose_images"][2][0] == 32  # the dims' profile set, no window
    with pytest.raises(InputError, match="unknown profile set"):
        engine_profile(STAGES["unet"], REAL, "huge")


def test_tolerances():
    for spec in STAGES.values():
        assert spec.tol_fp32.max_abs <= 1e-4
        assert spec.tol_fp16 is not None and spec.tol_fp16.max_abs >= spec.tol_fp32.max_abs


def test_dummy_inputs_are_deterministic_and_ranged():
    spec = STAGES["unet"]
    a = dummy_inputs(spec, spec.export_point, TINY, "fp16", seed=3)
    b = dummy_inputs(spec, spec.export_point, TINY, "fp16", seed=3)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["sample"].dtype == torch.float16 and a["timestep"].dtype == torch.float32
    ids = a["added_time_ids"]
    assert (ids[:, 1] >= 0).all() and (ids[:, 1] <= 255).all()
    px = dummy_inputs(STAGES["vae_encoder"], {"B": 1, "H": 64, "W": 64}, TINY)["image"]
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
        feeds = dummy_inputs(spec, point, dims, "fp16", device="meta")
        with torch.no_grad():
            out = wrapper(*feeds.values())
        outs = out if isinstance(out, tuple) else (out,)
        assert {n: tuple(o.shape) for n, o in zip(spec.output_names, outs)} == spec.output_shapes(point, dims)
        assert all(o.dtype == torch.float16 for o in outs)


def _opt_max(stage):
    ranges = STAGES[stage].profile_ranges("real")
    return [{k: getattr(r, which) for k, r in ranges.items()} for which in ("opt", "max")]


@pytest.mark.slow  # ~20 s on 2 cores per UNet graph: the full-size UNet traced on the meta device
@pytest.mark.parametrize("stage", ["unet", "unet_features", "unet_shallow"])
def test_full_size_unet_shape_plumbing_on_meta(stage):
    """The 1.5 B-parameter MimicMotion UNet, fp16 with fp32 norms, at the real profile's opt and max
    (2 x 72 frames, 1024x576 and 1024x1024): shapes only, no memory, no compute. Its deep-feature
    caching pair too (the cached feature: 640 channels at the latent's size)."""
    from mimic.model.unet import PoseUNet

    unet = _on_meta(lambda: PoseUNet.from_config(SVD_UNET))
    dims = dims_from_module(stage, unet)
    assert dims == REAL and dims.profile_set == "real"
    _check_meta(stage, unet, _opt_max(stage), dims)


@pytest.mark.slow  # 7.5 s
def test_full_size_vae_clip_posenet_shape_plumbing_on_meta():
    from diffusers import AutoencoderKLTemporalDecoder
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from mimic.model.pose_net import PoseNet

    vae = _on_meta(lambda: AutoencoderKLTemporalDecoder.from_config(SVD_VAE))
    _check_meta("vae_encoder", vae, _opt_max("vae_encoder"), REAL)
    _check_meta("vae_decoder", vae, _opt_max("vae_decoder"), REAL)
    clip_cfg = CLIPVisionConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                                patch_size=14, image_size=224, projection_dim=1024, hidden_act="gelu")
    clip = _on_meta(lambda: CLIPVisionModelWithProjection(clip_cfg))
    _check_meta("image_encoder", clip, _opt_max("image_encoder"), dims_from_module("image_encoder", clip))
    _check_meta("pose_net", _on_meta(lambda: PoseNet(320)), _opt_max("pose_net"), REAL)
