"""Wall time and peak host memory against video length: which costs grow with the number of frames.

Each point (one video length) runs in its own Python process, so its peak RSS (the kernel's
high-water mark, ``VmHWM``) belongs to that point alone.
The child loads the models (onnxruntime sessions are created there), runs one untimed warm-up job
of one window and one step (first-call costs: allocator arenas, kernel selection; its seconds are
recorded as ``warmup_s``, never in the per-frame figures), builds the synthetic job (reference +
dance, padded to one window), then times encode, denoise and streamed decode (the reference
pipeline: its one call) while a thread samples RSS; it prints one JSON line that the parent turns
into a ``scaling`` record.

What grows with length: denoising (windows x steps) and decoding (frames) in time; in host memory,
whatever the pipeline holds for the whole video. The benchmark hands both pipelines the drawn pose
images as one uint8 array; the runtime converts them per window and streams decoded chunks, while
the reference converts all of them to float and keeps every decoded frame in float32 to the end.

    python -m mimic.benchmarks.scaling --child '{"frames": 72, ...}'   (internal)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

MARKER = "MIMIC_SCALING_RESULT "
# Default points. The brief's 576x1024 is out of reach for the tiny model on a 2-core CPU (its UNet
# is attention-bound at 72x128 latents: ~1.4 TFLOP per 16-frame CFG call, minutes each), so the
# full variant uses lengths 72..576 at 192x128 (WIDTHxHEIGHT) and one step; pass --scaling-size 1024x576 on a
# bigger machine. Host memory per frame scales with H x W, so the slope converts directly.
FULL_POINTS = (72, 144, 288, 576)
FULL_SIZE = (128, 192)  # (height, width)
QUICK_POINTS = (16, 32, 64)
QUICK_SIZE = (64, 128)  # (height, width)


@dataclass(frozen=True)
class ScalingPoint:
    backend: str  # torch | onnxruntime | reference
    frames: int  # output frames
    height: int
    width: int
    window: int = 16
    overlap: int = 6
    steps: int = 1
    decode_chunk: int = 8
    preset: str | None = None
    weights: str | None = None
    onnx_dir: str | None = None
    device: str = "cpu"
    threads: int | None = None
    seed: int = 42


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _max_rss() -> int:
    """This process's RSS high-water mark. Linux: ``VmHWM`` (per address space, so it restarts at
    exec; ``ru_maxrss`` would carry the forking parent's peak into the child). Elsewhere ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kib if sys.platform == "darwin" else kib * 1024)  # bytes on macOS, KiB on Linux


def run_point(pt: ScalingPoint) -> dict:
    """One length, in this process (call it in a fresh one: ``ru_maxrss`` is per process)."""
    import numpy as np
    import torch

    from mimic.benchmarks.stage_bench import PeakMemory, sync, synthetic_job
    from mimic.model.config import GenerationConfig
    from mimic.model.presets import layout_from_options
    from mimic.model.weights import fetch_svd
    from mimic.model.model_info import ModelInfo

    if pt.threads:
        torch.set_num_threads(pt.threads)
    dev = torch.device(pt.device)
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    rss_start = _rss()
    t0 = time.perf_counter()
    layout = layout_from_options(preset=pt.preset, weights=Path(pt.weights) if pt.weights else None)
    info = ModelInfo.from_svd_dir(fetch_svd(layout.svd))
    if pt.backend in ("reference", "torch"):
        from mimic.model.loader import load_reference_models

        models = load_reference_models(layout, dev, dtype)
        if pt.backend == "torch":
            from mimic.runtime.backend_torch import TorchBackend

            backend = TorchBackend(models)
    elif pt.backend == "onnxruntime":
        from mimic.runtime.backend_ort import OnnxRuntimeBackend
        from mimic.runtime.onnx_cache import ensure_onnx_graphs

        graphs = ensure_onnx_graphs(layout, "fp16" if dtype == torch.float16 else "fp32", Path(pt.onnx_dir) if pt.onnx_dir else None)
        backend = OnnxRuntimeBackend(graphs, dev, pt.threads)
    else:
        raise ValueError(f"scaling backend must be reference, torch or onnxruntime, got {pt.backend!r}")
    load_s = time.perf_counter() - t0
    cfg = GenerationConfig(resolution=max(64, min(pt.height, pt.width)), window=pt.window, overlap=pt.overlap, steps=pt.steps, decode_chunk=pt.decode_chunk, seed=pt.seed)
    warmup_s = _warm_up(pt, models if pt.backend == "reference" else backend, info, dtype, cfg)
    baseline = _rss()
    phases: dict[str, float] = {}
    with PeakMemory(dev, interval_s=0.005) as mem, torch.no_grad():
        t = time.perf_counter()
        reference, poses = synthetic_job(pt.height, pt.width, pt.frames, pt.window)
        phases["inputs"] = time.perf_counter() - t
        gen = torch.Generator().manual_seed(pt.seed)
        t_job = time.perf_counter()
        if pt.backend == "reference":
            from mimic.mimicmotion_ref.pipeline import MimicMotionReference

            result = MimicMotionReference(models)(reference, poses, cfg, generator=gen)
            sync(dev)
            phases["generate"] = time.perf_counter() - t_job
            n_out = int(min(pt.frames, result.frames.shape[0]))
            del result
        else:
            from mimic.benchmarks.stage_bench import run_pipeline

            report, _ = run_pipeline(backend, info, dtype, cfg, reference, poses, pt.frames, keep=False)
            n_out = report.frames
            sec = report.seconds
            phases.update(encode=sec["inputs"] + sec["encode"], denoise=sec["denoise"], decode=sec["decode_write"])
        seconds = time.perf_counter() - t_job
    from mimic.model.windows import window_indices

    frames_total = int(np.asarray(poses).shape[0])
    return {
        "point": asdict(pt),
        "seconds": seconds,
        "load_s": load_s,
        "warmup_s": warmup_s,
        "phases": phases,
        "frames_written": n_out,
        "frames_total": frames_total,
        "windows": len(window_indices(frames_total, pt.window, pt.overlap)),
        "rss_start_bytes": rss_start,
        "baseline_rss_bytes": baseline,
        "job_peak_rss_bytes": mem.summary()["peak_rss_bytes"],
        "peak_rss_bytes": max(_max_rss(), mem.summary()["peak_rss_bytes"]),
        "device_used_peak_bytes": mem.summary()["device_used_peak_bytes"],
        "torch_threads": torch.get_num_threads(),
    }


def _warm_up(pt: ScalingPoint, runner, info, dtype, cfg) -> float:
    """One untimed job of one window and one step: each backend's first calls (allocator arenas,
    kernel and algorithm selection) are paid here, not by the timed job. Returns its seconds."""
    import torch

    from mimic.benchmarks.stage_bench import sync, synthetic_job

    t = time.perf_counter()
    warm = cfg.with_overrides(steps=1)
    reference, poses = synthetic_job(pt.height, pt.width, pt.window - 1, pt.window)
    with torch.no_grad():
        if pt.backend == "reference":
            from mimic.mimicmotion_ref.pipeline import MimicMotionReference

            MimicMotionReference(runner)(reference, poses, warm, generator=torch.Generator().manual_seed(pt.seed))
        else:
            from mimic.benchmarks.stage_bench import run_pipeline

            run_pipeline(runner, info, dtype, warm, reference, poses, pt.window - 1, keep=False)
    sync(torch.device(pt.device))
    return time.perf_counter() - t


def run_point_subprocess(pt: ScalingPoint, timeout_s: float = 1800.0, python: str | None = None) -> dict:
    """Run one point in a fresh interpreter; return its result dict (RuntimeError on failure)."""
    cmd = [python or sys.executable, "-m", "mimic.benchmarks.scaling", "--child", json.dumps(asdict(pt))]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=os.environ.copy())
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{pt.frames} frames: no result within {timeout_s:.0f} s") from None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    raise RuntimeError(f"{pt.frames} frames: child exited {proc.returncode}: {' | '.join(tail)}")


def scaling_points(frames: tuple[int, ...], size: tuple[int, int], backends: tuple[str, ...], **common) -> list[ScalingPoint]:
    return [ScalingPoint(backend=b, frames=int(n), height=size[0], width=size[1], **common) for b in backends for n in frames]


def run_scaling(points: list[ScalingPoint], ctx, emit: Callable[[dict], object], log: Callable[[str], None] = print, timeout_s: float = 1800.0, configs=None) -> list[dict]:
    """Run every point in its own process and emit a ``scaling`` record per point (``skip`` on failure)."""
    from mimic.benchmarks.flops import job_flops
    from mimic.model.config import GenerationConfig

    records = []
    for pt in points:
        label = f"scaling {pt.backend} {pt.frames} frames {pt.width}x{pt.height}"
        try:
            res = run_point_subprocess(pt, timeout_s)
        except RuntimeError as err:
            log(f"  skipped {label}: {err}")
            rec = ctx.record("skip", what=label, reason=str(err))
            emit(rec)
            records.append(rec)
            continue
        cfg = GenerationConfig(resolution=max(64, min(pt.height, pt.width)), window=pt.window, overlap=pt.overlap, steps=pt.steps, decode_chunk=pt.decode_chunk)
        jf = job_flops(cfg, pt.frames, pt.height, pt.width, configs, pose_net_every_step=pt.backend == "reference")
        log(
            f"  scaling {pt.backend:<12} {pt.frames:5d} frames {pt.width}x{pt.height}: {res['seconds']:8.2f} s "
            f"({res['seconds'] / pt.frames:.3f} s/frame), peak RSS {res['peak_rss_bytes'] / 2**20:7.0f} MiB "
            f"(+{(res['job_peak_rss_bytes'] - res['baseline_rss_bytes']) / 2**20:.0f} MiB over the loaded models)"
        )
        rec = ctx.record(
            "scaling", backend=pt.backend, output_frames=pt.frames, height=pt.height, width=pt.width, window=pt.window, overlap=pt.overlap,
            steps=pt.steps, windows=res["windows"], seconds=res["seconds"], seconds_per_frame=res["seconds"] / pt.frames, phases=res["phases"],
            load_s=res["load_s"], warmup_s=res.get("warmup_s"), peak_rss_bytes=int(res["peak_rss_bytes"]), job_peak_rss_bytes=int(res["job_peak_rss_bytes"]),
            baseline_rss_bytes=int(res["baseline_rss_bytes"]), device_used_peak_bytes=res["device_used_peak_bytes"], flops=jf.total,
            threads=res["torch_threads"],
        )
        emit(rec)
        records.append(rec)
    return records


def _main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--child":
        result = run_point(ScalingPoint(**json.loads(argv[1])))
        sys.stdout.write(MARKER + json.dumps(result) + "\n")
        sys.stdout.flush()
        return 0
    sys.stderr.write("internal entry point: python -m mimic.benchmarks.scaling --child JSON (use `mimic bench --scaling`)\n")
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
