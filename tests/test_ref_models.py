"""Reference modules, strict loading of the real file formats, and tiny end-to-end generation."""
import shutil

import numpy as np
import pytest
import torch
from diffusers import UNetSpatioTemporalConditionModel

from mimic.errors import InputError, WeightsError
from mimic.model.config import GenerationConfig
from mimic.model.loader import load_reference_models
from mimic.mimicmotion_ref.pipeline import MimicMotionReference
from mimic.model.pose_net import PoseNet
from mimic.model.tiny import UNET_CONFIG
from mimic.model.unet import PoseUNet
from mimic.model.weights import resolve_weights

SMALL = GenerationConfig(resolution=128, window=6, overlap=2, steps=3, guidance_min=1.5, guidance_max=2.5, decode_chunk=4)


def test_posenet_full_config_parameter_count_and_layout():
    with torch.device("meta"):
        net = PoseNet(noise_latent_channels=320)
    assert sum(p.numel() for p in net.parameters()) == 205_557
    convs = [m for m in net.conv_layers if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (3, 3, 3, 1), (3, 16, 4, 2), (16, 16, 3, 1), (16, 32, 4, 2), (32, 32, 3, 1), (32, 64, 4, 2), (64, 64, 3, 1), (64, 128, 3, 1)
    ]
    assert all(isinstance(net.conv_layers[i], torch.nn.SiLU) for i in range(1, 16, 2))


def test_posenet_init_is_a_noop_and_downsamples_by_8():
    net = PoseNet(noise_latent_channels=32)
    out = net(torch.rand(2, 3, 64, 48) * 2 - 1)
    assert out.shape == (2, 32, 8, 6)
    assert torch.count_nonzero(out) == 0  # zero-initialised projection
    assert net.scale.item() == 2.0


def _tiny_unet_pair():
    torch.manual_seed(0)
    ours = PoseUNet.from_config(UNET_CONFIG).eval()
    stock = UNetSpatioTemporalConditionModel.from_config(UNET_CONFIG).eval()
    stock.load_state_dict(ours.state_dict())
    return ours, stock


@torch.no_grad()
def test_unet_pose_injection_equals_manual_injection_after_conv_in():
    ours, stock = _tiny_unet_pair()
    b, f, h, w = 2, 3, 8, 8
    sample = torch.randn(b, f, 8, h, w)
    t = torch.tensor(0.7)
    ehs = torch.randn(b, 1, 32)
    ids = torch.tensor([[6.0, 127.0, 0.02]] * b)
    pose = torch.randn(b * f, 32, h, w)
    handle = stock.conv_in.register_forward_hook(lambda mod, inp, out: out + pose)
    expected = stock(sample, t, ehs, ids).sample
    handle.remove()
    torch.testing.assert_close(ours(sample, t, ehs, ids, pose_latents=pose), expected, rtol=1e-5, atol=1e-5)
    plain = stock(sample, t, ehs, ids).sample
    torch.testing.assert_close(ours(sample, t, ehs, ids), plain, rtol=1e-5, atol=1e-5)
    assert torch.equal(ours(sample, t, ehs, ids, pose_latents=torch.zeros_like(pose)), ours(sample, t, ehs, ids, pose_latents=None))
    assert not torch.allclose(expected, plain)  # the pose really changes the output


def test_tiny_preset_round_trips_through_the_real_loaders(tiny_layout, tiny_models):
    ckpt = torch.load(tiny_layout.checkpoint, weights_only=True)
    assert all(v.dtype == torch.float16 for v in ckpt.values())
    assert any(k.startswith("unet.") for k in ckpt) and any(k.startswith("pose_net.") for k in ckpt)
    for k, v in tiny_models.unet.state_dict().items():
        assert torch.equal(v, ckpt["unet." + k].float()), k
    for k, v in tiny_models.pose_net.state_dict().items():
        assert torch.equal(v, ckpt["pose_net." + k].float()), k
    assert tiny_models.pose_net.final_proj.out_channels == UNET_CONFIG["block_out_channels"][0]
    assert tiny_models.scaling_factor == pytest.approx(0.18215)
    assert (tiny_layout.det_model.is_file(), tiny_layout.pose_model.is_file()) == (True, True)


def _copy_layout(tiny_layout, tmp_path):
    root = tmp_path / "weights"
    shutil.copytree(tiny_layout.checkpoint.parent, root)
    return root, resolve_weights(root)


def test_weights_dir_upstream_layout_is_found(tiny_layout, tmp_path):
    root, layout = _copy_layout(tiny_layout, tmp_path)
    assert layout.checkpoint == root / "MimicMotion_1-1.pth"
    assert layout.det_model == root / "DWPose" / "yolox_l.onnx"
    assert layout.svd == str(root / "SVD" / "stable-video-diffusion-img2vid-xt-1-1")
    (root / "MimicMotion_1-1.pth").rename(root / "MimicMotion.pth")  # the 1.0 name is accepted too
    assert resolve_weights(root).checkpoint == root / "MimicMotion.pth"


def test_missing_unet_key_is_named(tiny_layout, tmp_path):
    root, layout = _copy_layout(tiny_layout, tmp_path)
    state = torch.load(layout.checkpoint, weights_only=True)
    del state["unet.conv_in.weight"]
    torch.save(state, layout.checkpoint)
    with pytest.raises(WeightsError, match=r"1 missing keys \(e\.g\. unet\.conv_in\.weight\)"):
        load_reference_models(layout)


def test_unexpected_key_is_named(tiny_layout, tmp_path):
    root, layout = _copy_layout(tiny_layout, tmp_path)
    state = torch.load(layout.checkpoint, weights_only=True)
    state["unet.extra.weight"] = torch.zeros(1)
    torch.save(state, layout.checkpoint)
    with pytest.raises(WeightsError, match=r"unexpected keys \(e\.g\. unet\.extra\.weight\)"):
        load_reference_models(layout)


def test_wrong_architecture_checkpoint(tiny_layout, tmp_path):
    root, layout = _copy_layout(tiny_layout, tmp_path)
    cfg = dict(UNET_CONFIG, block_out_channels=[64, 64])
    other = PoseUNet.from_config(cfg)
    state = {f"unet.{k}": v.half() for k, v in other.state_dict().items()}
    state.update({f"pose_net.{k}": v.half() for k, v in PoseNet(64).state_dict().items()})
    torch.save(state, layout.checkpoint)
    with pytest.raises(WeightsError, match=r"shape mismatches \(e\.g\. unet\."):
        load_reference_models(layout)


def test_foreign_checkpoint_and_garbage_file(tiny_layout, tmp_path):
    root, layout = _copy_layout(tiny_layout, tmp_path)
    torch.save({"model.weight": torch.zeros(2)}, layout.checkpoint)
    with pytest.raises(WeightsError, match="outside unet./pose_net."):
        load_reference_models(layout)
    layout.checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        load_reference_models(layout)


def test_missing_subfolder(tiny_layout, tmp_path):
    root, layout = _copy_layout(tiny_layout, tmp_path)
    shutil.rmtree(root / "SVD" / "stable-video-diffusion-img2vid-xt-1-1" / "vae")
    with pytest.raises(WeightsError, match=r"lacks subfolder\(s\) vae"):
        load_reference_models(layout)


def test_missing_weights_dir_and_checkpoint(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        resolve_weights(tmp_path / "nope")
    with pytest.raises(WeightsError, match="MimicMotion checkpoint .* does not exist"):
        from mimic.model.weights import load_checkpoint

        load_checkpoint(tmp_path / "MimicMotion_1-1.pth")


def _inputs(num_frames, h=192, w=128, seed=0):
    rs = np.random.RandomState(seed)
    ref = (rs.rand(h, w, 3) * 255).astype(np.uint8)
    poses = (rs.rand(num_frames, 3, h, w) * 255).astype(np.uint8)
    return ref, poses


@pytest.fixture(scope="module")
def tiny_run(tiny_models):
    ref, poses = _inputs(11)
    pipe = MimicMotionReference(tiny_models)
    first = pipe(ref, poses, SMALL, generator=torch.Generator().manual_seed(7))
    return pipe, ref, poses, first


@pytest.mark.slow  # 11 s
def test_tiny_generation_is_deterministic_bit_for_bit(tiny_run):
    pipe, ref, poses, first = tiny_run
    assert first.frames.shape == (10, 3, 192, 128) and first.frames.dtype == np.uint8
    second = pipe(ref, poses, SMALL, generator=torch.Generator().manual_seed(7))
    assert np.array_equal(first.frames, second.frames)
    assert torch.equal(first.latents, second.latents)
    other = pipe(ref, poses, SMALL, generator=torch.Generator().manual_seed(8))
    assert not np.array_equal(first.frames, other.frames)


@pytest.mark.slow  # 5 s
def test_seeded_draws_follow_the_released_order(tiny_run):
    """pixel-augmentation noise (1,3,H,W) first, then ONE window of latent noise tiled with period T."""
    pipe, ref, poses, first = tiny_run
    g = torch.Generator().manual_seed(7)
    torch.randn((1, 3, 192, 128), generator=g)
    window_noise = torch.randn((1, SMALL.window, 4, 24, 16), generator=g)
    latents = window_noise.repeat(1, 2, 1, 1, 1)[:, :11]
    explicit = pipe(ref, poses, SMALL, latents=latents)
    assert torch.equal(explicit.latents, first.latents)


@pytest.mark.slow  # 4 s
def test_pose_changes_the_output(tiny_run):
    pipe, ref, poses, first = tiny_run
    poses2 = poses.copy()
    poses2[5] = 255 - poses2[5]
    out = pipe(ref, poses2, SMALL, generator=torch.Generator().manual_seed(7))
    assert not np.array_equal(out.frames, first.frames)


def test_reference_input_errors(tiny_models):
    pipe = MimicMotionReference(tiny_models)
    ref, poses = _inputs(5)
    with pytest.raises(InputError, match="shorter than the window of 6"):
        pipe(ref, poses, SMALL)
    ref, poses = _inputs(8, h=200)
    with pytest.raises(InputError, match="multiples of 64"):
        pipe(ref, poses, SMALL)
    ref, poses = _inputs(8)
    with pytest.raises(InputError, match="latents must have shape"):
        pipe(ref, poses, SMALL, latents=torch.zeros(1, 3, 4, 24, 16))
