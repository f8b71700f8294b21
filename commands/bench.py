"""``mimic bench`` (measure, append JSON lines) and ``mimic bench report`` (merge files, tables + plots).

``bench`` is a typer sub-app whose callback runs the benchmark when no subcommand follows
(``invoke_without_command=True``), so both ``mimic bench --preset tiny ...`` and
``mimic bench report results.jsonl -o report/`` work.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import List, Optional

import typer

from mimic.commands import options as opt

from mimic.commands.conventions import BACKENDS, DEVICE_HELP, DEVICE_METAVAR, PRESET_HELP, PRESETS, check_device, choices, in_range
from mimic.errors import InputError, Interrupted

BENCH_HELP = (
    "Benchmark every stage and the whole job on each backend, against the upstream-faithful reference "
    "measured in the same run; append JSON-lines records to --out.\n\n"
    "Shapes: the released 1024x576 (WIDTHxHEIGHT) with 16- and 72-frame windows for --weights; the tiny preset at a small "
    "size otherwise. --quick shrinks everything; --scaling adds wall time and peak RSS against the number of "
    "output frames (one process per point, after an untimed warm-up job). Then: mimic bench report FILES -o DIR."
)


def parse_size(text: str | None, option: str) -> tuple[int, int] | None:
    """``WIDTHxHEIGHT`` or a shape preset name (``portrait-576``), multiples of 64 -> (height, width)."""
    from mimic.commands.conventions import parse_size as parse

    return parse(text, option)


def parse_ints(text: str | None, option: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise InputError(f"{option} takes a comma-separated list of integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise InputError(f"{option} needs positive integers, got {text!r}")
    return values


def command_line(args: dict) -> str:
    """The equivalent command line (recorded with every result; defaults left out)."""
    parts = ["mimic", "bench"]
    for key, value in args.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False or value == ():
            continue
        if value is True:
            parts.append(flag)
        elif isinstance(value, (list, tuple)):
            for v in value:
                parts += [flag, str(v)]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


bench_app = typer.Typer(help=BENCH_HELP, add_completion=False, pretty_exceptions_enable=False)

@bench_app.callback(invoke_without_command=True)
def bench(
    ctx: typer.Context,
    preset: opt.Preset = None,
    weights: opt.Weights = None,
    svd: opt.Svd = None,
    checkpoint: opt.Checkpoint = None,
    engines: Optional[Path] = typer.Option(None, "--engines", help="Engine folder from `mimic build-engines` (tensorrt)."),
    onnx_dir: Optional[Path] = typer.Option(None, "--onnx", help="Exported ONNX folder (onnxruntime; default: exported into the cache)."),
    backend: Optional[List[str]] = typer.Option(None, "--backend", metavar=choices(BACKENDS), help="Backends to measure (repeat; default torch + onnxruntime, + tensorrt with --engines)."),
    out: Path = typer.Option(Path("results.jsonl"), "--out", help="JSON-lines file the records are appended to."),
    device: str = typer.Option("cpu", "--device", metavar=DEVICE_METAVAR, help=DEVICE_HELP),
    precision: Optional[str] = typer.Option(None, "--precision", metavar="fp16|fp32", help="Default: fp16 on CUDA, fp32 on the CPU."),
    size: Optional[str] = typer.Option(None, "--size", metavar="WIDTHxHEIGHT", help="Benchmark size, multiples of 64 (default 1024x576 with --weights, 192x128 with a preset; --quick 128x64)."),
    window: Optional[List[int]] = typer.Option(None, "--window", help=f"Stage-benchmark window length (repeat; default 16 and 72 with --weights, 16 with a preset). {in_range(2)}"),
    e2e_window: Optional[int] = typer.Option(None, "--e2e-window", help=f"Window of the end-to-end job (default: the largest --window). {in_range(2)}"),
    overlap: Optional[int] = typer.Option(None, "--overlap", help=f"Window overlap of the end-to-end job (below its window). {in_range(0)}"),
    frames: Optional[int] = typer.Option(None, "--frames", help=f"Output frames of the end-to-end job. {in_range(1)}"),
    steps: Optional[int] = typer.Option(None, "--steps", help=f"Denoising steps of the end-to-end job (default 25 with --weights). {in_range(1)}"),
    repeats: Optional[int] = typer.Option(None, "--repeats", help=f"Timed calls per stage (after warm-up). {in_range(1)}"),
    warmup: Optional[int] = typer.Option(None, "--warmup", help=f"Untimed calls per stage before timing. {in_range(0)}"),
    e2e_repeats: Optional[int] = typer.Option(None, "--e2e-repeats", help=f"End-to-end rounds (median; 0 skips end to end). {in_range(0)}"),
    threads: Optional[int] = typer.Option(None, "--threads", help=f"CPU threads for torch and onnxruntime (default: theirs). {in_range(1)}"),
    no_reference: bool = typer.Option(False, "--no-reference", help="Skip the upstream-faithful reference (no speedups then)."),
    time_budget: float = typer.Option(540.0, "--time-budget", help="Seconds; sections that would start later are skipped and recorded (0: no limit)."),
    scaling: bool = typer.Option(False, "--scaling", help="Also measure wall time and peak RSS against video length."),
    quick: bool = typer.Option(False, "--quick", help="Smaller shapes, fewer repeats, fewer scaling points."),
    scaling_frames: Optional[str] = typer.Option(None, "--scaling-frames", help="Comma-separated output-frame counts (default 72,144,288,576; quick 16,32,64)."),
    scaling_size: Optional[str] = typer.Option(None, "--scaling-size", metavar="WIDTHxHEIGHT", help="Size of the scaling points (default 192x128; --quick 128x64)."),
    scaling_steps: int = typer.Option(1, "--scaling-steps", help=f"Denoising steps per scaling point. {in_range(1)}"),
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    from mimic.benchmarks.report import summary_text
    from mimic.benchmarks.results import ResultsWriter
    from mimic.benchmarks.stage_bench import Bench, BenchPlan, defaults_for

    if (preset is None) == (weights is None):
        raise InputError(f"give --preset tiny or --weights DIR (exactly one; presets: {', '.join(PRESETS)})")
    check_device(device)
    if precision not in (None, "fp16", "fp32"):
        raise InputError(f"unknown precision {precision!r}; choose fp16 or fp32")
    backends = tuple(dict.fromkeys(backend or (["torch", "onnxruntime"] + (["tensorrt"] if engines else []))))
    d = defaults_for(real=weights is not None, quick=quick)
    hw = parse_size(size, "--size")
    if hw:
        d["height"], d["width"] = hw
    if window:
        d["windows"] = tuple(window)
        d["e2e_window"] = max(window)
    for key, value in (("e2e_window", e2e_window), ("overlap", overlap), ("frames", frames), ("steps", steps), ("repeats", repeats), ("warmup", warmup), ("e2e_repeats", e2e_repeats)):
        if value is not None:
            d[key] = value
    if d["overlap"] >= d["e2e_window"]:
        d["overlap"] = max(0, d["e2e_window"] // 4)
    args = dict(
        preset=preset, weights=weights, svd=svd, checkpoint=checkpoint, engines=engines, onnx=onnx_dir, backend=backends,
        device=device if device != "cpu" else None, precision=precision, size=size,
        window=tuple(window or ()), e2e_window=e2e_window, overlap=overlap, frames=frames, steps=steps, repeats=repeats, warmup=warmup,
        e2e_repeats=e2e_repeats, threads=threads, no_reference=no_reference, time_budget=time_budget if time_budget != 540.0 else None,
        scaling=scaling, quick=quick, scaling_frames=scaling_frames, scaling_size=scaling_size, scaling_steps=scaling_steps if scaling_steps != 1 else None,
        out=out,
    )
    plan = BenchPlan(
        preset=preset, weights=weights, engines=engines, onnx_dir=onnx_dir, backends=backends, device=device, precision=precision,
        reference=not no_reference, time_budget_s=time_budget or None, threads=threads, svd=svd, checkpoint=checkpoint, **d,
    )
    sc_frames = parse_ints(scaling_frames, "--scaling-frames")
    sc_size = parse_size(scaling_size, "--scaling-size")
    writer = ResultsWriter(out)

    runner = Bench(plan, command_line(args), writer, typer.echo)
    try:
        runner.run()  # every record is appended (flushed, fsynced) to --out as soon as it is measured
        if scaling:
            _run_scaling(runner, plan, quick, sc_frames, sc_size, scaling_steps, writer)
    except (Interrupted, KeyboardInterrupt):
        typer.echo(f"mimic bench stopped: the {len(writer.records)} records measured before are in {out}", err=True)
        raise
    typer.echo(f"wrote {len(writer.records)} records to {out}")
    typer.echo("")
    typer.echo(summary_text(writer.records))

@bench_app.command("quality")
def quality(
    preset: Optional[str] = typer.Option(None, "--preset", metavar=choices(PRESETS), help=PRESET_HELP + " With toy the ground truth is known."),
    weights: opt.Weights = None,
    out: Path = typer.Option(Path("quality"), "--out", help="Folder for quality.json, quality.md and quality.png."),
    variant: Optional[List[str]] = typer.Option(None, "--variant", metavar="VARIANT", help="A variant (repeat), e.g. ays-10, karras-15+overlap-2, onnxruntime+fp16, ramp, or SETTING=VALUE for any generation setting (pose_strength=0.5, ays-10+draw_hands=false); default: the full set."),
    frames: Optional[int] = typer.Option(None, "--frames", help="Driving frames of the job (default: three windows' worth)."),
    resolution: Optional[int] = typer.Option(None, "--resolution", help="Short side in px (default: the preset's; small for a quick check)."),
    window: Optional[int] = typer.Option(None, "--window", help="Frames per window (default: the preset's)."),
    seed: int = typer.Option(42, "--seed", help="Random seed (the same for every variant)."),
    device: str = typer.Option("cpu", "--device", metavar=DEVICE_METAVAR, help=DEVICE_HELP),
    engines: Optional[Path] = typer.Option(None, "--engines", help="Engine folder (for tensorrt variants)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch and onnxruntime."),
) -> None:
    """What speed options cost: steps 25/15/10/6, Karras vs Align Your Steps, overlap, guidance ramp,
    fp16, backends (or any generation setting); per variant seconds, UNet calls, PSNR/SSIM to the
    25-step output and (toy) to the ground truth, seam and flicker scores, and a quality-vs-cost plot.
    A line as each variant starts and ends (with an ETA); quality.json and quality.md are rewritten
    after every variant, marked partial until the run completes, so a stopped run keeps what it measured."""
    from mimic.benchmarks.quality_bench import DEFAULT_VARIANTS, QualityPlan, run_quality

    if (preset is None) == (weights is None):
        raise InputError(f"give --preset or --weights DIR (exactly one; presets: {', '.join(PRESETS)})")
    check_device(device)
    plan = QualityPlan(preset=preset, weights=weights, variants=tuple(variant or DEFAULT_VARIANTS), frames=frames, resolution=resolution,
                       window=window, seed=seed, device=device, engines=engines, threads=threads)
    run_quality(plan, out, typer.echo)


@bench_app.command("workers")
def workers(
    preset: opt.Preset = None,
    weights: opt.Weights = None,
    backend: str = typer.Option("onnxruntime", "--backend", metavar=choices(BACKENDS), help="Backend of every worker."),
    device: str = typer.Option("cpu,cpu", "--device", help="Devices, one worker each (cpu,cpu or cuda:0,cuda:1,...); runs 1, 2, 4, ... of them."),
    frames: int = typer.Option(40, "--frames", help="Output frames of the job."),
    steps: int = typer.Option(2, "--steps", help="Denoising steps."),
    resolution: Optional[int] = typer.Option(None, "--resolution", help="Short side in px (default: the preset's)."),
    window: Optional[int] = typer.Option(None, "--window", help="Frames per window (default: the preset's)."),
    overlap: Optional[int] = typer.Option(None, "--overlap", help="Window overlap (default: the preset's)."),
    repeats: int = typer.Option(1, "--repeats", help="Timed jobs per worker count (median), after one untimed warm-up."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads per worker (default: the cores split over the CPU workers)."),
    out: Path = typer.Option(Path("results.jsonl"), "--out", help="JSON-lines file the `workers` records are appended to."),
) -> None:
    """One job's windows split over 1, 2, 4, ... workers: seconds per job, speedup, parallel
    efficiency, and whether the frames equal the one-worker frames."""
    from mimic.benchmarks.env import fingerprint
    from mimic.benchmarks.results import ResultsWriter, RunContext
    from mimic.benchmarks.worker_scaling import WorkerPlan, run_workers
    from mimic.runtime.api import parse_devices

    if (preset is None) == (weights is None):
        raise InputError(f"give --preset or --weights DIR (exactly one; presets: {', '.join(PRESETS)})")
    devices = parse_devices(device)
    writer = ResultsWriter(out)
    ctx = RunContext.new("mimic bench workers" + command_line({"preset": preset, "weights": weights, "backend": backend, "device": devices, "frames": frames, "steps": steps})[len("mimic bench"):],
                         fingerprint(), devices, preset or "real")
    plan = WorkerPlan(preset=preset, weights=str(weights) if weights else None, backend=backend, devices=devices, frames=frames,
                      resolution=resolution, window=window, overlap=overlap, steps=steps, repeats=repeats, threads=threads)
    typer.echo(f"mimic bench workers: {backend} on {devices}, {frames} frames, {steps} steps")
    run_workers(plan, ctx, writer, typer.echo)
    typer.echo(f"wrote {len(writer.records)} records to {out}")


@bench_app.command("report")
def report(
    files: List[Path] = typer.Argument(..., help="Results files (JSON lines) from `mimic bench`, any number, any machines."),
    out_dir: Path = typer.Option(Path("report"), "-o", "--out", help="Folder for report.md and the PNG plots."),
) -> None:
    """Merge results files into DIR/report.md (Markdown tables) and PNG plots."""
    from mimic.benchmarks.report import report_files

    rep = report_files(files, out_dir)
    typer.echo(f"wrote {rep.markdown} ({rep.records} records)")
    for p in rep.plots:
        typer.echo(f"wrote {p}")


app = typer.Typer()
app.add_typer(bench_app, name="bench")


def _run_scaling(runner, plan, quick: bool, frames, size, steps: int, writer) -> None:
    from mimic.benchmarks.scaling import FULL_POINTS, FULL_SIZE, QUICK_POINTS, QUICK_SIZE, run_scaling, scaling_points

    frames = frames or (QUICK_POINTS if quick else FULL_POINTS)
    size = size or (QUICK_SIZE if quick else FULL_SIZE)
    runtime = [b for b in plan.backends if b in ("torch", "onnxruntime")][:1]
    backends = tuple(runtime + (["reference"] if plan.reference else []))
    if not backends:
        writer(runner.ctx.record("skip", what="scaling", reason="scaling runs the torch or onnxruntime backend (or the reference); none was asked for"))
        return
    if "onnxruntime" in backends:  # export once here, so no child's peak RSS includes an export
        from mimic.runtime.onnx_cache import ensure_onnx_graphs

        ensure_onnx_graphs(runner.layout, runner.precision, plan.onnx_dir)
    window, overlap = plan.e2e_window, plan.overlap
    points = scaling_points(
        tuple(frames), size, backends, window=window, overlap=overlap, steps=steps, decode_chunk=plan.decode_chunk, preset=plan.preset,
        weights=str(plan.weights) if plan.weights else None, onnx_dir=str(plan.onnx_dir) if plan.onnx_dir else None, device=str(runner.device),
        threads=plan.threads,
    )
    typer.echo(f"scaling: {len(points)} points ({', '.join(backends)}; {', '.join(map(str, frames))} frames at {size[1]}x{size[0]}, {steps} step(s)), "
               "one process each, after an untimed warm-up job")
    run_scaling(points, runner.ctx, writer, typer.echo, configs=runner.configs)
