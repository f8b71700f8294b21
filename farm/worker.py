"""One farm worker: a Ray actor holding one loaded engine (``MimicMotion``: weights, sessions or
engines loaded once) that renders the jobs it is handed through the one pipeline, overlapped by the
executor (``JobExecutor.render``: one job denoises while another prepares or decodes), with resume
checkpoints.

The class is plain Python (``Farm`` makes it a Ray actor with ``ray.remote``), so it is also used
directly by the Ray Data callable (``mimic.farm.data``).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from mimic.errors import ExitCode, MimicError
from mimic.farm.outcome import JobProgress, Outcome, WorkerFacts, WorkerOutcome
from mimic.model.config import GenerationConfig
from mimic.runtime.jobs import Job
from mimic.runtime.pipeline import Hooks, JobControl
from mimic.runtime.api import RuntimeOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs, resolved on the submitting machine (picklable)."""

    layout: Any  # mimic.model.weights.WeightsLayout (paths valid on every node)
    options: RuntimeOptions
    base_config: GenerationConfig
    checkpoint_every: int = 1
    checkpoint_dir: Path | None = None
    resume: bool = True
    torch_threads: int | None = None  # CPU: the submitting process's torch intra-op threads (outputs depend on them)
    ort_threads: int | None = None  # CPU: the onnxruntime intra-op threads `mimic run` would use there
    # hooks(index, job, attempt) -> Hooks | None, called inside the worker for each attempt
    hooks: Callable[[int, Job, int], Hooks | None] | None = None
    overlap: bool = True
    run_warnings: tuple[str, ...] = ()  # about the whole run (a rounded --resolution): in every job's report


class Cancelled(Exception):
    """The farm was cancelled: the job stops at its next unit of work and cleans up."""


class _WorkerHooks(Hooks):
    """Records the job's progress for the farm's view (an observer; cancelling is the worker's
    ``check_cancelled`` poll in the job's control)."""

    def __init__(self, worker: "FarmWorker", index: int):
        self.worker, self.index = worker, index

    def on_stage_end(self, name, seconds):
        self.worker._progress[self.index]["stage"] = name

    def on_progress(self, done, total):
        self.worker._progress[self.index].update(done=done, total=total, stage="denoise")

    def on_step_end(self, step, num_steps, latents):
        self.worker._progress[self.index].update(step=step, steps=num_steps)


@dataclass(frozen=True)
class _Loaded:
    mm: Any
    executor: Any
    facts: WorkerFacts


class FarmWorker:
    """``ready()`` loads (once per process; a replaced worker loads again), ``render()`` renders one
    job and returns a ``WorkerOutcome`` (never raises for a job's own failure), ``progress()`` and
    ``cancel()`` answer while jobs render (the actor runs with several threads)."""

    def __init__(self, spec: WorkerSpec, name: str = "worker"):
        self.spec, self.name = spec, name
        self._loaded: _Loaded | None = None
        self._lock = threading.Lock()
        self._progress: dict[int, dict] = {}
        self._cancel = threading.Event()

    # -- loading ---------------------------------------------------------------------------
    def ready(self) -> WorkerFacts:
        """Load the engine (raises its MimicError, e.g. missing weights) and describe the worker."""
        return self._load().facts

    def _load(self) -> _Loaded:
        with self._lock:
            if self._loaded is None:
                from mimic.runtime.checkpoint import checkpoint_policy
                from mimic.runtime.executor import JobExecutor
                from mimic.runtime.api import MimicMotion
                from mimic.runtime.report import add_run_warnings

                pin_threads(self.spec.torch_threads)
                options = self.spec.options
                if self.spec.ort_threads:  # explicit, never onnxruntime's default on this node
                    options = replace(options, threads=self.spec.ort_threads)
                if options.device.startswith("cuda"):  # Ray gives each GPU worker its own devices, numbered from 0
                    options = replace(options, device=",".join(f"cuda:{i}" for i in range(len(options.devices))))
                t0 = time.perf_counter()
                mm = MimicMotion(self.spec.layout, options, self.spec.base_config)
                pin_threads(self.spec.torch_threads)  # MimicMotion set torch to options.threads (onnxruntime's count)
                add_run_warnings(mm.components.facts, list(self.spec.run_warnings))
                policy = checkpoint_policy(mm, self.spec.checkpoint_every, self.spec.checkpoint_dir, self.spec.resume)
                facts = WorkerFacts(self.name, _node_ip(), socket.gethostname(), os.getpid(), options.device,
                                    os.environ.get("CUDA_VISIBLE_DEVICES"), round(time.perf_counter() - t0, 3),
                                    *self.threads())
                self._loaded = _Loaded(mm, JobExecutor(mm, overlap=self.spec.overlap, checkpoints=policy), facts)
            return self._loaded

    # -- rendering -------------------------------------------------------------------------
    def render(self, index: int, job: Job, attempt: int = 1) -> WorkerOutcome:
        """Render job ``index`` (attempt ``attempt``). The executor admits it first (its inputs
        decoded as this node sees them: bad input fails with exit code 2), then renders it with checkpoints.
        A CUDA error that leaves the device unusable ends the process (Ray replaces the worker and
        the farm retries the job elsewhere)."""
        t0 = time.perf_counter()

        def ended(outcome: Outcome, **fields) -> WorkerOutcome:
            return WorkerOutcome(index, attempt, outcome, self.name, _node_ip(), os.getpid(), time.perf_counter() - t0,
                                 threads=self.threads(), **fields)

        self._progress[index] = {"stage": "inputs", "done": 0, "total": 0, "step": 0, "steps": 0}  # _WorkerHooks updates it
        try:
            loaded = self._load()
            inner = self.spec.hooks(index, job, attempt) if self.spec.hooks else None
            observers = [_WorkerHooks(self, index), *([inner] if inner is not None else [])]
            check_memory(loaded.mm, job.config(self.spec.base_config))
            report = loaded.executor.render(job, hooks=observers, control=JobControl(polls=(self.check_cancelled,)))  # admits the job first
            return ended("done", output=str(report.output), frames=report.frames, resumed_from_step=report.resumed_from_step,
                         stage_seconds=tuple(report.seconds.items()), warnings=tuple(report.warnings))
        except Cancelled:
            return ended("cancelled", error="cancelled")
        except MimicError as err:
            return ended("failed", error=str(err), exit_code=err.exit_code)
        except Exception as err:
            if _device_broken(err):
                log.error(f"error: {self.name}: the GPU is unusable ({err}); ending this worker so Ray replaces it")
                os._exit(1)
            traceback.print_exc()
            return ended("failed", error=f"internal error: {err.__class__.__name__}: {err}", exit_code=ExitCode.INTERNAL)
        finally:
            self._progress.pop(index, None)

    def progress(self) -> dict[int, JobProgress]:
        """The progress of the jobs rendering now, by job index."""
        return {k: JobProgress(**v) for k, v in list(self._progress.items())}

    def cancel(self) -> None:
        """Stop every job at its next unit of work (their temporary files are removed)."""
        self._cancel.set()

    def check_cancelled(self) -> None:
        """The jobs' poll: raises :class:`Cancelled` once the farm is cancelled."""
        if self._cancel.is_set():
            raise Cancelled()

    def pid(self) -> int:
        return os.getpid()

    def threads(self) -> tuple[int | None, int | None]:
        """(torch, onnxruntime) intra-op threads this worker renders with (None, None on a GPU)."""
        if self.spec.torch_threads is None:
            return None, None
        import torch

        return torch.get_num_threads(), self.spec.ort_threads


def pin_threads(count: int | None) -> None:
    """Torch's intra-op threads for this process, whatever OMP_NUM_THREADS Ray gave the actor (1):
    set before any torch work, every thread (the executor's job threads too) takes this count on
    its first parallel op."""
    if count:
        import torch

        torch.set_num_threads(count)


def check_memory(mm, config: GenerationConfig) -> None:
    """``mimic run``'s memory preflight for one job on this worker's node, with its backend loaded
    (on a CPU the memory this process holds already counts as available to it: the estimate
    counts the process and its weights too). Raises InputError (exit code 2) when it cannot fit."""
    import psutil
    import torch

    from mimic.runtime.memory import available_host_bytes, preflight

    options = mm.options
    cuda = options.main_device.startswith("cuda")
    available = None if cuda else available_host_bytes() + psutil.Process().memory_info().rss
    preflight(mm.layout, config, options.backend, options.main_device, options.dtype == torch.float32, available=available, loaded=True,
              workers=options.devices.count(options.main_device))


def _device_broken(err: Exception) -> bool:
    import torch

    accelerator = getattr(torch, "AcceleratorError", None)
    if accelerator is not None and isinstance(err, accelerator):
        return True
    return isinstance(err, RuntimeError) and "CUDA error" in str(err)


def _node_ip() -> str:
    try:
        import ray

        if ray.is_initialized():
            return ray.util.get_node_ip_address()
    except Exception:
        pass
    return socket.gethostname()
