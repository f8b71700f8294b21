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

from mimic.commands import options as opt
from mimic.commands.conventions import in_range
from mimic.errors import InputError

log = logging.getLogger(__name__)

FARM_HELP = (
    "Render every job of a jobs file (the `mimic run --jobs` format) on a Ray cluster.\n\n"
    "Without --address a private local cluster starts (127.0.0.1 only, token authentication): one worker per GPU, or "
    "--workers N (CPU workers with --device cpu). --address auto|HOST:PORT joins a cluster started with `ray start`. "
    "Sizing: CPU workers at most one per core (os.cpu_count()) and at most the available memory / one worker's need (the "
    "memory preflight's estimate of one job at the run's settings); GPU workers at most the GPUs / --devices-per-worker; "
    "with --address the cluster's own CPUs/GPUs decide. More is refused (exit 2) before any worker starts; more workers "
    "than jobs is no error, only as many as jobs start. Each job's memory is checked as `mimic run` checks it before a "
    "worker renders it (a job that cannot fit fails alone, exit 2). "
    "Each worker loads the weights once; a job whose worker dies is retried on another (--retries), resuming from its "
    "last checkpoint; a job with bad input fails alone. Inputs and outputs must be paths every worker sees (shared storage).\n\n"
    "A JSON farm report (per job: worker, attempts, seconds, outcome) is written (--report). Exit code 0 when every job "
    "was rendered, 1 when any failed (each job's own exit code is in the report), 130/143 when interrupted. "
    "Then: mimic farm openjd-template for Deadline Cloud / Open Job Description."
)

farm_app = typer.Typer(help=FARM_HELP, add_completion=False, pretty_exceptions_enable=False)


@farm_app.callback(invoke_without_command=True)
@opt.generation_options
@opt.weight_options
@opt.render_options
def farm(
    ctx: typer.Context,
    jobs: Optional[Path] = typer.Option(None, "--jobs", help="Jobs file (the `mimic run --jobs` format; README, \"Jobs files\")."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster: auto or HOST:PORT (default: start a private local one)."),
    workers: Optional[int] = typer.Option(None, "--workers", help=f"Workers (default: one per GPU; 1 on CPU; at most the cores/memory/GPUs, see above). {in_range(1)}"),
    devices_per_worker: int = typer.Option(1, "--devices-per-worker", help=f"Devices per worker: each job's windows split over them (GPUs per Ray actor). {in_range(1)}"),
    retries: int = typer.Option(2, "--retries", help=f"Retries of a job whose worker died or ran out of memory. {in_range(0)}"),
    report: Optional[Path] = typer.Option(None, "--report", help="Farm report JSON (default: JOBS.farm-report.json beside the jobs file)."),
    jobs_per_worker: Optional[int] = typer.Option(None, "--jobs-per-worker", help=f"Jobs in flight per worker, their stages overlapped (default 2 on a GPU, 1 on a CPU). {in_range(1)}"),
    progress: str = typer.Option("auto", "--progress", metavar="auto|none", help="auto: a bar on a terminal, plain lines otherwise, on stderr; none."),
    device: str = typer.Option("cpu", "--device", metavar="cpu|cuda|auto",
                               help="cpu, or cuda (Ray gives each worker its own GPU, so no :N), or auto (cuda when the cluster has GPUs)."),
    *,
    settings: dict,
    weight_choice: opt.WeightChoice,
    render_choice: opt.RenderChoice,
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    if jobs is None:
        raise InputError("mimic farm needs --jobs FILE (or a subcommand: openjd-template)")
    code = farm_command(jobs_file=jobs, address=address, workers=workers, devices_per_worker=devices_per_worker, retries=retries, report_path=report,
                        jobs_per_worker=jobs_per_worker, progress=progress, device=device, overrides=settings, weight_choice=weight_choice,
                        render_choice=render_choice)
    if code:
        raise typer.Exit(code=code)


def farm_command(*, jobs_file, address=None, workers=None, devices_per_worker=1, retries=2, report_path=None, jobs_per_worker=None, progress="auto",
                 device="cpu", overrides: dict | None = None, weight_choice: opt.WeightChoice = opt.WeightChoice(),
                 render_choice: opt.RenderChoice = opt.RenderChoice()) -> int:
    """Resolve everything on this machine (one-line errors before any worker starts; a bad job
    fails alone), render on the farm, write the report. Returns the exit code."""
    import time

    from mimic.commands.run import resolve_batch, runtime_options
    from mimic.runtime.jobs import load_jobs_file

    t_start = time.perf_counter()  # the summary line accounts for the whole run from here

    from mimic.commands.conventions import check_range
    from mimic.media.video_writer import check_writable

    rc = render_choice
    for flag, value, lo in (("--workers", workers, 1), ("--retries", retries, 0), ("--jobs-per-worker", jobs_per_worker, 1),
                            ("--devices-per-worker", devices_per_worker, 1)):
        check_range(flag, value, lo)
    report_path = Path(report_path or Path(jobs_file).with_name(Path(jobs_file).stem + ".farm-report.json"))
    check_writable(report_path, create=False, what="--report")  # before any job renders, not after all of them
    if progress not in ("auto", "none"):
        raise InputError(f"--progress must be auto or none, got {progress!r}")
    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"--device must be auto, cpu or cuda (Ray gives each GPU worker its own GPU), got {device!r}")
    base, run_warnings, entries = resolve_batch(weight_choice.preset, rc.config, overrides or {}, lambda _: load_jobs_file(jobs_file))

    from mimic.farm.farm import Farm
    from mimic.farm.signals import held
    from mimic.farm.view import FarmView

    options = runtime_options(rc, "cpu" if device == "auto" else device)
    layout = weight_choice.layout()

    preparing = time.perf_counter() - t_start
    farm = Farm(layout=layout, options=options, base_config=base, run_warnings=tuple(run_warnings), address=address, workers=workers, devices_per_worker=devices_per_worker, retries=retries,
                checkpoint_every=rc.checkpoint_every, checkpoint_dir=rc.checkpoint_dir, resume=rc.resume, jobs_per_worker=jobs_per_worker,
                auto_device=device == "auto")
    closing = 0.0
    try:
        report = farm.run(entries, view=FarmView() if progress == "auto" else None)  # sizes, admits, starts, renders
    finally:
        with held():  # the report and the clean-up run to their end; a signal meanwhile is answered after them
            if any(r.outcome != "pending" for r in farm._results):  # not when the farm could not start (one line says why)
                written = farm.report().write(report_path)
                log.info(f"farm report: {written}")
            t_close = time.perf_counter()
            farm.close()
            closing = time.perf_counter() - t_close
    # e.g. "farm: 4 done, 0 failed in 150.2 s: 1.1 s preparing (...), 44.8 s Ray cluster start-up, 2.9 s worker start-up (...),
    # 101.0 s rendering, 0.4 s shutdown": the parts add up to the wall time since the command started
    (log.error if report.failed else log.info)(f"farm: {report.summary(before=[('preparing', preparing)], more=[('shutdown', closing)])}")
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

    from mimic.media.video_writer import check_writable

    if Path(out).exists() and not Path(out).is_dir():
        raise InputError(f"--out {out} is a file: give a folder for the job bundle (template.yaml, parameter_values.yaml)")
    check_writable(Path(out) / "template.yaml", create=False, what="--out")
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
