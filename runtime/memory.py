"""Memory preflight: estimate a job's peak host (or CUDA device) memory from the spec shapes before
any model loads, and refuse a job that cannot fit with a line that says what to lower (instead of
being killed by the kernel's OOM killer with no message, or failing after minutes of work).

On the CPU (:func:`estimate_job_memory`, onnxruntime) every worker (``--device cpu,cpu``: one
backend each, see ``MimicMotion._make_backend``) has its own sessions, and a session's arena keeps
what its largest run used until the process ends: the UNet's, PoseNet's and the VAE decoder's
arenas are all held at the end of a job, in every worker (windows and decode chunks are split over
the workers, so each one runs both). onnxruntime's CPU arena holds a stage's activations about
twice: the first run allocates tensor by tensor, later runs take one block of the planned
size (``enable_mem_pattern``) beside it (a worker that runs a stage only once holds about half).
Per worker, calibrated on the tiny preset (benchmarks/preflight_bench.py: 128 to 320 px x 1, 2, 4
workers at window 16, and 384 px at window 4; each stage alone and inside a job):

* UNet: ``UNET_COPIES`` = 4.5 score tensors of the first spatial attention, ``2F x heads x T^2``
  fp32 (CFG pair x window frames, T = (H/8)(W/8) tokens);
* PoseNet: ``POSE_BYTES_PER_PIXEL`` = 300 B per output pixel and window frame (its full-resolution
  convolutions; the same layers in the tiny and the released model);
* VAE decoder, one ``--decode-chunk`` of frames: ``VAE_COPIES`` = 9 full-resolution activations of
  its ``block_out_channels[1]`` channels, or ``UNET_COPIES`` score tensors of its mid-block attention
  (``chunk x T^2``) where those are larger (at full size: the two peak at different times);
* its weights and sessions (``WORKER_BYTES``).

Once per process: ``BASE_BYTES`` (interpreter, torch, onnxruntime, DWPose, the inputs) and the VAE
encoder's arena for the reference image (``ENCODE_COPIES`` full-resolution activations of the VAE's
``block_out_channels[0]`` channels). ``processes`` separate worker processes on one machine (the
farm's local workers) each hold all of it. PyTorch (uncalibrated) frees activations after each
call and shares one copy of the modules among the workers of a device: it counts ``2 x`` the larger
score tensor per worker.

On a CUDA device (:func:`estimate_cuda_job_memory`) the attention kernels (PyTorch SDPA, the fused
onnxruntime graphs, TensorRT) do not materialise the scores; the largest activations that do exist
are counted instead, in channels of one first-level UNet activation of the CFG pair (``2F x T``
positions; c0, c1 = the UNet's ``block_out_channels[0:2]``), and checked with the weights against
the device's free memory (``torch.cuda.mem_get_info``). At 576x1024, window 72, fp16 (T = 72 x 128
= 9216, c0 = 320, c1 = 640) one channel is 2 x 72 x 9216 x 2 B = 2.65e6 B, and:

* the feed-forward's GEGLU: its projection output has 8 c0 = 2560 channels (value and gate, 4 c0
  each): 6.8e9 B, the "one GEGLU activation"; while it lives, GELU(gate) and the product (4 c0
  each) are made: 16 c0 = 13.6e9 B;
* a resnet: the up path's widest input (c0 + c1 = 960 channels: upsampled features + skip) with its
  GroupNorm and SiLU outputs, 3 (c0 + c1) = 7.6e9 B; below the GEGLU, so the larger of the two counts;
* held meanwhile: the pose latents (c0), three first-level skip connections (3 c0), the
  transformer's input residual (c0), the spatial output kept for time mixing (c0), the temporal
  block's token-major copy and its norm (2 c0): 8 c0 = 6.8e9 B;
* UNet total: (16 + 8) c0 = 7680 channels = 20.4e9 B = 19.0 GB (GB = 2^30 B, as in the messages);
* VAE decoder, one decode chunk at full resolution: the last upsampler delivers the VAE's
  ``block_out_channels[1]`` = 256 channels at H x W, and the first full-resolution resnet holds its
  input, GroupNorm and SiLU outputs at once: 8 x 576 x 1024 x 3 x 256 x 2 B = 7.2e9 B = 6.8 GB.

Peak = ``CUDA_BASE_BYTES`` + weights + ``CUDA_CALIBRATION`` x max(UNet, VAE) = 1 + 1.25 x 19.0 =
24.7 GB plus the weights (about 4.5 GB): a 24 GB card is refused, a 40 or 80 GB one is not. Workers
sharing the device (``--device cuda:0,cuda:0``) each add the activations, and the weights but for
torch (modules shared per device). Within one job the UNet and the decoder run one after the other;
overlapped jobs (``mimic run``'s executor) can decode one job beside the next one's denoising, which
this per-job check does not add.

When the backend is already loaded (``loaded=True``: ``MimicMotion.render``) its weights are on the
device and are not counted again, the free memory includes the blocks torch's caching allocator
holds unused, and a job no bigger than one already cleared on that device passes without a new
measurement (onnxruntime's arena and TensorRT's activation block keep what the earlier job used).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mimic.errors import InputError
from mimic.export.freshness import SvdFolder
from mimic.model.config import GenerationConfig
from mimic.model.preprocess import target_size

GB = 1 << 30
# Host memory, onnxruntime on the CPU (module docstring; benchmarks/RESULTS.md, "Memory preflight calibration").
BASE_BYTES = int(0.68 * GB)  # interpreter, torch, onnxruntime, DWPose, a job's inputs: once per process
ENCODE_COPIES = 6.0  # x H x W x VAE channels[0] x 4 B: the VAE encoder's arena (reference image), once per process
WORKER_BYTES = 32 << 20  # one worker's sessions and thread pool, besides its weights
UNET_COPIES = 4.5  # x the first spatial attention's fp32 scores: the UNet arena (first run + planned block)
POSE_BYTES_PER_PIXEL = 300  # per output pixel and window frame: the PoseNet arena
VAE_COPIES = 9.0  # x decode chunk x H x W x VAE channels[1] x 4 B: the VAE decoder arena
TORCH_SCORE_COPIES = 2.0  # PyTorch eager attention (uncalibrated): live score tensors per worker
# CUDA (module docstring). Both constants are guesses, uncalibrated on a GPU until the device check
# (benchmarks/gpu_check.py) measures the peak of a 72-frame UNet CFG pair and of one VAE decode
# chunk: CUDA_CALIBRATION then becomes measured peak / formula (MemoryEstimate.unet_bytes,
# vae_bytes). 1.25: room for the caching allocator's fragmentation and the temporaries the count
# leaves out; 1 GB: cuBLAS/cuDNN handles and workspaces, onnxruntime's CUDA provider, DWPose on the GPU.
CUDA_CALIBRATION = 1.25
CUDA_BASE_BYTES = 1 * GB
GEGLU_CHANNELS = 16  # x c0: projection output (8 c0) + GELU(gate) (4 c0) + product (4 c0)
HELD_CHANNELS = 8  # x c0: pose latents, three skips, residual, spatial output, temporal copy + norm
SVD_UNET_CHANNELS = [320, 640, 1280, 1280]  # SVD's block_out_channels, for a config without them
SVD_VAE_CHANNELS = [128, 256, 512, 512]  # the temporal decoder's, likewise (or no VAE config at all)
NO_CUDA_TORCH = "--device cuda: PyTorch here has no CUDA (cpu-only build)"
_cleared: dict[str, int] = {}  # device -> the largest activation need a loaded backend has cleared there


@dataclass(frozen=True)
class MemoryEstimate:
    peak_bytes: int
    weights_bytes: int
    attention_bytes: int  # one score tensor of the largest attention (0 on CUDA: not materialised)
    unet_bytes: int = 0  # CUDA: the UNet CFG pair's activations, before calibration
    vae_bytes: int = 0  # CUDA: one VAE decode chunk's activations, before calibration

    def gb(self) -> str:
        return f"{self.peak_bytes / GB:.1f} GB"


def _read_config(svd_dir: Path, sub: str) -> dict | None:
    path = Path(svd_dir) / sub / "config.json"
    return json.loads(path.read_text()) if path.is_file() else None


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


def estimate_job_memory(layout, svd_dir: Path, config: GenerationConfig, backend: str, fp32: bool, portrait: bool = True,
                        workers: int = 1, processes: int = 1) -> MemoryEstimate:
    """A job's peak host memory from the spec shapes (module docstring): ``workers`` in-process
    workers (each with its own sessions and arenas), in each of ``processes`` processes on this machine."""
    height, width = target_size(2, 1, config.resolution) if portrait else target_size(1, 2, config.resolution)
    tokens = (height // 8) * (width // 8)
    heads0, _ = _unet_attention(svd_dir)
    unet_scores = 2 * config.window * heads0 * tokens * tokens * 4
    vae_scores = config.decode_chunk * tokens * tokens * 4
    vae_channels = list((_read_config(svd_dir, SvdFolder.VAE) or {}).get("block_out_channels") or SVD_VAE_CHANNELS)
    weights = _weights_bytes(layout, svd_dir, fp32)
    process = BASE_BYTES + ENCODE_COPIES * height * width * vae_channels[0] * 4
    if backend == "torch":  # one copy of the modules per device; activations freed after each call
        process += weights + workers * TORCH_SCORE_COPIES * max(unet_scores, vae_scores)
    else:  # every worker's sessions hold their weights and keep each stage's arena
        full_res = config.decode_chunk * height * width * vae_channels[1 if len(vae_channels) > 1 else 0] * 4
        arenas = (UNET_COPIES * unet_scores + POSE_BYTES_PER_PIXEL * config.window * height * width
                  + max(VAE_COPIES * full_res, UNET_COPIES * vae_scores))
        process += workers * (weights + WORKER_BYTES + arenas)
    return MemoryEstimate(int(processes * process), weights, max(unet_scores, vae_scores))


def estimate_cuda_job_memory(unet_config: dict, vae_config: dict | None, config: GenerationConfig, fp32: bool,
                             weights_bytes: int = 0, workers: int = 1) -> MemoryEstimate:
    """A job's peak device memory on CUDA from the UNet and VAE configs (``config.json`` contents;
    no weights needed): the formula of the module docstring, with the activations of ``workers``
    workers on this one device (``--device cuda:0,cuda:0``: they run windows at once) and
    ``weights_bytes`` all the weights they hold there. ``unet_bytes``/``vae_bytes`` are one worker's
    uncalibrated terms, to compare with a measured peak."""
    height, width = target_size(2, 1, config.resolution)
    tokens = (height // 8) * (width // 8)
    itemsize = 4 if fp32 else 2
    channels = list(unet_config.get("block_out_channels") or SVD_UNET_CHANNELS)
    c0, c1 = channels[0], channels[1 if len(channels) > 1 else 0]
    per_channel = 2 * config.window * tokens * itemsize  # one first-level channel of the CFG pair
    unet = per_channel * (max(GEGLU_CHANNELS * c0, 3 * (c0 + c1)) + HELD_CHANNELS * c0)
    vae_channels = list((vae_config or {}).get("block_out_channels") or SVD_VAE_CHANNELS)
    full_res = vae_channels[1 if len(vae_channels) > 1 else 0]
    vae = min(config.decode_chunk, config.window) * height * width * itemsize * 3 * full_res
    peak = CUDA_BASE_BYTES + weights_bytes + workers * int(CUDA_CALIBRATION * max(unet, vae))
    return MemoryEstimate(peak, weights_bytes, 0, unet, vae)


def free_device_bytes(device: str) -> int:
    """Free memory on a CUDA device now, plus the blocks torch's caching allocator holds unused (this
    process reuses them); a one-line InputError where PyTorch cannot reach the device."""
    import torch

    if not torch.backends.cuda.is_built():
        raise InputError(NO_CUDA_TORCH)
    dev = torch.device(device)
    try:
        free = torch.cuda.mem_get_info(dev)[0]
    except AssertionError:  # "Torch not compiled with CUDA enabled"
        raise InputError(NO_CUDA_TORCH) from None
    except RuntimeError as err:  # no driver, no GPU, no such index
        raise InputError(f"--device {device}: PyTorch cannot use it ({(str(err).strip().splitlines() or ['no detail'])[0][:160]})") from None
    return int(free + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev))


def available_host_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def preflight(layout, config: GenerationConfig, backend: str, device: str, fp32: bool, available: int | None = None,
              loaded: bool = False, workers: int = 1, processes: int = 1) -> MemoryEstimate:
    """InputError when the job's estimated peak exceeds the memory available now. ``loaded``: the
    backend's weights are already on ``device`` (see the module docstring). ``workers``: in-process
    workers on ``device`` (the ``--device`` list's entries equal to it: each runs windows and decode
    chunks at once beside the others); ``processes``: separate worker processes on this machine
    (the farm's local workers), each holding all of it."""
    from mimic.model.weights import fetch_svd

    if workers < 1 or processes < 1:
        raise ValueError(f"workers and processes must be >= 1, got {workers} and {processes}")
    svd_dir = fetch_svd(layout.svd)
    if device.startswith("cuda"):
        weights = _weights_bytes(layout, svd_dir, fp32) * (1 if backend == "torch" else workers)  # torch shares modules per device
        est = estimate_cuda_job_memory(_read_config(svd_dir, SvdFolder.UNET) or {}, _read_config(svd_dir, SvdFolder.VAE), config, fp32,
                                       weights, workers)
        need = processes * (est.peak_bytes - (est.weights_bytes if loaded else 0))
        if loaded and need <= _cleared.get(device, 0):
            return est
        free = available if available is not None else free_device_bytes(device)
        where, detail = f"on {device}", f", --decode-chunk {config.decode_chunk}"
    else:
        est = estimate_job_memory(layout, svd_dir, config, backend, fp32, workers=workers, processes=processes)
        free = available if available is not None else available_host_bytes()
        where, detail = "of host memory", ""
        need = est.peak_bytes
    count = "".join(f", {n} {what}" for n, what in ((workers, "workers"), (processes, "processes")) if n > 1)
    if need > free:
        raise InputError(
            f"this job needs ~{need / GB:.1f} GB {where}, {free / GB:.1f} GB available "
            f"(--resolution {config.resolution}, --window {config.window}{detail}, {backend}{count}): lower --resolution, --window or --decode-chunk"
        )
    if loaded and device.startswith("cuda"):
        _cleared[device] = max(need, _cleared.get(device, 0))
    return est
