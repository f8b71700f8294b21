"""Many jobs on one loaded backend, with their stages overlapped.

Each job runs the one pipeline, ``generate()``, on a thread of its own; at most three jobs are in
flight and the executor gates only step 6 (denoising) so that jobs denoise one at a time, in job
order (the gate is a ``JobControl`` piece: the turn, and a poll that stops the job when the run is
cancelled). So while job k denoises (the long stage), job k+1 is admitted (when it came as a plain
``Job``), reads its inputs, extracts poses and encodes its reference, and job k-1 decodes and writes
its video. On CUDA each job's thread enqueues on a stream of its own, with the job's device current in its thread (the backends take
that stream and hand their outputs back to it with events). Every job has its own seeded generator, so the outputs are
byte-identical to sequential runs (``overlap=False`` runs the jobs one after the other).
"""
from __future__ import annotations

import contextlib
import logging
import threading
from functools import partial
from typing import Callable, Sequence

import torch

from mimic.errors import MimicError, OutOfMemoryError
from mimic.runtime.admission import AdmittedJob, admit
from mimic.runtime.checkpoint import CheckpointPolicy, generate_resumable
from mimic.runtime.jobs import Job
from mimic.runtime.pipeline import JobControl, generate
from mimic.runtime.report import JobReport
from mimic.runtime.api import MimicMotion

log = logging.getLogger(__name__)

IN_FLIGHT = 3  # preparing, denoising, decoding


class JobCancelled(Exception):
    """Raised inside a job's thread when the run is interrupted (its writers clean up)."""


class _Turns:
    """Lets job k denoise after jobs 0..k-1 have denoised (or failed before denoising)."""

    def __init__(self) -> None:
        self._next = 0
        self._done: set[int] = set()
        self._cond = threading.Condition()
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        with self._cond:
            self.cancelled.set()
            self._cond.notify_all()

    @contextlib.contextmanager
    def turn(self, k: int):
        with self._cond:
            self._cond.wait_for(lambda: self._next == k or self.cancelled.is_set())
        if self.cancelled.is_set():
            raise JobCancelled()
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

    def check(self) -> None:
        """A poll: stop a job of a cancelled run at its next unit of work."""
        if self.cancelled.is_set():
            raise JobCancelled()

    def control(self, k: int) -> JobControl:
        """Job ``k``'s piece of job control: its denoising turn, and the run's cancellation."""
        return JobControl(turns=(partial(self.turn, k),), polls=(self.check,))


def _job_stream(device: torch.device):
    """A non-default stream on ``device`` for one job (None off CUDA)."""
    if device.type != "cuda":
        return None
    with torch.cuda.device(device):
        return torch.cuda.Stream(device)


@contextlib.contextmanager
def _on_stream(device: torch.device, stream):
    """The job's device current in its thread (a worker thread starts on device 0) and its stream
    current: every stage is enqueued there and the backends hand their results back to it."""
    if stream is None:
        yield
        return
    with torch.cuda.device(device), torch.cuda.stream(stream):
        yield


class JobExecutor:
    def __init__(self, mm: MimicMotion, overlap: bool = True, checkpoints: CheckpointPolicy | None = None):
        """``checkpoints``: save each job's latents every N steps and resume interrupted jobs
        (``mimic.runtime.checkpoint``); None renders without checkpoints."""
        self.mm, self.overlap, self.checkpoints = mm, overlap, checkpoints
        self._denoise_lock = threading.Lock()  # render(): one job denoises at a time

    def run(self, jobs: Sequence[Job | AdmittedJob], hooks_for: Callable[[int, Job], object] | None = None, raise_errors: bool = False,
            numbers: Sequence[int] | None = None) -> list[JobReport]:
        """Render every job; a plain ``Job`` is admitted first, in its own thread (``admission.admit``
        against the others of ``jobs``, no memory check: that is the caller's, before loading), an
        ``AdmittedJob`` is used as it is. ``hooks_for(k, job)``: job k's observers (one or a list).
        A failing job (bad input, our error or an unexpected one) is recorded in its report,
        reported on stderr with its index and output, and the others go on (``raise_errors``: the
        first error propagates instead, as a single-job CLI run wants). Ctrl-C / SIGTERM cancels
        the jobs in flight (their temporary files are removed) and propagates."""
        plain = [j.job if isinstance(j, AdmittedJob) else j for j in jobs]
        reports: list[JobReport] = [JobReport(job) for job in plain]
        self._numbers = list(numbers) if numbers is not None else list(range(1, len(jobs) + 1))

        def observers(k: int):
            return hooks_for(k, plain[k]) if hooks_for else None

        if not self.overlap or len(jobs) < 2:
            for k, job in enumerate(jobs):
                try:
                    reports[k] = self._generate(job, observers(k), None, others=plain)
                except Exception as err:
                    if raise_errors:
                        raise
                    self._fail(k, reports[k], err)
            return reports

        turns = _Turns()
        slots = threading.Semaphore(IN_FLIGHT)
        errors: list[tuple[int, BaseException]] = []
        device = self.mm.device

        def work(k: int, job: Job | AdmittedJob) -> None:
            try:
                stream = _job_stream(device)
                with _on_stream(device, stream):
                    reports[k] = self._generate(job, observers(k), turns.control(k), stream, others=plain)
                    if stream is not None:
                        stream.synchronize()
            except JobCancelled:
                reports[k].error = "cancelled"
            except Exception as err:
                if not raise_errors:
                    self._fail(k, reports[k], err)
                errors.append((k, err))
            finally:
                turns.finish(k)  # a job that failed before denoising gives up its turn
                slots.release()

        threads = []
        try:
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
        except BaseException:  # Ctrl-C / SIGTERM: stop the jobs in flight so they remove their temporary files
            turns.cancel()
            for t in threads:
                t.join(timeout=60)
            raise
        if raise_errors and errors:
            raise sorted(errors, key=lambda e: e[0])[0][1]
        return reports

    def render(self, job: Job | AdmittedJob, hooks=None, control: JobControl | None = None) -> JobReport:
        """Render one job now (admitted first when plain, like ``run``; raises its error).
        Thread-safe: calls from several threads overlap like ``run`` does (one job denoises at a
        time, each on its own CUDA stream) -- the farm's workers feed jobs this way as they arrive.
        ``hooks``: observers; ``control``: more job control (a cancelling poll), joined inside
        the executor's denoising gate."""
        device = self.mm.device
        stream = _job_stream(device)
        with _on_stream(device, stream):
            report = self._generate(job, hooks, JobControl.join(JobControl(turns=(lambda: self._denoise_lock,)), control), stream)
            if stream is not None:
                stream.synchronize()
        return report

    def _generate(self, job: Job | AdmittedJob, hooks, control: JobControl | None, stream=None, others: Sequence[Job] = ()) -> JobReport:
        admitted = admit(job, self.mm.base_config, audio=self.mm.options.audio, others=others, memory_check=self.mm.check_backend)
        try:
            if self.checkpoints is None:
                return generate(self.mm.components, admitted, hooks=hooks, control=control, stream=stream)
            return generate_resumable(self.mm.components, admitted, self.checkpoints, hooks=hooks, control=control, stream=stream, render=generate)
        except torch.OutOfMemoryError as err:  # distinct from bad input: a farm may retry it elsewhere
            first = str(err).strip().splitlines()[0] if str(err).strip() else "out of memory"
            raise OutOfMemoryError(f"out of memory on {self.mm.device}: {first}") from None

    def _fail(self, k: int, report: JobReport, err: Exception) -> None:
        where = f"job {self._numbers[k]} ({report.job.out})"
        if isinstance(err, MimicError):
            report.error = str(err)
            log.error(f"error: {where}: {err}")
        else:  # a bug in our code: keep the traceback, ask for a report, let the other jobs go on
            report.error = f"internal error: {err.__class__.__name__}: {err}"
            log.error(f"error: {where}: internal error (please report this with the traceback):", exc_info=err)
