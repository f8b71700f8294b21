"""The render farm: many jobs over many GPUs (and machines) on a Ray cluster.

    from mimic.farm import Farm
    with Farm(preset="tiny", workers=2) as farm:          # starts a private local Ray cluster
        futures = farm.submit([Job(...), Job(...)])       # concurrent.futures.Future per job
        results = [f.result() for f in futures]           # JobResult: outcome, attempts, worker, ...

Workers are Ray actors (``FarmWorker``), one per GPU (``num_gpus=1``; Ray gives each its own
device) or ``workers`` CPU workers, each loading the weights once. A scheduler thread hands jobs to
the least-loaded worker as workers free up (``jobs_per_worker`` in flight each: 2 on a GPU, so
the executor inside overlaps one job's denoising with another's inputs and decoding; 1 on a CPU,
where the stages would only compete for the same cores).

Fault tolerance, explicitly: actors are created with ``max_restarts=-1`` (Ray replaces a dead
worker process, on another node if its node is gone) and ``max_task_retries=0`` (Ray never re-runs
a call by itself): the farm decides. A job whose worker died (process killed, node lost, a CUDA
error that ends the worker) or that ran out of memory is queued again, preferably for another
worker, up to ``retries`` more times; the retry resumes from the job's last checkpoint. A job that
fails on bad input (or NaN, or a bug) is final and does not stop the others. Inputs and outputs are
paths on storage every worker sees at the same path; every output is published atomically.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import json
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from mimic.errors import MimicError
from mimic.farm.cluster import Cluster, FarmError, import_ray
from mimic.farm.worker import FarmWorker, WorkerSpec
from mimic.runtime.jobs import Job
from mimic.runtime.pipeline import Hooks
from mimic.runtime.api import RuntimeOptions

log = logging.getLogger(__name__)

INPUT_EXIT = 2


@dataclass
class JobResult:
    """What became of one job. ``outcome``: done | failed | cancelled; ``attempts``: how many
    workers started it; ``history``: one entry per attempt (worker, outcome or why it ended)."""

    index: int
    job: Job
    outcome: str = "pending"
    attempts: int = 0
    worker: str | None = None
    node: str | None = None
    seconds: float = 0.0
    error: str | None = None
    exit_code: int | None = None
    output: str | None = None
    frames: int = 0
    resumed_from_step: int | None = None
    history: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome == "done"

    def to_dict(self) -> dict:
        return {
            "index": self.index + 1, "out": str(self.job.out), "reference": str(self.job.reference), "outcome": self.outcome,
            "attempts": self.attempts, "worker": self.worker, "node": self.node, "seconds": round(self.seconds, 3),
            "error": self.error, "exit_code": self.exit_code, "output": self.output, "frames": self.frames,
            "resumed_from_step": self.resumed_from_step, "history": self.history,
        }


@dataclass
class FarmReport:
    results: list[JobResult]
    seconds: float
    workers: list[dict]
    cluster: str | None = None
    retries: int = 0

    @property
    def failed(self) -> list[JobResult]:
        return [r for r in self.results if not r.ok]

    @property
    def exit_code(self) -> int:
        """0 when every job was rendered, 1 otherwise (each job's own code is in the report)."""
        return 0 if not self.failed else 1

    def to_dict(self) -> dict:
        count = collections.Counter(r.outcome for r in self.results)
        return {
            "jobs": len(self.results), "done": count["done"], "failed": count["failed"], "cancelled": count["cancelled"],
            "seconds": round(self.seconds, 3), "retries": self.retries, "cluster": self.cluster, "workers": self.workers,
            "results": [r.to_dict() for r in self.results],
        }

    def write(self, path: Path | str) -> Path:
        from mimic.files import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return Path(path)


def make_spec(*, preset: str | None = None, weights: Path | None = None, layout=None, options: RuntimeOptions | None = None,
              settings: dict | None = None, base_config=None, checkpoint_every: int = 1, checkpoint_dir: Path | None = None,
              resume: bool = True, hooks: Callable[[int, Job, int], Hooks | None] | None = None) -> WorkerSpec:
    """Resolve weights and settings on the submitting machine (errors surface here, one line)."""
    import torch

    from mimic.model.presets import default_generation, layout_from_options
    from mimic.runtime.checkpoint import CheckpointPolicy

    CheckpointPolicy(every=checkpoint_every)  # validates the interval
    layout = layout if layout is not None else layout_from_options(preset=preset, weights=weights)
    base = base_config if base_config is not None else default_generation(preset)
    if settings:
        base = base.with_overrides(**settings)
    options = options or RuntimeOptions()
    threads = None if options.device.startswith("cuda") else torch.get_num_threads()
    return WorkerSpec(layout=layout, options=options, base_config=base, checkpoint_every=checkpoint_every, checkpoint_dir=checkpoint_dir,
                      resume=resume, torch_threads=threads, hooks=hooks)


@dataclass
class _Task:
    result: JobResult
    future: cf.Future
    last_worker: int | None = None
    t0: float = 0.0


class Farm:
    """A pool of Ray workers rendering jobs; see the module docstring.

    ``address``: None starts a private local cluster (127.0.0.1), ``"auto"`` or ``HOST:PORT`` joins
    a running one; an already initialised Ray session is used as it is. ``workers``: how many
    (default: one per GPU of the cluster for CUDA, else 1). ``options.device``: ``cuda`` for GPU
    workers; with ``auto_device`` (the default when ``options`` is None) it is ``cuda`` when the
    cluster has GPUs, else ``cpu``.
    ``devices_per_worker``: each worker renders its jobs on this many devices, the windows of every
    step split over them (``mimic.runtime.parallel``): GPU actors ask Ray for that many GPUs.
    ``hooks(index, job, attempt)``: extra per-job Hooks built inside the worker (must pickle).
    """

    def __init__(self, *, preset: str | None = None, weights: Path | None = None, layout=None, options: RuntimeOptions | None = None,
                 settings: dict | None = None, base_config=None, address: str | None = None, workers: int | None = None, retries: int = 2,
                 checkpoint_every: int = 1, checkpoint_dir: Path | None = None, resume: bool = True, jobs_per_worker: int | None = None,
                 hooks: Callable[[int, Job, int], Hooks | None] | None = None, auto_device: bool | None = None,
                 no_worker_timeout_s: float = 900.0, start_timeout_s: float = 900.0, devices_per_worker: int = 1):
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
                               checkpoint_every=checkpoint_every, checkpoint_dir=checkpoint_dir, resume=resume, hooks=hooks)
        self.spec = make_spec(options=options or RuntimeOptions(), **self._spec_args)  # fail fast, before Ray starts
        self.auto_device = options is None if auto_device is None else auto_device
        self.address, self.retries, self.jobs_per_worker = address, retries, jobs_per_worker
        self.requested_workers = workers
        self.no_worker_timeout_s = no_worker_timeout_s  # every worker down this long: queued jobs fail
        self.start_timeout_s = start_timeout_s
        self._no_worker_since: float | None = None
        self.cluster: Cluster | None = None
        self._actors: list[Any] = []
        self.workers: list[dict] = []
        self._state: list[str] = []  # per worker: up | down
        self._load: list[int] = []
        self._lock = threading.Condition()
        self._incoming: list[_Task] = []
        self._queue: collections.deque[_Task] = collections.deque()
        self._inflight: dict[Any, tuple[_Task, int]] = {}
        self._probes: dict[Any, int] = {}
        self._probe_at: dict[int, float] = {}
        self._progress_refs: dict[Any, int] = {}
        self._progress: dict[int, dict] = {}
        self._results: list[JobResult] = []
        self._outs: set[Path] = set()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._cancelled = threading.Event()
        self._crash: BaseException | None = None
        self.t0 = time.perf_counter()

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> "Farm":
        if self._thread is not None:
            return self
        import os

        ray = import_ray()
        cuda_wanted = self.spec.options.device.startswith("cuda")
        num_cpus = None
        if self.address is None and not ray.is_initialized() and self.requested_workers and not cuda_wanted:
            num_cpus = max(os.cpu_count() or 1, self.requested_workers)
        self.cluster = Cluster(self.address, num_cpus=num_cpus).open()
        try:
            gpus = int(ray.cluster_resources().get("GPU", 0))
            if self.auto_device:
                options = replace(self.spec.options, device="cuda" if gpus else "cpu")
                self.spec = make_spec(options=options, **self._spec_args)
            cuda = self.spec.options.device.startswith("cuda")
            if cuda and not gpus:
                raise FarmError("GPU workers were asked for (--device cuda) but the Ray cluster has no GPU")
            per = self.devices_per_worker if self.devices_per_worker > 1 else len(self.spec.options.devices)
            if cuda and gpus < per:
                raise FarmError(f"--devices-per-worker {per} but the Ray cluster has {gpus} GPU(s)")
            if per > 1:  # each worker: `per` devices (Ray numbers a GPU actor's own from 0)
                listed = ",".join(f"cuda:{i}" for i in range(per)) if cuda else ",".join(["cpu"] * per)
                self.spec = make_spec(options=replace(self.spec.options, device=listed), **self._spec_args)
            n = self.requested_workers or (gpus // per if cuda else 1)
            if self.jobs_per_worker is None:  # GPU: overlap one job's denoising with others' CPU stages; CPU: all compete for the cores
                self.jobs_per_worker = 2 if cuda else 1
            actor = ray.remote(FarmWorker).options(
                num_cpus=1, num_gpus=per if cuda else 0, max_restarts=-1, max_task_retries=0, max_concurrency=self.jobs_per_worker + 2,
            )
            self._actors = [actor.remote(self.spec, f"w{i}") for i in range(n)]
            self._state, self._load = ["down"] * n, [0] * n
            self.workers = [{"worker": f"w{i}"} for i in range(n)]
            log.info(f"farm: starting {n} {'GPU' if cuda else 'CPU'} worker(s) on {self.cluster.gcs_address} ...")
            refs = {a.ready.remote(): i for i, a in enumerate(self._actors)}
            pending = list(refs)
            deadline = time.monotonic() + self.start_timeout_s
            while pending and "up" not in self._state:  # the first worker up (or its error) starts the farm
                if time.monotonic() > deadline:
                    raise FarmError(f"no farm worker started within {self.start_timeout_s:.0f} s: does the cluster have {n} free "
                                    f"{'GPU' if cuda else 'CPU'}(s)? (`ray status`)")
                done, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
                for ref in done:
                    i = refs[ref]
                    self.workers[i] = _ray_get(ray, ref)
                    self._state[i] = "up"
            self._probes.update({ref: refs[ref] for ref in pending})  # the rest join as they come up
            ready = ", ".join(f"{w['worker']} {w['node']} pid {w['pid']}" for w in self.workers if "pid" in w)
            log.info(f"farm: {self._state.count('up')} of {n} worker(s) ready ({ready})")
        except BaseException:
            self._shutdown_actors()
            self.cluster.close()
            raise
        self.t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="mimic-farm-scheduler", daemon=True)
        self._thread.start()
        return self

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
    def submit(self, jobs: Iterable[Job]) -> list[cf.Future]:
        """Queue jobs; returns one ``Future`` per job resolving to its ``JobResult`` (never an
        exception for a job's own failure). Jobs are checked here first: one that cannot run
        (missing input, unwritable output, a duplicate output) fails at once, with attempts 0."""
        self.start()
        from mimic.runtime.inputs import check_output, validate_job

        jobs = [_absolute(job) for job in jobs]  # workers may run elsewhere: shared storage, same absolute paths
        futures = []
        tasks = []
        for job in jobs:
            result = JobResult(index=len(self._results), job=job)
            self._results.append(result)
            future: cf.Future = cf.Future()
            futures.append(future)
            out = Path(job.out).expanduser().resolve()
            try:
                if out in self._outs:
                    raise MimicError(f"--out {job.out}: another job writes the same output")
                validate_job(job, audio=self.spec.options.audio)
                check_output(job, [j for j in jobs if j is not job])
                job.config(self.spec.base_config)
            except MimicError as err:
                self._finish(_Task(result, future), "failed", error=str(err), exit_code=getattr(err, "exit_code", 1))
                log.error(f"error: job {result.index + 1} ({job.out}): {err}")
                continue
            self._outs.add(out)
            tasks.append(_Task(result, future, t0=time.perf_counter()))
        with self._lock:
            self._incoming.extend(tasks)
            self._lock.notify_all()
        return futures

    def run(self, jobs: Sequence[Job], *, view=None) -> FarmReport:
        """Submit ``jobs`` and wait for all of them (``view``: a ``FarmView`` redrawn meanwhile).
        Ctrl-C / SIGTERM cancels the farm (workers stop their jobs and clean up; checkpoints stay,
        so the next run resumes) and propagates."""
        futures = self.submit(jobs)
        try:
            while True:
                done, pending = cf.wait(futures, timeout=0.5)
                if self._crash is not None:
                    raise self._crash
                if view is not None:
                    view.update(self.snapshot())
                if not pending:
                    break
        except BaseException:
            self.cancel()
            raise
        finally:
            if view is not None:
                view.close(self.snapshot())
        return self.report()

    def report(self) -> FarmReport:
        return FarmReport(list(self._results), time.perf_counter() - self.t0, list(self.workers),
                          self.cluster.gcs_address if self.cluster and _ray_up() else None, self.retries)

    def cancel(self, grace_s: float = 20.0) -> None:
        """Stop: queued jobs are cancelled, running ones stop at their next unit of work (their
        temporary files are removed; their checkpoints stay), then the workers end."""
        if self._cancelled.is_set():
            return
        self._cancelled.set()
        for actor in self._actors:
            try:
                actor.cancel.remote()
            except Exception:
                pass
        deadline = time.monotonic() + grace_s
        with self._lock:
            self._lock.notify_all()
        while self._thread is not None and self._thread.is_alive() and self._inflight and time.monotonic() < deadline:
            time.sleep(0.1)
        with self._lock:
            self._stop.set()
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for task, _ in list(self._inflight.values()):
            self._finish(task, "cancelled", error="cancelled")
        for task in [*self._queue, *self._incoming]:
            self._finish(task, "cancelled", error="cancelled")
        self._inflight.clear()
        self._queue.clear()
        self._incoming.clear()
        self._shutdown_actors()

    def snapshot(self) -> dict:
        """Counts and what each worker renders now (for the progress view)."""
        count = collections.Counter(r.outcome for r in self._results)
        running = []
        for task, i in list(self._inflight.values()):
            running.append({"worker": f"w{i}", "index": task.result.index, "out": Path(task.result.job.out).name,
                            "attempt": task.result.attempts, **self._progress.get(task.result.index, {})})
        finished = [r.seconds for r in self._results if r.outcome == "done"]
        return {
            "total": len(self._results), "done": count["done"], "failed": count["failed"], "cancelled": count["cancelled"],
            "running": sorted(running, key=lambda r: r["worker"]), "queued": len(self._queue) + len(self._incoming),
            "workers": len(self._actors), "elapsed": time.perf_counter() - self.t0,
            "mean_job_seconds": sum(finished) / len(finished) if finished else None,
        }

    # -- scheduler thread ----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as err:  # a bug in the scheduler: fail loudly on the caller's side
            self._crash = err
            for task in [*self._queue, *self._incoming, *(t for t, _ in self._inflight.values())]:
                self._finish(task, "failed", error=f"internal error: farm scheduler: {err}", exit_code=70)

    def _loop(self) -> None:
        ray = import_ray()
        last_poll = 0.0
        while True:
            with self._lock:
                self._queue.extend(self._incoming)
                self._incoming.clear()
                if self._stop.is_set() and (self._cancelled.is_set() or (not self._queue and not self._inflight)):
                    return
                if not self._queue and not self._inflight:
                    self._lock.wait(timeout=0.2)
                    continue
            if not self._cancelled.is_set():
                self._probe_workers()
                self._assign()
                self._check_workers_exist()
            now = time.monotonic()
            if now - last_poll > 1.0:
                last_poll = now
                for i, actor in enumerate(self._actors):
                    if self._state[i] == "up" and self._load[i] and i not in self._progress_refs.values():
                        self._progress_refs[actor.progress.remote()] = i
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
                else:
                    self._polled(ray, ref)

    def _assign(self) -> None:
        while self._queue:
            task = self._queue[0]
            free = [i for i in range(len(self._actors)) if self._state[i] == "up" and self._load[i] < self.jobs_per_worker]
            if not free:
                return
            i = min(free, key=lambda w: (self._load[w], w == task.last_worker, w))
            self._queue.popleft()
            task.result.attempts += 1
            task.last_worker = i
            self._load[i] += 1
            ref = self._actors[i].render.remote(task.result.index, task.result.job, task.result.attempts)
            self._inflight[ref] = (task, i)
            log.debug(f"farm: job {task.result.index + 1} ({task.result.job.out}) -> w{i} (attempt {task.result.attempts})")

    def _collect(self, ray, ref) -> None:
        task, i = self._inflight.pop(ref)
        self._load[i] -= 1
        self._progress.pop(task.result.index, None)
        name = Path(task.result.job.out).name
        try:
            out = ray.get(ref)
        except Exception as err:
            lost = _worker_lost(ray, err)
            why = f"worker w{i} died ({type(err).__name__})" if lost else f"internal error: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
            task.result.history.append({"attempt": task.result.attempts, "worker": f"w{i}", "outcome": "lost" if lost else "failed", "error": why})
            if lost:
                self._worker_down(i)
            if lost and task.result.attempts <= self.retries and not self._cancelled.is_set():
                log.warning(f"warning: job {task.result.index + 1} ({name}): {why}; retrying (attempt {task.result.attempts + 1} of {self.retries + 1})")
                self._queue.appendleft(task)
                return
            self._finish(task, "cancelled" if self._cancelled.is_set() else "failed", error=why, exit_code=1 if lost else 70, worker=f"w{i}")
            log.error(f"error: job {task.result.index + 1} ({task.result.job.out}): {why}")
            return
        task.result.history.append({k: out.get(k) for k in ("attempt", "worker", "node", "pid", "outcome", "error") if out.get(k) is not None}
                                   | {"seconds": round(out.get("seconds", 0.0), 3)})
        if out["outcome"] == "done":
            self._finish(task, "done", worker=out["worker"], node=out["node"], output=out["output"], frames=out["frames"], resumed_from_step=out["resumed_from_step"])
            resumed = f", resumed after step {out['resumed_from_step']}" if out["resumed_from_step"] is not None else ""
            log.info(f"farm: done {task.result.job.out} on {out['worker']} (attempt {task.result.attempts}, {task.result.seconds:.1f} s{resumed})")
        elif out["outcome"] == "failed" and out.get("retry") and task.result.attempts <= self.retries and not self._cancelled.is_set():
            log.warning(f"warning: job {task.result.index + 1} ({name}) on w{i}: {out['error']}; retrying (attempt {task.result.attempts + 1} of {self.retries + 1})")
            self._queue.appendleft(task)
        else:
            self._finish(task, out["outcome"], error=out.get("error"), exit_code=out.get("exit_code"), worker=out["worker"], node=out["node"])
            if out["outcome"] == "failed":
                log.error(f"error: job {task.result.index + 1} ({task.result.job.out}): {out['error']}")

    def _check_workers_exist(self) -> None:
        """Ray replaces dead workers while the cluster has room; if none comes back (the cluster
        lost its GPUs for good), the queued jobs fail instead of waiting forever."""
        if "up" in self._state or not self._queue:
            self._no_worker_since = None
            return
        now = time.monotonic()
        if self._no_worker_since is None:
            self._no_worker_since = now
        broken = all(state == "broken" for state in self._state)
        if broken or now - self._no_worker_since > self.no_worker_timeout_s:
            why = "no farm worker could load" if broken else f"no farm worker came back within {self.no_worker_timeout_s:.0f} s"
            while self._queue:
                task = self._queue.popleft()
                self._finish(task, "failed", error=why, exit_code=1)
                log.error(f"error: job {task.result.index + 1} ({task.result.job.out}): {why}")

    def _worker_down(self, i: int) -> None:
        if self._state[i] == "up":
            self._state[i] = "down"
            self._probe_at[i] = time.monotonic()
            log.warning(f"warning: farm: worker w{i} died; Ray is replacing it")

    def _probe_workers(self) -> None:
        now = time.monotonic()
        for i, at in list(self._probe_at.items()):
            if at <= now and i not in self._probes.values():
                del self._probe_at[i]
                self._probes[self._actors[i].ready.remote()] = i

    def _probed(self, ray, ref) -> None:
        i = self._probes.pop(ref)
        try:
            facts = ray.get(ref)
        except Exception as err:
            if _worker_lost(ray, err):
                self._probe_at[i] = time.monotonic() + 0.5  # still restarting
                return
            cause = getattr(err, "cause", None) or err  # e.g. this node lacks the weights: use the others
            self._state[i] = "broken"
            log.error(f"error: farm: worker w{i} cannot load: {str(cause).splitlines()[0] if str(cause) else type(cause).__name__}")
            return
        back = "pid" in self.workers[i]
        self.workers[i] = facts
        self._state[i] = "up"
        log.info(f"farm: worker w{i} {'is back' if back else 'is ready'} (pid {facts.get('pid')})")

    def _polled(self, ray, ref) -> None:
        i = self._progress_refs.pop(ref)
        try:
            self._progress.update(ray.get(ref))
        except Exception:
            pass  # the worker died: its jobs' own calls say so

    def _finish(self, task: _Task, outcome: str, **fields) -> None:
        r = task.result
        if task.future.done():
            return
        r.outcome = outcome
        r.seconds = time.perf_counter() - task.t0 if task.t0 else 0.0
        for k, v in fields.items():
            setattr(r, k, v)
        task.future.set_result(r)

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
