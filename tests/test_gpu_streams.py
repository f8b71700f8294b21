"""GPU-path stream order, host syncs and seeded draws on a real GPU (``tests/test_gpu_defects.py``
checks the same on the CPU with fakes). Needs no weights, PyAV or diffusers: the backend is
``gpu_helpers.TorchFakeBackend`` (plain torch ops on the device), and mimic is imported inside the
tests, only modules that do not load av or diffusers.

* multi-device decode: a decoder that keeps the GPU busy (``torch.cuda._sleep``) before it writes
  its frames, on two workers of ``cuda:0,cuda:0`` with a job stream: every frame is the written one;
* host syncs of the denoising loop: one per step (the NaN/Inf check) once the first step has
  uploaded what it caches; ``gpu_helpers.count_syncs_per_window`` prints the counts;
* the seeded draws on a GPU are the released script's: a generator on the device, pixel noise fp32
  then one window of latent noise in the job's dtype.
"""
from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="gpu test: PyTorch sees no CUDA GPU here")]

SLEEP = 200_000_000  # GPU cycles (~0.1 s): far longer than launching the reads that follow


def _latents():
    torch.manual_seed(0)
    return torch.randn(1, 13, 4, 5, 6, device="cuda:0")


def test_parallel_decode_reads_frames_after_the_decoder_wrote_them():
    from gpu_helpers import TorchFakeBackend, expected_frames

    from mimic.runtime.parallel import decode_parallel

    latents = _latents()
    want = expected_frames(latents, 0.5)
    job = torch.cuda.Stream("cuda:0")
    backends = [TorchFakeBackend("cuda:0", SLEEP), TorchFakeBackend("cuda:0", SLEEP)]
    with torch.cuda.stream(job):
        chunks = list(decode_parallel(backends, latents, 0.5, 4, stream=job))
    assert [s for s, _ in chunks] == [0, 4, 8, 12]
    assert np.array_equal(np.concatenate([f for _, f in chunks]), want)


def test_decode_chunk_orders_its_reads_after_the_decoder_on_any_thread():
    """The stream handed to ``decode_chunk`` need not be current in the calling thread."""
    from gpu_helpers import TorchFakeBackend, expected_frames

    from mimic.runtime.decode import decode_chunk

    latents = _latents()
    z = latents.flatten(0, 1) / 0.5
    torch.cuda.synchronize()
    job = torch.cuda.Stream("cuda:0")
    with ThreadPoolExecutor(1) as pool:
        got = pool.submit(decode_chunk, TorchFakeBackend("cuda:0", SLEEP), z, 0, job).result()
    assert np.array_equal(got, expected_frames(latents, 0.5))


def test_unordered_decode_reads_stale_frames_informative():
    """The ordering before the fix (reads on the thread's own stream, the decoder on the job stream):
    shows that the race is real on this GPU. Informative: warns, never fails."""
    from gpu_helpers import TorchFakeBackend, expected_frames

    from mimic.spec import StageName
    from mimic.spec import TensorName as N

    latents = _latents()
    z = latents.flatten(0, 1) / 0.5
    torch.cuda.synchronize()
    job, backend = torch.cuda.Stream("cuda:0"), TorchFakeBackend("cuda:0", SLEEP)

    def old_order():
        with torch.cuda.device(0), torch.inference_mode():
            frames = backend.run(StageName.VAE_DECODER, {N.LATENTS: z}, job)[N.FRAMES]
            return ((frames.float() / 2 + 0.5).clamp(0, 1) * 255.0).to(torch.uint8).cpu().numpy()

    with ThreadPoolExecutor(1) as pool:
        got = pool.submit(old_order).result()
    torch.cuda.synchronize()
    stale = not np.array_equal(got, expected_frames(latents, 0.5))
    warnings.warn(f"decode without stream order read {'stale' if stale else 'correct (this time)'} frames")


def test_denoising_syncs_the_host_once_per_step():
    from gpu_helpers import count_syncs_per_window

    counts = count_syncs_per_window()
    print(f"host syncs: {counts}")
    assert all(n <= 1 for n in counts["per_step"][1:]), counts  # the NaN/Inf check
    assert counts["per_step"][0] <= 2 * counts["windows"] + 8, counts  # PoseNet uploads + per-job constants


def test_cuda_draws_are_the_released_scripts():
    from mimic.runtime.determinism import job_noise

    pixel_shape, window_shape = (1, 3, 64, 48), (1, 8, 4, 8, 6)
    pixel, window = job_noise(42, torch.device("cuda"), pixel_shape, window_shape, torch.float16)
    g = torch.Generator(device="cuda").manual_seed(42)
    assert pixel.is_cuda and pixel.dtype == torch.float32 and window.dtype == torch.float16
    assert torch.equal(pixel, torch.randn(pixel_shape, generator=g, device="cuda", dtype=torch.float32))
    assert torch.equal(window, torch.randn(window_shape, generator=g, device="cuda", dtype=torch.float16))


def test_parallel_denoise_on_one_gpu_twice_equals_one_worker():
    """Two workers on ``cuda:0`` with index tensors on the device: the same bits as one worker."""
    from gpu_helpers import TorchFakeBackend

    from mimic.model.config import GenerationConfig
    from mimic.model.scheduler import SchedulerConfig
    from mimic.pose.images import ArrayPoses
    from mimic.runtime.denoise import Conditioning, denoise, plan_denoise
    from mimic.runtime.parallel import denoise_parallel

    dev = torch.device("cuda:0")
    torch.manual_seed(1)
    config = GenerationConfig(window=8, overlap=7, steps=3, guidance_min=1.5, guidance_max=2.5)
    plan = plan_denoise(19, config, SchedulerConfig(), torch.float16, dev, pose_cache_bytes=1 << 30)
    cond = Conditioning(torch.randn(2, 1, 8, device=dev), torch.randn(2, 4, 4, 3, device=dev), torch.randn(2, 3, device=dev))
    poses = ArrayPoses(np.random.default_rng(1).integers(0, 255, (19, 3, 32, 24), dtype=np.uint8))
    latents = torch.randn(1, 19, 4, 4, 3, device=dev).half()
    job = torch.cuda.Stream(dev)
    with torch.cuda.stream(job):
        one = denoise(TorchFakeBackend(dev), plan, cond, poses, latents.clone(), stream=job)
        many = denoise_parallel([TorchFakeBackend(dev), TorchFakeBackend(dev)], plan, cond, poses, latents.clone(), stream=job)
    torch.cuda.synchronize()
    assert torch.equal(one, many)
