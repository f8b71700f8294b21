"""The GPU path without TensorRT: the torch CUDA backend (fp16) against the fp32 reference, the
onnxruntime CUDA provider with I/O binding, DLPack outputs and fused attention, the executor's
overlap on CUDA streams, and the denoising loop's device-side pieces (pinned pose cache, uint8
decode).

Stated bounds: every stage of the torch CUDA fp16 backend is within the spec's fp16 tolerance for
that stage (``spec.py``, measured for fp16 graphs against the fp32 model) times
``mimic.engine.validate.TOLERANCE_SCALE`` (2: the bound ``mimic validate`` uses between two fp16
runtimes), at every validation point, against the fp32 CPU reference modules. The fp16 VAE
decoder's NaN/Inf rate on realistic latents is reported (``record_property``), not bounded.

Every test carries ``@pytest.mark.gpu`` (skipped without a CUDA GPU, with the reason); tests that
need a package a bare GPU machine may lack (diffusers/transformers for the tiny preset,
onnxruntime-gpu) skip naming it.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mimic.spec import STAGES, StageName

pytestmark = pytest.mark.gpu


def _needs(*modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (not installed here)")


@pytest.fixture(scope="module")
def cuda_models(request):
    _needs("diffusers", "transformers")  # before the tiny preset is made (it needs both)
    from mimic.model.loader import load_reference_models

    return load_reference_models(request.getfixturevalue("tiny_layout"), torch.device("cuda"), torch.float16)


@pytest.fixture(scope="module")
def ref_models(request):
    _needs("diffusers", "transformers")
    return request.getfixturevalue("tiny_models")


def _module(models, stage):
    return {StageName.UNET: models.unet, StageName.POSE_NET: models.pose_net, StageName.VAE_ENCODER: models.vae,
            StageName.VAE_DECODER: models.vae, StageName.IMAGE_ENCODER: models.image_encoder}[stage]


@pytest.mark.parametrize("stage", list(STAGES))
def test_torch_cuda_fp16_stages_within_stated_bounds(cuda_models, ref_models, stage, record_property):
    from mimic.engine.validate import TOLERANCE_SCALE
    from mimic.export.compare import FRAMES_PSNR_PEAK, compare_outputs
    from mimic.export.dummy import dims_from_module, dummy_inputs
    from mimic.runtime.backend_torch import TorchBackend

    spec = STAGES[stage]
    tol = spec.tolerance("fp16")
    tol = type(tol)(tol.max_abs * TOLERANCE_SCALE, tol.max_rel * TOLERANCE_SCALE)
    gpu, cpu = TorchBackend(cuda_models), TorchBackend(ref_models)
    dims = dims_from_module(stage, _module(ref_models, stage))
    nonfinite = total = 0
    for i, point in enumerate(spec.validation_points):
        feeds = dummy_inputs(spec, point, dims, "fp32", seed=10 + i)
        ref = cpu.run(stage, feeds)
        got = gpu.run(stage, {k: v.cuda() for k, v in feeds.items()})
        for name, out in got.items():
            assert out.is_cuda and out.dtype == torch.float16
            arr = out.float().cpu().numpy()
            nonfinite += int((~np.isfinite(arr)).sum())
            total += arr.size
            row = compare_outputs(arr, ref[name].float().numpy(), tol, stage=stage, precision="fp16", point=str(point), output=name,
                                  psnr_peak=FRAMES_PSNR_PEAK if name == "frames" else None)
            if stage == StageName.VAE_DECODER:
                record_property(f"vae_decoder_fp16_{point}", {"max_abs": row.max_abs, "psnr_db": row.psnr_db, "nonfinite": row.nonfinite})
            assert row.passed, row
    record_property(f"{stage}_fp16_nonfinite_rate", nonfinite / max(total, 1))
    print(f"{stage}: fp16 CUDA non-finite rate {nonfinite / max(total, 1):.2e} ({nonfinite}/{total})")


def test_torch_cuda_fp16_vae_decoder_nan_rate(cuda_models, record_property):
    """Reported, not bounded: the fp16 temporal decoder on latents of realistic scale."""
    from mimic.runtime.backend_torch import TorchBackend

    gen = torch.Generator().manual_seed(0)
    backend = TorchBackend(cuda_models)
    bad = total = 0
    for _ in range(4):
        z = (torch.randn(6, 4, 24, 16, generator=gen) / 0.18215).cuda()
        frames = backend.run(StageName.VAE_DECODER, {"latents": z})["frames"]
        bad += int((~torch.isfinite(frames)).sum())
        total += frames.numel()
    record_property("vae_decoder_fp16_nan_rate", bad / total)
    print(f"fp16 VAE decoder NaN/Inf rate: {bad / total:.2e} ({bad}/{total})")


def test_torch_cuda_job_matches_cpu_reference_closely(tiny_cache, tmp_path, record_property, monkeypatch):
    """A whole job on the torch CUDA backend (fp16) vs the CPU (fp32), from the same noise (a CUDA job
    draws its own on the GPU, so the CPU's draws are handed to both here): the difference is reported;
    frames must be finite and on average within 8/255 (fp16 over 2 steps of a tiny random model)."""
    _needs("diffusers", "transformers")
    from gpu_helpers import cpu_noise_everywhere, pose_frame_jobs, read_png_frames
    from mimic.runtime.api import MimicMotion, RuntimeOptions

    cpu_noise_everywhere(monkeypatch)

    outs = {}
    for device in ("cpu", "cuda"):
        (job,) = pose_frame_jobs(tmp_path / device, 1)
        with MimicMotion.from_preset("tiny", RuntimeOptions(backend="torch", device=device)) as mm:
            assert mm.render(job).error is None
        outs[device] = read_png_frames(job.out).astype(np.float64)
    diff = np.abs(outs["cuda"] - outs["cpu"])
    record_property("torch_cuda_fp16_vs_cpu_frames", {"mean_abs": diff.mean(), "max_abs": diff.max()})
    print(f"torch CUDA fp16 vs CPU fp32 frames: mean |diff| {diff.mean():.2f}/255, max {diff.max():.0f}/255")
    assert diff.mean() <= 8.0


def test_executor_overlap_on_torch_cuda_is_byte_identical_to_sequential(tiny_cache, tmp_path):
    _needs("diffusers", "transformers")
    from gpu_helpers import pose_frame_jobs, read_png_frames
    from mimic.runtime.executor import JobExecutor
    from mimic.runtime.api import MimicMotion, RuntimeOptions

    jobs = {mode: pose_frame_jobs(tmp_path / mode, 3) for mode in ("sequential", "overlap")}
    with MimicMotion.from_preset("tiny", RuntimeOptions(backend="torch", device="cuda")) as mm:
        for mode, overlap in (("sequential", False), ("overlap", True)):
            reports = JobExecutor(mm, overlap=overlap).run(jobs[mode])
            assert all(r.error is None for r in reports), [r.error for r in reports]
    for a, b in zip(jobs["sequential"], jobs["overlap"]):
        assert (read_png_frames(a.out) == read_png_frames(b.out)).all()


def test_pinned_pose_cache_and_device_decode_keep_results(cuda_models, ref_models):
    """Budget 0 on the device with a pinned host cache (uploads per use) gives the same latents as
    the device cache; frames become uint8 on the device."""
    from mimic.model.config import GenerationConfig
    from mimic.pose.images import ArrayPoses
    from mimic.runtime.backend_torch import TorchBackend
    from mimic.runtime.denoise import Conditioning, denoise, plan_denoise
    from mimic.runtime.pipeline import decode_frames

    backend = TorchBackend(cuda_models)
    config = GenerationConfig(steps=2, window=6, overlap=2)
    frames, h, w = 14, 24, 16
    gen = torch.Generator().manual_seed(0)
    poses = ArrayPoses((torch.rand(frames, 3, h * 8, w * 8, generator=gen) * 255).to(torch.uint8).numpy())
    cond = Conditioning(torch.randn(2, 1, cuda_models.unet.config.cross_attention_dim, generator=gen).half().cuda(),
                        torch.randn(2, 4, h, w, generator=gen).half().cuda(), torch.tensor([[6.0, 127.0, 0.02]] * 2).half().cuda())
    noise = torch.randn(1, frames, 4, h, w, generator=gen).half()
    base = plan_denoise(frames, config, ref_models.scheduler, torch.float16, torch.device("cuda"))
    assert base.pose_cache_bytes > 0 and base.pose_host_cache_bytes > 0
    import dataclasses

    pinned = dataclasses.replace(base, pose_cache_bytes=0)
    a = denoise(backend, base, cond, poses, noise.cuda() * base.schedule.init_noise_sigma)
    b = denoise(backend, pinned, cond, poses, noise.cuda() * base.schedule.init_noise_sigma)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    chunks = list(decode_frames(backend, a, 0.18215, 8))
    assert all(c.dtype == np.uint8 for _, c in chunks)


@pytest.fixture(scope="module")
def ort_cuda():
    from mimic.ort_session import cuda_available, installed_distributions

    if not cuda_available():
        pytest.skip(f"onnxruntime has no CUDA provider here (installed: {', '.join(installed_distributions()) or 'none'}); "
                    "install onnxruntime-gpu (the `gpu` extra)")


def test_onnxruntime_cuda_with_io_binding_fused_and_dlpack(ort_cuda, ref_models, tmp_path):
    from mimic.export.attention import FUSED_SUFFIX
    from mimic.export.compare import compare_outputs
    from mimic.export.dummy import dims_from_module, dummy_inputs
    from mimic.export.onnx_export import export_stage
    from mimic.runtime.backend_ort import OnnxRuntimeBackend

    spec = STAGES[StageName.UNET]
    _needs("onnx")
    path = export_stage(spec, ref_models.unet, tmp_path, "fp16").path
    gpu = OnnxRuntimeBackend({"unet": path}, device="cuda")
    cpu = OnnxRuntimeBackend({"unet": path}, device="cpu")
    feeds = dummy_inputs(spec, spec.validation_points[0], dims_from_module("unet", ref_models.unet), "fp16", seed=3)
    got = gpu.run("unet", {k: v.cuda() for k, v in feeds.items()})["noise_pred"]
    assert got.is_cuda  # bound on the device and handed over by DLPack, no host round trip
    assert gpu.paths["unet"].name.endswith(FUSED_SUFFIX)
    assert "CUDAExecutionProvider" in gpu.session("unet").get_providers()
    ref = cpu.run("unet", feeds)["noise_pred"]
    row = compare_outputs(got.float().cpu().numpy(), ref.float().numpy(), spec.tolerance("fp16"), stage="unet", precision="fp16",
                          point="validation", output="noise_pred")
    assert row.passed, row
