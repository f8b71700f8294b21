"""The render farm: many jobs over many GPUs (and machines) on a Ray cluster.

    from mimic.farm import Farm
    with Farm(preset="tiny", workers=2) as farm:          # starts a private local Ray cluster
        futures = farm.submit([Job(...), Job(...)])       # concurrent.futures.Future per job
        results = [f.result() for f in futures]           # JobResult: outcome, attempts, worker, ...

Workers are Ray actors (``FarmWorker``), one per GPU (``num_gpus=1``; Ray gives each its own
device) or ``workers`` CPU workers, each loading the weights once. A thread hands jobs to the
least-loaded worker as workers free up (``jobs_per_worker`` in flight each: 2 on a GPU, so the
executor inside overlaps one job's denoising with another's inputs and decoding; 1 on a CPU, where
the stages would only compete for the same cores). Every decision (which job where, what is
retried, when a job is final) is the Ray-free ``Scheduler``'s (``mimic.farm.schedule``); this
module only turns them into Ray calls and feeds the answers back.

Fault tolerance, explicitly: actors are created with ``max_restarts=-1`` (Ray replaces a dead
worker process, on another node if its node is gone) and ``max_task_retries=0`` (Ray never re-runs
a call by itself): the farm decides. A job whose worker died (process killed, node lost, a CUDA
error that ends the worker) or that ran out of memory is queued again, preferably for another
worker, up to ``retries`` more times; the retry resumes from the job's last checkpoint. A job that
fails on bad input (or NaN, or a bug) is final and does not stop the others. Inputs and outputs are
paths on storage every worker sees at the same path; every output is published atomically.

Sizing (``mimic.farm.sizing``): no more workers than the machine (cores, memory) or the cluster
(CPUs, GPUs) holds, refused before any worker starts, and no more than jobs; each job's memory is
admitted as ``mimic run`` admits it before a worker renders it. CPU workers render with the
submitting process's torch and onnxruntime thread counts (``submitting_threads``), so their outputs
equal ``mimic run``'s on that machine. Ctrl-C and SIGTERM are answered by the handlers that were
there before Ray's (``mimic.farm.signals``): the farm cancels and the interrupt propagates.

Progress: the Ray cluster's start-up and the workers' (loading the weights) are phases with a line
every ``STARTUP_LINE_S`` seconds; then the view (``mimic.farm.view``) shows the jobs, with an ETA
from the done jobs or, before the first is done, projected from the running jobs' denoising
progress (``FarmSnapshot``). ``FarmReport.phases`` splits the whole wall time (sizing, cluster
start-up, worker start-up, rendering), and ``mimic farm``'s last line says it.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from mimic.errors import ExitCode, InputError, MimicError
from mimic.farm.cluster import Cluster, FarmError, import_ray
from mimic.farm.outcome import WorkerFacts, WorkerOutcome
from mimic.farm.results import FarmReport, JobResult
from mimic.farm.schedule import Assignment, FarmSnapshot, Scheduler, worker_name
from mimic.farm.signals import as_interrupt, held, reraise
from mimic.farm.sizing import HostBudget, check_cluster_cpus, check_gpu_workers, host_budget
from mimic.farm.worker import FarmWorker, WorkerSpec
from mimic.runtime.jobs import Job, RefusedJob
from mimic.runtime.pipeline import Hooks
from mimic.runtime.api import RuntimeOptions

__all__ = ["Farm", "FarmReport", "JobResult", "make_spec"]

log = logging.getLogger(__name__)

STARTUP_LINE_S = 5.0  # while the cluster and the workers start: a line this often (the user sees the farm is not stuck)
PHASES = ("sizing", "cluster", "workers", "rendering")  # FarmReport.phases, in this order (mimic.farm.results.PHASE_LABELS)


def make_spec(*, preset: str | None = None, weights: Path | None = None, layout=None, options: RuntimeOptions | None = None,
              settings: dict | None = None, base_config=None, checkpoint_every: int = 1, checkpoint_dir: Path | None = None,
              resume: bool = True, hooks: Callable[[int, Job, int], Hooks | None] | None = None, run_warnings: tuple[str, ...] = ()) -> WorkerSpec:
    """Resolve weights and settings on the submitting machine (errors surface here, one line)."""
    from mimic.model.presets import default_generation, layout_from_options
    from mimic.runtime.checkpoint import CheckpointPolicy

    CheckpointPolicy(every=checkpoint_every)  # validates the interval
    layout = layout if layout is not None else layout_from_options(preset=preset, weights=weights)
    base = base_config if base_config is not None else default_generation(preset)
    if settings:
        base = base.with_overrides(**settings)
    options = options or RuntimeOptions()
    torch_threads, ort_threads = submitting_threads(options)
    return WorkerSpec(layout=layout, options=options, base_config=base, checkpoint_every=checkpoint_every, checkpoint_dir=checkpoint_dir,
                      resume=resume, torch_threads=torch_threads, ort_threads=ort_threads, hooks=hooks, run_warnings=tuple(run_warnings))


def submitting_threads(options: RuntimeOptions) -> tuple[int | None, int | None]:
    """(torch, onnxruntime) intra-op threads that ``mimic run`` with ``options`` uses in this
    process; CPU workers are pinned to them, because a CPU's outputs depend on them and a Ray
    actor's own defaults differ (Ray sets OMP_NUM_THREADS=1 for it; another node has other cores).
    (None, None) on GPUs, where this does not arise."""
    if options.device.startswith("cuda"):
        return None, None
    import torch

    if options.threads:
        return options.threads, options.threads
    cpus = len(options.devices)  # several CPU devices share the cores (MimicMotion._cpu_threads_per_worker)
    return torch.get_num_threads(), max(1, (os.cpu_count() or 1) // cpus) if cpus > 1 else ort_default_threads()


def ort_default_threads() -> int:
    """onnxruntime's own default intra-op threads, which ``mimic run`` gets when it sets none: one
    per physical core (it ignores OMP_NUM_THREADS and the CPU affinity)."""
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


class Farm:
    """A pool of Ray workers rendering jobs; see the module docstring.

    ``address``: None starts a private local cluster (127.0.0.1), ``"auto"`` or ``HOST:PORT`` joins
    a running one; an already initialised Ray session is used as it is. ``workers``: how many
    (default: one per GPU of the cluster for CUDA, else 1; at most what ``mimic.farm.sizing``
    allows, else InputError; at most the jobs of the first ``submit``). ``options.device``: ``cuda`` for GPU
    workers; with ``auto_device`` (the default when ``options`` is None) it is ``cuda`` when the
    cluster has GPUs, else ``cpu``.
    ``devices_per_worker``: each worker renders its jobs on this many devices, the windows of every
    step split over them (``mimic.runtime.parallel``): GPU actors ask Ray for that many GPUs.
    ``hooks(index, job, attempt)``: extra per-job Hooks built inside the worker (must pickle).
    ``run_warnings``: warnings about the whole run (a rounded --resolution), in every job's report.
    """

    def __init__(self, *, preset: str | None = None, weights: Path | None = None, layout=None, options: RuntimeOptions | None = None,
                 settings: dict | None = None, base_config=None, address: str | None = None, workers: int | None = None, retries: int = 2,
                 checkpoint_every: int = 1, checkpoint_dir: Path | None = None, resume: bool = True, jobs_per_worker: int | None = None,
                 hooks: Callable[[int, Job, int], Hooks | None] | None = None, auto_device: bool | None = None,
                 no_worker_timeout_s: float = 900.0, start_timeout_s: float = 900.0, devices_per_worker: int = 1,
                 run_warnings: tuple[str, ...] = ()):
        self._created = time.perf_counter()  # the report's wall time counts from here
        self._phases: dict[str, float] = {}  # seconds per phase (PHASES); rendering from self.t0 once started
        self._rendering = False
        if retries < 0:
            raise MimicError(f"--retries must be >= 0, got {retries}")
        if workers is not None and workers < 1:
            raise MimicError(f"--workers must be >= 1, got {workers}")
        if devices_per_worker < 1:
            raise MimicError(f"--devices-per-worker must be >= 1, got {devices_per_worker}")
        self.devices_per_worker = devices_per_worker
        if jobs_per_worker is not None and jobs_per_worker < 1:
            raise MimicError(f"jobs_per_worker must be >= 1, got {jobs_per_worker}")
        self._spec_args = dict(preset=preset, weights=weights, layout=layout, settings=settings, base_config=base_config,
                               checkpoint_every=checkpoint_every, checkpoint_dir=checkpoint_dir, resume=resume, hooks=hooks,
                               run_warnings=tuple(run_warnings))
        self.spec = make_spec(options=options or RuntimeOptions(), **self._spec_args)  # fail fast, before Ray starts
        self.auto_device = options is None if auto_device is None else auto_device
        self.address, self.retries, self.jobs_per_worker = address, retries, jobs_per_worker
        self.requested_workers = workers
        self.no_worker_timeout_s = no_worker_timeout_s  # every worker down this long: queued jobs fail
        self.start_timeout_s = start_timeout_s
        self.cluster: Cluster | None = None
        self.workers: list[WorkerFacts] = []
        # every decision; its events are serialised by _lock. Workers are added as the farm starts (a
        # farm whose every job was refused starts none)
        self._scheduler = Scheduler(0, retries=retries, jobs_per_worker=jobs_per_worker or 1, no_worker_timeout_s=no_worker_timeout_s)
        self._actors: list[Any] = []
        self._lock = threading.Condition()
        self._futures: dict[int, cf.Future] = {}
        self._outs: set[Path] = set()
        self._inflight: dict[Any, Assignment] = {}  # Ray refs of render calls
        self._probes: dict[Any, int] = {}  # ready() calls of workers (re)starting
        self._probe_at: dict[int, float] = {}
        self._progress_refs: dict[Any, int] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._cancelled = threading.Event()
        self._crash: BaseException | None = None
        self._local = False  # a cluster this farm started on this machine
        self._host: HostBudget | None = None  # its budget for CPU workers (mimic.farm.sizing)
        self.t0 = time.perf_counter()

    # -- life cycle ------------------------------------------------------------------------
    def start(self, jobs: int | None = None) -> "Farm":
        """Start (or join) the cluster and the workers: at most ``jobs`` of them when given (more
        would idle). Sizing (``mimic.farm.sizing``) is checked first: on a local CPU cluster before
        any process starts, on a joined cluster before any worker starts."""
        if self._thread is not None:
            return self
        ray = import_ray()
        self._local = self.address is None and not ray.is_initialized()
        cuda_wanted = self.spec.options.device.startswith("cuda")
        if self._local and not cuda_wanted and not self.auto_device:
            self._size_host()
        num_cpus = (os.cpu_count() or 1) if self._local and not cuda_wanted else None  # the cores rule, not Ray's own count
        joined = self._local or self.address is not None  # else: this process's Ray session, already up
        t_cluster = time.perf_counter()
        if joined:
            log.info("farm: Ray cluster start-up: " + ("a private cluster on 127.0.0.1" if self._local else f"joining {self.address}") + " ...")
        try:
            with _ticking(lambda s: f"farm: Ray cluster start-up: {s:.0f} s ...", STARTUP_LINE_S if joined else 0):
                self.cluster = Cluster(self.address, num_cpus=num_cpus).open()
        except BaseException as err:
            reraise(err)  # Ray's own SIGTERM handler (sys.exit(15)) until Cluster.open put ours back: the interrupt
        if joined:  # (a Ray session this process had already started is no phase of this farm)
            self._phases["cluster"] = time.perf_counter() - t_cluster
            log.info(f"farm: Ray cluster up in {self._phases['cluster']:.1f} s")
        try:
            resources = ray.cluster_resources()
            gpus = int(resources.get("GPU", 0))
            if self.auto_device:
                options = replace(self.spec.options, device="cuda" if gpus else "cpu")
                self.spec = make_spec(options=options, **self._spec_args)
            cuda = self.spec.options.device.startswith("cuda")
            where = "this machine" if self._local else f"the Ray cluster at {self.cluster.gcs_address}"
            if cuda and not gpus:
                raise FarmError("GPU workers were asked for (--device cuda) but the Ray cluster has no GPU")
            per = self._devices_per_worker()
            if cuda and gpus < per:
                raise FarmError(f"--devices-per-worker {per} but the Ray cluster has {gpus} GPU(s)")
            if per > 1:  # each worker: `per` devices (Ray numbers a GPU actor's own from 0)
                listed = ",".join(f"cuda:{i}" for i in range(per)) if cuda else ",".join(["cpu"] * per)
                self.spec = make_spec(options=replace(self.spec.options, device=listed), **self._spec_args)
            if cuda:
                check_gpu_workers(self.requested_workers, gpus, per, where)
            elif self._local:
                self._size_host()  # --device auto found no GPU
            else:
                check_cluster_cpus(self.requested_workers, int(resources.get("CPU", 0)), where)
            n = self.requested_workers or (gpus // per if cuda else 1)
            if jobs is not None and n > max(1, jobs):
                log.info(f"farm: {n} worker(s) for {jobs} job(s): starting {max(1, jobs)}")
                n = max(1, jobs)
            if self.jobs_per_worker is None:  # GPU: overlap one job's denoising with others' CPU stages; CPU: all compete for the cores
                self.jobs_per_worker = 2 if cuda else 1
            self._scheduler.jobs_per_worker = self.jobs_per_worker
            self._scheduler.add_workers(n)
            actor = ray.remote(FarmWorker).options(
                num_cpus=1, num_gpus=per if cuda else 0, max_restarts=-1, max_task_retries=0, max_concurrency=self.jobs_per_worker + 2,
            )
            self._actors = [actor.remote(self.spec, worker_name(i)) for i in range(n)]
            self.workers = [WorkerFacts(worker_name(i)) for i in range(n)]
            log.info(f"farm: starting {n} {'GPU' if cuda else 'CPU'} worker(s) on {self.cluster.gcs_address} ...")
            refs = {a.ready.remote(): i for i, a in enumerate(self._actors)}
            pending = list(refs)
            t_workers = time.perf_counter()
            deadline = time.monotonic() + self.start_timeout_s
            next_line = t_workers + STARTUP_LINE_S
            while pending and not any(w.loaded for w in self.workers):  # the first worker up (or its error) starts the farm
                if time.monotonic() > deadline:
                    raise FarmError(f"no farm worker started within {self.start_timeout_s:.0f} s: does the cluster have {n} free "
                                    f"{'GPU' if cuda else 'CPU'}(s)? (`ray status`)")
                done, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
                for ref in done:
                    self.workers[refs[ref]] = _ray_get(ray, ref)
                    self._scheduler.worker_up(refs[ref])
                if pending and not done and time.perf_counter() >= next_line:
                    log.info(f"farm: worker start-up: 0 of {n} ready after {time.perf_counter() - t_workers:.0f} s (each loads the weights) ...")
                    next_line += STARTUP_LINE_S
            self._phases["workers"] = time.perf_counter() - t_workers
            self._probes.update({ref: refs[ref] for ref in pending})  # the rest join as they come up
            ready = [w for w in self.workers if w.loaded]
            log.info(f"farm: {len(ready)} of {n} worker(s) ready after {self._phases['workers']:.1f} s "
                     f"({', '.join(f'{w.worker} {w.node} pid {w.pid}' for w in ready)})")
        except BaseException as err:
            with held():  # a second Ctrl-C does not cut the clean-up short
                self._shutdown_actors()
                self.cluster.close()
            reraise(err)  # an interrupt inside a Ray call unwinds as the interrupt
        self.t0 = time.perf_counter()
        self._rendering = True
        self._thread = threading.Thread(target=self._run, name="mimic-farm-scheduler", daemon=True)
        self._thread.start()
        return self

    def _devices_per_worker(self) -> int:
        return self.devices_per_worker if self.devices_per_worker > 1 else len(self.spec.options.devices)

    def _size_host(self) -> HostBudget:
        """This machine's budget for CPU workers (measured once, before any worker starts); refuses
        more --workers than it holds."""
        if self._host is None:
            import torch

            o = self.spec.options
            t = time.perf_counter()
            self._host = host_budget(self.spec.layout, self.spec.base_config, o.backend, o.dtype == torch.float32,
                                     self._devices_per_worker())
            self._phases["sizing"] = time.perf_counter() - t
            self._host.check(self.requested_workers)
        return self._host

    def __enter__(self) -> "Farm":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:  # Ctrl-C, a timeout, an error in the caller's code: stop the workers' jobs
            self.cancel()
        self.close()

    def close(self) -> None:
        """Wait for the submitted jobs, stop the workers, stop a cluster this farm started."""
        if self._thread is not None:
            with self._lock:
                self._stop.set()
                self._lock.notify_all()
            self._thread.join()
            self._thread = None
        self._shutdown_actors()
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None

    # -- submitting --------------------------------------------------------------------------
    def submit(self, entries: Iterable[Job | RefusedJob]) -> list[cf.Future]:
        """Queue jobs; returns one ``Future`` per entry resolving to its ``JobResult`` (never an
        exception for a job's own failure). Each is screened here first (``screen_jobs``: paths,
        settings, outputs; no decoding; then, on a local CPU cluster, ``mimic run``'s memory
        preflight for all its workers: ``mimic.farm.sizing``): a ``RefusedJob`` or a job that cannot
        run fails at once, exit code 2, attempts 0, keeping its place in the results. The first
        submit starts the farm, with no more workers than runnable jobs (none: no cluster)."""
        from mimic.runtime.job_paths import screen_jobs

        entries = [_absolute(e) if isinstance(e, Job) else e for e in entries]  # workers may run elsewhere: same absolute paths
        runnable, refused = screen_jobs(entries, self.spec.base_config, self.spec.options.audio)
        runnable = dict(runnable)
        given = {id(e) for e in entries if isinstance(e, RefusedJob)}
        screened = {r.index: r for r in refused if id(r) not in given}
        for position, job in list(runnable.items()):
            if job.out.resolve() in self._outs:  # written by a job of an earlier submit
                screened[position] = RefusedJob(position, f"--out {job.out}: another job writes the same output", job.out)
                del runnable[position]
        if self._thread is None and self._local_cpu():  # before any process starts: --workers first, then each job's memory
            self._size_host()
            screened.update(self._memory_refusals(runnable, min(self.requested_workers or 1, max(1, len(runnable)))))
        elif self._host is not None:  # a local CPU farm already started
            screened.update(self._memory_refusals(runnable, self._scheduler.workers))
        runnable = {p: j for p, j in runnable.items() if p not in screened}
        futures = []
        with self._lock:
            for position, entry in enumerate(entries, 1):
                future: cf.Future = cf.Future()
                futures.append(future)
                job = runnable.get(position)
                if job is None:
                    refusal = entry if isinstance(entry, RefusedJob) else screened[position]
                    future.set_result(self._scheduler.refuse(refusal.out, refusal.error, ExitCode.BAD_INPUT))
                    continue
                self._outs.add(job.out.resolve())
                self._futures[self._scheduler.add(job, job.out)] = future
            self._lock.notify_all()
        if self._thread is None and runnable:  # queued first: interrupted while starting, they are reported cancelled
            self.start(jobs=len(runnable))
        return futures

    def _local_cpu(self) -> bool:
        """CPU workers on a cluster this farm starts here (known before it starts)."""
        return (self.address is None and not self.auto_device and not self.spec.options.device.startswith("cuda")
                and not import_ray().is_initialized())

    def _memory_refusals(self, runnable: dict[int, Job], workers: int) -> dict[int, RefusedJob]:
        """``mimic run``'s memory preflight per job, with ``workers`` worker processes each holding
        such a job in the host memory measured before they started (a local CPU cluster; GPU
        workers and joined clusters check on the worker)."""
        if self._host is None:
            return {}
        import torch

        from mimic.runtime.memory import preflight

        o, refused = self.spec.options, {}
        for position, job in runnable.items():
            try:
                preflight(self.spec.layout, job.config(self.spec.base_config), o.backend, o.main_device, o.dtype == torch.float32,
                          available=self._host.available, workers=self._devices_per_worker(), processes=workers)
            except InputError as err:
                refused[position] = RefusedJob(position, str(err), job.out)
        return refused

    def run(self, entries: Sequence[Job | RefusedJob], *, view=None) -> FarmReport:
        """Submit ``entries`` and wait for all of them (``view``: a ``FarmView`` redrawn meanwhile).
        Ctrl-C / SIGTERM cancels the farm (workers stop their jobs and clean up; checkpoints stay,
        so the next run resumes) and propagates."""
        shown = False
        try:
            futures = self.submit(entries)  # inside: interrupted while the workers start, the queued jobs are cancelled
            while True:
                done, pending = cf.wait(futures, timeout=0.5)
                if self._crash is not None:
                    raise self._crash
                if view is not None:
                    view.update(self.snapshot())
                    shown = True
                if not pending:
                    break
        except BaseException as err:
            if self._thread is not None or as_interrupt(err) is not None:  # (a farm that could not start has nothing to cancel)
                with held():  # a second Ctrl-C does not cut the cancelling short
                    self.cancel()
            reraise(err)
        finally:
            if shown:
                view.close(self.snapshot())
        return self.report()

    @property
    def _results(self) -> list[JobResult]:
        with self._lock:
            return self._scheduler.results() if self._scheduler else []

    def report(self) -> FarmReport:
        now = time.perf_counter()
        return FarmReport(tuple(self._results), now - self.t0, tuple(self.workers),
                          self.cluster.gcs_address if self.cluster and _ray_up() else None, self.retries,
                          phases=self.phases(now), wall_seconds=now - self._created)

    def phases(self, now: float | None = None) -> tuple[tuple[str, float], ...]:
        """(phase, seconds) so far, in order (``PHASES``): sizing, Ray cluster start-up, worker
        start-up, rendering (from the first worker up); what the farm did not reach is left out."""
        now = time.perf_counter() if now is None else now
        timed = dict(self._phases, **({"rendering": now - self.t0} if self._rendering else {}))
        return tuple((name, timed[name]) for name in PHASES if name in timed)

    def cancel(self, grace_s: float = 20.0) -> None:
        """Stop: queued jobs are cancelled, running ones stop at their next unit of work (their
        temporary files are removed; their checkpoints stay), then the workers end."""
        if self._cancelled.is_set():
            return
        self._cancelled.set()
        with self._lock:
            if self._scheduler is not None:
                self._resolve(self._scheduler.cancel())
            self._lock.notify_all()
        for actor in self._actors:
            try:
                actor.cancel.remote()
            except Exception:
                pass
        deadline = time.monotonic() + grace_s
        while self._thread is not None and self._thread.is_alive() and self._inflight and time.monotonic() < deadline:
            time.sleep(0.1)  # the thread collects the cancelled jobs' answers
        with self._lock:
            self._stop.set()
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            if self._scheduler is not None:
                self._resolve(self._scheduler.cancel_running())
            self._inflight.clear()
        self._shutdown_actors()

    def snapshot(self) -> FarmSnapshot:
        """Counts and what each worker renders now (for the progress view)."""
        with self._lock:
            return self._scheduler.snapshot() if self._scheduler else FarmSnapshot()

    # -- the thread feeding the scheduler ------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as err:  # a bug in the farm: fail loudly on the caller's side
            self._crash = err
            with self._lock:
                self._resolve(self._scheduler.fail_unfinished(f"internal error: farm scheduler: {err}"))

    def _loop(self) -> None:
        ray, s = import_ray(), self._scheduler
        last_poll = 0.0
        while True:
            with self._lock:
                if self._stop.is_set() and (self._cancelled.is_set() or s.idle):
                    return
                if s.idle:
                    self._lock.wait(timeout=0.2)
                    continue
                if not self._cancelled.is_set():
                    self._probe_workers()
                    for a in s.assign():
                        self._inflight[self._actors[a.worker].render.remote(a.index, a.job, a.attempt)] = a
                    self._resolve(s.check_workers())
                if time.monotonic() - last_poll > 1.0:
                    last_poll = time.monotonic()
                    for w in s.busy_workers():
                        if w not in self._progress_refs.values():
                            self._progress_refs[self._actors[w].progress.remote()] = w
                refs = [*self._inflight, *self._probes, *self._progress_refs]
            if not refs:
                time.sleep(0.1)
                continue
            ready, _ = ray.wait(refs, num_returns=1, timeout=0.2)
            for ref in ready:
                if ref in self._inflight:
                    self._collect(ray, ref)
                elif ref in self._probes:
                    self._probed(ray, ref)
                elif ref in self._progress_refs:
                    self._polled(ray, ref)

    def _collect(self, ray, ref) -> None:
        a = self._inflight.pop(ref)
        try:
            out = ray.get(ref)
        except Exception as err:
            if _worker_lost(ray, err):
                with self._lock:
                    if self._scheduler.worker_lost(a.worker):
                        self._probe_at[a.worker] = time.monotonic()
                        log.warning(f"warning: farm: worker {a.worker_name} died; Ray is replacing it")
                    self._resolve([self._scheduler.attempt_lost(a.index, f"worker {a.worker_name} died ({type(err).__name__})")])
                return
            why = str(err).splitlines()[0] if str(err) else type(err).__name__
            out = WorkerOutcome(a.index, a.attempt, "failed", a.worker_name, error=f"internal error: {why}", exit_code=ExitCode.INTERNAL)
        with self._lock:
            self._resolve([self._scheduler.attempt_ended(out)])

    def _probe_workers(self) -> None:
        now = time.monotonic()
        for w, at in list(self._probe_at.items()):
            if at <= now and w not in self._probes.values():
                del self._probe_at[w]
                self._probes[self._actors[w].ready.remote()] = w

    def _probed(self, ray, ref) -> None:
        w = self._probes.pop(ref)
        try:
            facts = ray.get(ref)
        except Exception as err:
            if _worker_lost(ray, err):
                self._probe_at[w] = time.monotonic() + 0.5  # still restarting
                return
            cause = getattr(err, "cause", None) or err  # e.g. this node lacks the weights: use the others
            with self._lock:
                self._scheduler.worker_broken(w)
            log.error(f"error: farm: worker {worker_name(w)} cannot load: {str(cause).splitlines()[0] if str(cause) else type(cause).__name__}")
            return
        back = self.workers[w].loaded
        self.workers[w] = facts
        with self._lock:
            self._scheduler.worker_up(w)
        log.info(f"farm: worker {worker_name(w)} {'is back' if back else 'is ready'} (pid {facts.pid})")

    def _polled(self, ray, ref) -> None:
        self._progress_refs.pop(ref)
        try:
            progress = ray.get(ref)
        except Exception:
            return  # the worker died: its jobs' own calls say so
        with self._lock:
            for index, p in progress.items():
                self._scheduler.progress(index, p)

    def _resolve(self, results: Iterable[JobResult | None]) -> None:
        """Hand the jobs that became final to their futures."""
        for r in results:
            future = self._futures.get(r.index) if r is not None else None
            if future is not None and not future.done():
                future.set_result(r)

    def _shutdown_actors(self) -> None:
        if not self._actors:
            return
        ray = import_ray()
        for actor in self._actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:
                pass
        self._actors = []


@contextlib.contextmanager
def _ticking(line: Callable[[float], str], every_s: float):
    """While inside, log ``line(seconds so far)`` every ``every_s`` seconds from a thread (the main
    thread is blocked in Ray's start-up); ``every_s`` 0: nothing."""
    if every_s <= 0:
        yield
        return
    stop, t0 = threading.Event(), time.perf_counter()

    def tick() -> None:
        while not stop.wait(every_s):
            log.info(line(time.perf_counter() - t0))

    thread = threading.Thread(target=tick, name="mimic-farm-startup-lines", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=1.0)


def _absolute(job: Job) -> Job:
    paths = {}
    for name in ("reference", "out", "driving", "poses", "pose_frames", "ref_pose"):
        value = getattr(job, name)
        if value is not None:
            paths[name] = Path(value).expanduser().absolute()
    return replace(job, **paths)


def _ray_get(ray, ref):
    """``ray.get`` that re-raises our own error (a worker's WeightsError keeps its exit code)."""
    try:
        return ray.get(ref)
    except Exception as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, MimicError):
            raise cause from None
        if isinstance(err, MimicError):
            raise
        if _worker_lost(ray, err):
            raise FarmError(f"a farm worker died while loading: {str(err).splitlines()[0]}") from None
        raise


def _worker_lost(ray, err: BaseException) -> bool:
    ex = ray.exceptions
    lost = tuple(getattr(ex, n) for n in ("RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError",
                                           "NodeDiedError", "ObjectLostError", "OwnerDiedError") if hasattr(ex, n))
    return isinstance(err, lost)


def _ray_up() -> bool:
    try:
        import ray

        return ray.is_initialized()
    except ImportError:
        return False
