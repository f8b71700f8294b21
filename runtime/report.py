"""The JSON run report written beside each output (config, seed, backend, timings, warnings,
versions), so every render can be reproduced and audited."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mimic.files import atomic_write_text
from mimic.model.config import GenerationConfig
from mimic.runtime.jobs import Job


@dataclass
class JobReport:
    job: Job
    output: Path | None = None
    frames: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    resumed_from_step: int | None = None  # continued from a checkpoint saved after this step


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
        "config": config.to_dict(),
        "seed": config.seed,
        "backend": facts.get("backend"),
        "device": facts.get("device"),
        "precision": facts.get("precision"),
        "seconds": {k: round(v, 4) for k, v in report.seconds.items()},
        "warnings": [*facts.get(RUN_WARNINGS, ()), *report.warnings],
        "error": report.error,
        "resumed_from_step": report.resumed_from_step,
        "versions": versions(),
    }
    path = report_path(job)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path
