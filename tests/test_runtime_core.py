"""Runtime generation vs the reference, on the torch backend (tiny, fp32, CPU)."""
import numpy as np
import pytest
import torch

from mimic.errors import NumericsError
from mimic.model.config import GenerationConfig
from mimic.mimicmotion_ref.pipeline import MimicMotionReference
from mimic.model.model_info import ModelInfo
from mimic.pose.images import as_pose_images
from mimic.runtime.backend_torch import TorchBackend
from mimic.runtime.inputs import JobInputs
from mimic.runtime.pipeline import Components, FrameCollector, Hooks, generate, in_memory_job

CFG = GenerationConfig(resolution=128, window=6, overlap=2, steps=3, guidance_min=1.5, guidance_max=2.5, decode_chunk=4)


class CountingBackend:
    """Wraps a backend, counting calls per stage and optionally corrupting the UNet output."""

    def __init__(self, inner, poison_unet_call: int | None = None):
        self.inner, self.name, self.device = inner, "counting", inner.device
        self.calls: dict[str, int] = {}
        self.poison = poison_unet_call

    def run(self, stage, feeds, stream=None):
        self.calls[stage] = self.calls.get(stage, 0) + 1
        out = self.inner.run(stage, feeds, stream)
        if stage == "unet" and self.calls[stage] == self.poison:
            out = {"noise_pred": out["noise_pred"].clone().fill_(float("nan"))}
        return out

    def close(self):
        pass


def _inputs(num_frames=11, seed=0):
    rs = np.random.RandomState(seed)
    return (rs.rand(192, 128, 3) * 255).astype(np.uint8), (rs.rand(num_frames, 3, 192, 128) * 255).astype(np.uint8)


class _FinalLatents(Hooks):
    def on_step_end(self, step, num_steps, latents):
        if step == num_steps:
            self.latents = latents.clone()


def _render(backend, info, ref, poses, cfg, seed, noise=None):
    """(final latents, output frames) of one job through ``generate`` (frames 1..F-1)."""
    components = Components(backend=backend, info=info, dtype=torch.float32, base_config=cfg.with_overrides(seed=seed), detector=None)
    hooks, sink = _FinalLatents(), FrameCollector()
    inputs = JobInputs(ref, as_pose_images(poses), poses.shape[0] - 1, cfg.output_fps)
    generate(components, in_memory_job(components.base_config), inputs=inputs, sink=sink, hooks=hooks, noise=noise)
    return hooks.latents, sink.frames()


@pytest.fixture(scope="module")
def reference_result(tiny_models):
    ref, poses = _inputs()
    return MimicMotionReference(tiny_models)(ref, poses, CFG, generator=torch.Generator().manual_seed(3))


def test_torch_backend_matches_reference(tiny_models, reference_result):
    ref, poses = _inputs()
    backend = CountingBackend(TorchBackend(tiny_models))
    latents, frames = _render(backend, ModelInfo.from_models(tiny_models), ref, poses, CFG, 3)
    # batch-2 CFG changes only float summation order: final latents within 1e-4, frames within 1/255
    assert (latents - reference_result.latents).abs().max().item() <= 1e-4
    assert np.abs(frames.astype(int) - reference_result.frames.astype(int)).max() <= 1
    assert frames.shape == reference_result.frames.shape
    windows = 3  # F=11, T=6, O=2: [0..5], [0,5..9], tail [0,6..10]
    assert backend.calls["unet"] == CFG.steps * windows  # one batched CFG call per window per step
    assert backend.calls["pose_net"] == windows  # PoseNet once per window, reused by every step
    assert backend.calls["vae_decoder"] == 3  # ceil(11 / 4) chunks


@torch.no_grad()
def test_batched_cfg_equals_two_calls(tiny_models):
    backend = TorchBackend(tiny_models)
    g = torch.Generator().manual_seed(0)
    feeds = {
        "sample": torch.randn(2, 4, 8, 6, 4, generator=g),
        "timestep": torch.full((2,), 0.3),
        "encoder_hidden_states": torch.randn(2, 1, 32, generator=g),
        "added_time_ids": torch.tensor([[6.0, 127.0, 0.0]] * 2),
        "pose_latents": torch.cat([torch.zeros(4, 32, 6, 4), torch.randn(4, 32, 6, 4, generator=g)]),
    }
    both = backend.run("unet", feeds)["noise_pred"]
    u = tiny_models.unet(feeds["sample"][:1], torch.tensor(0.3), feeds["encoder_hidden_states"][:1], feeds["added_time_ids"][:1], pose_latents=None)
    c = tiny_models.unet(feeds["sample"][1:], torch.tensor(0.3), feeds["encoder_hidden_states"][1:], feeds["added_time_ids"][1:], pose_latents=feeds["pose_latents"][4:])
    torch.testing.assert_close(both, torch.cat([u, c]), rtol=1e-5, atol=1e-5)


def test_nan_in_unet_output_fails_loudly(tiny_models):
    ref, poses = _inputs()
    backend = CountingBackend(TorchBackend(tiny_models), poison_unet_call=2)
    with pytest.raises(NumericsError, match=r"NaN/Inf values in the latents after step 1/3: stopping instead of writing broken frames \(try another backend\)"):
        _render(backend, ModelInfo.from_models(tiny_models), ref, poses, CFG, 3)


def test_onnxruntime_backend_matches_reference_on_identical_noise(tiny_layout, tiny_models, reference_result):
    from mimic.runtime.backend_ort import OnnxRuntimeBackend
    from mimic.runtime.onnx_cache import ensure_onnx_graphs

    ref, poses = _inputs()
    graphs = ensure_onnx_graphs(tiny_layout, "fp32", None)
    # identical noise: the draws the reference made for seed 3 (pixel noise, then one window of latents)
    g = torch.Generator().manual_seed(3)
    torch.randn((1, 3, 192, 128), generator=g)
    noise = torch.randn((1, CFG.window, 4, 24, 16), generator=g).repeat(1, 2, 1, 1, 1)[:, :11]
    latents, frames = _render(OnnxRuntimeBackend(graphs), ModelInfo.from_models(tiny_models), ref, poses, CFG, 3, noise=noise)
    assert (latents - reference_result.latents).abs().max().item() <= 1e-4
    assert np.abs(frames.astype(int) - reference_result.frames.astype(int)).max() <= 1
