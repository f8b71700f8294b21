"""Memory preflight: estimate a job's peak host memory from the spec shapes before any model loads,
and refuse a job that cannot fit with a line that says what to lower (instead of being killed by the
kernel's OOM killer with no message, or failing after minutes of work).

What dominates at high resolution is attention over the UNet's first (largest) spatial level: its
score tensor has ``2F x heads x T^2`` elements (CFG pair x window frames, T = (H/8)(W/8) tokens),
held in fp32. onnxruntime runs the exported MatMul-Softmax-MatMul attention and keeps about five
score-sized tensors alive at its peak (measured: tiny preset, window 4, 1 step, 256 vs 384 px on
the CPU: 2.09 vs 5.76 GB peak RSS, a growth of 4.97 score tensors); PyTorch's eager attention keeps
about two. The VAE decoder's mid-block attention adds ``chunk x T^2`` scores. The rest (weights,
process, runtime libraries) is a measured base of about 1.1 GB plus the weights.

On a CUDA device the attention kernels (PyTorch SDPA, TensorRT) do not materialise the scores, so
only the weights are checked against the device's free memory.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mimic.errors import InputError
from mimic.export.freshness import SvdFolder
from mimic.mimicmotion_ref.config import GenerationConfig
from mimic.mimicmotion_ref.preprocess import target_size

GB = 1 << 30
BASE_BYTES = int(1.1 * GB)  # process + torch + onnxruntime + DWPose, measured on the tiny preset
SCORE_COPIES = {"onnxruntime": 5.0, "torch": 2.0, "tensorrt": 0.0}


@dataclass(frozen=True)
class MemoryEstimate:
    peak_bytes: int
    weights_bytes: int
    attention_bytes: int  # one score tensor of the largest attention

    def gb(self) -> str:
        return f"{self.peak_bytes / GB:.1f} GB"


def _unet_attention(svd_dir: Path) -> tuple[int, int]:
    """(heads at the first down level, spatial downsampling of the first attention level)."""
    cfg = json.loads((Path(svd_dir) / SvdFolder.UNET / "config.json").read_text())
    heads = cfg.get("num_attention_heads", 8)
    heads0 = int(heads[0] if isinstance(heads, (list, tuple)) else heads)
    return heads0, 1


def _weights_bytes(layout, svd_dir: Path, fp32: bool) -> int:
    files = [Path(layout.checkpoint)] + [p for sub in (SvdFolder.VAE, SvdFolder.IMAGE_ENCODER) for p in (Path(svd_dir) / sub).glob("*.safetensors")]
    stored = sum(p.stat().st_size for p in files if p.is_file())
    return stored * (2 if fp32 else 1)  # released weights are fp16; an fp32 run holds them at twice the size


def estimate_job_memory(layout, svd_dir: Path, config: GenerationConfig, backend: str, fp32: bool, portrait: bool = True) -> MemoryEstimate:
    height, width = target_size(2, 1, config.resolution) if portrait else target_size(1, 2, config.resolution)
    tokens = (height // 8) * (width // 8)
    heads0, _ = _unet_attention(svd_dir)
    unet_scores = 2 * config.window * heads0 * tokens * tokens * 4
    vae_scores = min(config.decode_chunk, config.window) * tokens * tokens * 4
    scores = max(unet_scores, vae_scores)
    weights = _weights_bytes(layout, svd_dir, fp32)
    peak = BASE_BYTES + weights + int(SCORE_COPIES.get(backend, 5.0) * scores)
    return MemoryEstimate(peak, weights, scores)


def available_host_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def preflight(layout, config: GenerationConfig, backend: str, device: str, fp32: bool, available: int | None = None) -> MemoryEstimate:
    """InputError when the job's estimated peak exceeds the memory available now."""
    from mimic.mimicmotion_ref.weights import fetch_svd

    svd_dir = fetch_svd(layout.svd)
    if device.startswith("cuda"):
        import torch

        est = MemoryEstimate(BASE_BYTES + _weights_bytes(layout, svd_dir, fp32), _weights_bytes(layout, svd_dir, fp32), 0)
        free = available if available is not None else torch.cuda.mem_get_info(torch.device(device))[0]
        where = f"on {device}"
        need = est.weights_bytes
    else:
        est = estimate_job_memory(layout, svd_dir, config, backend, fp32)
        free = available if available is not None else available_host_bytes()
        where = "of host memory"
        need = est.peak_bytes
    if need > free:
        raise InputError(
            f"this job needs ~{need / GB:.1f} GB {where}, {free / GB:.1f} GB available "
            f"(--resolution {config.resolution}, --window {config.window}, {backend}): lower --resolution, --window or --decode-chunk"
        )
    return est
