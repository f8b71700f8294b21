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

from mimic.errors import InputError

BENCH_HELP = (
    "Benchmark every stage and the whole job on each backend, against the upstream-faithful reference "
    "measured in the same run; append JSON-lines records to --out.\n\n"
    "Shapes: the released 576x1024 with 16- and 72-frame windows for --weights; the tiny preset at a small "
    "size otherwise. --quick shrinks everything; --scaling adds wall time and peak RSS against the number of "
    "output frames (one process per point). Then: mimic bench report FILES -o DIR."
)


def parse_size(text: str | None, option: str) -> tuple[int, int] | None:
    """``HEIGHTxWIDTH`` or a shape preset name (``portrait-576``), multiples of 64."""
    if text is None:
        return None
    from mimic.engine.command import shape_hw

    try:
        return shape_hw(text)
    except InputError as err:
        raise InputError(f"{option}: {err}") from None


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
    preset: Optional[str] = typer.Option(None, "--preset", help="Built-in weights: tiny."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Upstream weights folder (real model, 576x1024)."),
    engines: Optional[Path] = typer.Option(None, "--engines", help="Engine folder from `mimic build-engines` (tensorrt)."),
    onnx_dir: Optional[Path] = typer.Option(None, "--onnx", help="Exported ONNX folder (onnxruntime; default: exported into the cache)."),
    backend: Optional[List[str]] = typer.Option(None, "--backend", help="torch | onnxruntime | tensorrt (repeat; default torch + onnxruntime, + tensorrt with --engines)."),
    out: Path = typer.Option(Path("results.jsonl"), "--out", help="JSON-lines file the records are appended to."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda[:N] (default: cuda when available)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp16 | fp32 (default fp16 on CUDA, fp32 on CPU)."),
    size: Optional[str] = typer.Option(None, "--size", help="HEIGHTxWIDTH (default 576x1024 real, 128x192 tiny)."),
    window: Optional[List[int]] = typer.Option(None, "--window", help="Stage-benchmark window length (repeat; default 16 and 72 real, 16 tiny)."),
    e2e_window: Optional[int] = typer.Option(None, "--e2e-window", help="Window of the end-to-end job (default: the largest --window)."),
    overlap: Optional[int] = typer.Option(None, "--overlap", help="Window overlap of the end-to-end job."),
    frames: Optional[int] = typer.Option(None, "--frames", help="Output frames of the end-to-end job."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Denoising steps of the end-to-end job (real default 25)."),
    repeats: Optional[int] = typer.Option(None, "--repeats", help="Timed calls per stage (after warm-up)."),
    warmup: Optional[int] = typer.Option(None, "--warmup", help="Untimed calls per stage before timing."),
    e2e_repeats: Optional[int] = typer.Option(None, "--e2e-repeats", help="End-to-end rounds (median; 0 skips end to end)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch and onnxruntime."),
    no_reference: bool = typer.Option(False, "--no-reference", help="Skip the upstream-faithful reference (no speedups then)."),
    time_budget: float = typer.Option(540.0, "--time-budget", help="Seconds; sections that would start later are skipped and recorded (0: no limit)."),
    scaling: bool = typer.Option(False, "--scaling", help="Also measure wall time and peak RSS against video length."),
    quick: bool = typer.Option(False, "--quick", help="Smaller shapes, fewer repeats, fewer scaling points."),
    scaling_frames: Optional[str] = typer.Option(None, "--scaling-frames", help="Comma-separated output-frame counts (default 72,144,288,576; quick 16,32,64)."),
    scaling_size: Optional[str] = typer.Option(None, "--scaling-size", help="HEIGHTxWIDTH of the scaling points (default 128x192; quick 64x128)."),
    scaling_steps: int = typer.Option(1, "--scaling-steps", help="Denoising steps per scaling point."),
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    from mimic.benchmarks.report import summary_text
    from mimic.benchmarks.results import ResultsWriter
    from mimic.benchmarks.stage_bench import Bench, BenchPlan, defaults_for

    if (preset is None) == (weights is None):
        raise InputError("give --preset tiny or --weights DIR (exactly one)")
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
        preset=preset, weights=weights, engines=engines, onnx=onnx_dir, backend=backends, device=device, precision=precision, size=size,
        window=tuple(window or ()), e2e_window=e2e_window, overlap=overlap, frames=frames, steps=steps, repeats=repeats, warmup=warmup,
        e2e_repeats=e2e_repeats, threads=threads, no_reference=no_reference, time_budget=time_budget if time_budget != 540.0 else None,
        scaling=scaling, quick=quick, scaling_frames=scaling_frames, scaling_size=scaling_size, scaling_steps=scaling_steps if scaling_steps != 1 else None,
        out=out,
    )
    plan = BenchPlan(
        preset=preset, weights=weights, engines=engines, onnx_dir=onnx_dir, backends=backends, device=device, precision=precision,
        reference=not no_reference, time_budget_s=time_budget or None, threads=threads, **d,
    )
    sc_frames = parse_ints(scaling_frames, "--scaling-frames")
    sc_size = parse_size(scaling_size, "--scaling-size")
    writer = ResultsWriter(out)

    runner = Bench(plan, command_line(args), writer, typer.echo)
    runner.run()
    if scaling:
        _run_scaling(runner, plan, quick, sc_frames, sc_size, scaling_steps, writer)
    typer.echo(f"wrote {len(writer.records)} records to {out}")
    typer.echo("")
    typer.echo(summary_text(writer.records))

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
    typer.echo(f"scaling: {len(points)} points ({', '.join(backends)}; {', '.join(map(str, frames))} frames at {size[0]}x{size[1]}, {steps} step(s)), one process each")
    run_scaling(points, runner.ctx, writer, typer.echo, configs=runner.configs)
