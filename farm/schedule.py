"""The farm's decisions, free of Ray: which queued job starts on which worker, which ended attempts
are retried, when a job is final, cancellation, and the counts of the progress view.

``Scheduler`` is driven by events and answers with plain data, so it is tested with fake workers
(``tests/test_farm_schedule.py``); ``Farm`` (``mimic.farm.farm``) turns its ``Assignment``s into
Ray calls and feeds back what the workers answer. Events: a worker is up, lost (Ray replaces it)
or broken (it cannot load); ``assign()`` starts queued jobs; an attempt ended (a
``WorkerOutcome``) or was lost with its worker; the farm is cancelled. Each event returns the
``JobResult``s that became final.

Policy: each up worker runs up to ``jobs_per_worker`` jobs; a queued job goes to the least-loaded
worker, preferably not the one its last attempt ran on. An attempt lost with its worker (a killed
process, a lost node) or ended out of memory is queued again, first in line, while the job has had
at most ``retries`` retries (the retry resumes from the job's checkpoint); any other failure (bad
input, NaN, a bug) is final. Not thread-safe: the caller serialises the events.
"""
from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from mimic.errors import ExitCode
from mimic.farm.outcome import JobProgress, WorkerOutcome
from mimic.farm.results import Attempt, JobResult

log = logging.getLogger(__name__)

RETRIED_EXIT_CODES = frozenset({ExitCode.OUT_OF_MEMORY})  # may pass on another worker; a lost worker is retried too
UP, DOWN, BROKEN = "up", "down", "broken"  # a worker starts DOWN (loading)


def worker_name(w: int) -> str:
    return f"w{w}"


@dataclass(frozen=True)
class Assignment:
    """Start attempt ``attempt`` at job ``index`` (``job``: what was submitted) on worker ``worker``."""

    index: int
    worker: int
    attempt: int
    job: Any

    @property
    def worker_name(self) -> str:
        return worker_name(self.worker)


@dataclass(frozen=True)
class RunningJob:
    worker: str
    index: int
    out: str  # the output's file name
    attempt: int
    progress: JobProgress = JobProgress()


@dataclass(frozen=True)
class FarmSnapshot:
    """Counts and what each worker renders now, for the progress view (``mimic.farm.view``).

    ``elapsed``: seconds since the first worker was up (rendering; the start-up before is the
    farm's own phase). ``mean_job_seconds``: what one job takes on a worker: the mean of the done
    jobs' own seconds (as their workers measured them; ``eta_basis`` "done"), or before the first
    job is done, projected from the running jobs' denoising progress (``eta_basis`` "progress");
    None before either. ``eta_s``: ``mean_job_seconds`` x jobs not finished / workers; ``eta_text``
    says it in words (the progress view's ETA, ``mimic.farm.view.status_line``)."""

    total: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    running: tuple[RunningJob, ...] = ()
    queued: int = 0
    workers: int = 0
    elapsed: float = 0.0
    mean_job_seconds: float | None = None
    eta_basis: str | None = None  # "done" | "progress" | None

    @property
    def left(self) -> int:
        return self.total - self.done - self.failed - self.cancelled

    @property
    def eta_s(self) -> float | None:
        return estimate_eta(self.mean_job_seconds, self.left, self.workers)

    @property
    def eta_text(self) -> str:
        """``ETA 40 s`` (from done jobs), ``ETA ~40 s (projected from denoising progress)``, ``ETA
        once a job is denoising`` (nothing to go by yet), or "" when nothing is left."""
        eta = self.eta_s
        if not self.left:
            return ""
        if eta is None:
            return "ETA once a job is denoising"
        if self.eta_basis == "progress":
            return f"ETA ~{eta:.0f} s (projected from denoising progress)"
        return f"ETA {eta:.0f} s"


def estimate_eta(mean_job_seconds: float | None, left: int, workers: int) -> float | None:
    """Seconds until the ``left`` jobs not finished are: ``mean_job_seconds`` each, ``workers`` at a time."""
    if mean_job_seconds is None or left <= 0:
        return None
    return mean_job_seconds * left / max(1, workers)


def projected_job_seconds(elapsed: float, progress: JobProgress) -> float | None:
    """What a running job will take, from its denoising progress ``elapsed`` seconds after it
    started: the seconds so far per denoiser call x its calls (None before the first call)."""
    if progress.total <= 0 or progress.done <= 0 or elapsed <= 0:
        return None
    return elapsed * progress.total / progress.done


@dataclass
class _Task:
    index: int
    job: Any
    out: Path | None
    t0: float
    attempts: int = 0
    worker: int | None = None  # running there now
    last_worker: int | None = None
    progress: JobProgress | None = None
    started: float | None = None  # when the running attempt was assigned
    progress_at: float | None = None  # when ``progress`` was reported
    history: list[Attempt] = field(default_factory=list)
    final: JobResult | None = None


class Scheduler:
    """See the module docstring. ``workers``: worker slots 0..N-1 (named w0, w1, ...), all down
    until ``worker_up``. ``no_worker_timeout_s``: with every worker down this long (or all broken),
    the queued jobs fail instead of waiting forever. ``clock``: seconds (tests pass a fake)."""

    def __init__(self, workers: int, *, retries: int = 2, jobs_per_worker: int = 1, no_worker_timeout_s: float = 900.0,
                 clock: Callable[[], float] = time.perf_counter):
        self.retries, self.jobs_per_worker, self.no_worker_timeout_s, self._clock = retries, jobs_per_worker, no_worker_timeout_s, clock
        self._state = [DOWN] * workers
        self._load = [0] * workers
        self._tasks: list[_Task] = []
        self._queue: collections.deque[int] = collections.deque()
        self._no_worker_since: float | None = None
        self._first_up: float | None = None
        self.cancelled = False
        self.t0 = clock()

    # -- workers ---------------------------------------------------------------------------
    @property
    def workers(self) -> int:
        return len(self._state)

    def add_workers(self, count: int) -> None:
        """``count`` more worker slots (down until ``worker_up``): a farm adds its workers as it starts."""
        self._state += [DOWN] * count
        self._load += [0] * count

    def worker_up(self, w: int) -> None:
        """Worker ``w`` is up. The first one starts the clock (``elapsed``, jobs' seconds): jobs
        queued before count their seconds from then, not through the cluster's and workers' start-up."""
        self._state[w] = UP
        if self._first_up is None:
            self._first_up = self.t0 = self._clock()
            for task in self._tasks:
                if task.final is None:
                    task.t0 = self.t0

    def worker_lost(self, w: int) -> bool:
        """Worker ``w`` died (Ray replaces it): no job starts there until ``worker_up``. True when
        it was up (the caller starts watching for its replacement); its attempts end by ``attempt_lost``."""
        was_up = self._state[w] == UP
        if was_up:
            self._state[w] = DOWN
        return was_up

    def worker_broken(self, w: int) -> None:
        """Worker ``w`` cannot load (e.g. its node lacks the weights): the others go on."""
        self._state[w] = BROKEN

    def busy_workers(self) -> list[int]:
        """The up workers with jobs in flight (whose progress is worth asking for)."""
        return [w for w in range(self.workers) if self._state[w] == UP and self._load[w]]

    # -- jobs --------------------------------------------------------------------------------
    def add(self, job: Any, out: Path | None = None) -> int:
        """Queue ``job`` (handed to the worker as it is); returns its index in submission order."""
        task = self._new_task(job, out)
        self._queue.append(task.index)
        return task.index

    def refuse(self, out: Path | None, error: str, exit_code: int = ExitCode.BAD_INPUT) -> JobResult:
        """An entry that cannot run takes its place in submission order, failed at once (attempts 0)."""
        task = self._new_task(None, out)
        log.error(f"error: job {task.index + 1}" + (f" ({out})" if out is not None else "") + f": {error}")
        return self._finish(task, "failed", error=error, exit_code=exit_code, seconds=0.0)

    def assign(self) -> list[Assignment]:
        """Start every queued job a worker slot is free for, in queue order."""
        started = []
        while self._queue and not self.cancelled:
            task = self._tasks[self._queue[0]]
            free = [w for w in range(self.workers) if self._state[w] == UP and self._load[w] < self.jobs_per_worker]
            if not free:
                break
            w = min(free, key=lambda w: (self._load[w], w == task.last_worker, w))
            self._queue.popleft()
            task.attempts += 1
            task.worker = task.last_worker = w
            task.started, task.progress_at = self._clock(), None
            self._load[w] += 1
            started.append(Assignment(task.index, w, task.attempts, task.job))
            log.debug(f"farm: job {task.index + 1} ({task.out}) -> {worker_name(w)} (attempt {task.attempts})")
        return started

    def attempt_ended(self, out: WorkerOutcome) -> JobResult | None:
        """The worker answered: the job's final result, or None when it is queued again (or the
        answer is stale: the attempt was already given up)."""
        task = self._running(out.index, out.attempt)
        if task is None:
            return None
        self._release(task)
        task.history.append(Attempt(out.attempt, out.worker, out.outcome, out.node, out.pid, out.error, out.seconds))
        if out.outcome == "failed" and out.exit_code in RETRIED_EXIT_CODES and self._requeue(task, out.error, f" on {out.worker}"):
            return None
        if out.outcome == "done":
            resumed = f", resumed after step {out.resumed_from_step}" if out.resumed_from_step is not None else ""
            log.info(f"farm: done {task.out} on {out.worker} (attempt {task.attempts}, {out.seconds:.1f} s on the worker, "
                     f"{self._clock() - task.t0:.1f} s in the farm, queueing included{resumed})")
        elif out.outcome == "failed":
            log.error(f"error: job {task.index + 1} ({task.out}): {out.error}")
        return self._finish(task, out.outcome, worker=out.worker, node=out.node, error=out.error, exit_code=out.exit_code,
                            output=out.output, frames=out.frames, resumed_from_step=out.resumed_from_step, threads=out.threads)

    def attempt_lost(self, index: int, why: str) -> JobResult | None:
        """The worker died under job ``index``'s current attempt (report the worker with
        ``worker_lost`` too): retried while retries are left, else final."""
        task = self._running(index)
        if task is None:
            return None
        w = task.worker
        self._release(task)
        task.history.append(Attempt(task.attempts, worker_name(w), "lost", error=why))
        if self._requeue(task, why):
            return None
        if self.cancelled:
            return self._finish(task, "cancelled", error=why, worker=worker_name(w))
        log.error(f"error: job {task.index + 1} ({task.out}): {why}")
        return self._finish(task, "failed", error=why, exit_code=ExitCode.FAILED, worker=worker_name(w))

    def check_workers(self) -> list[JobResult]:
        """With jobs queued and no worker up for ``no_worker_timeout_s`` (or every worker broken),
        the queued jobs fail."""
        if UP in self._state or not self._queue:
            self._no_worker_since = None
            return []
        now = self._clock()
        if self._no_worker_since is None:
            self._no_worker_since = now
        broken = all(state == BROKEN for state in self._state)
        if not broken and now - self._no_worker_since <= self.no_worker_timeout_s:
            return []
        why = "no farm worker could load" if broken else f"no farm worker came back within {self.no_worker_timeout_s:.0f} s"
        return self._fail_queued(why, ExitCode.FAILED)

    # -- stopping ------------------------------------------------------------------------------
    def cancel(self) -> list[JobResult]:
        """Cancel the farm: the queued jobs are cancelled now; running ones end as their workers
        stop them (nothing is retried any more)."""
        self.cancelled = True
        return [self._finish(self._tasks[i], "cancelled", error="cancelled") for i in self._drain()]

    def cancel_running(self) -> list[JobResult]:
        """After cancelling: the jobs whose worker did not answer in time are cancelled too."""
        self.cancelled = True
        return [self._give_up(task, "cancelled", error="cancelled") for task in self._in_flight()]

    def fail_unfinished(self, error: str, exit_code: int = ExitCode.INTERNAL) -> list[JobResult]:
        """Every job not final yet fails (the farm itself broke)."""
        running = [self._give_up(task, "failed", error=error, exit_code=exit_code) for task in self._in_flight()]
        return running + self._fail_queued(error, exit_code)

    # -- state ---------------------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        """Nothing queued, nothing running."""
        return not self._queue and not any(self._load)

    def progress(self, index: int, progress: JobProgress) -> None:
        """A running job's progress, as its worker reported it."""
        task = self._running(index)
        if task is not None:
            task.progress, task.progress_at = progress, self._clock()

    def results(self) -> list[JobResult]:
        """Every job's result so far, in submission order (``pending`` ones too)."""
        return [task.final or self._result(task) for task in self._tasks]

    def snapshot(self) -> FarmSnapshot:
        count = collections.Counter(task.final.outcome for task in self._tasks if task.final)
        running = tuple(RunningJob(worker_name(t.worker), t.index, Path(t.out).name if t.out else "", t.attempts, t.progress or JobProgress())
                        for t in sorted(self._in_flight(), key=lambda t: (t.worker, t.index)))
        mean, basis = self._job_seconds()
        return FarmSnapshot(len(self._tasks), count["done"], count["failed"], count["cancelled"], running, len(self._queue),
                            self.workers, self._clock() - self.t0, mean, basis)

    def _job_seconds(self) -> tuple[float | None, str | None]:
        """(seconds one job takes on a worker, "done" | "progress"): the done jobs' own seconds (their
        last attempt's, as the worker measured it: no queueing, no start-up), else the running
        jobs' projections from their denoising progress; (None, None) before either exists."""
        done = [t.history[-1].seconds if t.history and t.history[-1].seconds is not None else t.final.seconds
                for t in self._tasks if t.final and t.final.ok]
        if done:
            return sum(done) / len(done), "done"
        projected = [projected_job_seconds(t.progress_at - t.started, t.progress) for t in self._in_flight()
                     if t.progress is not None and t.progress_at is not None and t.started is not None]
        projected = [p for p in projected if p is not None]
        if projected:
            return sum(projected) / len(projected), "progress"
        return None, None

    # -- internals ------------------------------------------------------------------------------
    def _new_task(self, job: Any, out: Path | None) -> _Task:
        task = _Task(len(self._tasks), job, Path(out) if out is not None else None, self._clock())
        self._tasks.append(task)
        return task

    def _running(self, index: int, attempt: int | None = None) -> _Task | None:
        task = self._tasks[index] if 0 <= index < len(self._tasks) else None
        if task is None or task.final is not None or task.worker is None or (attempt is not None and attempt != task.attempts):
            return None
        return task

    def _in_flight(self) -> list[_Task]:
        return [t for t in self._tasks if t.worker is not None and t.final is None]

    def _release(self, task: _Task) -> None:
        self._load[task.worker] -= 1
        task.worker, task.progress, task.started, task.progress_at = None, None, None, None

    def _requeue(self, task: _Task, why: str | None, where: str = "") -> bool:
        if self.cancelled or task.attempts > self.retries:
            return False
        log.warning(f"warning: job {task.index + 1} ({Path(task.out).name if task.out else ''}){where}: {why}; retrying "
                    f"(attempt {task.attempts + 1} of {self.retries + 1})")
        self._queue.appendleft(task.index)
        return True

    def _drain(self) -> list[int]:
        queued = list(self._queue)
        self._queue.clear()
        return queued

    def _fail_queued(self, error: str, exit_code: int) -> list[JobResult]:
        failed = []
        for i in self._drain():
            log.error(f"error: job {i + 1} ({self._tasks[i].out}): {error}")
            failed.append(self._finish(self._tasks[i], "failed", error=error, exit_code=exit_code))
        return failed

    def _give_up(self, task: _Task, outcome: str, **fields) -> JobResult:
        worker = worker_name(task.worker)
        self._release(task)
        return self._finish(task, outcome, worker=worker, **fields)

    def _result(self, task: _Task) -> JobResult:
        return JobResult(task.index, task.out, task.job, attempts=task.attempts, history=tuple(task.history),
                         worker=worker_name(task.worker) if task.worker is not None else None)

    def _finish(self, task: _Task, outcome: str, seconds: float | None = None, **fields) -> JobResult:
        seconds = self._clock() - task.t0 if seconds is None else seconds
        task.final = replace(self._result(task), outcome=outcome, seconds=seconds, **fields)
        return task.final
