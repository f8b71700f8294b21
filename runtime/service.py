"""The Python API: load once, render many.

    from mimic.runtime import MimicMotion, RuntimeOptions, Job
    mm = MimicMotion.from_preset("tiny", RuntimeOptions(backend="onnxruntime"))
    report = mm.render(Job(reference="a.png", driving="dance.mp4", out="a.mp4"))

``MimicMotion`` loads the backend (and DWPose, on first use) once; ``render`` validates a job like
the CLI does and runs it through the one pipeline, ``mimic.runtime.pipeline.generate``.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mimic.errors import InputError
from mimic.mimicmotion_ref.config import GenerationConfig
from mimic.mimicmotion_ref.model_info import ModelInfo
from mimic.mimicmotion_ref.weights import WeightsLayout, fetch_svd
from mimic.runtime.inputs import validate_job
from mimic.runtime.jobs import Job
from mimic.runtime.memory import preflight
from mimic.runtime.pipeline import Components, Hooks, generate
from mimic.runtime.report import JobReport

BACKENDS = ("torch", "onnxruntime", "tensorrt")


@dataclass(frozen=True)
class RuntimeOptions:
    backend: str = "onnxruntime"
    device: str = "cpu"
    precision: str | None = None  # default: fp16 on CUDA, fp32 on CPU
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
        if self.precision not in (None, "fp16", "fp32"):
            raise InputError(f"unknown precision {self.precision!r}; choose fp16 or fp32")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise InputError(f"unknown device {self.device!r}; use cpu or cuda[:N]")
        if self.backend == "tensorrt" and self.engines is None:
            raise InputError("--backend tensorrt needs --engines DIR (from `mimic build-engines`)")

    @property
    def dtype(self) -> torch.dtype:
        fp16 = self.precision == "fp16" or (self.precision is None and self.device.startswith("cuda"))
        return torch.float16 if fp16 else torch.float32



class MimicMotion:
    """Holds one backend (models/sessions/engines loaded once) and renders jobs with it."""

    def __init__(self, layout: WeightsLayout, options: RuntimeOptions, base_config: GenerationConfig):
        self.layout, self.options, self.base_config = layout, options, base_config
        self.device = torch.device(options.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise InputError("--device cuda but PyTorch sees no CUDA GPU here")
        if options.threads:
            torch.set_num_threads(options.threads)
        t0 = time.perf_counter()
        self.info = ModelInfo.from_svd_dir(fetch_svd(layout.svd))
        self.backend = self._make_backend()
        self._detector = None
        self.components = Components(
            backend=self.backend,
            info=self.info,
            dtype=options.dtype,
            base_config=base_config,
            detector=self.detector,
            pad_short=options.pad_short,
            audio=options.audio,
            facts={"backend": options.backend, "device": options.device, "precision": "fp16" if options.dtype == torch.float16 else "fp32"},
        )
        self.load_seconds = time.perf_counter() - t0

    @classmethod
    def from_preset(cls, preset: str, options: RuntimeOptions = RuntimeOptions()) -> "MimicMotion":
        from mimic.mimicmotion_ref.presets import default_generation, layout_from_options

        return cls(layout_from_options(preset=preset), options, default_generation(preset))

    @classmethod
    def from_weights(cls, weights: str | os.PathLike, options: RuntimeOptions = RuntimeOptions()) -> "MimicMotion":
        """Upstream's weights folder layout (DWPose/, SVD/, MimicMotion_1-1.pth)."""
        from mimic.mimicmotion_ref.presets import default_generation, layout_from_options

        return cls(layout_from_options(weights=Path(weights)), options, default_generation(None))

    def _make_backend(self):
        o = self.options
        if o.backend == "torch":
            from mimic.mimicmotion_ref.loader import load_reference_models
            from mimic.runtime.backend_torch import TorchBackend

            return TorchBackend(load_reference_models(self.layout, self.device, o.dtype))
        if o.backend == "onnxruntime":
            from mimic.runtime.backend_ort import OnnxRuntimeBackend
            from mimic.runtime.onnx_cache import ensure_onnx_graphs

            graphs = ensure_onnx_graphs(self.layout, "fp16" if o.dtype == torch.float16 else "fp32", o.onnx_dir)
            return OnnxRuntimeBackend(graphs, self.device, o.threads)
        from mimic.runtime.backend_trt import TensorRTBackend

        return TensorRTBackend(o.engines, self.device)

    def detector(self):
        if self._detector is None:
            from mimic.pose.detector import DWPoseDetector

            self._detector = DWPoseDetector(self.layout.det_model, self.layout.pose_model, device=self.options.device)
        return self._detector

    def render(self, job: Job, hooks: Hooks | None = None) -> JobReport:
        """Validate, then run one job start to finish (raises MimicError on bad input)."""
        validate_job(job, audio=self.options.audio)
        preflight(self.layout, job.config(self.base_config), self.options.backend, self.options.device, self.options.dtype == torch.float32)
        return generate(self.components, job, hooks=hooks)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "MimicMotion":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
