"""``mimic bench quality``: what each speed option costs in quality.

One job (a held-out toy puppet and dance: with ``--preset toy`` its true frames are known) is
rendered once per variant through the one pipeline. Per variant: seconds (``generate()`` wall time,
models already loaded), UNet calls (CFG pairs = steps x windows), PSNR/SSIM to the reference variant
(25 Karras steps, fp32, torch: the released sampler), PSNR/SSIM/silhouette IoU to the ground truth
(toy only), a seam score (frame-to-frame change across window boundaries / elsewhere) and a flicker
score (mean |second temporal difference|, 0..255; the ground truth's own value is reported beside
it). Writes quality.json, quality.md and quality.png (quality vs seconds) into ``--out``.

A variant is named by ``+``-joined parts: ``karras-N`` / ``ays-N`` (schedule and steps),
``overlap-N``, ``ramp`` (guidance 1 -> 3 over the frames instead of a constant 2), ``fp16`` and a
backend (``torch``, ``onnxruntime``); parts left out take the reference's values.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from mimic.media import quality as qm
from mimic.errors import InputError

REFERENCE = "karras-25"
DEFAULT_VARIANTS = (
    "karras-25", "karras-15", "karras-10", "karras-6", "ays-25", "ays-15", "ays-10", "ays-6",
    "overlap-6", "overlap-4", "overlap-2", "ramp", "onnxruntime", "onnxruntime+fp16",
    "ays-15+overlap-2", "ays-10+overlap-2", "karras-15+overlap-2",
)
BENCH_SEED = 1_000_014  # a held-out toy sample (costume, backdrop, dance)
RAMP = (1.0, 3.0)


@dataclass(frozen=True)
class Variant:
    name: str
    steps: int = 25
    schedule: str = "karras"
    overlap: int | None = None  # None: the preset's
    guidance: tuple[float, float] | None = None  # (min, max); None: the preset's constant
    backend: str = "torch"
    precision: str = "fp32"

    @classmethod
    def parse(cls, name: str) -> "Variant":
        v = cls(name=name)
        for part in name.split("+"):
            key, _, num = part.partition("-")
            if key in ("karras", "ays") and num.isdigit() and int(num) >= 1:
                v = replace(v, schedule=key, steps=int(num))
            elif key == "overlap" and num.isdigit():
                v = replace(v, overlap=int(num))
            elif part == "ramp":
                v = replace(v, guidance=RAMP)
            elif part in ("fp16", "fp32"):
                v = replace(v, precision=part)
            elif part in ("torch", "onnxruntime", "tensorrt"):
                v = replace(v, backend=part)
            else:
                raise InputError(f"unknown variant part {part!r} in {name!r}: use karras-N, ays-N, overlap-N, ramp, fp16, torch, onnxruntime")
        return v

    def overrides(self) -> dict:
        out = {"steps": self.steps, "schedule": self.schedule}
        if self.overlap is not None:
            out["overlap"] = self.overlap
        if self.guidance is not None:
            out["guidance_min"], out["guidance_max"] = self.guidance
        return out


@dataclass(frozen=True)
class QualityPlan:
    preset: str | None = "toy"
    weights: Path | None = None
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    frames: int | None = None  # driving frames (default: 3 windows' worth)
    resolution: int | None = None  # default: the preset's
    window: int | None = None
    seed: int = 42
    device: str = "cpu"
    engines: Path | None = None
    threads: int | None = None


@dataclass
class VariantResult:
    name: str
    backend: str
    precision: str
    steps: int
    schedule: str
    overlap: int
    guidance: str
    seconds: float
    unet_calls: int
    psnr_ref: float
    ssim_ref: float
    psnr_truth: float | None = None
    ssim_truth: float | None = None
    iou_truth: float | None = None
    seam: float = float("nan")
    flicker: float = float("nan")
    error: str | None = None


class _Counter:
    """Hooks recording the UNet calls (CFG pairs) of a job."""

    def __init__(self):
        from mimic.runtime.pipeline import Hooks

        class H(Hooks):
            total = 0

            def on_progress(self, done: int, total: int) -> None:
                H.total = total

        self.hooks = H()

    @property
    def calls(self) -> int:
        return type(self.hooks).total


def run_quality(plan: QualityPlan, out_dir: Path, echo: Callable[[str], None] = print) -> dict:
    """Render every variant, write quality.json/.md/.png into ``out_dir``; returns the JSON dict."""
    from mimic.model.preprocess import target_size
    from mimic.model.presets import default_generation, layout_from_options
    from mimic.model.windows import window_indices
    from mimic.pose.draw import draw_pose
    from mimic.pose.images import DrawnPoses
    from mimic.runtime.inputs import JobInputs, pad_to_window
    from mimic.runtime.pipeline import FrameCollector, generate, in_memory_job
    from mimic.runtime.api import MimicMotion, RuntimeOptions
    from mimic.toy.samples import make_sample

    variants = [Variant.parse(n) for n in dict.fromkeys((REFERENCE, *plan.variants))]
    layout = layout_from_options(preset=plan.preset, weights=plan.weights)
    base = default_generation(plan.preset).with_overrides(seed=plan.seed, resolution=plan.resolution, window=plan.window)
    if base.overlap >= base.window:
        base = base.with_overrides(overlap=base.window // 2)
    for v in variants:
        base.with_overrides(**v.overrides())  # every variant valid before anything renders
    height, width = target_size(2, 1, base.resolution)
    frames = plan.frames or 3 * (base.window - base.overlap) + base.overlap
    sample = make_sample(BENCH_SEED, (height, width), frames, start=0.0)
    drawn = DrawnPoses(draw_pose(sample.ref_pose, height, width), sample.driving, height, width)
    poses, _ = pad_to_window(drawn, base.window, pad=True)
    inputs = JobInputs(sample.reference, poses, frames, base.output_fps)
    truth = plan.preset == "toy"
    echo(f"quality bench: {plan.preset or plan.weights}, {frames} frames at {width}x{height}, window {base.window}, "
         f"{len(variants)} variants (reference {REFERENCE}, torch fp32)")

    loaded: dict[tuple[str, str], MimicMotion] = {}
    renders: dict[str, np.ndarray] = {}
    results: list[VariantResult] = []
    try:
        for v in variants:
            key = (v.backend, v.precision)
            cfg = base.with_overrides(**v.overrides())
            try:
                if key not in loaded:
                    options = RuntimeOptions(backend=v.backend, device=plan.device, precision=v.precision, engines=plan.engines, threads=plan.threads)
                    loaded[key] = MimicMotion(layout, options, base)
                counter, sink = _Counter(), FrameCollector()
                t0 = time.perf_counter()
                generate(loaded[key].components, in_memory_job(cfg), inputs=inputs, sink=sink, hooks=counter.hooks)
                seconds = time.perf_counter() - t0
            except Exception as err:  # a backend that cannot run here: recorded, the bench goes on
                if v.name == REFERENCE:
                    raise
                results.append(VariantResult(v.name, v.backend, v.precision, v.steps, v.schedule, cfg.overlap, _guidance(cfg), math.nan, 0,
                                             math.nan, math.nan, error=str(err).splitlines()[0][:200]))
                echo(f"  {v.name:<22} skipped: {results[-1].error}")
                continue
            out = sink.frames().transpose(0, 2, 3, 1)
            renders[v.name] = out
            ref = renders[REFERENCE]
            windows = window_indices(len(poses), cfg.window, cfg.overlap)
            r = VariantResult(
                v.name, v.backend, v.precision, cfg.steps, cfg.schedule, cfg.overlap, _guidance(cfg), seconds, counter.calls,
                float(np.median(qm.psnr(out, ref))), float(np.median(qm.ssim(out, ref))),
                seam=qm.seam_score(out, [b for b in qm.window_boundaries(windows) if b < frames]), flicker=qm.flicker_score(out),
            )
            if truth:
                from mimic.toy.score import score_render

                s = score_render(out, sample)
                r.psnr_truth, r.ssim_truth, r.iou_truth = s.median_psnr, s.median_ssim, s.median_iou
            results.append(r)
            echo(f"  {v.name:<22} {seconds:7.2f} s  {r.unet_calls:4d} calls  " + _short(r))
    finally:
        for mm in loaded.values():
            mm.close()

    report = {
        "plan": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(plan).items()},
        "config": base.to_dict(), "frames": frames, "size": [height, width],
        "truth_flicker": qm.flicker_score(sample.frames) if truth else None,
        "variants": [asdict(r) for r in results],
        "recommended": recommend(results),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "quality.json").write_text(json.dumps(_finite(report), indent=2) + "\n")
    (out_dir / "quality.md").write_text(markdown(report) + "\n")
    plot(results, out_dir / "quality.png", truth)
    echo(markdown(report))
    echo(f"wrote {out_dir / 'quality.json'}, {out_dir / 'quality.md'}, {out_dir / 'quality.png'}")
    return report


def _guidance(cfg) -> str:
    return f"{cfg.guidance_min:g}" if cfg.guidance_min == cfg.guidance_max else f"{cfg.guidance_min:g}->{cfg.guidance_max:g}"


def _short(r: VariantResult) -> str:
    text = f"PSNR/25-step {_f(r.psnr_ref)} dB"
    if r.psnr_truth is not None:
        text += f"  PSNR/truth {_f(r.psnr_truth)} dB  IoU {r.iou_truth:.3f}"
    return text


def _f(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return "inf" if math.isinf(x) else f"{x:.{digits}f}"


def _finite(obj):
    """inf/NaN -> None (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def recommend(results: list[VariantResult]) -> dict | None:
    """The recommended fast preset: among variants on the reference's backend and precision that
    need at most 55% of its UNet calls (the cost that does not depend on what else the machine runs),
    lose nothing measurable against the ground truth where it is known (at most 0.25 dB PSNR and
    0.02 IoU below the reference) and add no seams (seam score at most 10% above the reference's),
    the one closest to the reference's own output (PSNR to 25 steps). None when none qualifies."""
    ref = next((r for r in results if r.name == REFERENCE), None)
    if ref is None:
        return None

    def keeps_quality(r: VariantResult) -> bool:
        if r.psnr_truth is not None and ref.psnr_truth is not None:
            if r.psnr_truth < ref.psnr_truth - 0.25 or r.iou_truth < ref.iou_truth - 0.02:
                return False
        return not (math.isfinite(ref.seam) and math.isfinite(r.seam) and r.seam > 1.1 * ref.seam)

    pool = [r for r in results if r.error is None and r.name != REFERENCE and r.backend == ref.backend and r.precision == ref.precision
            and r.unet_calls <= 0.55 * ref.unet_calls and keeps_quality(r) and math.isfinite(r.psnr_ref)]
    if not pool:
        return None
    best = max(pool, key=lambda r: r.psnr_ref)
    return {"name": best.name, "calls_fraction": best.unet_calls / ref.unet_calls, "seconds": best.seconds,
            "time_fraction": best.seconds / ref.seconds, "psnr_ref": best.psnr_ref, "psnr_truth": best.psnr_truth,
            "reference_psnr_truth": ref.psnr_truth}


def markdown(report: dict) -> str:
    rows = [VariantResult(**{k: (math.nan if v is None and k in _NAN_FIELDS else v) for k, v in d.items()}) for d in report["variants"]]
    truth = any(r.psnr_truth is not None for r in rows)
    head = ["variant", "backend", "prec", "steps", "schedule", "overlap", "guidance", "seconds", "UNet calls", "PSNR to 25-step (dB)", "SSIM to 25-step"]
    if truth:
        head += ["PSNR to truth (dB)", "SSIM to truth", "silhouette IoU"]
    head += ["seam", "flicker"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.error:
            lines.append(f"| {r.name} | {r.backend} | {r.precision} | " + " | ".join(["—"] * (len(head) - 3)) + " |")
            continue
        cells = [r.name, r.backend, r.precision, str(r.steps), r.schedule, str(r.overlap), r.guidance, f"{r.seconds:.2f}", str(r.unet_calls),
                 _f(r.psnr_ref), _f(r.ssim_ref, 3)]
        if truth:
            cells += [_f(r.psnr_truth), _f(r.ssim_truth, 3), _f(r.iou_truth, 3)]
        cells += [_f(r.seam), _f(r.flicker)]
        lines.append("| " + " | ".join(cells) + " |")
    if truth and report.get("truth_flicker") is not None:
        lines.append(f"\nGround truth's own flicker score: {report['truth_flicker']:.2f}.")
    skipped = [r for r in rows if r.error]
    for r in skipped:
        lines.append(f"\n{r.name}: not run ({r.error}).")
    rec = report.get("recommended")
    lines.append("")
    if rec:
        text = (f"Recommended fast preset: **{rec['name']}** — {rec['calls_fraction']:.0%} of the reference's UNet calls "
                f"({rec['time_fraction']:.0%} of its seconds in this run), {rec['psnr_ref']:.1f} dB from the {REFERENCE} output")
        if rec["psnr_truth"] is not None:
            text += f", {rec['psnr_truth']:.2f} dB to the ground truth (reference {rec['reference_psnr_truth']:.2f} dB)"
        lines.append(text + ".")
    else:
        lines.append("No variant needs at most ~half the reference's UNet calls without a measurable quality loss.")
    return "\n".join(lines)


_NAN_FIELDS = ("seconds", "psnr_ref", "ssim_ref", "seam", "flicker")


def plot(results: list[VariantResult], path: Path, truth: bool) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        if r.error:
            continue
        q = r.psnr_truth if truth else r.psnr_ref
        if q is None or not math.isfinite(q):
            continue
        marker = "o" if r.schedule == "karras" else "s"
        ax.scatter(r.seconds, q, marker=marker, color="C0" if r.backend == "torch" else "C1")
        ax.annotate(r.name, (r.seconds, q), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("seconds per job (models loaded)")
    ax.set_ylabel("PSNR to ground truth (dB)" if truth else "PSNR to 25-step Karras (dB)")
    ax.set_title("quality vs time (circles: Karras, squares: AYS; orange: onnxruntime)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
