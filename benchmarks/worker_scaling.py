"""One job on 1, 2, 4, ... workers (``mimic bench workers``): seconds per job, speedup and parallel
efficiency, side by side in one run, and whether every worker count gives the one-worker frames.

The point with k workers loads the backend on the first k listed devices (``--device cpu,cpu`` or
``cuda:0,cuda:1,...``), as ``mimic run --device`` would: on the CPU the cores are split over the
workers, so one worker gets them all and the point measures how well windows run side by side
against one job using every core. Each point is timed after an untimed warm-up job (first-call
costs: session arenas, kernel selection), the median of ``repeats`` jobs.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class WorkerPlan:
    preset: str | None = "tiny"
    weights: str | None = None
    backend: str = "onnxruntime"
    devices: str = "cpu,cpu"
    frames: int = 40
    resolution: int | None = None  # default: the preset's
    window: int | None = None
    overlap: int | None = None
    steps: int = 2
    repeats: int = 1
    threads: int | None = None

    def counts(self) -> list[int]:
        """1, 2, 4, ... up to the number of listed devices (and that number itself)."""
        n = len(self.devices.split(","))
        out, k = [], 1
        while k < n:
            out.append(k)
            k *= 2
        return out + [n]


def run_workers(plan: WorkerPlan, ctx, emit: Callable[[dict], object], log: Callable[[str], None] = print) -> list[dict]:
    from mimic.model.preprocess import target_size
    from mimic.pose.draw import draw_pose
    from mimic.pose.images import DrawnPoses
    from mimic.runtime.demo_assets import synthetic_poses, synthetic_reference
    from mimic.runtime.inputs import JobInputs, pad_to_window
    from mimic.runtime.pipeline import FrameCollector, JobControl, generate, in_memory_job
    from mimic.runtime.api import MimicMotion, RuntimeOptions
    from mimic.model.windows import window_indices

    timed = JobControl(synchronize=True)  # phase timings wait for the device

    listed = plan.devices.split(",")
    records: list[dict] = []
    base_frames, base_seconds = None, None
    for k in plan.counts():
        options = RuntimeOptions(backend=plan.backend, device=",".join(listed[:k]), threads=plan.threads)
        mm = MimicMotion.from_preset(plan.preset, options) if plan.preset else MimicMotion.from_weights(plan.weights, options)
        with mm:
            overrides = {"steps": plan.steps}
            for key in ("resolution", "window", "overlap"):
                if getattr(plan, key) is not None:
                    overrides[key] = getattr(plan, key)
            config = mm.base_config.with_overrides(**overrides)
            height, width = target_size(2, 1, config.resolution)
            dance = synthetic_poses(plan.frames + 1, (height, width))
            poses, _ = pad_to_window(DrawnPoses(draw_pose(dance[0], height, width), dance[1:], height, width), config.window, pad=True)
            inputs = JobInputs(synthetic_reference(height, width), poses, plan.frames, 8.0, warnings=[])
            num_windows = len(window_indices(len(poses), config.window, config.overlap))

            def job():
                sink = FrameCollector()
                t0 = time.perf_counter()
                report = generate(mm.components, in_memory_job(config), inputs=inputs, sink=sink, control=timed)
                return time.perf_counter() - t0, report.seconds, sink.frames()

            job()  # warm-up, untimed
            runs = [job() for _ in range(plan.repeats)]
        seconds = statistics.median(r[0] for r in runs)
        phases = {name: round(statistics.median(r[1][name] for r in runs), 4) for name in runs[0][1]}
        frames = runs[0][2]
        if base_frames is None:
            base_frames, base_seconds = frames, seconds
        speedup = base_seconds / seconds
        rec = ctx.record(
            "workers", backend=plan.backend, devices=options.device, workers=k, output_frames=plan.frames,
            height=height, width=width, window=config.window, overlap=config.overlap, steps=config.steps, windows=num_windows,
            seconds=round(seconds, 4), phases=phases, speedup=round(speedup, 3), efficiency=round(speedup / k, 3),
            identical_to_one_worker=bool(np.array_equal(frames, base_frames)),
        )
        emit(rec)
        records.append(rec)
        log(f"  {k} worker(s): {seconds:7.2f} s  speedup {speedup:4.2f}x  efficiency {speedup / k:4.0%}  "
            f"frames {'identical' if rec['identical_to_one_worker'] else 'DIFFERENT'}")
    return records
