"""The JSON run report written beside each output (config, seed, backend, timings, warnings,
versions, and the UNet work the job asked for), so every render can be reproduced and audited.

The UNet work is the hardware-independent speed figure: UNet TFLOP per output frame, from the FLOP
model (``mimic.model.flops``, torch's counter on the meta device) for exactly the UNet calls the
denoising loop made (each call counted by its batch: 2 for a CFG pair, 1 for the conditional half
alone outside the guidance interval), at the job's size and, scaled, at 576x1024
(``unet_work_flops_576x1024``: every frame-pass costed as a frame of the released model at
576x1024 in a 72-frame window), beside the seconds.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from mimic.files import atomic_write_text
from mimic.model.config import GenerationConfig
from mimic.runtime.jobs import Job

TFLOP = 1e12


@dataclass(frozen=True)
class UnetWork:
    """The UNet calls of one job, by batch size, and the FLOPs they cost.

    ``ran``: the calls this process's denoising loop made, by batch size (full passes) and by (batch,
    depth) (cached steps' shallow passes, deep-feature caching). ``earlier``: after a resume, the calls of
    the steps before the checkpoint (made by the process that saved it; the plan gives them: the same
    windows, and the same guidance interval per step). The figures count both, so a resumed job
    reports what an uninterrupted one does. Every call covers ``frames`` frames (the window) at
    ``height`` x ``width`` px. ``unet_config``: the UNet config's ``frozen_config`` key (None: not
    known here, so no figure at the job's size; the 576x1024 figure needs only the calls)."""

    unet_config: str | None
    frames: int
    height: int
    width: int
    ran: Mapping[int | tuple[int, int], int]
    earlier: Mapping[int | tuple[int, int], int] = field(default_factory=dict)

    def calls(self) -> dict[tuple[int, ...], int]:
        """(frames, batch) -> full passes and (frames, batch, depth) -> cached steps' shallow passes
        of the whole job (the ``calls`` keys of ``mimic.model.flops.unet_work_flops``)."""
        out: dict[tuple[int, ...], int] = {}
        for counts in (self.ran, self.earlier):
            for key, n in counts.items():
                if n:
                    k = (self.frames, int(key)) if isinstance(key, int) else (self.frames, *map(int, key))
                    out[k] = out.get(k, 0) + int(n)
        return out

    def tflop(self) -> float | None:
        """UNet TFLOP of the whole job at its size (None: the UNet config is not known)."""
        if self.unet_config is None:
            return None
        from mimic.model.flops import unet_work_flops

        return unet_work_flops(self.unet_config, self.calls(), self.height, self.width) / TFLOP

    def tflop_576x1024(self) -> float:
        """The same calls costed as frames of the released model at 576x1024 (``unet_work_flops_576x1024``)."""
        from mimic.model.flops import unet_work_flops_576x1024

        return unet_work_flops_576x1024(self.calls()) / TFLOP


def unet_flop_config(explicit: Mapping | str | None, backend, info) -> str | None:
    """The ``frozen_config`` key of the job's UNet config: ``explicit`` (the SVD folder's
    ``unet/config.json``, when the loader hands it over), else the torch backend's UNet config (a
    known configuration when it is one: real, tiny, toy), else the known configuration that the
    model info's widths identify (MimicMotion runs on SVD-xt's config; the presets have their own);
    None when none fits."""
    from mimic.model.flops import frozen_config, identify_unet_config, known_unet_configs

    if isinstance(explicit, str):
        return explicit
    config = explicit
    if config is None:
        from mimic.model.models import RefModels

        models = getattr(backend, "models", None)  # the torch backend's modules
        config = models.unet.config if isinstance(models, RefModels) else None
    if isinstance(config, Mapping):
        mine = json.loads(frozen_config(config))
        for known in known_unet_configs().values():  # a known configuration: its counts are cached (or pinned)
            key = frozen_config(known)
            if all(mine.get(k) == v for k, v in json.loads(key).items()):
                return key
        return frozen_config(config)
    if info is None:
        return None
    return identify_unet_config(info.pose_channels, info.embed_dim)


def _figure(value: float | None) -> float | None:
    """Six significant digits (a tiny model's figure is ~1e-3 TFLOP, the released one ~175)."""
    return None if value is None else float(f"{value:.6g}")


@dataclass
class JobReport:
    job: Job
    output: Path | None = None
    frames: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    resumed_from_step: int | None = None  # continued from a checkpoint saved after this step
    fps: float | None = None  # the output's frame rate
    size: tuple[int, int] | None = None  # the output's (width, height) in px
    printed: list[str] = field(default_factory=list)  # warnings already printed while the job ran (not repeated at its end)
    unet: UnetWork | None = None  # the UNet calls the denoising loop made (None: it did not run)
    speed: str | None = None  # the job's --speed preset (None: none given)

    @property
    def duration_s(self) -> float | None:
        return self.frames / self.fps if self.fps else None

    @property
    def unet_calls(self) -> dict[int, int]:
        """Batch size -> full UNet passes this process made (2: a CFG pair, 1: the conditional half alone)."""
        return {b: int(self.unet.ran.get(b, 0)) for b in (1, 2)} if self.unet else {}

    @property
    def unet_cached_calls(self) -> dict[str, int]:
        """``"batch@depth"`` -> cached steps' shallow UNet passes this process made (deep-feature caching)."""
        if not self.unet:
            return {}
        return {f"{k[0]}@{k[1]}": int(n) for k, n in sorted(self.unet.ran.items(), key=lambda kv: str(kv[0])) if isinstance(k, tuple) and n}

    @property
    def unet_tflop_per_output_frame(self) -> float | None:
        """UNet TFLOP per output frame at the job's size and window (None: no frames, or the model's
        UNet config is not known)."""
        total = self.unet.tflop() if self.unet and self.frames else None
        return None if total is None else total / self.frames

    @property
    def unet_tflop_per_output_frame_576x1024(self) -> float | None:
        """The same UNet calls with every frame costed as a frame of the released model at 576x1024 in a
        72-frame window (``mimic.model.flops.unet_work_flops_576x1024``), per output frame."""
        return self.unet.tflop_576x1024() / self.frames if self.unet and self.frames else None

    def work_summary(self) -> str:
        """``UNet 0.00123 TFLOP/frame at 128x192 (175 at 576x1024)``; "" when the UNet did not run."""
        at_576 = self.unet_tflop_per_output_frame_576x1024
        if at_576 is None:
            return ""
        own = self.unet_tflop_per_output_frame
        if own is not None and abs(own - at_576) <= 1e-9 * at_576:  # the released model at 576x1024, 72-frame windows
            return f"UNet {at_576:.4g} TFLOP/frame"
        size = f" at {self.size[0]}x{self.size[1]}" if self.size else ""
        return f"UNet {own:.3g} TFLOP/frame{size} ({at_576:.4g} at 576x1024)" if own is not None else f"UNet {at_576:.4g} TFLOP/frame at 576x1024"

    def summary(self) -> str:
        """``1024x576, 72 frames at 15 fps (4.80 s); inputs 0.3s, ...; UNet 175 TFLOP/frame``: what a
        user checks first about an output, then the seconds of each phase and the UNet work per frame."""
        size = f"{self.size[0]}x{self.size[1]}, " if self.size else ""
        rate = f" at {self.fps:g} fps ({self.duration_s:.2f} s)" if self.fps else ""
        parts = [f"{size}{self.frames} frames{rate}"]
        if self.seconds:
            parts.append(", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items()))
        work = self.work_summary()
        if work:
            parts.append(work + (f" (--speed {self.speed})" if self.speed else ""))
        return "; ".join(parts)


def _call_name(key) -> str:
    """A ``calls`` key as a JSON key: ``"2"`` (a full pass of batch 2), ``"2@1"`` (a shallow pass at depth 1)."""
    return str(key) if isinstance(key, int) else f"{key[0]}@{key[1]}"


def report_path(job: Job) -> Path:
    return job.output_paths()["report"]


RUN_WARNINGS = "warnings"  # facts key: warnings about the whole run (a rounded --resolution), in every job's report


def add_run_warnings(facts: dict, warnings: list[str]) -> None:
    """Warnings printed once for a whole run that every job's report must list too."""
    if warnings:
        listed = facts.setdefault(RUN_WARNINGS, [])
        listed += [w for w in warnings if w not in listed]


def write_report(job: Job, report: JobReport, config: GenerationConfig, facts: dict) -> Path:
    """``facts``: backend, device and precision of the run, and its run-wide warnings."""
    from mimic.fingerprint import versions

    data = {
        "reference": str(job.reference),
        "driving": str(job.driving or job.poses or job.pose_frames),
        "output": str(report.output) if report.output else None,
        "frames": report.frames,
        "fps": report.fps,
        "size": list(report.size) if report.size else None,
        "duration_s": round(report.duration_s, 4) if report.duration_s is not None else None,
        "config": config.to_dict(),
        "seed": config.seed,
        "backend": facts.get("backend"),
        "device": facts.get("device"),
        "precision": facts.get("precision"),
        "seconds": {k: round(v, 4) for k, v in report.seconds.items()},
        "warnings": [*facts.get(RUN_WARNINGS, ()), *report.warnings],
        "error": report.error,
        "resumed_from_step": report.resumed_from_step,
        # the UNet work (hardware-independent speed): TFLOP per output frame at the job's size and at 576x1024
        "unet_tflop_per_output_frame": _figure(report.unet_tflop_per_output_frame),
        "unet_tflop_per_output_frame_576x1024": _figure(report.unet_tflop_per_output_frame_576x1024),
        "unet_calls_by_batch": {str(b): n for b, n in report.unet_calls.items()},  # this process's full passes
        "versions": versions(),
    }
    if report.unet_cached_calls:  # deep-feature caching: the cached steps' shallow passes, "batch@depth"
        data["unet_cached_calls_by_batch"] = report.unet_cached_calls
    if report.unet is not None and any(report.unet.earlier.values()):  # resumed: the checkpointed steps' calls
        data["unet_calls_by_batch_before_resume"] = {_call_name(b): int(n) for b, n in sorted(report.unet.earlier.items(), key=lambda kv: str(kv[0])) if n}
    path = report_path(job)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path
