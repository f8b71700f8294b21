"""A job executor that keeps the backend loaded and overlaps stages across consecutive jobs.

While job k denoises (the long stage, on the caller's thread), job k+1's inputs are read, its poses
extracted and its image encoded on a worker thread, and job k-1's latents are decoded and encoded
to video on another. On CUDA each stage runs on its own stream and hands tensors over with events.
Every job has its own seeded generator, so the outputs equal those of sequential runs.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Sequence

import torch

from mimic.errors import MimicError
from mimic.runtime.jobs import Job
from mimic.runtime.service import JobReport, MimicMotion


class _Streams:
    """One CUDA stream per stage on CUDA; no-ops on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.prepare = torch.cuda.Stream(device) if self.cuda else None
        self.decode = torch.cuda.Stream(device) if self.cuda else None

    def handoff(self, producer) -> "torch.cuda.Event | None":
        if not self.cuda:
            return None
        event = torch.cuda.Event()
        event.record(producer)
        return event

    @staticmethod
    def wait(event, consumer=None) -> None:
        if event is not None:
            (consumer or torch.cuda.current_stream()).wait_event(event)


class JobExecutor:
    def __init__(self, mm: MimicMotion, overlap: bool = True, log: Callable[[str], None] = print):
        self.mm, self.overlap, self.log = mm, overlap, log

    def _prepare(self, job: Job, report: JobReport, streams: _Streams):
        ctx = torch.cuda.stream(streams.prepare) if streams.cuda else _Null()
        with ctx:
            result = self.mm.prepare(job, report, streams.prepare)
        return result, streams.handoff(streams.prepare)

    def _decode(self, job, inputs, latents, config, report, streams: _Streams, ready) -> None:
        ctx = torch.cuda.stream(streams.decode) if streams.cuda else _Null()
        with ctx:
            _Streams.wait(ready, streams.decode)
            self.mm.decode_and_write(job, inputs, latents, config, report, streams.decode)

    def run(self, jobs: Sequence[Job], progress_for: Callable[[int, Job], Callable] | None = None, raise_errors: bool = False) -> list[JobReport]:
        """Render every job; a failing job is recorded in its report and the others go on
        (``raise_errors``: the first error propagates instead, as a single-job CLI run wants)."""
        reports = [JobReport(job) for job in jobs]
        streams = _Streams(self.mm.device)
        workers = 2 if self.overlap else 0
        pool_prep = ThreadPoolExecutor(1, "mimic-prepare") if workers else None
        pool_dec = ThreadPoolExecutor(1, "mimic-decode") if workers else None
        pending_decodes: list[tuple[int, Future]] = []

        def submit_prepare(k: int):
            if pool_prep is None:
                return _Done(lambda: self._prepare(jobs[k], reports[k], streams))
            return pool_prep.submit(self._prepare, jobs[k], reports[k], streams)

        try:
            next_prep = submit_prepare(0) if jobs else None
            for k, job in enumerate(jobs):
                current, next_prep = next_prep, (submit_prepare(k + 1) if k + 1 < len(jobs) else None)
                try:
                    (inputs, prepared, config), ready = current.result()
                    _Streams.wait(ready)
                    progress = progress_for(k, job) if progress_for else None
                    latents = self.mm.denoise(prepared, config, reports[k], progress)
                    done = streams.handoff(torch.cuda.current_stream()) if streams.cuda else None
                    if pool_dec is None:
                        self._decode(job, inputs, latents, config, reports[k], streams, done)
                    else:
                        pending_decodes.append((k, pool_dec.submit(self._decode, job, inputs, latents, config, reports[k], streams, done)))
                except MimicError as err:
                    if raise_errors:
                        raise
                    self._fail(reports[k], err)
            for k, fut in pending_decodes:
                try:
                    fut.result()
                except MimicError as err:
                    if raise_errors:
                        raise
                    self._fail(reports[k], err)
        finally:
            for pool in (pool_prep, pool_dec):
                if pool is not None:
                    pool.shutdown(wait=True)
        return reports

    def _fail(self, report: JobReport, err: MimicError) -> None:
        report.error = str(err)
        self.log(f"error: job {report.job.out}: {err}")


class _Done:
    """A future-like wrapper that runs its function on ``result()`` (sequential mode)."""

    def __init__(self, fn):
        self.fn = fn

    def result(self):
        return self.fn()


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
