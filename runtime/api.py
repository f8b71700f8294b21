"""The Python API: load once, render many.

    from mimic.runtime import MimicMotion, RuntimeOptions, Job
    mm = MimicMotion.from_preset("tiny", RuntimeOptions(backend="onnxruntime"))
    report = mm.render(Job(reference="a.png", driving="dance.mp4", out="a.mp4"))

``MimicMotion`` loads the backend (and DWPose, on first use) once; ``render`` admits a job like
the CLI does (``mimic.runtime.admission``: checked, inputs opened once) and runs it through the one
pipeline, ``mimic.runtime.pipeline.generate``. Observers watch a job: ``render(job, hooks=obj)``
with any object that has some of ``on_stage_end(name, seconds)``, ``on_progress(done, total)``,
``on_step_end(step, num_steps, latents)``, or a list of them.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from mimic.errors import InputError
from mimic.export.freshness import SvdFolder
from mimic.model.config import GenerationConfig
from mimic.model.model_info import ModelInfo
from mimic.model.weights import WeightsLayout, fetch_svd, read_json
from mimic.runtime.admission import AdmittedJob, admit
from mimic.runtime.jobs import Job
from mimic.runtime.memory import NO_CUDA_TORCH, preflight
from mimic.runtime.pipeline import Components, JobControl, generate
from mimic.runtime.report import JobReport

from mimic.runtime.backend_api import BACKENDS  # noqa: E402  (declared once, torch-free, for the CLI)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimeOptions:
    backend: str = "onnxruntime"
    device: str = "cpu"  # one device, or a comma-separated list: one worker each (windows split over them)
    precision: str | None = None  # default: fp16 on CUDA, fp32 on CPU; fp8: torch on CUDA CC >= 8.9 (``mimic.runtime.fp8``)
    onnx_dir: Path | None = None  # exported graphs (onnxruntime); exported into the cache if absent
    engines: Path | None = None  # engine store (tensorrt)
    pad_short: bool = True
    threads: int | None = None
    audio: bool = False  # copy the driving video's audio into mp4 outputs

    def __post_init__(self) -> None:
        for name in ("onnx_dir", "engines"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(os.fspath(value)))
        if self.backend not in BACKENDS:
            raise InputError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.precision not in PRECISIONS:
            raise InputError(f"unknown precision {self.precision!r}; choose fp16, fp32, fp8 or int8")
        object.__setattr__(self, "device", parse_devices(self.device))
        if self.backend == "tensorrt" and self.engines is None:
            raise InputError("--backend tensorrt needs --engines DIR (from `mimic build-engines`)")
        if self.backend == "tensorrt":  # the engines' UNet decides (fp16, or 8-bit from build-engines --precision)
            object.__setattr__(self, "precision", engine_precision(self.engines, self.precision))
        elif self.precision == "int8":
            raise InputError("--precision int8 runs engines built with `mimic build-engines --precision int8`: use --backend tensorrt --engines DIR")
        elif self.precision == "fp8":
            check_fp8(self.backend, self.devices)

    @property
    def devices(self) -> tuple[str, ...]:
        """One entry per worker (a device may be listed twice: two workers on it)."""
        return tuple(self.device.split(","))

    @property
    def main_device(self) -> str:
        return self.devices[0]

    @property
    def dtype(self) -> torch.dtype:
        """The models' dtype (fp8: fp16, with the UNet's Linear layers converted after loading)."""
        fp16 = self.precision in ("fp16", *EIGHT_BIT) or (self.precision is None and self.device.startswith("cuda"))
        return torch.float16 if fp16 else torch.float32

    @property
    def precision_name(self) -> str:
        """What the run report and the checkpoint key record: fp8, int8, fp16 or fp32."""
        return self.precision if self.precision in EIGHT_BIT else "fp16" if self.dtype == torch.float16 else "fp32"


EIGHT_BIT = ("fp8", "int8")
PRECISIONS = (None, "fp16", "fp32", *EIGHT_BIT)


def engine_precision(engines: Path, precision: str | None) -> str | None:
    """The precision a TensorRT run has: its engine folder's UNet (``build-engines --precision``)
    when it is 8-bit and ``--precision`` was not given or names it; one line when they disagree."""
    from mimic.engine.store import EngineStore
    from mimic.spec import StageName

    manifest = EngineStore(engines).read_manifest(StageName.UNET) if Path(engines).is_dir() else None
    built = ((manifest or {}).get("onnx") or {}).get("precision")
    if built in EIGHT_BIT:
        if precision not in (None, built):
            raise InputError(f"--precision {precision}: the unet engine in {engines} is {built} (build-engines --precision {built}); "
                             f"pass --precision {built} or use an fp16 engine folder")
        return built
    if precision in EIGHT_BIT:
        raise InputError(f"--precision {precision}: the unet engine in {engines} is {built or 'not built'}; build it with "
                         f"`mimic build-engines --precision {precision} --quantized DIR` (from `mimic quantize`)")
    return precision


def check_fp8(backend: str, devices: Sequence[str]) -> None:
    """``--precision fp8``: the torch backend on CUDA GPUs of compute capability >= 8.9, else one line."""
    from mimic.runtime.fp8 import HINT, fp8_support

    why = [f"--backend {backend}"] if backend != "torch" else []
    why += [reason for reason in dict.fromkeys(map(fp8_support, devices)) if reason]
    if why:
        raise InputError(f"--precision fp8 {HINT} ({', '.join(why)}); use --precision fp16 or fp32 here")


def parse_devices(value: str) -> str:
    """``cpu``, ``cuda``, ``cuda:N`` or a comma-separated list of them, all of one kind -> normalised."""
    entries = [part.strip() for part in str(value).split(",")]
    for entry in entries:
        kind, _, index = entry.partition(":")
        if not (entry == "cpu" or (kind == "cuda" and (not index or index.isdigit()))):
            raise InputError(f"--device: unknown device {entry!r}; use cpu, cuda[:N] or a comma-separated list (cuda:0,cuda:1)")
    if len({entry.partition(":")[0] for entry in entries}) > 1:
        raise InputError(f"--device: {value!r} mixes cpu and cuda; list devices of one kind")
    return ",".join(entries)


def _check_job(job, method: str) -> None:
    """A dict or a path is not a job: one line saying how to build one (not an AttributeError deep inside)."""
    if not isinstance(job, (Job, AdmittedJob)):
        raise InputError(f"{method}() takes a mimic.runtime.jobs.Job (or an AdmittedJob), got {type(job).__name__}: "
                         "build one with Job(reference=..., driving=..., out=...)")


class MimicMotion:
    """Holds one backend (models/sessions/engines loaded once) and renders jobs with it."""

    def __init__(self, layout: WeightsLayout, options: RuntimeOptions, base_config: GenerationConfig):
        self.layout, self.options, self.base_config = layout, options, base_config
        self.devices = [torch.device(d) for d in options.devices]
        self.device = self.devices[0]
        if self.device.type == "cuda":
            if not torch.backends.cuda.is_built():
                raise InputError(NO_CUDA_TORCH)  # the preflight's line, not torch's AssertionError later
            if not torch.cuda.is_available():
                raise InputError("--device cuda but PyTorch sees no CUDA GPU here")
            missing = sorted({str(d) for d in self.devices if (d.index or 0) >= torch.cuda.device_count()})
            if missing:
                raise InputError(f"--device: {', '.join(missing)} not present (PyTorch sees {torch.cuda.device_count()} GPU(s))")
        if options.threads:
            torch.set_num_threads(options.threads)
        t0 = time.perf_counter()
        svd_dir = fetch_svd(layout.svd)
        self.info = ModelInfo.from_svd_dir(svd_dir)
        self._models: dict = {}  # torch backend: modules per device, shared by workers on one device
        self.fp8_conversion = None  # --precision fp8: what mimic.runtime.fp8.convert_unet converted (the last device's)
        self.backend = self._make_backend(self.device)
        self.workers = tuple(self._make_backend(d) for d in self.devices[1:])
        self._detector = None
        self.components = Components(
            backend=self.backend,
            info=self.info,
            dtype=options.dtype,
            base_config=base_config,
            detector=self.detector,
            pad_short=options.pad_short,
            audio=options.audio,
            facts={"backend": options.backend, "device": options.device, "precision": options.precision_name},
            workers=self.workers,
            unet_config=read_json(svd_dir / SvdFolder.UNET / "config.json"),  # the FLOP model's UNet (run reports' TFLOP per frame)
        )
        self.load_seconds = time.perf_counter() - t0

    @classmethod
    def from_preset(cls, preset: str, options: RuntimeOptions = RuntimeOptions()) -> "MimicMotion":
        from mimic.model.presets import default_generation, layout_from_options

        return cls(layout_from_options(preset=preset), options, default_generation(preset))

    @classmethod
    def from_weights(cls, weights: str | os.PathLike, options: RuntimeOptions = RuntimeOptions()) -> "MimicMotion":
        """Upstream's weights folder layout (DWPose/, SVD/, MimicMotion_1-1.pth)."""
        from mimic.model.presets import checked_layout, default_generation

        return cls(checked_layout(weights=Path(weights)), options, default_generation(None))

    def _make_backend(self, device: torch.device):
        """One worker's backend on ``device`` (torch modules are shared by workers on one device;
        onnxruntime sessions and TensorRT engines are per worker)."""
        o = self.options
        if o.backend == "torch":
            from mimic.model.loader import load_reference_models
            from mimic.runtime.backend_torch import TorchBackend

            if device not in self._models:
                models = load_reference_models(self.layout, device, o.dtype)
                if o.precision == "fp8":
                    from mimic.runtime.fp8 import convert_unet

                    self.fp8_conversion = convert_unet(models.unet)  # in place; every worker on the device shares it
                    log.info(f"fp8 on {device}: {self.fp8_conversion.summary()}")
                self._models[device] = models
            return TorchBackend(self._models[device])
        if o.backend == "onnxruntime":
            from mimic.runtime.backend_ort import OnnxRuntimeBackend
            from mimic.runtime.onnx_cache import ensure_onnx_graphs

            graphs = ensure_onnx_graphs(self.layout, self._onnx_precision, o.onnx_dir, cache_stages=self.base_config.cache_interval > 1)
            return OnnxRuntimeBackend(graphs, device, o.threads or self._cpu_threads_per_worker(device))
        from mimic.runtime.backend_trt import TensorRTBackend

        return TensorRTBackend(o.engines, device)

    def _cpu_threads_per_worker(self, device: torch.device) -> int | None:
        """Several CPU workers share the cores (None: the library's default for one worker)."""
        n = sum(d.type == "cpu" for d in self.devices)
        if device.type != "cpu" or n < 2:
            return None
        return max(1, (os.cpu_count() or 1) // n)

    def detector(self):
        if self._detector is None:
            from mimic.pose.detector import DWPoseDetector

            self._detector = DWPoseDetector(self.layout.det_model, self.layout.pose_model, device=self.options.main_device)
        return self._detector

    def admit(self, job: Job | AdmittedJob, others: Sequence[Job | AdmittedJob] = ()) -> AdmittedJob:
        """``admission.admit`` with this engine's settings and audio option, and the memory check
        against the loaded backend (raises MimicError on bad input; an ``AdmittedJob`` is kept)."""
        _check_job(job, "admit")
        return admit(job, self.base_config, audio=self.options.audio, others=others, memory_check=self.check_settings)

    def render(self, job: Job | AdmittedJob, hooks=None, control: JobControl | None = None) -> JobReport:
        """Admit (``admit``: checks, inputs opened once), then run one job start to finish.
        ``hooks``: observers, one or a list (``pipeline.Hooks``: ``on_stage_end``, ``on_progress``,
        ``on_step_end``, any subset); ``control``: a ``pipeline.JobControl`` (cancelling polls...)."""
        _check_job(job, "render")
        return generate(self.components, self.admit(job), hooks=hooks, control=control)

    @property
    def _onnx_precision(self) -> str:
        return "fp16" if self.options.dtype == torch.float16 else "fp32"

    def check_settings(self, config: GenerationConfig) -> None:
        """What admission checks against the loaded engine: ``check_backend``, then memory."""
        self.check_backend(config)
        self.check_memory(config)

    def check_backend(self, config: GenerationConfig) -> None:
        """Deep-feature caching the loaded backend can run, one line naming the flag otherwise. The
        onnxruntime backend's cached-step graphs are exported into the cache the first time a job
        asks for them (unless --onnx-dir names the graphs: then they must be there)."""
        from mimic.runtime.denoise import check_cache_support

        backends = (self.backend, *self.workers)
        if config.cache_interval > 1 and self.options.backend == "onnxruntime" and self.options.onnx_dir is None:
            lacking = [b for b in backends if not b.cache_depths()]
            if lacking:
                from mimic.runtime.onnx_cache import ensure_onnx_graphs
                from mimic.spec import CACHE_STAGES

                graphs = ensure_onnx_graphs(self.layout, self._onnx_precision, None, cache_stages=True)
                for b in lacking:
                    b.add_graphs({s: graphs[s] for s in CACHE_STAGES})
        for backend in backends:
            check_cache_support(backend, config)

    def check_memory(self, config: GenerationConfig) -> None:
        """The memory preflight of `mimic run` for a job with ``config`` on this loaded engine (InputError when it cannot fit)."""
        preflight(self.layout, config, self.options.backend, self.options.main_device, self.options.dtype == torch.float32,
                  loaded=True, workers=self.options.devices.count(self.options.main_device))  # weights already on the device

    def close(self) -> None:
        for backend in (self.backend, *self.workers):
            backend.close()

    def __enter__(self) -> "MimicMotion":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
