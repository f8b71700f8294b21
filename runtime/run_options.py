"""From ``mimic run``'s options to validated jobs and a loaded engine (no model loads before every
input and output has been checked)."""
from __future__ import annotations

import time
from pathlib import Path

from mimic.errors import InputError
from mimic.mimicmotion_ref.config import GenerationConfig
from mimic.mimicmotion_ref.presets import default_generation, layout_from_options
from mimic.runtime.inputs import rounded_resolution, validate_job
from mimic.runtime.jobs import UPSTREAM_KEYS, Job, _load_structured, load_jobs_file, upstream_jobs


def settings_from_file(path: Path) -> tuple[dict, list[Job]]:
    """A mapping of run settings: our names (``steps``...) or upstream's test.yaml names
    (``num_inference_steps``, ``guidance_scale``...); a ``test_case`` list becomes jobs."""
    data = _load_structured(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of settings")
    jobs = upstream_jobs(data, Path(path).parent) if "test_case" in data else []
    known = set(GenerationConfig.__dataclass_fields__)
    overrides = {}
    for key, value in data.items():
        if key in ("test_case", "base_model_path", "ckpt_path"):
            continue
        if key == "guidance_scale":
            overrides["guidance_min"] = overrides["guidance_max"] = float(value)
        elif key in UPSTREAM_KEYS:
            overrides[UPSTREAM_KEYS[key]] = value
        elif key in known:
            overrides[key] = value
        else:
            raise InputError(f"{path}: unknown setting {key!r}")
    return overrides, jobs


def build_jobs(ref, driving, pose, pose_frames, ref_pose, out, jobs_file, config_jobs) -> list[Job]:
    if jobs_file is not None:
        if any(v is not None for v in (ref, driving, pose, pose_frames, out)):
            raise InputError("give either --jobs or --ref/--driving/--out, not both")
        return load_jobs_file(jobs_file)
    if ref is None and config_jobs:
        return config_jobs
    if ref is None or out is None:
        raise InputError("need --ref IMAGE and --out OUT (or --jobs FILE)")
    return [Job(reference=ref, driving=driving, poses=pose, pose_frames=pose_frames, ref_pose=ref_pose, out=out)]


def run_command(*, ref, driving, pose, pose_frames, ref_pose, out, jobs_file, config_file, weights, preset, svd, checkpoint,
                engines, onnx_dir, backend, device, precision, overrides, pad, overlap_jobs, echo, audio=False) -> int:
    """Returns the number of failed jobs."""
    from mimic.runtime.service import RuntimeOptions

    options = RuntimeOptions(backend=backend, device=device, precision=precision, onnx_dir=onnx_dir, engines=engines, pad_short=pad, audio=audio)
    file_overrides, config_jobs = settings_from_file(config_file) if config_file else ({}, [])
    settings = {**file_overrides, **overrides}
    if "resolution" in settings:
        settings["resolution"], warning = rounded_resolution(int(settings["resolution"]))
        if warning:
            echo(f"warning: {warning}")
    base = default_generation(preset).with_overrides(**settings)
    jobs = build_jobs(ref, driving, pose, pose_frames, ref_pose, out, jobs_file, config_jobs)
    outs = [Path(j.out).resolve() for j in jobs]
    if len(set(outs)) != len(outs):
        raise InputError("two jobs write the same output")
    for job in jobs:
        validate_job(job)
        job.config(base)  # job overrides are valid
    layout = layout_from_options(preset=preset, weights=weights, svd=svd, checkpoint=checkpoint)

    from mimic.runtime.executor import JobExecutor
    from mimic.runtime.progress import ProgressLine
    from mimic.runtime.service import MimicMotion

    echo(f"loading {options.backend} backend on {options.device} ...")
    t0 = time.perf_counter()
    mm = MimicMotion(layout, options, base, log=echo)
    echo(f"  loaded in {time.perf_counter() - t0:.1f} s")
    try:
        reports = JobExecutor(mm, overlap=overlap_jobs and len(jobs) > 1, log=echo).run(
            jobs, progress_for=lambda k, job: ProgressLine(f"[{k + 1}/{len(jobs)}] {Path(job.out).name}"), raise_errors=len(jobs) == 1
        )
    finally:
        mm.close()
    failed = 0
    for r in reports:
        if r.error:
            failed += 1
            continue
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in r.seconds.items())
        echo(f"wrote {r.output} ({r.frames} frames; {stages})")
        for w in r.warnings:
            echo(f"  warning: {w}")
    return failed
