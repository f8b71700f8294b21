"""Many jobs on one loaded backend, with their stages overlapped.

Each job runs the one pipeline, ``generate()``, on a thread of its own; at most three jobs are in
flight and the executor gates only step 6 (denoising) so that jobs denoise one at a time, in job
order. So while job k denoises (the long stage), job k+1 reads its inputs, extracts poses and
encodes its reference, and job k-1 decodes and writes its video. On CUDA each job's thread
enqueues on a stream of its own. Every job has its own seeded generator, so the outputs are
byte-identical to sequential runs (``overlap=False`` runs the jobs one after the other).
"""
from __future__ import annotations

import contextlib
import logging
import threading
from typing import Callable, Sequence

import torch

from mimic.errors import MimicError
from mimic.runtime.jobs import Job
from mimic.runtime.pipeline import Hooks, generate
from mimic.runtime.report import JobReport
from mimic.runtime.service import MimicMotion

log = logging.getLogger(__name__)

IN_FLIGHT = 3  # preparing, denoising, decoding


class _Turns:
    """Lets job k denoise after jobs 0..k-1 have denoised (or failed before denoising)."""

    def __init__(self) -> None:
        self._next = 0
        self._done: set[int] = set()
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def turn(self, k: int):
        with self._cond:
            self._cond.wait_for(lambda: self._next == k)
        try:
            yield
        finally:
            self.finish(k)

    def finish(self, k: int) -> None:
        with self._cond:
            self._done.add(k)
            while self._next in self._done:
                self._next += 1
            self._cond.notify_all()


class _GatedHooks(Hooks):
    def __init__(self, inner: Hooks | None, turns: _Turns, k: int):
        self.inner, self.turns, self.k = inner or Hooks(), turns, k

    def on_stage_end(self, name, seconds):
        self.inner.on_stage_end(name, seconds)

    def on_progress(self, done, total):
        self.inner.on_progress(done, total)

    def on_step_end(self, step, num_steps, latents):
        self.inner.on_step_end(step, num_steps, latents)

    def denoise_turn(self):
        return self.turns.turn(self.k)


class JobExecutor:
    def __init__(self, mm: MimicMotion, overlap: bool = True):
        self.mm, self.overlap = mm, overlap

    def run(self, jobs: Sequence[Job], hooks_for: Callable[[int, Job], Hooks] | None = None, raise_errors: bool = False) -> list[JobReport]:
        """Render every job; a failing job is recorded in its report and the others go on
        (``raise_errors``: the first error propagates instead, as a single-job CLI run wants)."""
        reports: list[JobReport] = [JobReport(job) for job in jobs]
        if not self.overlap or len(jobs) < 2:
            for k, job in enumerate(jobs):
                try:
                    reports[k] = generate(self.mm.components, job, hooks=hooks_for(k, job) if hooks_for else None)
                except MimicError as err:
                    if raise_errors:
                        raise
                    self._fail(reports[k], err)
            return reports

        turns = _Turns()
        slots = threading.Semaphore(IN_FLIGHT)
        errors: list[tuple[int, BaseException]] = []
        device = self.mm.device

        def work(k: int, job: Job) -> None:
            try:
                stream = torch.cuda.Stream(device) if device.type == "cuda" else None
                ctx = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
                with ctx:
                    hooks = _GatedHooks(hooks_for(k, job) if hooks_for else None, turns, k)
                    reports[k] = generate(self.mm.components, job, hooks=hooks, stream=stream)
                    if stream is not None:
                        stream.synchronize()
            except MimicError as err:
                self._fail(reports[k], err)
                errors.append((k, err))
            except BaseException as err:  # a bug: re-raised on the caller's thread
                errors.append((k, err))
            finally:
                turns.finish(k)  # a job that failed before denoising gives up its turn
                slots.release()

        threads = []
        for k, job in enumerate(jobs):
            slots.acquire()
            if raise_errors and errors:
                slots.release()
                break
            t = threading.Thread(target=work, args=(k, job), name=f"mimic-job-{k}", daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        for k, err in sorted(errors, key=lambda e: e[0]):
            if not isinstance(err, MimicError) or raise_errors:
                raise err
        return reports

    def _fail(self, report: JobReport, err: MimicError) -> None:
        report.error = str(err)
        log.error(f"error: job {report.job.out}: {err}")
