"""Per-stage latency and end-to-end speed of every backend, against the upstream-faithful reference
measured in the same run (so every speedup is a ratio of two numbers from one process on one
machine, never across runs).

For each of ``reference`` (``MimicMotionReference``: eager PyTorch, two batch-1 UNet calls per
window per step, PoseNet every step) and the requested backends (torch, onnxruntime, tensorrt):

* stages: every exported stage at the benchmark shapes, warm-up then ``repeats`` timed calls (CUDA
  events on a GPU, ``perf_counter`` on the CPU); median, p90, the FLOPs of the call (meta-device
  count), the achieved TFLOP/s and its fraction of the dense matrix rate measured in this run. The
  reference's ``unet`` is its CFG pair (uncond without pose + cond with pose, two batch-1 calls),
  the same work as the runtime's one batch-2 call;
* end to end: one job (synthetic reference + dance, fixed seed) through encode, denoise and
  streamed decode, with peak host RSS (a sampling thread) and peak device memory, seconds per
  output frame, the job's FLOPs and floor time, and the largest pixel difference to the
  reference's frames.

Shapes: the released 1024x576 (WIDTHxHEIGHT) with 16- and 72-frame windows for real weights; the tiny preset at a
small size otherwise (CPU runs stay short). Video encoding and pose extraction are not timed.
"""
from __future__ import annotations

import gc
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mimic.benchmarks.env import describe, fingerprint
from mimic.benchmarks.flops import ModelConfigs, job_flops, stage_flops
from mimic.benchmarks.matmul_rate import measure_matmul_rate
from mimic.benchmarks.results import RunContext
from mimic.errors import EngineError, InputError, Interrupted, MimicError
from mimic.runtime.api import BACKENDS  # the runtime's backends; the reference is this module's
from mimic.spec import StageName as S
from mimic.spec import TensorName as N

STAGE_ORDER = (S.IMAGE_ENCODER, S.VAE_ENCODER, S.POSE_NET, S.UNET, S.VAE_DECODER)
WINDOW_STAGES = (S.POSE_NET, S.UNET)  # the stages whose shape depends on the window length
REFERENCE = "reference"
# Standard real jobs whose floor time is reported at every run's matrix rate.
STANDARD_JOBS = (("72 frames, 1024x576, T=72", 72), ("upstream 35 s demo (525 frames), 1024x576, T=72", 525))


@dataclass
class BenchPlan:
    """What one ``mimic bench`` run measures (``defaults_for`` fills the shape defaults)."""

    preset: str | None = None
    weights: Path | None = None
    engines: Path | None = None
    onnx_dir: Path | None = None
    backends: tuple[str, ...] = ("torch", "onnxruntime")
    device: str | None = None  # None: cpu (a GPU is asked for: cuda[:N])
    precision: str | None = None  # None: fp16 on CUDA, fp32 on CPU
    height: int = 128
    width: int = 192
    windows: tuple[int, ...] = (16,)  # stage-benchmark window lengths
    e2e_window: int = 16
    overlap: int = 6
    steps: int = 4
    frames: int = 24  # output frames of the end-to-end job
    decode_chunk: int = 8
    repeats: int = 3
    warmup: int = 1
    reference: bool = True
    e2e: bool = True
    e2e_repeats: int = 1
    time_budget_s: float | None = 540.0  # sections that would start later are skipped (recorded)
    seed: int = 42
    threads: int | None = None  # CPU threads for torch and onnxruntime (None: their defaults)
    svd: str | None = None  # per-part weight overrides (as `mimic run`)
    checkpoint: Path | None = None

    def validate(self) -> None:
        bad = [b for b in self.backends if b not in BACKENDS]
        if bad:
            raise InputError(f"unknown backend(s) {', '.join(bad)}; choose from {', '.join(BACKENDS)}")
        if self.height % 64 or self.width % 64 or self.height < 64 or self.width < 64:
            raise InputError(f"--size must be multiples of 64 (the UNet's skips), got {self.width}x{self.height} (WIDTHxHEIGHT)")
        if self.repeats < 1 or self.warmup < 0:
            raise InputError("--repeats must be >= 1 and --warmup >= 0")
        if any(w < 2 for w in self.windows) or self.e2e_window < 2:
            raise InputError("windows must be at least 2 frames")
        if not 0 <= self.overlap < self.e2e_window:
            raise InputError(f"--overlap must be in [0, {self.e2e_window})")
        if self.frames < 1 or self.steps < 1 or self.decode_chunk < 1:
            raise InputError("--frames, --steps and --decode-chunk must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise InputError("--threads must be >= 1")
        if self.e2e_repeats < 0:
            raise InputError("--e2e-repeats must be >= 0")


def defaults_for(real: bool, quick: bool) -> dict:
    """Shape defaults: the released job for real weights, small CPU-friendly ones for tiny."""
    if real:
        d = dict(height=576, width=1024, windows=(16, 72), e2e_window=72, overlap=6, steps=25, frames=71, repeats=5, warmup=2, e2e_repeats=1)
        if quick:
            d.update(windows=(16,), e2e_window=16, steps=4, frames=15, repeats=2, warmup=1, e2e_repeats=1)
        return d
    d = dict(height=128, width=192, windows=(16,), e2e_window=16, overlap=6, steps=4, frames=24, repeats=5, warmup=2, e2e_repeats=3)
    if quick:
        d.update(height=64, width=128, windows=(8,), e2e_window=8, overlap=2, steps=2, frames=10, repeats=3, warmup=1, e2e_repeats=1)
    return d


# ------------------------------------------------------------------------------------- helpers
def resolve_device(device: str | None) -> torch.device:
    """``--device``: cpu (the default, as every command) or cuda[:N]."""
    if device is None:
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda but PyTorch sees no CUDA GPU here")
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"unknown device {device!r}; use cpu or cuda[:N]")
    return dev


def busy_machine_note(load: float | None, cores: int, threads: int | None) -> str | None:
    """What to tell the user of a CPU run on a busy machine (None when it is not busy); the advice
    to pass --threads 1 only when they have not."""
    if load is None or load <= 0.5 * cores:
        return None
    advice = "" if threads == 1 else "; --threads 1 is steadier"
    return f"the machine is busy (load {load} on {cores} cores): CPU timings will be noisy{advice}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls after ``warmup`` untimed ones (CUDA events on a GPU)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]) of a non-empty list."""
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def current_rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


class PeakMemory:
    """Samples this process's RSS (and, on CUDA, device memory in use) from a thread while active."""

    def __init__(self, device: torch.device, interval_s: float = 0.01):
        self.device = device
        self.interval = interval_s
        self.start_rss = self.peak_rss = 0
        self.device_used_start = self.device_used_peak = None
        self.torch_max_allocated = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _device_used(self) -> int | None:
        if self.device.type != "cuda":
            return None
        free, total = torch.cuda.mem_get_info(self.device)
        return int(total - free)

    def _sample(self) -> None:
        import psutil

        proc = psutil.Process()
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, proc.memory_info().rss)
            if self.device.type == "cuda":
                try:
                    used = self._device_used()
                    self.device_used_peak = max(self.device_used_peak or 0, used or 0)
                except Exception:  # pragma: no cover - sampling must never break the benchmark
                    pass
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        self.start_rss = self.peak_rss = current_rss()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.device_used_start = self.device_used_peak = self._device_used()
        self._thread = threading.Thread(target=self._sample, name="mimic-bench-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_rss = max(self.peak_rss, current_rss())
        if self.device.type == "cuda":
            self.torch_max_allocated = int(torch.cuda.max_memory_allocated(self.device))
            self.device_used_peak = max(self.device_used_peak or 0, self._device_used() or 0)

    def summary(self) -> dict:
        return {
            "start_rss_bytes": int(self.start_rss),
            "peak_rss_bytes": int(self.peak_rss),
            "device_used_start_bytes": self.device_used_start,
            "device_used_peak_bytes": self.device_used_peak,
            "torch_max_allocated_bytes": self.torch_max_allocated,
        }


def synthetic_job(height: int, width: int, output_frames: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(reference (H, W, 3), poses (F, 3, H, W)) uint8: the built-in figure and its dance, frame 0 = the
    reference pose, padded to one window like the runtime does. The dance repeats every 24 frames,
    so only 24 distinct poses are drawn (drawing is input preparation, not what is measured)."""
    from mimic.pose.draw import PoseDrawer
    from mimic.runtime.inputs import pad_to_window
    from mimic.runtime.demo_assets import synthetic_poses, synthetic_reference

    reference = synthetic_reference(height, width)
    draw = PoseDrawer(height, width)
    cycle = np.stack([draw(p) for p in synthetic_poses(min(24, output_frames + 1), (height, width))])
    poses = cycle[np.arange(output_frames + 1) % len(cycle)]
    poses, _ = pad_to_window(poses, window, pad=True)
    return reference, poses


def run_pipeline(backend, info, dtype, config, reference: np.ndarray, poses: np.ndarray, output_frames: int, keep: bool = True):
    """One job through the one pipeline (``generate``) on ready inputs; frames kept in memory.
    Returns (report, frames (n, 3, H, W) uint8 or None)."""
    from mimic.pose.images import as_pose_images
    from mimic.runtime.inputs import JobInputs
    from mimic.runtime.pipeline import Components, FrameCollector, JobControl, generate, in_memory_job

    components = Components(backend=backend, info=info, dtype=dtype, base_config=config, detector=_no_detector)
    inputs = JobInputs(reference, as_pose_images(poses), output_frames, config.output_fps)
    sink = FrameCollector(keep)
    report = generate(components, in_memory_job(config), inputs=inputs, sink=sink, control=JobControl(synchronize=True))  # device-synced timings
    return report, sink.frames()


def _no_detector():
    raise RuntimeError("benchmark jobs carry drawn poses: DWPose is not run")


# ------------------------------------------------------------------------------------- runners
class ReferenceStages:
    """The reference's stage calls (the released code's way): the UNet stage is the CFG pair."""

    name = REFERENCE

    def __init__(self, models):
        from mimic.runtime.backend_torch import TorchBackend

        self.models = models
        self.device = models.device
        self._torch = TorchBackend(models)

    @torch.no_grad()
    def run(self, stage: str, feeds: dict[str, torch.Tensor], stream=None) -> dict[str, torch.Tensor]:
        if stage != S.UNET:
            return self._torch.run(stage, feeds)
        m, dt, dev = self.models, self.models.dtype, self.device
        x = feeds["sample"].to(dev, dt)
        t = feeds["timestep"].to(dev, torch.float32)
        e = feeds[N.ENCODER_HIDDEN_STATES].to(dev, dt)
        ids = feeds[N.ADDED_TIME_IDS].to(dev, dt)
        frames = x.shape[1]
        u = m.unet(x[:1], t[:1], e[:1], ids[:1], pose_latents=None)
        c = m.unet(x[1:], t[1:], e[1:], ids[1:], pose_latents=feeds[N.POSE_LATENTS][frames:].to(dev, dt))
        return {N.NOISE_PRED: torch.cat([u, c])}

    def close(self) -> None:
        pass


@dataclass
class E2EResult:
    backend: str
    seconds: float
    phases: dict[str, float]
    memory: dict
    frames: np.ndarray | None  # (N, 3, H, W) uint8, for the comparison with the reference
    extra: dict = field(default_factory=dict)


class Bench:
    """One benchmark run: ``Bench(plan, command, emit, log).run()`` -> list of records."""

    def __init__(self, plan: BenchPlan, command: str, emit: Callable[[dict], object], log: Callable[[str], None] = print):
        plan.validate()
        self.plan, self.command, self.emit, self.log = plan, command, emit, log
        self.records: list[dict] = []
        self.t_start = time.perf_counter()

    # -- plumbing --
    def _emit(self, rec: dict) -> dict:
        self.emit(rec)
        self.records.append(rec)
        return rec

    def over_budget(self) -> bool:
        b = self.plan.time_budget_s
        return bool(b) and time.perf_counter() - self.t_start > b

    def skip(self, what: str, reason: str) -> None:
        self.log(f"  skipped {what}: {reason}")
        self._emit(self.ctx.record("skip", what=what, reason=reason))

    # -- setup --
    def _setup(self) -> None:
        from mimic.model.presets import layout_from_options
        from mimic.model.weights import fetch_svd
        from mimic.model.model_info import ModelInfo

        p = self.plan
        self.layout = layout_from_options(preset=p.preset, weights=p.weights, svd=p.svd, checkpoint=p.checkpoint)
        svd_dir = fetch_svd(self.layout.svd)
        self.configs = ModelConfigs.from_svd_dir(svd_dir)
        self.info = ModelInfo.from_svd_dir(svd_dir)
        self.dims = self.info.dims
        self.device = resolve_device(p.device)
        if p.threads:
            torch.set_num_threads(p.threads)
        fp16 = p.precision == "fp16" or (p.precision is None and self.device.type == "cuda")
        self.dtype = torch.float16 if fp16 else torch.float32
        self.precision = "fp16" if fp16 else "fp32"
        self.env = fingerprint()
        self.ctx = RunContext.new(self.command, self.env, str(self.device), self.configs.name)
        self.log(f"mimic bench: {self.configs.name} model, {self.device} {self.precision}, run {self.ctx.run_id}")
        self.log(f"  {describe(self.env)}")
        note = busy_machine_note(self.env.get("load_avg_1m"), self.env.get("cpu_cores_logical") or 1, p.threads) if self.device.type == "cpu" else None
        if note:
            self.log(f"  note: {note}")
        from mimic.model.config import GenerationConfig

        self.config = GenerationConfig(
            resolution=max(64, min(p.height, p.width)), window=p.e2e_window, overlap=p.overlap, steps=p.steps, decode_chunk=p.decode_chunk, seed=p.seed
        )

    def _matmul_and_floors(self) -> None:
        rate = measure_matmul_rate(self.device)
        self.rate = rate.tflops_best  # the efficiency and floor denominator (see matmul_rate)
        self.log(f"  dense matmul ({rate.dtype}, n={rate.n}): {rate.tflops_best:.3f} TFLOP/s best, {rate.tflops:.3f} median")
        self._emit(self.ctx.record("matmul", dtype=rate.dtype, n=rate.n, iters=rate.iters, tflops=rate.tflops, tflops_best=rate.tflops_best))
        from mimic.model.config import GenerationConfig

        real = ModelConfigs.real()
        for label, n in STANDARD_JOBS:
            cfg = GenerationConfig()
            jf = job_flops(cfg, n, 576, 1024, real)
            self._emit(
                self.ctx.record(
                    "floor", job=label, output_frames=n, height=576, width=1024, window=cfg.window, steps=cfg.steps,
                    flops=jf.total, stage_flops=jf.stages, matmul_tflops=self.rate, floor_s=jf.floor_seconds(self.rate), windows=jf.windows,
                )
            )

    def _load_models(self):
        if getattr(self, "_models", None) is None:
            from mimic.model.loader import load_reference_models

            t0 = time.perf_counter()
            self._models = load_reference_models(self.layout, self.device, self.dtype)
            self.log(f"  loaded the PyTorch models in {time.perf_counter() - t0:.1f} s")
        return self._models

    def make_backend(self, name: str):
        """The backend object for ``name`` (MimicError when it cannot run here: recorded as a skip)."""
        p = self.plan
        if name == REFERENCE:
            return ReferenceStages(self._load_models())
        if name == "torch":
            from mimic.runtime.backend_torch import TorchBackend

            return TorchBackend(self._load_models())
        if name == "onnxruntime":
            from mimic.runtime.backend_ort import OnnxRuntimeBackend
            from mimic.runtime.onnx_cache import ensure_onnx_graphs

            graphs = ensure_onnx_graphs(self.layout, self.precision, p.onnx_dir)
            return OnnxRuntimeBackend(graphs, self.device, p.threads)
        if name == "tensorrt":
            if self.device.type != "cuda":
                raise EngineError("the tensorrt backend needs a CUDA GPU (none here, or --device cpu)")
            if p.engines is None:
                raise EngineError("the tensorrt backend needs --engines DIR (from `mimic build-engines`)")
            try:
                from mimic.runtime.backend_trt import TensorRTBackend
            except ImportError as err:
                raise EngineError(f"the tensorrt backend is unavailable here ({err})") from None
            return TensorRTBackend(p.engines, self.device)
        raise InputError(f"unknown backend {name!r}")

    # -- stages --
    def stage_points(self, window: int, first: bool) -> list[tuple[str, str, dict]]:
        p = self.plan
        hw = f"{p.width}x{p.height}"  # WIDTHxHEIGHT, as every size the CLI prints
        points = {
            S.IMAGE_ENCODER: {"B": 1},
            S.VAE_ENCODER: {"B": 1, "H": p.height, "W": p.width},
            S.POSE_NET: {"N": window, "H": p.height, "W": p.width},
            S.UNET: {"B": 2, "F": window, "H": p.height, "W": p.width},
            S.VAE_DECODER: {"N": p.decode_chunk, "H": p.height, "W": p.width},
        }
        out = []
        for stage in STAGE_ORDER:
            if stage in WINDOW_STAGES:
                out.append((stage, f"{hw} T={window}", points[stage]))
            elif first:
                out.append((stage, "224x224" if stage == S.IMAGE_ENCODER else hw, points[stage]))
        return out

    def bench_stages(self, backends: dict) -> None:
        """Every stage at every shape on every backend. Backends take turns call by call (after each
        one's warm-up), so load from other processes on a shared machine hits all of them alike."""
        from mimic.export.dummy import dummy_inputs
        from mimic.spec import STAGES

        p = self.plan
        for k, window in enumerate(p.windows):
            for stage, shape, point in self.stage_points(window, first=k == 0):
                if self.over_budget():
                    self.skip(f"stage {stage} {shape}", f"time budget of {p.time_budget_s:.0f} s used up")
                    continue
                feeds = dummy_inputs(STAGES[stage], point, self.dims, self.precision, seed=0, device=self.device)
                times: dict[str, list[float]] = {name: [] for name in backends}
                with torch.no_grad():
                    for name, backend in backends.items():
                        time_calls(lambda: backend.run(stage, feeds), self.device, p.warmup, 0)
                    for _ in range(p.repeats):
                        for name, backend in backends.items():
                            times[name] += time_calls(lambda: backend.run(stage, feeds), self.device, 0, 1)
                del feeds
                flops = stage_flops(stage, point, self.configs)
                ref = statistics.median(times[REFERENCE]) if REFERENCE in times else None
                for name, ts in times.items():
                    self._stage_record(name, stage, shape, point, ts, flops, ref)

    def _stage_record(self, name: str, stage: str, shape: str, point: dict, times: list[float], flops: int, ref: float | None) -> None:
        p = self.plan
        med = statistics.median(times)
        achieved = flops / med / 1e12 if med > 0 else None
        speedup = ref / med if ref and name != REFERENCE and med > 0 else None
        self.log(
            f"  {name:<12} {stage:<14} {shape:<16} median {med * 1e3:10.2f} ms  p90 {percentile(times, 90) * 1e3:10.2f} ms"
            + (f"  x{speedup:.2f} vs reference" if speedup else "")
        )
        self._emit(
            self.ctx.record(
                "stage", backend=name, stage=stage, shape=shape, point=dict(point), precision=self.precision, warmup=p.warmup,
                repeats=p.repeats, median_s=med, p90_s=percentile(times, 90), min_s=min(times), mean_s=statistics.fmean(times),
                times_s=times, flops=flops, tflops=achieved, fraction_of_matmul=(achieved / self.rate if achieved and self.rate else None),
                speedup_vs_reference=speedup,
            )
        )

    # -- end to end --
    def _inputs(self):
        if getattr(self, "_job", None) is None:
            p = self.plan
            self._job = synthetic_job(p.height, p.width, p.frames, p.e2e_window)
        return self._job

    def run_e2e(self, name: str, backend) -> E2EResult:
        reference, poses = self._inputs()
        cfg = self.config
        n = self.plan.frames
        dev = self.device
        gen = torch.Generator().manual_seed(cfg.seed)
        phases: dict[str, float] = {}
        with PeakMemory(dev) as mem, torch.no_grad():
            sync(dev)
            t0 = time.perf_counter()
            if name == REFERENCE:
                from mimic.mimicmotion_ref.pipeline import MimicMotionReference

                marks: dict[str, float] = {}

                def progress(done: int, total: int) -> None:
                    if done == total:
                        sync(dev)
                        marks["denoised"] = time.perf_counter()

                result = MimicMotionReference(backend.models)(reference, poses, cfg, generator=gen, progress=progress)
                sync(dev)
                t_end = time.perf_counter()
                frames = result.frames[:n]
                phases = {"encode_denoise": marks.get("denoised", t_end) - t0, "decode": t_end - marks.get("denoised", t_end)}
            else:
                report, frames = run_pipeline(backend, self.info, self.dtype, cfg, reference, poses, n)
                t_end = time.perf_counter()
                sec = report.seconds
                phases = {"encode": sec["inputs"] + sec["encode"], "denoise": sec["denoise"], "decode": sec["decode_write"]}
        return E2EResult(name, t_end - t0, phases, mem.summary(), frames)

    def bench_e2e(self, backends: dict) -> None:
        """The whole job on every backend, ``e2e_repeats`` rounds taking turns; the median counts.
        Interrupted (Ctrl-C, SIGTERM), the rounds measured so far are still recorded (``rounds`` <
        ``rounds_planned``, ``interrupted``), then the interrupt goes on."""
        p = self.plan
        runs: dict[str, list[E2EResult]] = {name: [] for name in backends}
        try:
            for r in range(p.e2e_repeats):
                for name, backend in backends.items():
                    if self.over_budget():
                        self.skip(f"{name} end to end (round {r + 1})", f"time budget of {p.time_budget_s:.0f} s used up")
                        continue
                    res = self.run_e2e(name, backend)
                    self.log(f"  {name:<12} end to end round {r + 1}/{p.e2e_repeats}: {res.seconds:.2f} s")
                    runs[name].append(res)
        except (Interrupted, KeyboardInterrupt):
            self._e2e_records(runs, interrupted=True)
            raise
        self._e2e_records(runs)

    def _e2e_records(self, runs: dict[str, list[E2EResult]], interrupted: bool = False) -> None:
        ref_runs = runs.get(REFERENCE) or []
        ref_s = statistics.median(x.seconds for x in ref_runs) if ref_runs else None
        ref_frames = ref_runs[0].frames if ref_runs else None
        for name, results in runs.items():
            if results:
                self._e2e_record(name, results, ref_s, ref_frames, interrupted)

    def _e2e_record(self, name: str, results: list[E2EResult], ref_s: float | None, ref_frames: np.ndarray | None,
                    interrupted: bool = False) -> None:
        p = self.plan
        seconds = statistics.median(x.seconds for x in results)
        best = min(results, key=lambda x: abs(x.seconds - seconds))
        jf = job_flops(self.config, p.frames, p.height, p.width, self.configs, pose_net_every_step=name == REFERENCE)
        diff = None
        frames = results[0].frames
        if name != REFERENCE and ref_frames is not None and frames is not None and frames.shape == ref_frames.shape:
            diff = int(np.abs(frames.astype(np.int16) - ref_frames.astype(np.int16)).max())
        speedup = ref_s / seconds if ref_s and name != REFERENCE and seconds > 0 else None
        floor = jf.floor_seconds(self.rate) if self.rate else None
        peak_rss = max(x.memory["peak_rss_bytes"] for x in results)
        growth = max(max(0, x.memory["peak_rss_bytes"] - x.memory["start_rss_bytes"]) for x in results)
        dev_peaks = [x.memory["device_used_peak_bytes"] for x in results if x.memory["device_used_peak_bytes"] is not None]
        self.log(
            f"  {name:<12} end to end: {seconds:8.2f} s (median of {len(results)}), {seconds / p.frames:.3f} s/frame, "
            f"RSS +{growth / 2**20:.0f} MiB (peak {peak_rss / 2**20:.0f} MiB)"
            + (f", x{speedup:.2f} vs reference" if speedup else "")
            + (f", max |diff| {diff}/255" if diff is not None else "")
        )
        self._emit(
            self.ctx.record(
                "e2e", backend=name, precision=self.precision, output_frames=p.frames, height=p.height, width=p.width, window=p.e2e_window,
                overlap=p.overlap, steps=p.steps, windows=jf.windows, seconds=seconds, seconds_all=[x.seconds for x in results],
                seconds_per_frame=seconds / p.frames, phases=best.phases, peak_host_rss_bytes=peak_rss, host_rss_growth_bytes=growth,
                peak_device_bytes=max(dev_peaks) if dev_peaks else None, memory=best.memory, flops=jf.total, stage_flops=jf.stages,
                floor_s=floor, fraction_of_floor=(floor / seconds if floor and seconds > 0 else None), speedup_vs_reference=speedup,
                max_abs_diff_vs_reference=diff, rounds=len(results), rounds_planned=p.e2e_repeats, interrupted=interrupted,
                unet_tflop_per_output_frame=jf.unet_tflop_per_output_frame,  # the hardware-independent figure beside the seconds
                unet_tflop_per_output_frame_576x1024=jf.unet_tflop_per_output_frame_576x1024,
            )
        )

    # -- the run --
    def run(self) -> list[dict]:
        self._setup()
        self._matmul_and_floors()
        order = ([REFERENCE] if self.plan.reference else []) + [b for b in self.plan.backends if b != REFERENCE]
        backends: dict = {}
        try:
            for name in order:
                t0 = time.perf_counter()
                try:
                    backends[name] = self.make_backend(name)
                except MimicError as err:
                    self.skip(name, str(err))
                    continue
                self.log(f"  {name}: ready in {time.perf_counter() - t0:.1f} s")
            if backends:
                self.bench_stages(backends)
                if self.plan.e2e and self.plan.e2e_repeats > 0:
                    self.bench_e2e(backends)
        finally:
            for name, backend in backends.items():
                if name not in (REFERENCE, "torch"):  # those share the loaded PyTorch models
                    backend.close()
            backends.clear()
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        self.log(f"  benchmark done in {time.perf_counter() - self.t_start:.1f} s")
        return self.records


def run_bench(plan: BenchPlan, command: str, emit: Callable[[dict], object], log: Callable[[str], None] = print) -> list[dict]:
    return Bench(plan, command, emit, log).run()
