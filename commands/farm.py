"""``mimic farm`` (render a jobs file on a Ray cluster) and ``mimic farm openjd-template`` (a job
template for Open Job Description / AWS Deadline Cloud).

``farm`` is a Typer sub-app whose callback renders when no subcommand follows
(``invoke_without_command=True``), so both ``mimic farm --jobs jobs.yaml`` and
``mimic farm openjd-template -o bundle/`` work.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

from mimic.commands.cli_help import SETTINGS_PANEL
from mimic.commands.conventions import BACKENDS, PRESET_HELP, PRESETS, choices, in_range
from mimic.errors import InputError

log = logging.getLogger(__name__)

FARM_HELP = (
    "Render every job of a jobs file (the `mimic run --jobs` format) on a Ray cluster.\n\n"
    "Without --address a private local cluster starts (127.0.0.1 only, token authentication): one worker per GPU, or "
    "--workers N (CPU workers with --device cpu). --address auto|HOST:PORT joins a cluster started with `ray start`. "
    "Each worker loads the weights once; a job whose worker dies is retried on another (--retries), resuming from its "
    "last checkpoint; a job with bad input fails alone. Inputs and outputs must be paths every worker sees (shared storage).\n\n"
    "A JSON farm report (per job: worker, attempts, seconds, outcome) is written (--report). Exit code 0 when every job "
    "was rendered, 1 when any failed (each job's own exit code is in the report), 130/143 when interrupted. "
    "Then: mimic farm openjd-template for Deadline Cloud / Open Job Description."
)

farm_app = typer.Typer(help=FARM_HELP, add_completion=False, pretty_exceptions_enable=False)


@farm_app.callback(invoke_without_command=True)
def farm(
    ctx: typer.Context,
    jobs: Optional[Path] = typer.Option(None, "--jobs", help="Jobs file (YAML/JSON list or upstream test.yaml)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster: auto or HOST:PORT (default: start a private local one)."),
    workers: Optional[int] = typer.Option(None, "--workers", help=f"Workers (default: one per GPU; 1 on CPU). {in_range(1)}"),
    devices_per_worker: int = typer.Option(1, "--devices-per-worker", help="Devices per worker: each job's windows split over them (GPUs per Ray actor)."),
    retries: int = typer.Option(2, "--retries", help=f"Retries of a job whose worker died or ran out of memory. {in_range(0)}"),
    report: Optional[Path] = typer.Option(None, "--report", help="Farm report JSON (default: JOBS.farm-report.json beside the jobs file)."),
    jobs_per_worker: Optional[int] = typer.Option(None, "--jobs-per-worker", help=f"Jobs in flight per worker, their stages overlapped (default 2 on a GPU, 1 on a CPU). {in_range(1)}"),
    checkpoint_every: int = typer.Option(1, "--checkpoint-every", help=f"Save each job's latents every N denoising steps (0: never). {in_range(0)}"),
    checkpoint_dir: Optional[Path] = typer.Option(None, "--checkpoint-dir", help="Folder for resume checkpoints (default: OUT.checkpoint/ beside each output)."),
    no_resume: bool = typer.Option(False, "--no-resume", help="Start over even where a checkpoint of the same job exists."),
    progress: str = typer.Option("auto", "--progress", metavar="auto|none", help="auto: a bar on a terminal, plain lines otherwise, on stderr; none."),
    config: Optional[Path] = typer.Option(None, "--config", help="Settings file (YAML/JSON mapping of run settings)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Upstream weights folder (same path on every node)."),
    preset: Optional[str] = typer.Option(None, "--preset", metavar=choices(PRESETS), help=PRESET_HELP),
    svd: Optional[str] = typer.Option(None, "--svd", help="SVD diffusers folder or hub id (overrides --weights/--preset)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="MimicMotion .pth (overrides --weights/--preset)."),
    det_model: Optional[Path] = typer.Option(None, "--det-model", help="yolox_l.onnx (overrides --weights/--preset)."),
    pose_model: Optional[Path] = typer.Option(None, "--pose-model", help="dw-ll_ucoco_384.onnx (overrides --weights/--preset)."),
    engines: Optional[Path] = typer.Option(None, "--engines", help="Engine folder from `mimic build-engines` (tensorrt)."),
    onnx_dir: Optional[Path] = typer.Option(None, "--onnx", help="Exported ONNX folder (onnxruntime)."),
    backend: str = typer.Option("onnxruntime", "--backend", metavar=choices(BACKENDS), help="Execution backend (tensorrt needs --engines)."),
    device: str = typer.Option("cpu", "--device", metavar="cpu|cuda|auto",
                               help="cpu, or cuda (Ray gives each worker its own GPU, so no :N), or auto (cuda when the cluster has GPUs)."),
    precision: Optional[str] = typer.Option(None, "--precision", metavar="fp16|fp32", help="Default: fp16 on CUDA, fp32 on the CPU."),
    window: Optional[int] = typer.Option(None, help="Frames per denoising window (16 for MimicMotion 1.0 weights).", rich_help_panel=SETTINGS_PANEL),
    overlap: Optional[int] = typer.Option(None, help="Window overlap.", rich_help_panel=SETTINGS_PANEL),
    steps: Optional[int] = typer.Option(None, help="Denoising steps.", rich_help_panel=SETTINGS_PANEL),
    guidance: Optional[float] = typer.Option(None, help="Constant guidance.", rich_help_panel=SETTINGS_PANEL),
    seed: Optional[int] = typer.Option(None, help="Random seed.", rich_help_panel=SETTINGS_PANEL),
    fps: Optional[float] = typer.Option(None, help="Output frame rate.", rich_help_panel=SETTINGS_PANEL),
    resolution: Optional[int] = typer.Option(None, help="Short side in px; rounded to a multiple of 64.", rich_help_panel=SETTINGS_PANEL),
    sample_stride: Optional[int] = typer.Option(None, help="Driving-video frame stride.", rich_help_panel=SETTINGS_PANEL),
    decode_chunk: Optional[int] = typer.Option(None, help="Frames per temporal-decoder chunk.", rich_help_panel=SETTINGS_PANEL),
    no_pad: bool = typer.Option(False, "--no-pad", help="Fail instead of padding clips shorter than a window."),
    audio: bool = typer.Option(False, "--audio", help="Copy the driving video's audio."),
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    if jobs is None:
        raise InputError("mimic farm needs --jobs FILE (or a subcommand: openjd-template)")
    overrides = dict(window=window, overlap=overlap, steps=steps, seed=seed, output_fps=fps, resolution=resolution,
                     sample_stride=sample_stride, decode_chunk=decode_chunk)
    if guidance is not None:
        overrides["guidance_min"] = overrides["guidance_max"] = guidance
    code = farm_command(
        jobs_file=jobs, address=address, workers=workers, devices_per_worker=devices_per_worker, retries=retries, report_path=report, jobs_per_worker=jobs_per_worker,
        checkpoint_every=checkpoint_every, checkpoint_dir=checkpoint_dir, resume=not no_resume, progress=progress, config_file=config,
        weights=weights, preset=preset, svd=svd, checkpoint=checkpoint, engines=engines, onnx_dir=onnx_dir, backend=backend, device=device,
        precision=precision, overrides={k: v for k, v in overrides.items() if v is not None}, pad=not no_pad, audio=audio,
        det_model=det_model, pose_model=pose_model,
    )
    if code:
        raise typer.Exit(code=code)


def farm_command(*, jobs_file, address, workers, devices_per_worker, retries, report_path, jobs_per_worker, checkpoint_every, checkpoint_dir, resume, progress,
                 config_file, weights, preset, svd, checkpoint, engines, onnx_dir, backend, device, precision, overrides, pad, audio,
                 det_model=None, pose_model=None) -> int:
    """Resolve everything on this machine (one-line errors before any worker starts), render on
    the farm, write the report. Returns the exit code."""
    from mimic.farm.farm import Farm
    from mimic.farm.view import FarmView
    from mimic.model.presets import default_generation, layout_from_options
    from mimic.runtime.inputs import rounded_resolution
    from mimic.runtime.jobs import load_jobs_file, settings_from_file
    from mimic.runtime.api import RuntimeOptions

    if progress not in ("auto", "none"):
        raise InputError(f"--progress must be auto or none, got {progress!r}")
    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"--device must be auto, cpu or cuda (Ray gives each GPU worker its own GPU), got {device!r}")
    options = RuntimeOptions(backend=backend, device="cpu" if device == "auto" else device, precision=precision, onnx_dir=onnx_dir,
                             engines=engines, pad_short=pad, audio=audio)
    file_overrides, _ = settings_from_file(config_file) if config_file else ({}, [])
    settings = {**file_overrides, **overrides}
    if "resolution" in settings:
        settings["resolution"], warning = rounded_resolution(settings["resolution"])
        if warning:
            log.warning(f"warning: {warning}")
    base = default_generation(preset).with_overrides(**settings)
    jobs = load_jobs_file(jobs_file)
    layout = layout_from_options(preset=preset, weights=weights, svd=svd, checkpoint=checkpoint, det_model=det_model, pose_model=pose_model)
    report_path = report_path or Path(jobs_file).with_name(Path(jobs_file).stem + ".farm-report.json")

    farm = Farm(layout=layout, options=options, base_config=base, address=address, workers=workers, devices_per_worker=devices_per_worker, retries=retries,
                checkpoint_every=checkpoint_every, checkpoint_dir=checkpoint_dir, resume=resume, jobs_per_worker=jobs_per_worker,
                auto_device=device == "auto")
    try:
        farm.start()
        report = farm.run(jobs, view=FarmView() if progress == "auto" else None)
    finally:
        if farm.cluster is not None or farm._results:
            written = farm.report().write(report_path)
            log.info(f"farm report: {written}")
        farm.close()
    done = len(report.results) - len(report.failed)
    (log.error if report.failed else log.info)(f"farm: {done} done, {len(report.failed)} failed in {report.seconds:.1f} s")
    return report.exit_code


@farm_app.command("openjd-template")
def openjd_template_command(
    out: Path = typer.Option(Path("mimic-openjd"), "-o", "--out", help="Folder for template.yaml and parameter_values.yaml (a Deadline Cloud job bundle)."),
    jobs: Optional[Path] = typer.Option(None, "--jobs", help="Jobs file: sets the default task range 1-N (and the default JobsFile when inside --out)."),
    mimic_args: str = typer.Option("--weights /shared/models --backend tensorrt --engines /shared/engines --device cuda", "--args",
                                   help="Options every task passes to `mimic run` (weights, engines, settings)."),
    retries: int = typer.Option(2, "--retries", help="deadline:maxRetriesPerTask (a retried task resumes from its checkpoint)."),
    max_failed_tasks: int = typer.Option(100, "--max-failed-tasks", help="deadline:maxFailedTasksCount."),
    cpu: bool = typer.Option(False, "--cpu", help="Do not require a GPU on the worker host."),
) -> None:
    """Write an Open Job Description job template: one task per job of a jobs file, each running
    `mimic run --jobs FILE --job-index N --progress openjd` (progress and status lines, distinct
    exit codes, checkpoints), validated with openjd-model when it is installed."""
    import os

    from mimic.farm.openjd import openjd_template, parameter_values, write_bundle

    num_jobs, default_file = None, None
    if jobs is not None:
        from mimic.runtime.jobs import load_jobs_file

        num_jobs = len(load_jobs_file(jobs))
        rel = os.path.relpath(Path(jobs).resolve(), Path(out).resolve())
        default_file = Path(rel) if not rel.startswith("..") else None
    template = openjd_template(num_jobs, default_file, mimic_args, gpu=not cpu)
    try:
        from openjd.model import DecodeValidationError, decode_job_template
    except ImportError:
        log.warning("warning: openjd-model is not installed: the template was not validated (pip install 'mimic-engine[farm]')")
    else:
        try:
            decode_job_template(template=template)
        except DecodeValidationError as err:  # a bug in our template (or bad --args)
            raise InputError(f"the job template does not validate: {err}") from None
    for path in write_bundle(out, template, parameter_values(retries, max_failed_tasks)):
        log.info(f"wrote {path}")
    if jobs is not None and default_file is None:
        log.info(f"  submit with -p JobsFile={Path(jobs).resolve()} (the jobs file is outside the bundle folder)")


app = typer.Typer()
app.add_typer(farm_app, name="farm")
