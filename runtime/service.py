"""The Python API: load once, render many.

    from mimic.runtime import MimicMotion, RuntimeOptions, Job
    mm = MimicMotion.from_preset("tiny", RuntimeOptions(backend="onnxruntime"))
    report = mm.render(Job(reference=..., driving=..., out=...))
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from mimic.errors import InputError
from mimic.mimicmotion_ref.config import GenerationConfig
from mimic.mimicmotion_ref.weights import WeightsLayout, fetch_svd
from mimic.runtime.inputs import JobInputs, load_job_inputs, validate_job
from mimic.runtime.jobs import Job
from mimic.runtime.model_info import ModelInfo
from mimic.runtime.renderer import Prepared, Renderer

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


@dataclass
class JobReport:
    job: Job
    output: Path | None = None
    frames: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("mimic-engine", "torch", "onnxruntime", "onnxruntime-gpu", "diffusers", "transformers", "av", "tensorrt", "tensorrt-rtx-cu13"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


class MimicMotion:
    """Holds one backend (models/sessions/engines loaded once) and renders jobs with it."""

    def __init__(self, layout: WeightsLayout, options: RuntimeOptions, base_config: GenerationConfig, log: Callable[[str], None] = print):
        self.layout, self.options, self.base_config, self.log = layout, options, base_config, log
        self.device = torch.device(options.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise InputError("--device cuda but PyTorch sees no CUDA GPU here")
        if options.threads:
            torch.set_num_threads(options.threads)
        t0 = time.perf_counter()
        self.info = ModelInfo.from_svd_dir(fetch_svd(layout.svd))
        self.backend = self._make_backend()
        self.renderer = Renderer(self.backend, self.info, options.dtype)
        self._detector = None
        self.load_seconds = time.perf_counter() - t0

    @classmethod
    def from_preset(cls, preset: str, options: RuntimeOptions = RuntimeOptions(), log=print) -> "MimicMotion":
        from mimic.mimicmotion_ref.presets import default_generation, layout_from_options

        return cls(layout_from_options(preset=preset), options, default_generation(preset), log)

    def _make_backend(self):
        o = self.options
        if o.backend == "torch":
            from mimic.mimicmotion_ref.loader import load_reference_models
            from mimic.runtime.backend_torch import TorchBackend

            return TorchBackend(load_reference_models(self.layout, self.device, o.dtype))
        if o.backend == "onnxruntime":
            from mimic.runtime.backend_ort import OnnxRuntimeBackend
            from mimic.runtime.onnx_cache import ensure_onnx_graphs

            graphs = ensure_onnx_graphs(self.layout, "fp16" if o.dtype == torch.float16 else "fp32", o.onnx_dir, self.log)
            return OnnxRuntimeBackend(graphs, self.device, o.threads)
        from mimic.engine.trt_backend import TensorRTBackend

        return TensorRTBackend(o.engines, self.device)

    def detector(self):
        if self._detector is None:
            from mimic.mimicmotion_ref.dwpose.detector import DWPoseDetector

            self._detector = DWPoseDetector(self.layout.det_model, self.layout.pose_model, device=self.options.device, log=self.log)
        return self._detector

    # -- the three stages a job goes through (the executor overlaps them across jobs) --

    def prepare(self, job: Job, report: JobReport, stream=None) -> tuple[JobInputs, Prepared, GenerationConfig]:
        config = job.config(self.base_config)
        t0 = time.perf_counter()
        inputs = load_job_inputs(job, config, self.detector, pad=self.options.pad_short, log=self.log)
        report.seconds["inputs"] = time.perf_counter() - t0
        return (inputs, *self.prepare_inputs(inputs, config, report, stream))

    def prepare_inputs(self, inputs: JobInputs, config: GenerationConfig, report: JobReport, stream=None) -> tuple[Prepared, GenerationConfig]:
        """Encode already-loaded inputs (reference + drawn poses) and draw the initial noise."""
        report.warnings += inputs.warnings
        t0 = time.perf_counter()
        generator = torch.Generator().manual_seed(config.seed)
        prepared = self.renderer.prepare(inputs.reference, inputs.poses, config, generator, stream=stream)
        report.seconds["encode"] = time.perf_counter() - t0
        return prepared, config

    def denoise(self, prepared: Prepared, config: GenerationConfig, report: JobReport, progress=None) -> torch.Tensor:
        t0 = time.perf_counter()
        latents = self.renderer.denoise(prepared, config, progress)
        report.seconds["denoise"] = time.perf_counter() - t0
        return latents

    def decode_and_write(self, job: Job, inputs: JobInputs, latents: torch.Tensor, config: GenerationConfig, report: JobReport, stream=None) -> None:
        from mimic.runtime.video_writer import PngSequenceWriter, VideoWriter

        t0 = time.perf_counter()
        hw = inputs.reference.shape[:2]
        writer = PngSequenceWriter(job.out) if job.writes_png_sequence else VideoWriter(job.out, inputs.output_fps, hw)
        with writer:
            for start, frames in self.renderer.decode_chunks(latents, config.decode_chunk, stream):
                keep = frames[max(0, 1 - start) : max(0, 1 + inputs.num_output - start)]  # drop slot 0 and padding
                if len(keep):
                    writer.write(keep)
        report.frames = writer.frames_written
        report.output = Path(job.out)
        if self.options.audio and inputs.audio_source is not None and not job.writes_png_sequence:
            self._copy_audio(job, inputs, report)
        report.seconds["decode_write"] = time.perf_counter() - t0
        write_report(job, report, config, self.options)

    def _copy_audio(self, job: Job, inputs: JobInputs, report: JobReport) -> None:
        from mimic.runtime.audio import mux_audio

        duration = report.frames / inputs.output_fps
        if inputs.pose_fps and abs(inputs.pose_fps - inputs.output_fps) > 1e-3:
            report.warnings.append(
                f"output plays at {inputs.output_fps:g} fps but the sampled motion is {inputs.pose_fps:g} fps: "
                f"audio follows the source clock and will drift (use --fps {inputs.pose_fps:g})"
            )
        if not mux_audio(job.out, inputs.audio_source, inputs.audio_start_s, duration):
            report.warnings.append(f"{inputs.audio_source} has no audio stream to copy")

    def render(self, job: Job, progress=None) -> JobReport:
        """Validate, then run one job start to finish (raises MimicError on bad input)."""
        validate_job(job)
        report = JobReport(job)
        inputs, prepared, config = self.prepare(job, report)
        latents = self.denoise(prepared, config, report, progress)
        self.decode_and_write(job, inputs, latents, config, report)
        return report

    def render_inputs(self, inputs: JobInputs, job: Job, progress=None) -> JobReport:
        """Render in-memory inputs (reference + drawn poses) to ``job.out`` (used by `mimic demo`)."""
        report = JobReport(job)
        config = job.config(self.base_config)
        prepared, config = self.prepare_inputs(inputs, config, report)
        latents = self.denoise(prepared, config, report, progress)
        self.decode_and_write(job, inputs, latents, config, report)
        return report

    def close(self) -> None:
        self.backend.close()


def report_path(job: Job) -> Path:
    out = Path(job.out)
    return out / "report.json" if job.writes_png_sequence else out.with_name(out.name + ".report.json")


def write_report(job: Job, report: JobReport, config: GenerationConfig, options: RuntimeOptions) -> Path:
    data = {
        "reference": str(job.reference),
        "driving": str(job.driving or job.poses or job.pose_frames),
        "output": str(report.output) if report.output else None,
        "frames": report.frames,
        "config": config.to_dict(),
        "seed": config.seed,
        "backend": options.backend,
        "device": options.device,
        "precision": "fp16" if options.dtype == torch.float16 else "fp32",
        "seconds": {k: round(v, 4) for k, v in report.seconds.items()},
        "warnings": report.warnings,
        "error": report.error,
        "versions": versions(),
    }
    path = report_path(job)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return path
