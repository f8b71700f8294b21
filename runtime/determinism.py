"""What makes a job reproducible: its seeded draws and the CUDA numerics flags.

Random draws. A job draws twice from one generator seeded with its seed, in the released script's
order: the reference's pixel-augmentation noise (fp32), then one window of initial latent noise
(the job's dtype). On a GPU both are drawn there with a generator on that device, as the released
script does, so a seed gives the released script's noise on the same GPU model (PyTorch's CUDA
draws depend on the GPU's SM count, so not across models); on the CPU with a CPU generator.

Numerics flags (process-wide). TF32 is off for matmuls and convolutions: the models run in fp16,
and an fp32 run (``--precision fp32``) must be real fp32, not 10-bit-mantissa TF32. cuDNN's
autotuner (``benchmark``) picks each convolution's algorithm by timing candidates, once per process,
device and shape, so two processes (a job resumed from a checkpoint) or two GPUs (a multi-device
job) may pick different algorithms and differ in the last bits; a job that promises bit identity
runs with autotuning off and deterministic algorithms instead (somewhat slower convolutions).
"""
from __future__ import annotations

import torch


def set_cuda_numerics(deterministic: bool) -> None:
    """Set the flags explicitly: no TF32; cuDNN autotuning unless ``deterministic`` (then cuDNN's
    deterministic algorithms, chosen by heuristics: the same on every run of one GPU model)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic


def promise_bit_identity() -> None:
    """Deterministic flags from now on in this process. Never undone: the flags are process-wide, and
    turning autotuning back on could change the algorithms under a job that is still denoising."""
    if not torch.backends.cudnn.deterministic or torch.backends.cudnn.benchmark:
        set_cuda_numerics(True)


def job_noise(seed: int, device: torch.device, pixel_shape, window_shape, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (pixel-augmentation noise, fp32; one window of latent noise, ``dtype``), drawn in that
    order from one generator seeded with ``seed``: on ``device`` when it is a GPU, else on the CPU."""
    generator = torch.Generator(device=device if device.type == "cuda" else "cpu").manual_seed(seed)
    where = generator.device
    pixel = torch.randn(tuple(pixel_shape), generator=generator, device=where, dtype=torch.float32)
    window = torch.randn(tuple(window_shape), generator=generator, device=where, dtype=dtype)
    return pixel, window
