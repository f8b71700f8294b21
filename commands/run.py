"""``mimic run``: one job from options, or many from a jobs file / upstream config."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import logging
import time

import typer

from mimic.commands import options as opt
from mimic.commands.conventions import DEVICE_METAVAR, in_range
from mimic.errors import ExitCode, InputError, MimicError
from mimic.runtime.jobs import JOBS_FORMAT_HELP, build_jobs

log = logging.getLogger(__name__)

RUN_HELP = f"""Render the reference image performing the driving motion.

Driving source: --driving VIDEO (DWPose runs on it), --pose POSES.npz (from `mimic pose`) or
--pose-frames VIDEO_OR_DIR (already-drawn pose images). --out OUT.mp4 writes H.264; --out DIR/
writes numbered PNGs. A run report (JSON) is written beside the output. --jobs FILE renders many
jobs (a YAML/JSON list whose keys are this command's flags without dashes: ref, driving, pose,
out, fps, steps, ...; upstream's configs/test.yaml too; see {JOBS_FORMAT_HELP}) with stages overlapped;
a job with bad input fails alone."""


app = typer.Typer()


@app.command(help=RUN_HELP)
@opt.generation_options
@opt.weight_options
@opt.render_options
def run(
    ref: Optional[Path] = typer.Option(None, "--ref", help="Reference image."),
    driving: Optional[Path] = typer.Option(None, "--driving", help="Driving video."),
    pose: Optional[Path] = typer.Option(None, "--pose", help="Pose file from `mimic pose`."),
    pose_frames: Optional[Path] = typer.Option(None, "--pose-frames", help="Drawn pose images (video or folder)."),
    ref_pose: Optional[Path] = typer.Option(None, "--ref-pose", help="The reference's drawn pose image."),
    out: Optional[Path] = typer.Option(None, "--out", help="OUT.mp4, or a folder for numbered PNGs."),
    jobs: Optional[Path] = typer.Option(None, "--jobs", help=f"Jobs file (YAML/JSON list in this command's words, or upstream's test.yaml; {JOBS_FORMAT_HELP})."),
    device: str = typer.Option("cpu", "--device", metavar=DEVICE_METAVAR + "[,...]", help="cpu | cuda[:N], or a comma-separated list (cuda:0,cuda:1; cpu,cpu): each job's windows split over them, same frames."),
    sequential: bool = typer.Option(False, "--sequential", help="Do not overlap stages across jobs."),
    progress: str = typer.Option("auto", "--progress", metavar="auto|openjd|none", help="auto: a bar (or plain lines) on stderr; openjd: openjd_progress/openjd_status lines on stdout; none."),
    job_index: Optional[int] = typer.Option(None, "--job-index", help=f"Render only job N (1-based) of --jobs: one task per job on a render farm. {in_range(1)}"),
    preview: Optional[Path] = typer.Option(None, "--preview", help="Also write the driving poses' preview before denoising starts: the skeletons over the source video's frames, labelled with frame number and time (PREVIEW.mp4 + a contact-sheet PREVIEW.png beside it); one job."),
    *,
    settings: dict,
    weight_choice: opt.WeightChoice,
    render_choice: opt.RenderChoice,
) -> None:
    try:
        failed = run_command(ref=ref, driving=driving, pose=pose, pose_frames=pose_frames, ref_pose=ref_pose, out=out, jobs_file=jobs,
                             device=device, overlap_jobs=not sequential, progress=progress, job_index=job_index, preview=preview,
                             overrides=settings, weight_choice=weight_choice, render_choice=render_choice)
    except MimicError as err:
        if progress == "openjd":  # the scheduler shows why the task failed
            typer.echo(f"openjd_fail: {err}")
        raise
    if failed:
        if progress == "openjd":
            typer.echo(f"openjd_fail: {failed} job(s) failed")
        raise typer.Exit(code=ExitCode.FAILED)


def run_command(*, ref=None, driving=None, pose=None, pose_frames=None, ref_pose=None, out=None, jobs_file=None, device="cpu", overlap_jobs=True,
                progress="auto", job_index=None, preview=None, overrides: dict | None = None, weight_choice: opt.WeightChoice = opt.WeightChoice(),
                render_choice: opt.RenderChoice = opt.RenderChoice()) -> int:
    """Check everything that needs no model first (torch is not imported until then), load the
    backend once, render every job through the one pipeline (``mimic.runtime.pipeline.generate``,
    overlapped across jobs by the executor). Returns the number of failed jobs."""
    rc = render_choice
    if progress not in ("auto", "openjd", "none"):
        raise InputError(f"--progress must be auto, openjd or none, got {progress!r}")
    if rc.checkpoint_every < 0:
        raise InputError(f"--checkpoint-every must be >= 0 (0: no checkpoints), got {rc.checkpoint_every}")
    base, run_warnings, entries = resolve_batch(weight_choice.preset, rc.config, overrides or {}, lambda config_jobs: build_jobs(
        ref, driving, pose, pose_frames, ref_pose, out, jobs_file, config_jobs))
    if job_index is not None:
        if not 1 <= job_index <= len(entries):
            raise InputError(f"--job-index must be in 1..{len(entries)} (the jobs file has {len(entries)} jobs), got {job_index}")
        entries = [entries[job_index - 1]]
    if preview is not None:
        check_preview(preview, entries)
    runnable, refused = screen(entries, base, rc.audio)
    if not runnable:
        return len(refused)

    import torch

    from mimic.runtime.api import MimicMotion
    from mimic.runtime.checkpoint import checkpoint_policy
    from mimic.runtime.executor import JobExecutor
    from mimic.runtime.memory import preflight
    from mimic.runtime.progress import progress_hooks
    from mimic.runtime.report import add_run_warnings

    options = runtime_options(rc, device)
    layout = weight_choice.layout()
    runnable, refused = screen(runnable, base, rc.audio, refused, lambda job: preflight(
        layout, job.config(base), options.backend, options.main_device, options.dtype == torch.float32,
        workers=options.devices.count(options.main_device)))
    if not runnable:
        return len(refused)

    log.info(f"loading {options.backend} backend on {options.device} ...")
    t0 = time.perf_counter()
    jobs = [job for _, job in runnable]
    with MimicMotion(layout, options, base) as mm:
        if any(job.driving is not None or job.ref_pose is None for job in jobs):
            mm.detector()  # DWPose's sessions too: loading is timed here, not in the first job's inputs
        log.info(f"  loaded in {time.perf_counter() - t0:.1f} s (models, sessions and engines)")
        add_run_warnings(mm.components.facts, run_warnings)
        hooks_for, _ = progress_hooks(progress, len(jobs))
        if preview is not None:
            progress_for = hooks_for
            hooks_for = lambda k, job: [progress_for(k, job) if progress_for else None, PosePreview(preview)]  # noqa: E731
        policy = checkpoint_policy(mm, rc.checkpoint_every, rc.checkpoint_dir, rc.resume)
        reports = JobExecutor(mm, overlap=overlap_jobs and len(jobs) > 1, checkpoints=policy).run(
            jobs, hooks_for=hooks_for, raise_errors=len(entries) == 1, numbers=[index for index, _ in runnable],
        )
    failed = len(refused)
    for r in reports:
        if r.error:
            failed += 1
            continue
        log.info(f"wrote {r.output} ({r.summary()})")  # size, frames, rate; each phase's seconds; UNet TFLOP per frame
        if r.resumed_from_step is not None:
            log.info(f"  resumed from the checkpoint saved after step {r.resumed_from_step}")
        for w in r.warnings:
            if w not in r.printed:
                log.warning(w)
    if len(entries) > 1:
        summary = f"{len(entries) - failed} done, {failed} failed"
        (log.error if failed else log.info)(summary)
    return failed


def check_preview(preview: Path, entries: list) -> None:
    """``--preview``: an .mp4 path, for one job, that is none of the job's inputs or outputs; writable."""
    from mimic.media.video_writer import check_writable
    from mimic.runtime.jobs import RefusedJob

    if Path(preview).suffix.lower() != ".mp4":
        raise InputError(f"--preview {preview}: use an .mp4 file (the contact sheet goes beside it as .png)")
    if len(entries) != 1:
        raise InputError(f"--preview writes one job's pose preview, but there are {len(entries)} jobs (use --job-index N)")
    job = entries[0]
    if not isinstance(job, RefusedJob):
        target = Path(preview).expanduser().resolve()
        for path in (*job.input_paths().values(), *job.output_paths().values()):
            if path is not None and Path(path).expanduser().resolve() in (target, target.with_suffix(".png")):
                raise InputError(f"--preview {preview} would overwrite {path}, a file of this job: choose another path")
    check_writable(Path(preview), what="--preview")


class PosePreview:
    """An observer: once the job's poses are known (before denoising), writes their preview over the
    source video's frames (``mimic.pose.preview``). Drawn pose frames have no poses to show; a source
    video that is gone or of another size gives the skeletons on black, with a warning."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_inputs(self, inputs) -> None:
        from mimic.pose.preview import write_pose_preview

        if inputs.sequence is None:
            log.warning(f"--preview: --pose-frames are drawn pose images, with no detected poses to preview; {self.path} not written")
            return
        source = inputs.source
        try:
            video, sheet = write_pose_preview(inputs.sequence, source, self.path)
        except InputError as err:
            if source is None:
                raise
            log.warning(f"--preview: {err}; drawing the skeletons on black")
            video, sheet = write_pose_preview(inputs.sequence, None, self.path)
        where = "over the source frames" if source is not None else "on black (the pose file's video was not found)"
        log.info(f"wrote the pose preview {video} and {sheet.name} (skeletons {where}): look at it while the job renders")


def runtime_options(rc: opt.RenderChoice, device: str):
    """The Python API's ``RuntimeOptions`` for a command's render choice and device."""
    from mimic.runtime.api import RuntimeOptions

    return RuntimeOptions(backend=rc.backend, device=device, precision=rc.precision, onnx_dir=rc.onnx_dir, engines=rc.engines,
                          pad_short=rc.pad, audio=rc.audio)


def resolve_batch(preset, config_file, overrides: dict, make_entries) -> tuple:
    """The run's settings (preset defaults < --config file < flags, normalised: a rounded
    --resolution is warned about now and recorded in every job's report) and its entries (jobs and
    refused jobs-file entries). -> (base GenerationConfig, run warnings, entries). Torch-free."""
    from mimic.model.config import normalise_settings
    from mimic.model.presets import default_generation
    from mimic.runtime.jobs import settings_from_file

    file_overrides, config_jobs, run_warnings = settings_from_file(config_file) if config_file else ({}, [], [])
    settings, warnings = normalise_settings(overrides)
    run_warnings = [*run_warnings, *warnings]
    for warning in run_warnings:
        log.warning(f"warning: {warning}")
    base = default_generation(preset).with_overrides(**{**file_overrides, **settings})
    return base, run_warnings, make_entries(config_jobs)


def screen(entries, base, audio: bool, refused=(), check=None) -> tuple[list, list]:
    """Per job, the checks that need no model (``runtime.job_paths.screen_jobs``; or, with
    ``check``, that callable on each runnable (index, job) pair). A single job's error is raised
    (one line, its exit code); in a batch a refused job is reported on stderr with its index and
    output, the others still render, and when none is left the summary line is printed."""
    from mimic.runtime.jobs import RefusedJob
    from mimic.runtime.job_paths import screen_jobs

    refused = list(refused)
    if check is None:
        runnable, new = screen_jobs(entries, base, audio)
    else:
        runnable, new = [], []
        for index, job in entries:
            try:
                check(job)
            except InputError as err:
                if len(entries) + len(refused) == 1:
                    raise
                new.append(RefusedJob(index, str(err), job.out))
                continue
            runnable.append((index, job))
    total = len(runnable) + len(new) + len(refused)
    if new and total == 1:
        raise InputError(new[0].message())
    for r in new:
        log.error(f"error: job {r.index}{f' ({r.out})' if r.out else ''}: {r.error}")
    refused += new
    if not runnable:
        log.error(f"0 done, {len(refused)} failed")
    return runnable, refused
