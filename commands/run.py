"""``mimic run``: one job from options, or many from a jobs file / upstream config."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import logging
import time

import typer

from mimic.commands.cli_help import SETTINGS_PANEL
from mimic.commands.conventions import BACKENDS, DEVICE_METAVAR, PRESET_HELP, PRESETS, choices, in_range
from mimic.errors import InputError, MimicError

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
    preset: Optional[str] = typer.Option(None, "--preset", metavar=choices(PRESETS), help=PRESET_HELP),
    svd: Optional[str] = typer.Option(None, "--svd", help="SVD diffusers folder or hub id (overrides --weights/--preset)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="MimicMotion .pth (overrides --weights/--preset)."),
    det_model: Optional[Path] = typer.Option(None, "--det-model", help="yolox_l.onnx (overrides --weights/--preset)."),
    pose_model: Optional[Path] = typer.Option(None, "--pose-model", help="dw-ll_ucoco_384.onnx (overrides --weights/--preset)."),
    engines: Optional[Path] = typer.Option(None, "--engines", help="Engine folder from `mimic build-engines` (tensorrt)."),
    onnx_dir: Optional[Path] = typer.Option(None, "--onnx", help="Exported ONNX folder (onnxruntime)."),
    backend: str = typer.Option("onnxruntime", "--backend", metavar=choices(BACKENDS), help="Execution backend (tensorrt needs --engines)."),
    device: str = typer.Option("cpu", "--device", metavar=DEVICE_METAVAR + "[,...]", help="cpu | cuda[:N], or a comma-separated list (cuda:0,cuda:1; cpu,cpu): each job's windows split over them, same frames."),
    precision: Optional[str] = typer.Option(None, "--precision", metavar="fp16|fp32", help="Default: fp16 on CUDA, fp32 on the CPU."),
    window: Optional[int] = typer.Option(None, help="Frames per denoising window (16 for MimicMotion 1.0 weights).", rich_help_panel=SETTINGS_PANEL),
    overlap: Optional[int] = typer.Option(None, help="Window overlap (frames shared by neighbouring windows + 1).", rich_help_panel=SETTINGS_PANEL),
    steps: Optional[int] = typer.Option(None, help="Denoising steps.", rich_help_panel=SETTINGS_PANEL),
    schedule: Optional[str] = typer.Option(None, metavar="karras|ays", help="Noise schedule: karras (released) | ays (Align Your Steps for SVD).", rich_help_panel=SETTINGS_PANEL),
    guidance_min: Optional[float] = typer.Option(None, help="Guidance at the first frame.", rich_help_panel=SETTINGS_PANEL),
    guidance_max: Optional[float] = typer.Option(None, help="Guidance at the last frame.", rich_help_panel=SETTINGS_PANEL),
    guidance: Optional[float] = typer.Option(None, help="Constant guidance (sets --guidance-min and --guidance-max).", rich_help_panel=SETTINGS_PANEL),
    seed: Optional[int] = typer.Option(None, help="Random seed.", rich_help_panel=SETTINGS_PANEL),
    fps: Optional[float] = typer.Option(None, help="Output frame rate.", rich_help_panel=SETTINGS_PANEL),
    resolution: Optional[int] = typer.Option(None, help="Short side in px; rounded to a multiple of 64 (with a warning in the report).", rich_help_panel=SETTINGS_PANEL),
    sample_stride: Optional[int] = typer.Option(None, help="Driving-video frame stride (times max(1, int(fps/24))).", rich_help_panel=SETTINGS_PANEL),
    noise_aug: Optional[float] = typer.Option(None, help="Noise augmentation strength.", rich_help_panel=SETTINGS_PANEL),
    decode_chunk: Optional[int] = typer.Option(None, help="Frames per temporal-decoder chunk.", rich_help_panel=SETTINGS_PANEL),
    no_pad: bool = typer.Option(False, "--no-pad", help="Fail instead of padding clips shorter than a window."),
    sequential: bool = typer.Option(False, "--sequential", help="Do not overlap stages across jobs."),
    audio: bool = typer.Option(False, "--audio", help="Copy the driving video's audio (aligned to the sampled frames)."),
    checkpoint_every: int = typer.Option(1, "--checkpoint-every", help=f"Save each job's latents every N denoising steps, to resume an interrupted job (0: never). {in_range(0)}"),
    checkpoint_dir: Optional[Path] = typer.Option(None, "--checkpoint-dir", help="Folder for resume checkpoints (default: OUT.checkpoint/ beside each output)."),
    no_resume: bool = typer.Option(False, "--no-resume", help="Start over even where a checkpoint of the same job exists."),
    progress: str = typer.Option("auto", "--progress", metavar="auto|openjd|none", help="auto: a bar (or plain lines) on stderr; openjd: openjd_progress/openjd_status lines on stdout; none."),
    job_index: Optional[int] = typer.Option(None, "--job-index", help="Render only job N (1-based) of --jobs: one task per job on a render farm."),
) -> None:
    overrides = dict(
        window=window, overlap=overlap, steps=steps, schedule=schedule, guidance_min=guidance_min, guidance_max=guidance_max, seed=seed,
        output_fps=fps, resolution=resolution, sample_stride=sample_stride, noise_aug_strength=noise_aug, decode_chunk=decode_chunk,
    )
    if guidance is not None:
        if guidance_min is not None or guidance_max is not None:
            raise InputError("give --guidance or --guidance-min/--guidance-max, not both")
        overrides["guidance_min"] = overrides["guidance_max"] = guidance
    resumable = dict(checkpoint_every=checkpoint_every, checkpoint_dir=checkpoint_dir, resume=not no_resume, progress=progress, job_index=job_index)
    try:
        failed = run_command(
            **resumable, ref=ref, driving=driving, pose=pose, pose_frames=pose_frames, ref_pose=ref_pose, out=out, jobs_file=jobs,
            config_file=config, weights=weights, preset=preset, svd=svd, checkpoint=checkpoint, det_model=det_model, pose_model=pose_model, engines=engines,
            onnx_dir=onnx_dir, backend=backend, device=device, precision=precision,
            overrides={k: v for k, v in overrides.items() if v is not None}, pad=not no_pad, overlap_jobs=not sequential, audio=audio,
        )
    except MimicError as err:
        if progress == "openjd":  # the scheduler shows why the task failed
            typer.echo(f"openjd_fail: {err}")
        raise
    if failed:
        if progress == "openjd":
            typer.echo(f"openjd_fail: {failed} job(s) failed")
        raise typer.Exit(code=1)


def run_command(*, ref, driving, pose, pose_frames, ref_pose, out, jobs_file, config_file, weights, preset, svd, checkpoint,
                engines, onnx_dir, backend, device, precision, overrides, pad, overlap_jobs, audio=False,
                checkpoint_every=1, checkpoint_dir=None, resume=True, progress="auto", job_index=None, det_model=None, pose_model=None) -> int:
    """Validate everything, load the backend once, render every job through the one pipeline
    (``mimic.runtime.pipeline.generate``, overlapped across jobs by the executor). Returns the
    number of failed jobs."""
    import torch

    from mimic.model.presets import default_generation, layout_from_options
    from mimic.runtime.executor import JobExecutor
    from mimic.runtime.inputs import rounded_resolution
    from mimic.runtime.jobs import build_jobs, settings_from_file
    from mimic.runtime.checkpoint import checkpoint_policy
    from mimic.runtime.progress import progress_hooks
    from mimic.runtime.report import add_run_warnings
    from mimic.runtime.memory import preflight
    from mimic.runtime.api import MimicMotion, RuntimeOptions

    options = RuntimeOptions(backend=backend, device=device, precision=precision, onnx_dir=onnx_dir, engines=engines, pad_short=pad, audio=audio)
    file_overrides, config_jobs = settings_from_file(config_file) if config_file else ({}, [])
    settings = {**file_overrides, **overrides}
    run_warnings = []  # printed now and written into every job's report (runtime/report.py)
    if "resolution" in settings:
        settings["resolution"], warning = rounded_resolution(settings["resolution"])
        if warning:
            log.warning(f"warning: {warning}")
            run_warnings.append(warning)
    base = default_generation(preset).with_overrides(**settings)
    jobs = build_jobs(ref, driving, pose, pose_frames, ref_pose, out, jobs_file, config_jobs)
    if progress not in ("auto", "openjd", "none"):
        raise InputError(f"--progress must be auto, openjd or none, got {progress!r}")
    if checkpoint_every < 0:
        raise InputError(f"--checkpoint-every must be >= 0 (0: no checkpoints), got {checkpoint_every}")
    if job_index is not None:
        if not 1 <= job_index <= len(jobs):
            raise InputError(f"--job-index must be in 1..{len(jobs)} (the jobs file has {len(jobs)} jobs), got {job_index}")
        jobs = [jobs[job_index - 1]]
    layout = layout_from_options(preset=preset, weights=weights, svd=svd, checkpoint=checkpoint, det_model=det_model, pose_model=pose_model)
    runnable, refused = check_jobs(jobs, base, audio, lambda cfg: preflight(layout, cfg, options.backend, options.main_device, options.dtype == torch.float32))
    if refused and not runnable:
        log.error(f"0 done, {len(refused)} failed")
        return len(refused)

    log.info(f"loading {options.backend} backend on {options.device} ...")
    t0 = time.perf_counter()
    with MimicMotion(layout, options, base) as mm:
        if any(job.driving is not None or job.ref_pose is None for job in runnable):
            mm.detector()  # DWPose's sessions too: loading is timed here, not in the first job's inputs
        log.info(f"  loaded in {time.perf_counter() - t0:.1f} s (models, sessions and engines)")
        add_run_warnings(mm.components.facts, run_warnings)
        hooks_for, _ = progress_hooks(progress, len(runnable))
        policy = checkpoint_policy(mm, checkpoint_every, checkpoint_dir, resume)
        reports = JobExecutor(mm, overlap=overlap_jobs and len(runnable) > 1, checkpoints=policy).run(
            runnable, hooks_for=hooks_for, raise_errors=len(jobs) == 1,
            numbers=[jobs.index(job) + 1 for job in runnable],
        )
    failed = len(refused)
    for r in reports:
        if r.error:
            failed += 1
            continue
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in r.seconds.items())
        log.info(f"wrote {r.output} ({r.frames} frames; {stages})")
        if r.resumed_from_step is not None:
            log.info(f"  resumed from the checkpoint saved after step {r.resumed_from_step}")
        for w in r.warnings:
            log.info(f"  warning: {w}")
    if len(jobs) > 1:
        summary = f"{len(jobs) - failed} done, {failed} failed"
        (log.error if failed else log.info)(summary)
    return failed


def check_jobs(jobs: list, base, audio: bool, memory_check=None) -> tuple[list, list]:
    """Every check that needs no model, per job: (runnable jobs, refused jobs). A single job's error
    is raised (one line, its exit code); in a batch, a refused job is reported on stderr with its
    index and output and the others still render."""
    from mimic.runtime.inputs import check_output, validate_job

    runnable, refused = [], []
    outs = [Path(j.out).expanduser().resolve() for j in jobs]
    for k, job in enumerate(jobs):
        try:
            if outs.count(outs[k]) > 1:
                raise InputError(f"--out {job.out}: another job writes the same output")
            validate_job(job, audio=audio)
            check_output(job, [j for j in jobs if j is not job])
            config = job.config(base)  # job overrides are valid together
            if memory_check is not None:
                memory_check(config)
        except InputError as err:
            if len(jobs) == 1:
                raise
            log.error(f"error: job {k + 1} ({job.out}): {err}")
            refused.append(job)
            continue
        runnable.append(job)
    return runnable, refused
