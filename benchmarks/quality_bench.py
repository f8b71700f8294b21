"""``mimic bench quality``: what each speed option (or any other generation setting) costs in quality.

One job (a held-out toy puppet and dance: with ``--preset toy`` its true frames are known) is
rendered once per variant through the one pipeline. Per variant: seconds (``generate()`` wall time,
models already loaded), UNet calls (CFG pairs = steps x windows), PSNR/SSIM to the reference variant
(25 Karras steps, fp32, torch: the released sampler), PSNR/SSIM/silhouette IoU to the ground truth
(toy only), a seam score (frame-to-frame change across window boundaries / elsewhere) and a flicker
score (mean |second temporal difference|, 0..255; the ground truth's own value is reported beside
it). Writes quality.json, quality.md and quality.png (quality vs UNet calls) into ``--out``.

Long runs are neither silent nor all-or-nothing: a line when each variant starts and ends (i/N,
seconds, an ETA for the rest from the wall seconds per UNet call measured so far), and quality.json
and quality.md are rewritten atomically after every variant. Until the run completes they say so
(``complete: false``, the variants not measured in ``pending``, the signal in ``stopped``), so a run
stopped by Ctrl-C or SIGTERM keeps every variant it measured.

A variant is named by ``+``-joined parts (see ``PARTS`` and ``NUMBERED``): ``karras-N`` / ``ays-N``
(schedule and steps), ``overlap-N``, ``ramp`` (guidance 1 -> 3 over the frames instead of a
constant 2), ``fp16`` and a backend (``torch``, ``onnxruntime``), or ``SETTING=VALUE`` for any
generation setting (``mimic.model.config``: ``pose_strength=0.5``, ``draw_hands=false``,
``ays-10+pose_end_percent=0.8``); parts left out take the reference's values. Adding a variant is
one entry: a name in ``DEFAULT_VARIANTS`` (and, for a new short name, its settings in ``PARTS``).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from mimic.benchmarks.speed_choice import markdown_lines as speed_lines
from mimic.benchmarks.speed_choice import speed_choice
from mimic.errors import InputError, Interrupted
from mimic.media import quality as qm

REFERENCE = "karras-25"
REFERENCE_SETTINGS: Mapping[str, object] = {"steps": 25, "schedule": "karras"}  # + torch, fp32: the released sampler
RAMP = (1.0, 3.0)
# Short names for parts of a variant name: generation settings (GenerationConfig field names) and/or
# ``backend`` / ``precision``. A new named variant is one entry here (and its name in DEFAULT_VARIANTS).
PARTS: dict[str, dict] = {
    "ramp": {"guidance_min": RAMP[0], "guidance_max": RAMP[1]},
    "fp16": {"precision": "fp16"},
    "fp32": {"precision": "fp32"},
    "torch": {"backend": "torch"},
    "onnxruntime": {"backend": "onnxruntime"},
    "tensorrt": {"backend": "tensorrt"},
    # 8-bit UNets (ModelOpt fake quantization, torch): calibrated on another toy dance (quant_sensitivity)
    "fp8": {"quant": "fp8"},
    "int8": {"quant": "int8"},
}
# Parts with a number: ``karras-10`` -> {"schedule": "karras", "steps": 10}.
NUMBERED: dict[str, Callable[[int], dict]] = {
    "karras": lambda n: {"schedule": "karras", "steps": n},
    "ays": lambda n: {"schedule": "ays", "steps": n},
    "overlap": lambda n: {"overlap": n},
}
# The full set, in the order they run (the reference first in any case). Any generation setting can
# be a variant without code: "pose_strength=0.5", "image_embed_strength=0.8", "draw_hands=false".
DEFAULT_VARIANTS = (
    "karras-25", "karras-15", "karras-10", "karras-6", "ays-25", "ays-15", "ays-10", "ays-6",
    "overlap-6", "overlap-4", "overlap-2", "ramp", "onnxruntime", "onnxruntime+fp16",
    "ays-15+overlap-2", "ays-10+overlap-2", "karras-15+overlap-2",
)
BENCH_SEED = 1_000_014  # a held-out toy sample (costume, backdrop, dance)
_SHOWN = ("steps", "schedule", "overlap", "guidance_min", "guidance_max")  # settings with a column of their own


def _setting_value(text: str):
    """``0.5`` -> 0.5, ``10`` -> 10, ``false`` -> False, ``ays`` -> "ays" (YAML's scalars, as a jobs file)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


@dataclass(frozen=True)
class Variant:
    """One render of the bench job: generation settings over the preset's (GenerationConfig field
    names; the reference's steps and schedule unless overridden), a backend and a precision."""

    name: str
    settings: Mapping[str, object] = field(default_factory=lambda: dict(REFERENCE_SETTINGS))
    backend: str = "torch"
    precision: str = "fp32"
    quant: str | None = None  # "fp8" | "int8": the torch UNet fake-quantized (mimic.model.quantize)

    @classmethod
    def parse(cls, name: str) -> "Variant":
        from mimic.model.config import settings_from_mapping

        settings, backend, precision, quant = dict(REFERENCE_SETTINGS), "torch", "fp32", None
        given: dict = {}  # what the parts set (a --speed preset replaces the reference's steps and schedule, not these)
        for part in name.split("+"):
            key, _, num = part.partition("-")
            if part in PARTS:
                more = dict(PARTS[part])
            elif key in NUMBERED and num.isdigit() and (key == "overlap" or int(num) >= 1):
                more = NUMBERED[key](int(num))
            elif "=" in part:
                k, _, v = part.partition("=")
                try:
                    more, _ = settings_from_mapping({k.strip(): _setting_value(v.strip())})
                except InputError as err:
                    raise InputError(f"variant {name!r}: {err}") from None
            else:
                raise InputError(f"unknown variant part {part!r} in {name!r}: use karras-N, ays-N, overlap-N, "
                                 f"{', '.join(PARTS)} or SETTING=VALUE (a generation setting, e.g. pose_strength=0.5)")
            backend = more.pop("backend", backend)
            precision = more.pop("precision", precision)
            quant = more.pop("quant", quant)
            settings.update(more)
            given.update(more)
        if given.get("speed") is not None:  # speed=fast: the preset's sampler, then the other parts
            from mimic.model.config import SPEED_PRESETS

            settings = {**REFERENCE_SETTINGS, **SPEED_PRESETS[given["speed"]], **given}
        if quant is not None and (backend != "torch" or precision != "fp32"):
            raise InputError(f"variant {name!r}: {quant} quantizes the torch fp32 UNet (fake quantization); drop the backend/precision part")
        return cls(name, settings, backend, precision, quant)

    @property
    def shown_precision(self) -> str:
        return self.quant or self.precision

    def overrides(self) -> dict:
        """The GenerationConfig overrides of this variant."""
        return dict(self.settings)

    @property
    def steps(self) -> int:
        return int(self.settings.get("steps", REFERENCE_SETTINGS["steps"]))

    @property
    def schedule(self) -> str:
        return str(self.settings.get("schedule", REFERENCE_SETTINGS["schedule"]))

    @property
    def overlap(self) -> int | None:
        return self.settings.get("overlap")

    @property
    def guidance(self) -> tuple[float, float] | None:
        if "guidance_min" not in self.settings and "guidance_max" not in self.settings:
            return None
        return (self.settings.get("guidance_min"), self.settings.get("guidance_max"))


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
    settings: dict = field(default_factory=dict)  # every setting the variant sets (GenerationConfig names)
    unet_tflop_per_frame_576x1024: float | None = None  # the passes that ran, costed as the released model's 576x1024 frames
    psnr_fp16: float | None = None  # 8-bit variants: PSNR to the same job rendered in fp16 (a non-8-bit fp16 variant of the run)


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


# ------------------------------------------------------------------------------------ progress
def eta_seconds(measured: Sequence[tuple[int, float]], remaining_calls: Sequence[int]) -> float | None:
    """Seconds the variants left will take: the wall seconds per UNet call measured so far
    (``measured``: (UNet calls, wall seconds) per finished variant) times their UNet calls. None
    before anything was measured."""
    calls = sum(c for c, _ in measured)
    if calls <= 0:
        return None
    return sum(s for _, s in measured) / calls * sum(remaining_calls)


def eta_text(measured: Sequence[tuple[int, float]], remaining_calls: Sequence[int], loading: Sequence[str] = ()) -> str:
    """``ETA ~42 s for 3 variants left`` / ``ETA after the first variant`` / ``nothing left``."""
    if not remaining_calls:
        return "nothing left"
    eta = eta_seconds(measured, remaining_calls)
    if eta is None:
        return "ETA after the first variant"
    left = len(remaining_calls)
    more = f" + loading {', '.join(loading)}" if loading else ""
    return f"ETA ~{_duration(eta)}{more} for {left} variant{'s' if left > 1 else ''} left"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


# ------------------------------------------------------------------------------------ the run
class _Renderer:
    """Loads each (backend, precision) once and renders the bench job with a variant's settings:
    ``render(variant, cfg, inputs) -> (frames (N, H, W, 3) uint8, seconds, UNet calls)``."""

    def __init__(self, layout, plan: QualityPlan, base, echo: Callable[[str], None]):
        self.layout, self.plan, self.base, self.echo = layout, plan, base, echo
        self.loaded: dict = {}

    def needs_loading(self, v: Variant) -> bool:
        return (v.backend, v.precision, v.quant) not in self.loaded

    def render(self, v: Variant, cfg, inputs):
        from mimic.runtime.api import MimicMotion, RuntimeOptions
        from mimic.runtime.pipeline import FrameCollector, generate, in_memory_job

        key = (v.backend, v.precision, v.quant)
        if key not in self.loaded:
            t0 = time.perf_counter()
            options = RuntimeOptions(backend=v.backend, device=self.plan.device, precision=v.precision, engines=self.plan.engines,
                                     threads=self.plan.threads)
            self.loaded[key] = MimicMotion(self.layout, options, self.base)
            if v.quant:  # calibrated on another toy dance (never the bench's), same settings and length
                from mimic.benchmarks.quant_sensitivity import QUALITY_CALIBRATION_SEED, CalibrationSet, quantize_backend_unet
                from mimic.model.quantize import default_recipe

                calib = CalibrationSet(seeds=(QUALITY_CALIBRATION_SEED,), frames=inputs.num_output, steps=cfg.steps)
                quantize_backend_unet(self.loaded[key], default_recipe(v.quant), calib, self.echo)
            self.echo(f"      loaded {v.backend} {v.shown_precision} in {time.perf_counter() - t0:.1f} s")
        self.loaded[key].check_backend(cfg)  # deep-feature caching: onnxruntime's cached-step graphs exported once, not timed
        counter, sink = _Counter(), FrameCollector()
        t0 = time.perf_counter()
        self.last_report = generate(self.loaded[key].components, in_memory_job(cfg), inputs=inputs, sink=sink, hooks=counter.hooks)
        return sink.frames().transpose(0, 2, 3, 1), time.perf_counter() - t0, counter.calls

    def close(self) -> None:
        for mm in self.loaded.values():
            mm.close()
        self.loaded.clear()


def run_quality(plan: QualityPlan, out_dir: Path, echo: Callable[[str], None] = print, renderer=None) -> dict:
    """Render every variant, write quality.json/.md after each and quality.png at the end into
    ``out_dir``; returns the JSON dict. ``renderer``: a stand-in for the models (tests)."""
    from mimic.files import atomic_write_text
    from mimic.model.preprocess import target_size
    from mimic.model.presets import default_generation, layout_from_options
    from mimic.model.windows import window_indices
    from mimic.pose.draw import DrawParts, draw_pose
    from mimic.pose.images import DrawnPoses
    from mimic.runtime.inputs import JobInputs, pad_to_window
    from mimic.toy.samples import make_sample

    variants = [Variant.parse(n) for n in dict.fromkeys((REFERENCE, *plan.variants))]
    base = default_generation(plan.preset)
    if plan.window is not None and base.overlap >= plan.window:  # the preset's overlap does not fit a smaller window
        base = base.with_overrides(overlap=plan.window // 2)
    base = base.with_overrides(seed=plan.seed, resolution=plan.resolution, window=plan.window)
    configs = {v.name: base.with_overrides(**v.overrides()) for v in variants}  # every variant valid before anything renders
    height, width = target_size(2, 1, base.resolution)
    frames = plan.frames or 3 * (base.window - base.overlap) + base.overlap
    sample = make_sample(BENCH_SEED, (height, width), frames, start=0.0)
    truth = plan.preset == "toy"
    truth_flicker = qm.flicker_score(sample.frames) if truth else None

    def windows_of(cfg) -> list[list[int]]:  # the reference slot + the frames, padded to one window
        return window_indices(max(frames + 1, cfg.window), cfg.window, cfg.overlap)

    def calls_of(v: Variant) -> int:
        return configs[v.name].steps * len(windows_of(configs[v.name]))

    def inputs_for(cfg) -> JobInputs:
        parts = DrawParts.from_settings(cfg)
        drawn = DrawnPoses(draw_pose(sample.ref_pose, height, width, parts), sample.driving, height, width, parts)
        poses, _ = pad_to_window(drawn, cfg.window, pad=True)
        return JobInputs(sample.reference, poses, frames, cfg.output_fps)

    n = len(variants)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path, png_path = out_dir / "quality.json", out_dir / "quality.md", out_dir / "quality.png"
    started, t_run = _now(), time.perf_counter()
    results: list[VariantResult] = []

    def report(stopped: str | None = None) -> dict:
        done = {r.name for r in results}
        return {
            "complete": len(done) == n, "pending": [v.name for v in variants if v.name not in done], "stopped": stopped,
            "started": started, "updated": _now(), "wall_seconds": time.perf_counter() - t_run,
            "plan": {k: (str(x) if isinstance(x, Path) else x) for k, x in asdict(plan).items()},
            "config": base.to_dict(), "frames": frames, "size": [height, width],
            "truth_flicker": truth_flicker,
            "variants": [asdict(r) for r in results],
            "recommended": recommend(results),
            "speed_presets": speed_choice(results, REFERENCE),  # the --speed rule (benchmarks/speed_choice.py)
        }

    def write(rep: dict) -> None:
        atomic_write_text(json_path, json.dumps(_finite(rep), indent=2) + "\n")
        atomic_write_text(md_path, markdown(rep) + "\n")

    if renderer is None:
        renderer = _Renderer(layout_from_options(preset=plan.preset, weights=plan.weights), plan, base, echo)
    echo(f"quality bench: {plan.preset or plan.weights}, {frames} frames at {width}x{height}, window {base.window}, "
         f"{n} variants (reference {REFERENCE}, torch fp32); {json_path} is rewritten after each")
    write(report())
    renders: dict[str, np.ndarray] = {}
    measured: list[tuple[int, float]] = []  # (UNet calls, wall seconds) per rendered variant
    try:
        for i, v in enumerate(variants, 1):
            cfg = configs[v.name]
            expected = calls_of(v)
            rest = variants[i - 1:]
            echo(f"[{i}/{n}] {v.name}: started ({expected} UNet calls); " + eta_text(measured, [calls_of(x) for x in rest], _loading(renderer, rest)))
            try:
                out, seconds, calls = renderer.render(v, cfg, inputs_for(cfg))
                rendered = time.perf_counter() - seconds  # the render's own start: loading before it is not the variant's cost
            except Exception as err:  # a backend that cannot run here: recorded, the bench goes on
                if v.name == REFERENCE:
                    raise
                results.append(VariantResult(v.name, v.backend, v.shown_precision, cfg.steps, cfg.schedule, cfg.overlap, _guidance(cfg), math.nan, 0,
                                             math.nan, math.nan, error=str(err).splitlines()[0][:200], settings=v.overrides()))
                write(report())
                echo(f"[{i}/{n}] {v.name}: skipped: {results[-1].error}")
                continue
            renders[v.name] = out
            ref = renders[REFERENCE]
            windows = windows_of(cfg)
            r = VariantResult(
                v.name, v.backend, v.shown_precision, cfg.steps, cfg.schedule, cfg.overlap, _guidance(cfg), seconds, calls,
                float(np.median(qm.psnr(out, ref))), float(np.median(qm.ssim(out, ref))),
                seam=qm.seam_score(out, [b for b in qm.window_boundaries(windows) if b < frames]), flicker=qm.flicker_score(out),
                settings=v.overrides(),
            )
            job_report = getattr(renderer, "last_report", None)  # the run report's UNet work (stand-in renderers have none)
            if job_report is not None:
                r.unet_tflop_per_frame_576x1024 = job_report.unet_tflop_per_output_frame_576x1024
            if truth:
                from mimic.toy.score import score_render

                s = score_render(out, sample)
                r.psnr_truth, r.ssim_truth, r.iou_truth = s.median_psnr, s.median_ssim, s.median_iou
            results.append(r)
            _fp16_distances(results, variants, renders)
            write(report())
            measured.append((max(1, calls), time.perf_counter() - rendered))  # rendering + scoring, per UNet call
            left = variants[i:]
            echo(f"[{i}/{n}] {v.name}: {seconds:.2f} s, {calls} UNet calls, {_short(r)} | {i} of {n} done after "
                 f"{_duration(time.perf_counter() - t_run)}, " + eta_text(measured, [calls_of(x) for x in left], _loading(renderer, left)))
    except (Interrupted, KeyboardInterrupt) as err:
        name = err.signal_name if isinstance(err, Interrupted) else "SIGINT"
        rep = report(stopped=name)
        try:
            write(rep)
        finally:
            echo(f"quality bench stopped ({name}): {len(results)} of {n} variants kept in {json_path} (marked partial; "
                 f"not measured: {', '.join(rep['pending'])})")
        raise
    finally:
        renderer.close()

    rep = report()
    write(rep)
    plot(results, png_path, truth, f"{plan.preset or 'weights'}: {frames} frames at {width}x{height}, window {base.window}")
    echo(markdown(rep))
    echo(f"wrote {json_path}, {md_path}, {png_path} ({n} variants in {_duration(time.perf_counter() - t_run)})")
    return rep


def _loading(renderer, variants: Sequence[Variant]) -> list[str]:
    """The backends (and precisions) these variants still have to load."""
    return list(dict.fromkeys(f"{v.backend} {v.shown_precision}" for v in variants if renderer.needs_loading(v)))


def _fp16_distances(results: list[VariantResult], variants: Sequence[Variant], renders: Mapping[str, np.ndarray]) -> None:
    """``psnr_fp16`` of each 8-bit variant: its PSNR to a rendered fp16 variant with the same settings
    (the torch one first), once both are rendered."""
    by_name = {v.name: v for v in variants}
    fp16 = [v for v in sorted(variants, key=lambda v: v.backend != "torch") if v.precision == "fp16" and v.quant is None and v.name in renders]
    for r in results:
        v = by_name.get(r.name)
        if v is None or v.quant is None or r.psnr_fp16 is not None or r.name not in renders:
            continue
        twin = next((f for f in fp16 if dict(f.settings) == dict(v.settings)), None)
        if twin is not None:
            r.psnr_fp16 = float(np.median(qm.psnr(renders[r.name], renders[twin.name])))


def _guidance(cfg) -> str:
    return f"{cfg.guidance_min:g}" if cfg.guidance_min == cfg.guidance_max else f"{cfg.guidance_min:g}->{cfg.guidance_max:g}"


def _short(r: VariantResult) -> str:
    text = f"PSNR/25-step {_f(r.psnr_ref)} dB"
    if r.psnr_truth is not None:
        text += f", PSNR/truth {_f(r.psnr_truth)} dB, IoU {r.iou_truth:.3f}"
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


def _other_settings(r: VariantResult) -> str:
    """The settings a variant sets beyond the table's own columns (``pose_strength=0.5``)."""
    return ", ".join(f"{k}={_value(v)}" for k, v in (r.settings or {}).items() if k not in _SHOWN and v is not None)


def _value(v) -> str:
    return str(v).lower() if isinstance(v, bool) else f"{v:g}" if isinstance(v, float) else str(v)


def _rows(report: dict) -> list[VariantResult]:
    """The report's variants as results again (JSON's nulls: inf dB for an output identical to the reference's, else NaN)."""
    def value(d: dict, k: str, v):
        if v is None and k == "psnr_ref" and d.get("error") is None:
            return math.inf
        return math.nan if v is None and k in _NAN_FIELDS else v

    return [VariantResult(**{k: value(d, k, v) for k, v in d.items()}) for d in report["variants"]]


def markdown(report: dict) -> str:
    rows = _rows(report)
    truth = any(r.psnr_truth is not None for r in rows)
    other = any(_other_settings(r) for r in rows)
    fp16 = any(r.psnr_fp16 is not None for r in rows)
    head = ["variant", "backend", "prec", "steps", "schedule", "overlap", "guidance"] + (["other settings"] if other else [])
    head += ["seconds", "UNet calls", "UNet TFLOP/frame at 576x1024", "PSNR to 25-step (dB)", "SSIM to 25-step"]
    head += ["PSNR to fp16 (dB)"] if fp16 else []
    if truth:
        head += ["PSNR to truth (dB)", "SSIM to truth", "silhouette IoU"]
    head += ["seam", "flicker"]
    lines = []
    if report.get("complete") is False:
        pending = report.get("pending") or []
        why = f" (stopped by {report['stopped']})" if report.get("stopped") else " (still running, or stopped)"
        lines += [f"**Partial run**: {len(rows)} of {len(rows) + len(pending)} variants measured{why}; not measured: "
                  f"{', '.join(pending) or '—'}.", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.error:
            lines.append(f"| {r.name} | {r.backend} | {r.precision} | " + " | ".join(["—"] * (len(head) - 3)) + " |")
            continue
        cells = [r.name, r.backend, r.precision, str(r.steps), r.schedule, str(r.overlap), r.guidance] + ([_other_settings(r) or "—"] if other else [])
        cells += [f"{r.seconds:.2f}", str(r.unet_calls), _f(r.unet_tflop_per_frame_576x1024, 1), _f(r.psnr_ref), _f(r.ssim_ref, 3)]
        cells += [_f(r.psnr_fp16)] if fp16 else []
        if truth:
            cells += [_f(r.psnr_truth), _f(r.ssim_truth, 3), _f(r.iou_truth, 3)]
        cells += [_f(r.seam), _f(r.flicker)]
        lines.append("| " + " | ".join(cells) + " |")
    if truth and report.get("truth_flicker") is not None:
        lines.append(f"\nGround truth's own flicker score: {report['truth_flicker']:.2f}.")
    for r in rows:
        if r.error:
            lines.append(f"\n{r.name}: not run ({r.error}).")
    rec = report.get("recommended")
    lines.append("")
    among = " (among the variants measured so far)" if report.get("complete") is False else ""
    if rec:
        text = (f"Recommended fast preset{among}: **{rec['name']}** — {rec['calls_fraction']:.0%} of the reference's UNet calls "
                f"({rec['time_fraction']:.0%} of its seconds in this run), {rec['psnr_ref']:.1f} dB from the {REFERENCE} output")
        if rec["psnr_truth"] is not None:
            text += f", {rec['psnr_truth']:.2f} dB to the ground truth (reference {rec['reference_psnr_truth']:.2f} dB)"
        lines.append(text + ".")
    else:
        lines.append(f"No variant{among} needs at most ~half the reference's UNet calls without a measurable quality loss.")
    lines += speed_lines(rows, REFERENCE, partial=report.get("complete") is False)
    return "\n".join(lines)


_NAN_FIELDS = ("seconds", "psnr_ref", "ssim_ref", "seam", "flicker")


# ------------------------------------------------------------------------------------ the plot
_COLOURS = {"torch fp32": "C0", "onnxruntime fp32": "C1", "onnxruntime fp16": "C2", "torch fp16": "C3", "tensorrt fp16": "C4", "torch fp8": "C6",
            "torch int8": "C7"}


def plot_panels(results: list[VariantResult], truth: bool) -> list[dict]:
    """What quality.png shows, panel by panel: one bar per variant (ordered by UNet calls, the cost),
    every axis from 0 dB, titles that state the spread across variants, a legend with only the
    backends plotted. ``plot`` draws exactly this."""
    ok = sorted((r for r in results if r.error is None), key=lambda r: (r.unet_calls, r.name))
    keys = ([("psnr_truth", "PSNR to the ground truth (dB)")] if truth else []) + [("psnr_ref", f"PSNR to the {REFERENCE} output (dB)")]
    panels = []
    for key, xlabel in keys:
        bars = []  # (variant, UNet calls, value or None, backend label); None: identical to the reference's output (inf dB)
        for r in ok:
            q = getattr(r, key)
            if q is not None and math.isfinite(q):
                bars.append((r.name, r.unet_calls, q, f"{r.backend} {r.precision}"))
            elif key == "psnr_ref" and q is not None and math.isinf(q):
                bars.append((r.name, r.unet_calls, None, f"{r.backend} {r.precision}"))
        values = [q for _, _, q, _ in bars if q is not None]
        spread = f"{max(values) - min(values):.2f} dB" if values else "—"
        if key == "psnr_truth":
            title = f"against the ground truth: spread across variants {spread}"
        else:
            title = f"closeness to the {REFERENCE} output (higher = closer): {min(values):.1f}-{max(values):.1f} dB" if values else \
                f"closeness to the {REFERENCE} output"
        kinds = list(dict.fromkeys(kind for *_, kind in bars))
        panels.append({"key": key, "xlabel": xlabel, "title": title, "bars": bars, "xlim": (0.0, max(values or [1.0]) * 1.18),
                       "legend": [(_COLOURS.get(k, "C5"), k) for k in kinds],
                       "not_run": [r.name for r in results if r.error is not None]})
    return panels


def plot(results: list[VariantResult], path: Path, truth: bool, subtitle: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    panels = plot_panels(results, truth)
    rows = max([len(p["bars"]) for p in panels] or [1])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 1.2 + 0.28 * rows), squeeze=False)
    for ax, p in zip(axes[0], panels):
        ys = list(range(len(p["bars"])))[::-1]  # the cheapest at the top
        for y, (name, calls, q, kind) in zip(ys, p["bars"]):
            if q is None:
                what = "the reference itself (infinite dB)" if name == REFERENCE else "identical to the reference's output (infinite dB)"
                ax.text(p["xlim"][1] * 0.01, y, what, va="center", fontsize=7, color="0.35")
                continue
            ax.barh(y, q, color=_COLOURS.get(kind, "C5"), height=0.7)
            ax.text(q, y, f" {q:.2f}" if p["key"] == "psnr_truth" else f" {q:.1f}", va="center", fontsize=7)
        ax.set_yticks(ys, [f"{name} ({calls} calls)" for name, calls, _, _ in p["bars"]], fontsize=7)
        ax.set_ylim(-0.6, len(p["bars"]) - 0.4)
        ax.set_xlim(*p["xlim"])
        ax.set_xlabel(p["xlabel"], fontsize=8)
        ax.set_title(p["title"], fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    legend = list(dict.fromkeys(entry for p in panels for entry in p["legend"]))
    not_run = panels[0]["not_run"] if panels else []
    fig.legend(handles=[Patch(color=c, label=label) for c, label in legend], fontsize=7, loc="lower center", ncol=max(1, len(legend)),
               title="bar colour: backend, precision" + (f"   (not run: {', '.join(not_run)})" if not_run else ""), title_fontsize=7,
               frameon=False)
    fig.suptitle("quality per variant, ordered by UNet calls (the cost; seconds in the table)" + (f" — {subtitle}" if subtitle else ""), fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
