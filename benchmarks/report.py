"""``mimic bench report FILES... -o DIR``: merge result files into ``DIR/report.md`` and PNG plots.

Tables: runs (machine, versions, command), matrix rate, floor times of standard real jobs, stage
latency (median/p90, TFLOP/s, fraction of the measured matrix rate, speedup over the reference of
the same run), end to end (s/frame, speedup, memory, floor), scaling, and anything skipped.
Plots (matplotlib, Agg, no display needed): ``stage_latency.png``, ``speedup.png``,
``efficiency.png`` and ``scaling.png``, each written only when there are records for it. Every
plot colours a backend the same way (``BACKEND_COLOURS``; the mapping is also stored in each PNG's
``mimic:colours`` text chunk), labels its bars with their values, uses a log axis only when the
values span more than a decade, and starts time and memory axes at zero.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from mimic.benchmarks.env import describe, device_label
from mimic.benchmarks.results import merge_files
from mimic.errors import InputError
from mimic.spec import StageName as S

STAGE_ORDER = (S.IMAGE_ENCODER, S.VAE_ENCODER, S.POSE_NET, S.UNET, S.VAE_DECODER)
MIB = 2**20
# One colour per backend in every plot (matplotlib's tab10 blue, orange, green; the reference grey).
BACKEND_COLOURS = {"reference": "#7f7f7f", "torch": "#1f77b4", "onnxruntime": "#ff7f0e", "tensorrt": "#2ca02c"}
_SPARE_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#d62728")
_HATCHES = ("", "//", "..", "xx", "\\\\")  # a second run of the same backend: same colour, hatched


@dataclass
class Report:
    markdown: Path
    plots: list[Path] = field(default_factory=list)
    records: int = 0


# ------------------------------------------------------------------------------------ formatting
def _fmt(v, digits: int = 3, unit: str = "") -> str:
    """``digits`` significant digits, never scientific notation: 98.2, 0.0903, 0.000447, 1,235."""
    if v is None:
        return "–"
    if isinstance(v, float):
        if v == 0:
            return f"0{unit}"
        mag = abs(v)
        if mag >= 10 ** (digits - 1):
            return f"{v:,.0f}{unit}"
        decimals = digits - 1 - math.floor(math.log10(mag))
        return f"{v:.{decimals}f}{unit}"
    return f"{v}{unit}"


def _ms(s) -> str:
    return _fmt(s * 1e3 if s is not None else None)


def _mib(b) -> str:
    """MiB with one decimal (what a reader compares): 98.2, 0.4, 1,234.5."""
    return f"{b / MIB:,.1f}" if b is not None else "–"


def _pct(x) -> str:
    return f"{100 * x:.1f}%" if x is not None else "–"


def _x(x) -> str:
    return f"{x:.2f}x" if x is not None else "–"


def _duration(s) -> str:
    if s is None:
        return "–"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.2f} s" if s >= 1 else f"{s * 1e3:.1f} ms"


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    def esc(c) -> str:
        return str(c).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]
    fmt = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(headers), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows])


def _run_short(rec: dict) -> str:
    return rec["run_id"][-8:]


def _stage_sort(rec: dict):
    st = rec["stage"]
    return (STAGE_ORDER.index(st) if st in STAGE_ORDER else 99, rec["shape"])


def series_labels(records: list[dict]) -> dict[tuple[str, str], str]:
    """Plot series per (run, backend): 'device · backend', with the run id when a pair repeats."""
    pairs = OrderedDict()
    for r in records:
        if "backend" in r:
            pairs.setdefault((r["run_id"], r["backend"]), (device_label(r["env"]), r["backend"]))
    counts: dict[tuple[str, str], int] = {}
    for v in pairs.values():
        counts[v] = counts.get(v, 0) + 1
    out = {}
    for (run, backend), (dev, b) in pairs.items():
        base = f"{dev} · {b}"
        out[(run, backend)] = base if counts[(dev, b)] == 1 else f"{base} ({run[-8:]})"
    return out


# ------------------------------------------------------------------------------------ sections
def _runs_section(records: list[dict]) -> str:
    runs = OrderedDict()
    for r in records:
        runs.setdefault(r["run_id"], r)
    rows = []
    for run_id, r in runs.items():
        env = r["env"]
        rows.append([
            run_id, r["date"], r["model"], r["device"], describe(env), f"{env.get('cpu_model', '?')} x{env.get('cpu_cores_logical', '?')}",
            _fmt(env.get("load_avg_1m")), str(env.get("torch_threads", "–")), env.get("git_commit") or "–", f"`{r['command']}`",
        ])
    return "## Runs\n\n" + md_table(["run", "date (UTC)", "model", "device", "environment", "CPU", "load (1 min)", "threads", "commit", "command"], rows)


def _matmul_section(records: list[dict]) -> str:
    rows = [[_run_short(r), device_label(r["env"]), r["dtype"], str(r["n"]), _fmt(r["tflops"]), _fmt(r["tflops_best"])] for r in records if r["kind"] == "matmul"]
    if not rows:
        return ""
    return "## Dense matrix rate (measured in each run)\n\n" + md_table(["run", "device", "dtype", "n", "TFLOP/s (median)", "TFLOP/s (best)"], rows)


def _floor_section(records: list[dict]) -> str:
    rows = []
    for r in records:
        if r["kind"] == "floor":
            rows.append([_run_short(r), device_label(r["env"]), r["job"], f"{r['flops'] / 1e15:.2f}", _fmt(r["matmul_tflops"]), _duration(r["floor_s"])])
    if not rows:
        return ""
    return (
        "## Floor time of standard real jobs (SVD-XT 1.1, 1024x576, T=72, 25 steps)\n\n"
        "FLOPs from the meta-device count of the real configuration (UNet CFG pair per window per step, PoseNet per window, "
        "decode of every frame, encoders), divided by the run's measured dense matrix rate: no job can finish faster on that device.\n\n"
        + md_table(["run", "device", "job", "PFLOP", "matrix TFLOP/s", "floor"], rows)
    )


def _stage_section(records: list[dict]) -> str:
    stages = sorted((r for r in records if r["kind"] == "stage"), key=lambda r: (r["date"], r["run_id"], _stage_sort(r), r["backend"] != "reference", r["backend"]))
    if not stages:
        return ""
    rows = [
        [
            _run_short(r), device_label(r["env"]), r["backend"], r["precision"], r["stage"], r["shape"], _ms(r["median_s"]), _ms(r["p90_s"]),
            _fmt(r["flops"] / 1e9 if r.get("flops") is not None else None), _fmt(r.get("tflops")), _pct(r.get("fraction_of_matmul")), _x(r.get("speedup_vs_reference")),
        ]
        for r in stages
    ]
    return (
        "## Stage latency\n\n"
        "Median and p90 over the timed repeats after warm-up (CUDA events on a GPU, wall clock on the CPU). `of matmul` = achieved TFLOP/s / the run's best dense-matmul rate. "
        "`reference` is the released code's way: its `unet` is the CFG pair as two batch-1 calls, the backends make one batch-2 call. "
        "Speedup = the same run's reference median / this median.\n\n"
        + md_table(["run", "device", "backend", "precision", "stage", "shape", "median ms", "p90 ms", "GFLOP", "TFLOP/s", "of matmul", "speedup"], rows)
    )


def _e2e_section(records: list[dict]) -> str:
    e2e = [r for r in records if r["kind"] == "e2e"]
    if not e2e:
        return ""
    rows = []
    for r in e2e:
        phases = ", ".join(f"{k} {v:.2f}" for k, v in r["phases"].items())
        rows.append([
            _run_short(r), device_label(r["env"]), r["backend"], r["precision"], f"{r['width']}x{r['height']}", str(r["output_frames"]),
            f"T={r['window']} O={r['overlap']} x{r['steps']} steps, {r['windows']} win", _fmt(r["seconds"]), _fmt(r["seconds_per_frame"]), phases,
            _x(r.get("speedup_vs_reference")), _mib(r["peak_host_rss_bytes"]), _mib(r["host_rss_growth_bytes"]), _mib(r.get("peak_device_bytes")),
            _duration(r.get("floor_s")), _pct(r.get("fraction_of_floor")), _fmt(r.get("max_abs_diff_vs_reference")),
        ])
    return (
        "## End to end\n\n"
        "One job (built-in reference + dance, fixed seed): encode, denoise, streamed decode (pose extraction and video encoding not timed). "
        "Seconds are the median of the run's rounds; the backends took turns. Loading (onnxruntime sessions, engines) is not in them, and "
        "every backend was warmed up by the stage benchmarks' untimed calls before the first round. RSS peak is the whole process (every loaded backend); "
        "growth is the job's own. Floor = the job's FLOPs at the run's matrix rate; `of floor` = floor / seconds. "
        "max |diff| = largest uint8 pixel difference to the reference's frames (same seed).\n\n"
        + md_table(
            ["run", "device", "backend", "precision", "size", "frames", "job", "s", "s/frame", "phases (s)", "speedup", "peak RSS MiB", "RSS growth MiB", "peak device MiB", "floor", "of floor", "max |diff|"],
            rows,
        )
    )


def _scaling_section(records: list[dict]) -> str:
    sc = sorted((r for r in records if r["kind"] == "scaling"), key=lambda r: (r["run_id"], r["backend"], r["height"] * r["width"], r["output_frames"]))
    if not sc:
        return ""
    rows = []
    for r in sc:
        growth = r.get("job_peak_rss_bytes", r["peak_rss_bytes"]) - r["baseline_rss_bytes"]
        ph = r["phases"]
        rows.append([
            _run_short(r), device_label(r["env"]), r["backend"], f"{r['width']}x{r['height']}", str(r["output_frames"]), str(r["windows"]), str(r["steps"]),
            _fmt(r.get("load_s")), _fmt(r.get("warmup_s")), _fmt(r["seconds"]), _fmt(r["seconds"] / r["output_frames"]), _fmt(ph.get("denoise")),
            _fmt(ph.get("decode")), _mib(r["peak_rss_bytes"]), _mib(growth),
        ])
    return (
        "## Scaling with video length\n\n"
        "Each length in its own process. `job s` and `s/frame` exclude loading (`load s`: weights and onnxruntime sessions) and an "
        "untimed warm-up job of one window and one step run first (`warm-up s`: first-call costs such as allocator arenas). "
        "Peak RSS is the process high-water mark (`VmHWM`, includes loading); growth = the job's sampled peak minus the RSS after loading the models.\n\n"
        + md_table(["run", "device", "backend", "size", "frames", "windows", "steps", "load s", "warm-up s", "job s", "s/frame", "denoise s", "decode s",
                    "peak RSS MiB", "job growth MiB"], rows)
        + "\n\n"
        + _scaling_slopes(sc)
    )


def _scaling_slopes(sc: list[dict]) -> str:
    """Least-squares slope per series: seconds and MiB per extra output frame."""
    groups: dict[tuple, list[dict]] = OrderedDict()
    for r in sc:
        groups.setdefault((r["run_id"], r["backend"], r["height"], r["width"]), []).append(r)
    rows = []
    for (run, backend, h, w), rs in groups.items():
        if len(rs) < 2:
            continue
        xs = [r["output_frames"] for r in rs]
        t = _slope(xs, [r["seconds"] for r in rs])
        m = _slope(xs, [r.get("job_peak_rss_bytes", r["peak_rss_bytes"]) for r in rs])
        rows.append([run[-8:], backend, f"{w}x{h}", f"{min(xs)}-{max(xs)}", _fmt(t), _fmt(m / MIB if m is not None else None)])
    if not rows:
        return ""
    return "Growth per extra output frame (least squares over the points, warm-up excluded):\n\n" + md_table(["run", "backend", "size", "frames", "s per frame", "MiB per frame"], rows)


def _slope(xs: list[float], ys: list[float]) -> float | None:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else None


def _workers_section(records: list[dict]) -> str:
    wk = sorted((r for r in records if r["kind"] == "workers"), key=lambda r: (r["run_id"], r["backend"], r["workers"]))
    if not wk:
        return ""
    rows = [[
        _run_short(r), device_label(r["env"]), r["backend"], r["devices"], str(r["workers"]), f"{r['width']}x{r['height']}", str(r["output_frames"]),
        str(r["windows"]), str(r["steps"]), _fmt(r["seconds"]), f"{r['speedup']:.2f}x", f"{r['efficiency']:.0%}",
        "yes" if r["identical_to_one_worker"] else "NO",
    ] for r in wk]
    return (
        "## One job on several workers\n\n"
        "The windows of each denoising step split over the workers (`mimic run --device A,B`), after an untimed warm-up job; "
        "speedup = one worker's seconds / these (same run), efficiency = speedup / workers.\n\n"
        + md_table(["run", "machine", "backend", "devices", "workers", "size", "frames", "windows", "steps", "job s", "speedup", "efficiency",
                    "frames identical"], rows)
    )


def _skip_section(records: list[dict]) -> str:
    rows = [[_run_short(r), device_label(r["env"]), r["what"], r["reason"]] for r in records if r["kind"] == "skip"]
    if not rows:
        return ""
    return "## Not measured\n\n" + md_table(["run", "device", "what", "why"], rows)


# ------------------------------------------------------------------------------------ plots
def _figure(width: float = 10.0, height: float = 5.0, ncols: int = 1):
    from matplotlib.figure import Figure  # the object API renders with Agg: no display, no global state

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def backend_colour(backend: str) -> str:
    """The backend's colour in every plot (a stable spare colour for an unknown backend name)."""
    if backend in BACKEND_COLOURS:
        return BACKEND_COLOURS[backend]
    return _SPARE_COLOURS[sum(map(ord, backend)) % len(_SPARE_COLOURS)]


class _Styles:
    """Colour (by backend) and hatch (by repeat of a backend) of each plot series, and the mapping
    each plot used (stored in its PNG)."""

    def __init__(self, records: list[dict]):
        self.labels = series_labels(records)
        self.used: dict[str, str] = {}
        seen: dict[str, int] = {}
        self._hatch: dict[tuple[str, str], str] = {}
        for run, backend in self.labels:
            self._hatch[(run, backend)] = _HATCHES[seen.get(backend, 0) % len(_HATCHES)]
            seen[backend] = seen.get(backend, 0) + 1

    def label(self, r: dict) -> str:
        return self.labels[(r["run_id"], r["backend"])]

    def style(self, r: dict) -> dict:
        colour = backend_colour(r["backend"])
        self.used[r["backend"]] = colour
        return {"color": colour, "hatch": self._hatch[(r["run_id"], r["backend"])]}


def _value_axis(ax, values: list[float], label: str, unit: str = "", zero: bool = True) -> None:
    """A log axis with readable ticks (1, 2, 5 per decade, plain numbers) when ``values`` span more
    than a decade, else a linear one from zero."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    finite = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    if finite and max(finite) / min(finite) > 10:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(min(finite) / 2, max(finite) * 2.5)  # room for the value labels
    elif zero:
        ax.set_ylim(0, max(finite or [1.0]) * 1.15)
    ax.set_ylabel(label + (f" [{unit}]" if unit and unit != "x" else "") + (", log scale" if ax.get_yscale() == "log" else ""))
    ax.grid(axis="y", alpha=0.3)


def _bar_values(ax, bars, values: list[float], unit: str = "") -> None:
    ax.bar_label(bars, labels=[_fmt(float(v), 3, unit) if v is not None and math.isfinite(v) else "" for v in values], fontsize=7, padding=2)


def _grouped_bars(ax, categories: list[str], series: dict[str, tuple[dict, dict[str, float]]], ylabel: str, unit: str = "") -> None:
    """``series``: label -> (bar style, {category: value}); each bar labelled with its value."""
    n = max(1, len(series))
    width = 0.8 / n
    values_all = []
    for i, (name, (style, values)) in enumerate(series.items()):
        cats = [c for c in range(len(categories)) if categories[c] in values]
        xs = [c + (i - (n - 1) / 2) * width for c in cats]
        ys = [values[categories[c]] for c in cats]
        bars = ax.bar(xs, ys, width=width, label=name, edgecolor="white", linewidth=0.5, **style)
        _bar_values(ax, bars, ys, unit)
        values_all += ys
    ax.set_xticks(range(len(categories)))
    ax.set_xticklabels(categories, rotation=30, ha="right", fontsize=8)
    _value_axis(ax, values_all, ylabel, unit)
    ax.legend(fontsize=7)


def _save(fig, path: Path, colours: dict[str, str]) -> Path:
    tmp = path.with_name(f".{path.stem}.part.png")
    fig.savefig(tmp, format="png", metadata={"mimic:colours": json.dumps(colours, sort_keys=True)})
    os.replace(tmp, path)
    return path


def _stage_series(records: list[dict], styles: _Styles, keep, value) -> tuple[list[str], dict[str, tuple[dict, dict[str, float]]]]:
    """Per-stage categories ("stage\nshape") and one (style, {category: value}) series per run/backend."""
    stages = sorted((r for r in records if r["kind"] == "stage" and keep(r)), key=_stage_sort)
    cats = list(OrderedDict.fromkeys(f"{r['stage']}\n{r['shape']}" for r in stages))
    series: dict[str, tuple[dict, dict[str, float]]] = OrderedDict()
    for r in stages:
        series.setdefault(styles.label(r), (styles.style(r), {}))[1][f"{r['stage']}\n{r['shape']}"] = value(r)
    return cats, series


def stage_latency_figure(records: list[dict]):
    """(figure, backend colours used) or None when there is nothing to plot."""
    styles = _Styles(records)
    cats, series = _stage_series(records, styles, lambda r: True, lambda r: r["median_s"] * 1e3)
    if not cats:
        return None
    fig, (ax,) = _figure(max(8.0, 1.2 * len(cats) + 4), 5.5)
    _grouped_bars(ax, cats, series, "median latency", unit="ms")
    ax.set_title("Stage latency per device and backend (after warm-up)")
    return fig, styles.used


def speedup_figure(records: list[dict]):
    """(figure, backend colours used) or None when there is nothing to plot."""
    styles = _Styles(records)
    e2e = [r for r in records if r["kind"] == "e2e" and r.get("speedup_vs_reference")]
    stages = sorted((r for r in records if r["kind"] == "stage" and r.get("speedup_vs_reference")), key=_stage_sort)
    if not e2e and not stages:
        return None
    fig, axes = _figure(14.0 if e2e and stages else 8.0, 5.5, ncols=2 if e2e and stages else 1)
    k = 0
    if e2e:
        ax = axes[k]
        k += 1
        names = [styles.label(r) + f"\n{r['width']}x{r['height']} {r['output_frames']}f" for r in e2e]
        ys = [r["speedup_vs_reference"] for r in e2e]
        bars = ax.bar(range(len(e2e)), ys, edgecolor="white", linewidth=0.5)
        for bar, r in zip(bars, e2e):
            st = styles.style(r)
            bar.set_facecolor(st["color"])
            bar.set_hatch(st["hatch"])
        _bar_values(ax, bars, ys, "x")
        ax.set_xticks(range(len(e2e)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
        ax.axhline(1.0, color="black", lw=0.8)
        _value_axis(ax, ys, "speedup over the reference (same run)")
        ax.set_title("End to end")
    if stages:
        cats = list(OrderedDict.fromkeys(f"{r['stage']}\n{r['shape']}" for r in stages))
        series: dict[str, tuple[dict, dict[str, float]]] = OrderedDict()
        for r in stages:
            series.setdefault(styles.label(r), (styles.style(r), {}))[1][f"{r['stage']}\n{r['shape']}"] = r["speedup_vs_reference"]
        ax = axes[k]
        _grouped_bars(ax, cats, series, "speedup over the reference", unit="x")
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_title("Per stage")
    return fig, styles.used


def efficiency_figure(records: list[dict]):
    """(figure, backend colours used) or None when there is nothing to plot."""
    styles = _Styles(records)
    cats, series = _stage_series(records, styles, lambda r: r.get("fraction_of_matmul") is not None, lambda r: 100 * r["fraction_of_matmul"])
    if not cats:
        return None
    fig, (ax,) = _figure(max(8.0, 1.2 * len(cats) + 4), 5.5)
    _grouped_bars(ax, cats, series, "achieved share of the measured dense matrix rate", unit="%")
    ax.set_title("Achieved FLOP rate per stage")
    return fig, styles.used


def scaling_figure(records: list[dict]):
    """(figure, backend colours used) or None when there is nothing to plot."""
    sc = [r for r in records if r["kind"] == "scaling"]
    if not sc:
        return None
    styles = _Styles(records)
    groups: dict[str, list[dict]] = OrderedDict()
    for r in sorted(sc, key=lambda r: r["output_frames"]):
        groups.setdefault(f"{styles.label(r)} {r['width']}x{r['height']}", []).append(r)
    fig, (ax_t, ax_m) = _figure(13.0, 5.0, ncols=2)
    frames = sorted({r["output_frames"] for r in sc})
    for k, (name, rs) in enumerate(groups.items()):
        st = styles.style(rs[0])
        marker = "os^Dv"[_HATCHES.index(st["hatch"]) % 5]
        xs = [r["output_frames"] for r in rs]
        for ax, ys in ((ax_t, [r["seconds"] for r in rs]), (ax_m, [r["peak_rss_bytes"] / MIB for r in rs])):
            ax.plot(xs, ys, marker=marker, color=st["color"], label=name)
            for x, y in zip(xs, ys):
                ax.annotate(_fmt(float(y), 3), (x, y), textcoords="offset points", xytext=(0, 6 if k % 2 == 0 else -12), ha="center", fontsize=7)
    ax_t.set_title("Wall time vs video length (warm-up excluded)")
    ax_m.set_title("Peak host memory vs video length")
    for ax, label in ((ax_t, "job wall time [s]"), (ax_m, "peak RSS [MiB]")):
        ax.set_xlabel("output frames")
        ax.set_xticks(frames)
        ax.set_ylim(0, max(v for line in ax.get_lines() for v in line.get_ydata()) * 1.15)  # from zero: growth is not noise
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig, styles.used


def _plotter(figure):
    def plot(records: list[dict], path: Path) -> Path | None:
        made = figure(records)
        return None if made is None else _save(made[0], path, made[1])

    plot.__doc__ = f"Write {figure.__name__.removesuffix('_figure')}.png-style plot to ``path`` (None: nothing to plot)."
    return plot


plot_stage_latency = _plotter(stage_latency_figure)
plot_speedup = _plotter(speedup_figure)
plot_efficiency = _plotter(efficiency_figure)
plot_scaling = _plotter(scaling_figure)


# ------------------------------------------------------------------------------------ entry points
def build_report(records: list[dict], out_dir: str | Path, sources: Iterable[str] = ()) -> Report:
    """Write ``report.md`` and the plots for already-loaded records."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = []
    for fn, name, title in (
        (plot_stage_latency, "stage_latency.png", "Stage latency"),
        (plot_speedup, "speedup.png", "Speedup over the reference"),
        (plot_efficiency, "efficiency.png", "Fraction of the matrix rate"),
        (plot_scaling, "scaling.png", "Scaling with video length"),
    ):
        p = fn(records, out_dir / name)
        if p is not None:
            plots.append((p, title))
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    parts = [
        "# mimic benchmark report",
        f"Generated {now} from {len(records)} records"
        + (f" ({', '.join(f'`{s}`' for s in sources)})" if sources else "")
        + ". CPU figures say nothing about GPU speed; compare speedups only within one run.",
    ]
    if plots:
        parts.append("## Plots\n\n" + "\n\n".join(f"![{t}]({p.name})" for p, t in plots))
    for section in (_runs_section, _matmul_section, _floor_section, _stage_section, _e2e_section, _scaling_section, _workers_section, _skip_section):
        text = section(records)
        if text:
            parts.append(text)
    md = out_dir / "report.md"
    tmp = md.with_name(".report.md.part")
    tmp.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    os.replace(tmp, md)
    return Report(markdown=md, plots=[p for p, _ in plots], records=len(records))


def report_files(paths: Iterable[str | Path], out_dir: str | Path) -> Report:
    """Merge result files (validated) and write the report."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputError("no results files given")
    records = merge_files(paths)
    if not records:
        raise InputError(f"no records in {', '.join(map(str, paths))}")
    return build_report(records, out_dir, [p.name for p in paths])


def summary_text(records: list[dict]) -> str:
    """The short table printed at the end of `mimic bench`: one row per stage/shape, a column per backend."""
    stage_recs = [r for r in records if r["kind"] == "stage"]
    e2e = [r for r in records if r["kind"] == "e2e"]
    backends = list(OrderedDict.fromkeys(r["backend"] for r in stage_recs + e2e))
    if not backends:
        return "(nothing measured)"
    rows: dict[str, dict[str, str]] = OrderedDict()
    for r in sorted(stage_recs, key=_stage_sort):
        cell = f"{r['median_s'] * 1e3:.1f} ms" + (f" {r['speedup_vs_reference']:.1f}x" if r.get("speedup_vs_reference") else "")
        rows.setdefault(f"{r['stage']} {r['shape']}", {})[r["backend"]] = cell
    for r in e2e:
        cell = f"{r['seconds_per_frame']:.3f} s/f" + (f" {r['speedup_vs_reference']:.1f}x" if r.get("speedup_vs_reference") else "")
        rows.setdefault(f"end to end ({r['output_frames']} frames)", {})[r["backend"]] = cell
    table = [[name] + [cells.get(b, "–") for b in backends] for name, cells in rows.items()]
    return text_table(["median (speedup vs reference)"] + backends, table)
