"""Which UNet layers cost the most when quantized to 8 bits, measured on the trained toy model.

    python -m mimic.benchmarks.quant_sensitivity --precision fp8 --frames 16 --threads 1 --out sens-fp8

One held-out toy job (the quality bench's puppet and dance, ``quality_bench.BENCH_SEED``; ``--frames``
driving frames, default one window; 16 is the quality bench's job, about 6 min per precision here) is rendered
with the torch backend in fp32, then again with only one *group* of layers fake-quantized (ModelOpt,
``mimic.model.quantize``), for every group: by kind (spatial / temporal attention, spatial / temporal
convolutions, resamplers, the embeddings and in/out layers NVIDIA keeps in 16 bits, ...) and by block
(down_blocks.N, mid_block, up_blocks.N, outer). Every quantizer is calibrated once, on *other* toy
dances (``CALIBRATION_SEEDS``), then switched on group by group. Per row: the layers quantized, the
PSNR of the output to the fp32 output (per-frame median; inf = identical) and its loss against the
truth (PSNR to the true frames, silhouette IoU), so what stays in 16 bits is measured, not copied.
Three whole-model rows close the table: NVIDIA's SVD recipe (no Conv3d), ours (plus Conv3d) and
every layer. Writes ``sensitivity.json`` and ``sensitivity.md`` into ``--out``.

This module also holds the calibration jobs that ``mimic quantize`` and the quality bench use (they
run the whole pipeline, so they live above the runtime): the toy preset's puppet dances by default,
or the jobs of a jobs file; each UNet call of each denoising step is one calibration batch.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mimic.errors import InputError
from mimic.toy.samples import HELD_OUT_BASE

# Held-out toy seeds for calibration: never trained on, and neither the demo's (HELD_OUT_BASE + 1)
# nor the quality bench's job (HELD_OUT_BASE + 14).
CALIBRATION_SEEDS = tuple(HELD_OUT_BASE + 200 + i for i in range(4))
BENCH_JOB_SEED = HELD_OUT_BASE + 14  # the quality bench's job (quality_bench.BENCH_SEED; that module imports this one)
QUALITY_CALIBRATION_SEED = CALIBRATION_SEEDS[0]  # the quality bench's fp8/int8 variants: one dance, the bench job's length


# ------------------------------------------------------------------------------ calibration jobs


@dataclass(frozen=True)
class CalibrationSet:
    """The jobs whose UNet calls calibrate the quantizers: toy dances (``seeds``; ``frames`` driving
    frames each, default two windows' worth) or every job of ``jobs_file``. ``steps``: denoising
    steps per job (default: the preset's or the job's)."""

    seeds: tuple[int, ...] = CALIBRATION_SEEDS
    frames: int | None = None
    steps: int | None = None
    jobs_file: Path | None = None

    def __post_init__(self) -> None:
        if self.jobs_file is None and not self.seeds:
            raise InputError("--samples must be >= 1 (calibration needs at least one dance)")
        if self.frames is not None and self.frames < 1:
            raise InputError(f"--frames must be >= 1, got {self.frames}")
        if self.steps is not None and self.steps < 1:
            raise InputError(f"--steps must be >= 1, got {self.steps}")

    def resolved(self, cfg) -> "CalibrationSet":
        """The same set with the defaults that ``cfg`` (the preset's generation settings) implies
        filled in, so the manifest names the frames and steps that ran."""
        if self.jobs_file is not None:
            return self
        steps = self.steps or cfg.steps
        return CalibrationSet(self.seeds, self.frames or _default_frames(cfg), steps, None)

    def describe(self) -> dict:
        """For the manifest (no absolute paths)."""
        if self.jobs_file is not None:
            return {"source": "jobs file", "jobs_file": Path(self.jobs_file).name, "steps": self.steps}
        return {"source": "toy puppet dances", "seeds": list(self.seeds), "frames": self.frames, "steps": self.steps}


def toy_inputs(seed: int, cfg, frames: int):
    """``(JobInputs, Sample)`` of toy sample ``seed`` at ``cfg``'s portrait size, as the quality bench
    builds its job (poses drawn with ``cfg``'s parts, padded to one window)."""
    from mimic.model.preprocess import target_size
    from mimic.pose.draw import DrawParts, draw_pose
    from mimic.pose.images import DrawnPoses
    from mimic.runtime.inputs import JobInputs, pad_to_window
    from mimic.toy.samples import make_sample

    height, width = target_size(2, 1, cfg.resolution)
    sample = make_sample(seed, (height, width), frames, start=0.0)
    parts = DrawParts.from_settings(cfg)
    drawn = DrawnPoses(draw_pose(sample.ref_pose, height, width, parts), sample.driving, height, width, parts)
    poses, _ = pad_to_window(drawn, cfg.window, pad=True)
    return JobInputs(sample.reference, poses, frames, cfg.output_fps), sample


def _default_frames(cfg) -> int:
    return 2 * (cfg.window - cfg.overlap) + cfg.overlap


class _Progress:
    """A line when a calibration job starts and ends, and a few in between (every quarter of its UNet calls)."""

    def __init__(self, echo: Callable[[str], None], label: str):
        self.echo, self.label, self.next, self.total = echo, label, 0, 0

    def on_progress(self, done: int, total: int) -> None:
        self.total = total
        if self.next <= done < total:
            self.echo(f"    {self.label}: UNet call {done}/{total}")
            self.next = done + max(1, total // 4)


def calibration_loop(mm, calib: CalibrationSet, echo: Callable[[str], None] = print) -> Callable:
    """``forward_loop(unet)`` for ``mimic.model.quantize.quantize_unet``: renders every calibration job
    through the one pipeline with ``mm`` (a torch-backend ``MimicMotion`` whose UNet is the one being
    calibrated) and drops the frames. The jobs are checked here, before any quantizer is inserted."""
    from mimic.runtime.pipeline import FrameCollector, generate, in_memory_job

    base = mm.base_config
    if calib.steps is not None:
        base = base.with_overrides(steps=calib.steps)
    if calib.jobs_file is not None:
        from mimic.runtime.jobs import RefusedJob, load_jobs_file

        jobs = load_jobs_file(Path(calib.jobs_file))
        refused = [j for j in jobs if isinstance(j, RefusedJob)]
        if refused:
            raise InputError(f"--jobs {calib.jobs_file}: {len(refused)} entr{'y' if len(refused) == 1 else 'ies'} cannot run, "
                             f"e.g. {refused[0]}")
        if not jobs:
            raise InputError(f"--jobs {calib.jobs_file}: no jobs")
        admitted = [mm.admit(j) for j in jobs]
        if calib.steps is not None:
            import dataclasses

            admitted = [dataclasses.replace(a, config=a.config.with_overrides(steps=calib.steps)) for a in admitted]
        runs = [(f"job {i}/{len(admitted)} ({a.job.reference.name})", a, None) for i, a in enumerate(admitted, 1)]
    else:
        frames = calib.frames or _default_frames(base)
        runs = [(f"dance {i}/{len(calib.seeds)} (toy seed {s}, {frames} frames, {base.steps} steps)", in_memory_job(base),
                 toy_inputs(s, base, frames)[0]) for i, s in enumerate(calib.seeds, 1)]
    unet = mm.backend.models.unet

    def loop(model) -> None:
        if model is not unet:
            raise RuntimeError("the calibration loop must run the backend's own UNet")
        t0 = time.perf_counter()
        calls = 0
        for label, job, inputs in runs:
            t = time.perf_counter()
            hooks = _Progress(echo, label)
            generate(mm.components, job, inputs=inputs, sink=FrameCollector(keep=False), hooks=hooks)
            calls += hooks.total
            echo(f"  calibrated on {label}: {hooks.total} UNet calls in {time.perf_counter() - t:.1f} s")
        echo(f"  calibration: {len(runs)} job(s), {calls} UNet calls (CFG pairs) in {time.perf_counter() - t0:.1f} s")

    return loop


def quantize_backend_unet(mm, recipe, calib: CalibrationSet, echo: Callable[[str], None] = print):
    """Quantize and calibrate the UNet of ``mm`` (torch backend, fp32) in place; returns the
    ``QuantSummary``. From then on ``mm`` renders with the fake-quantized UNet."""
    from mimic.model.quantize import load_modelopt, quantize_unet

    if getattr(mm.options, "backend", "torch") != "torch":
        raise InputError("quantization runs on the torch backend's UNet")
    load_modelopt()  # the install advice before any calibration work
    loop = calibration_loop(mm, calib, echo)
    echo(f"quantizing the UNet to {recipe.precision} ({', '.join(recipe.layer_types)}; kept in 16 bits: "
         f"{', '.join(recipe.kept_16bit) or 'nothing'}); calibrating:")
    summary = quantize_unet(mm.backend.models.unet, recipe, loop)
    echo(f"  {summary.layers} layers quantized ({summary.quantizers} quantizers) in {summary.seconds:.1f} s")
    return summary


# ------------------------------------------------------------------------------- sensitivity


@dataclass(frozen=True)
class SensitivityPlan:
    precision: str = "fp8"
    frames: int | None = None  # driving frames of the bench job (default: one window's worth, two windows at the toy's overlap)
    steps: int | None = None  # default: the preset's
    seed: int = 42
    threads: int | None = None
    calibration: CalibrationSet = field(default_factory=lambda: CalibrationSet(CALIBRATION_SEEDS[:2]))


@dataclass
class SensitivityRow:
    group: str  # "kind:temporal_conv", "block:up_blocks.1", "recipe:nvidia", ...
    layers: int
    psnr_fp32: float  # per-frame median PSNR to the fp32 render of the same job (dB; inf = identical)
    psnr_truth: float
    iou_truth: float
    seconds: float


def _groups(layer_names: Sequence[str]) -> list[tuple[str, Callable[[str], bool]]]:
    from mimic.model.quantize import KINDS, layer_block, layer_kind

    kinds = [k for k in KINDS if any(layer_kind(n) == k for n in layer_names)]
    blocks = list(dict.fromkeys(layer_block(n) for n in layer_names))
    out: list[tuple[str, Callable[[str], bool]]] = []
    out += [(f"kind:{k}", lambda n, k=k: layer_kind(n) == k) for k in kinds]
    out += [(f"block:{b}", lambda n, b=b: layer_block(n) == b) for b in sorted(blocks)]
    return out


def run_sensitivity(plan: SensitivityPlan, preset: str = "toy", echo: Callable[[str], None] = print) -> dict:
    """Render the bench job in fp32 and with each layer group quantized; returns the report dict."""
    import torch

    from mimic.media import quality as qm
    from mimic.model.presets import default_generation, layout_from_options
    from mimic.model.quantize import LAYER_TYPES, NVIDIA_KEPT_16BIT, NVIDIA_LAYER_TYPES, QuantRecipe, default_recipe, quantizable_layers, set_enabled_layers
    from mimic.runtime.api import MimicMotion, RuntimeOptions
    from mimic.runtime.pipeline import FrameCollector, generate, in_memory_job
    from mimic.toy.score import score_render

    t_run = time.perf_counter()
    base = default_generation(preset).with_overrides(seed=plan.seed)
    if plan.steps is not None:
        base = base.with_overrides(steps=plan.steps)
    frames = plan.frames or base.window
    inputs, sample = toy_inputs(BENCH_JOB_SEED, base, frames)
    calib = plan.calibration.resolved(base)
    mm = MimicMotion(layout_from_options(preset=preset), RuntimeOptions(backend="torch", device="cpu", precision="fp32", threads=plan.threads), base)
    try:
        unet = mm.backend.models.unet

        def render() -> tuple[np.ndarray, float]:
            sink = FrameCollector()
            t = time.perf_counter()
            generate(mm.components, in_memory_job(base), inputs=inputs, sink=sink)
            return sink.frames().transpose(0, 2, 3, 1), time.perf_counter() - t

        echo(f"quant sensitivity ({plan.precision}): toy seed {BENCH_JOB_SEED}, {frames} frames, {base.steps} steps, window {base.window}")
        fp32, secs = render()
        echo(f"  fp32 render: {secs:.1f} s")
        everything = QuantRecipe(plan.precision, layer_types=LAYER_TYPES, kept_16bit=())
        quantize_backend_unet(mm, everything, calib, echo)
        layers = quantizable_layers(unet)
        names = list(layers)
        rows: list[SensitivityRow] = []

        def measure(group: str, keep: Callable[[str], bool]) -> None:
            n = set_enabled_layers(unet, keep)
            out, s = render()
            truth = score_render(out, sample)
            rows.append(SensitivityRow(group, n, float(np.median(qm.psnr(out, fp32))), truth.median_psnr, truth.median_iou, s))
            r = rows[-1]
            echo(f"  [{len(rows)}] {group}: {n} layers, PSNR to fp32 {_f(r.psnr_fp32)} dB, to truth {_f(r.psnr_truth)} dB, IoU {r.iou_truth:.3f} ({s:.1f} s)")

        measure("none (fp32 through disabled quantizers)", lambda n: False)
        for group, keep in _groups(names):
            measure(group, keep)
        recipes = {"recipe:nvidia (Linear+Conv2d, NVIDIA's 16-bit layers)": QuantRecipe(plan.precision, NVIDIA_LAYER_TYPES, NVIDIA_KEPT_16BIT),
                   "recipe:default (+Conv3d)": default_recipe(plan.precision),
                   "recipe:all layers": everything}
        for group, recipe in recipes.items():
            measure(group, lambda n, r=recipe: n in layers and r.selects(n, layers[n]))
        truth_fp32 = score_render(fp32, sample)
    finally:
        mm.close()
    return {
        "precision": plan.precision, "preset": preset, "frames": frames, "steps": base.steps, "window": base.window,
        "size": list(fp32.shape[1:3]), "bench_seed": BENCH_JOB_SEED, "calibration": calib.describe(),
        "fp32_truth": {"psnr": truth_fp32.median_psnr, "iou": truth_fp32.median_iou},
        "rows": [asdict(r) for r in rows], "wall_seconds": time.perf_counter() - t_run,
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "torch_threads": torch.get_num_threads(),
    }


def _f(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return "inf" if math.isinf(x) else f"{x:.{digits}f}"


def markdown(report: dict) -> str:
    ref = report["fp32_truth"]
    lines = [f"Precision **{report['precision']}**, {report['preset']} preset, {report['frames']} frames at "
             f"{report['size'][1]}x{report['size'][0]}, {report['steps']} steps, window {report['window']}; "
             f"fp32 render: {ref['psnr']:.2f} dB to the truth, IoU {ref['iou']:.3f}.", "",
             "| layers quantized | count | PSNR to fp32 (dB) | PSNR to truth (dB) | Δ truth (dB) | silhouette IoU | Δ IoU |",
             "|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        psnr = math.inf if r["psnr_fp32"] is None else r["psnr_fp32"]
        lines.append(f"| {r['group']} | {r['layers']} | {_f(psnr)} | {_f(r['psnr_truth'])} | {r['psnr_truth'] - ref['psnr']:+.3f} | "
                     f"{r['iou_truth']:.3f} | {r['iou_truth'] - ref['iou']:+.3f} |")
    return "\n".join(lines)


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def main(argv: Sequence[str] | None = None) -> int:
    from mimic.files import atomic_write_text
    from mimic.model.quantize import PRECISIONS

    p = argparse.ArgumentParser(prog="python -m mimic.benchmarks.quant_sensitivity", description=__doc__.split("\n\n")[0])
    p.add_argument("--precision", choices=PRECISIONS, default="fp8")
    p.add_argument("--frames", type=int, default=None, help="driving frames of the bench job (default: one window's worth)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the toy preset's)")
    p.add_argument("--samples", type=int, default=2, help="calibration dances (default 2)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--out", type=Path, default=Path("quant-sensitivity"))
    args = p.parse_args(argv)
    calib = CalibrationSet(seeds=tuple(HELD_OUT_BASE + 200 + i for i in range(args.samples)))
    report = run_sensitivity(SensitivityPlan(args.precision, args.frames, args.steps, threads=args.threads, calibration=calib))
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "sensitivity.json", json.dumps(_finite(report), indent=2) + "\n")
    atomic_write_text(args.out / "sensitivity.md", markdown(report) + "\n")
    print(markdown(report))
    print(f"wrote {args.out / 'sensitivity.json'} and {args.out / 'sensitivity.md'} ({report['wall_seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
