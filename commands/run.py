"""``mimic run``: one job from options, or many from a jobs file / upstream config."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import logging
import time

import typer

from mimic.errors import InputError

log = logging.getLogger(__name__)

RUN_HELP = """Render the reference image performing the driving motion.

Driving source: --driving VIDEO (DWPose runs on it), --pose POSES.npz (from `mimic pose`) or
--pose-frames VIDEO_OR_DIR (already-drawn pose images). --out OUT.mp4 writes H.264; --out DIR/
writes numbered PNGs. A run report (JSON) is written beside the output. Jobs files (--jobs, YAML or
JSON list; upstream's configs/test.yaml too) render many jobs with stages overlapped."""


app = typer.Typer()


@app.command(help=RUN_HELP)
def run(
    ref: Optional[Path] = typer.Option(None, "--ref", help="Reference image."),
    driving: Optional[Path] = typer.Option(None, "--driving", help="Driving video."),
    pose: Optional[Path] = typer.Option(None, "--pose", help="Pose file from `mimic pose`."),
    pose_frames: Optional[Path] = typer.Option(None, "--pose-frames", help="Drawn pose images (video or folder)."),
    ref_pose: Optional[Path] = typer.Option(None, "--ref-pose", help="The reference's drawn pose image."),
    out: Optional[Path] = typer.Option(None, "--out", help="OUT.mp4, or a folder for numbered PNGs."),
    jobs: Optional[Path] = typer.Option(None, "--jobs", help="Jobs file (YAML/JSON list or upstream test.yaml)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Settings file (YAML/JSON mapping of run settings)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Upstream weights folder (DWPose/, SVD/, MimicMotion_1-1.pth)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Built-in weights: tiny."),
    svd: Optional[str] = typer.Option(None, "--svd", help="SVD diffusers folder or hub id (overrides --weights)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="MimicMotion .pth (overrides --weights)."),
    engines: Optional[Path] = typer.Option(None, "--engines", help="Engine folder from `mimic build-engines` (tensorrt)."),
    onnx_dir: Optional[Path] = typer.Option(None, "--onnx", help="Exported ONNX folder (onnxruntime)."),
    backend: str = typer.Option("onnxruntime", help="torch | onnxruntime | tensorrt."),
    device: str = typer.Option("cpu", help="cpu | cuda[:N]."),
    precision: Optional[str] = typer.Option(None, help="fp16 | fp32 (default fp16 on CUDA, fp32 on CPU)."),
    window: Optional[int] = typer.Option(None, help="Frames per denoising window (72 for 1.1, 16 for 1.0)."),
    overlap: Optional[int] = typer.Option(None, help="Window overlap (released: 6)."),
    steps: Optional[int] = typer.Option(None, help="Denoising steps (released: 25)."),
    guidance_min: Optional[float] = typer.Option(None, help="Guidance at the first frame."),
    guidance_max: Optional[float] = typer.Option(None, help="Guidance at the last frame."),
    guidance: Optional[float] = typer.Option(None, help="Constant guidance (sets min and max; released 2.0)."),
    seed: Optional[int] = typer.Option(None, help="Random seed (released: 42)."),
    fps: Optional[float] = typer.Option(None, help="Output frame rate (released: 15)."),
    resolution: Optional[int] = typer.Option(None, help="Short side in px, multiple of 64 (released: 576)."),
    sample_stride: Optional[int] = typer.Option(None, help="Driving-video frame stride (released: 2)."),
    noise_aug: Optional[float] = typer.Option(None, help="Noise augmentation strength (released: 0)."),
    decode_chunk: Optional[int] = typer.Option(None, help="Frames per temporal-decoder chunk (released: 8)."),
    no_pad: bool = typer.Option(False, "--no-pad", help="Fail instead of padding clips shorter than a window."),
    sequential: bool = typer.Option(False, "--sequential", help="Do not overlap stages across jobs."),
    audio: bool = typer.Option(False, "--audio", help="Copy the driving video's audio (aligned to the sampled frames)."),
) -> None:
    overrides = dict(
        window=window, overlap=overlap, steps=steps, guidance_min=guidance_min, guidance_max=guidance_max, seed=seed,
        output_fps=fps, resolution=resolution, sample_stride=sample_stride, noise_aug_strength=noise_aug, decode_chunk=decode_chunk,
    )
    if guidance is not None:
        if guidance_min is not None or guidance_max is not None:
            raise InputError("give --guidance or --guidance-min/--guidance-max, not both")
        overrides["guidance_min"] = overrides["guidance_max"] = guidance
    failed = run_command(
        ref=ref, driving=driving, pose=pose, pose_frames=pose_frames, ref_pose=ref_pose, out=out, jobs_file=jobs,
        config_file=config, weights=weights, preset=preset, svd=svd, checkpoint=checkpoint, engines=engines,
        onnx_dir=onnx_dir, backend=backend, device=device, precision=precision,
        overrides={k: v for k, v in overrides.items() if v is not None}, pad=not no_pad, overlap_jobs=not sequential, audio=audio,
    )
    if failed:
        raise typer.Exit(code=1)


def run_command(*, ref, driving, pose, pose_frames, ref_pose, out, jobs_file, config_file, weights, preset, svd, checkpoint,
                engines, onnx_dir, backend, device, precision, overrides, pad, overlap_jobs, audio=False) -> int:
    """Validate everything, load the backend once, render every job through the one pipeline
    (``mimic.runtime.pipeline.generate``, overlapped across jobs by the executor). Returns the
    number of failed jobs."""
    from mimic.mimicmotion_ref.presets import default_generation, layout_from_options
    from mimic.runtime.executor import JobExecutor
    from mimic.runtime.inputs import rounded_resolution, validate_job
    from mimic.runtime.jobs import build_jobs, settings_from_file
    from mimic.runtime.progress import ProgressHooks
    from mimic.runtime.service import MimicMotion, RuntimeOptions

    options = RuntimeOptions(backend=backend, device=device, precision=precision, onnx_dir=onnx_dir, engines=engines, pad_short=pad, audio=audio)
    file_overrides, config_jobs = settings_from_file(config_file) if config_file else ({}, [])
    settings = {**file_overrides, **overrides}
    if "resolution" in settings:
        settings["resolution"], warning = rounded_resolution(int(settings["resolution"]))
        if warning:
            log.warning(f"warning: {warning}")
    base = default_generation(preset).with_overrides(**settings)
    jobs = build_jobs(ref, driving, pose, pose_frames, ref_pose, out, jobs_file, config_jobs)
    outs = [Path(j.out).resolve() for j in jobs]
    if len(set(outs)) != len(outs):
        raise InputError("two jobs write the same output")
    for job in jobs:
        validate_job(job)
        job.config(base)  # job overrides are valid
    layout = layout_from_options(preset=preset, weights=weights, svd=svd, checkpoint=checkpoint)

    log.info(f"loading {options.backend} backend on {options.device} ...")
    t0 = time.perf_counter()
    with MimicMotion(layout, options, base) as mm:
        log.info(f"  loaded in {time.perf_counter() - t0:.1f} s")
        reports = JobExecutor(mm, overlap=overlap_jobs and len(jobs) > 1).run(
            jobs, hooks_for=lambda k, job: ProgressHooks(f"[{k + 1}/{len(jobs)}] {Path(job.out).name}"), raise_errors=len(jobs) == 1
        )
    failed = 0
    for r in reports:
        if r.error:
            failed += 1
            continue
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in r.seconds.items())
        log.info(f"wrote {r.output} ({r.frames} frames; {stages})")
        for w in r.warnings:
            log.info(f"  warning: {w}")
    return failed
