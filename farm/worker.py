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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from mimic.errors import MimicError, OutOfMemoryError
from mimic.model.config import GenerationConfig
from mimic.runtime.jobs import Job
from mimic.runtime.pipeline import Hooks
from mimic.runtime.api import RuntimeOptions

log = logging.getLogger(__name__)

INTERNAL_ERROR_EXIT = 70  # a bug in mimic (the CLI's code for an unexpected exception)


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs, resolved on the submitting machine (picklable)."""

    layout: Any  # mimic.model.weights.WeightsLayout (paths valid on every node)
    options: RuntimeOptions
    base_config: GenerationConfig
    checkpoint_every: int = 1
    checkpoint_dir: Path | None = None
    resume: bool = True
    torch_threads: int | None = None  # CPU: the submitting process's count (outputs depend on it)
    # hooks(index, job, attempt) -> Hooks | None, called inside the worker for each attempt
    hooks: Callable[[int, Job, int], Hooks | None] | None = None
    overlap: bool = True


class Cancelled(Exception):
    """The farm was cancelled: the job stops at its next unit of work and cleans up."""


class _WorkerHooks(Hooks):
    """Records the job's progress for the farm's view and stops it when the farm is cancelled."""

    def __init__(self, worker: "FarmWorker", index: int, inner: Hooks | None):
        self.worker, self.index, self.inner = worker, index, inner or Hooks()

    @property
    def synchronize(self) -> bool:  # type: ignore[override]
        return self.inner.synchronize

    def on_stage_end(self, name, seconds):
        self.worker._progress[self.index]["stage"] = name
        self.inner.on_stage_end(name, seconds)

    def on_progress(self, done, total):
        self.worker._progress[self.index].update(done=done, total=total, stage="denoise")
        self.inner.on_progress(done, total)

    def on_step_end(self, step, num_steps, latents):
        self.worker._progress[self.index].update(step=step, steps=num_steps)
        self.inner.on_step_end(step, num_steps, latents)

    def denoise_turn(self):
        return self.inner.denoise_turn()

    def poll(self):
        if self.worker._cancel.is_set():
            raise Cancelled()
        poll = getattr(self.inner, "poll", None)
        if poll is not None:
            poll()


@dataclass
class _Loaded:
    mm: Any
    executor: Any
    facts: dict = field(default_factory=dict)


class FarmWorker:
    """``ready()`` loads (once per process; a replaced worker loads again), ``render()`` renders one
    job and returns a picklable outcome (never raises for a job's own failure), ``progress()`` and
    ``cancel()`` answer while jobs render (the actor runs with several threads)."""

    def __init__(self, spec: WorkerSpec, name: str = "worker"):
        self.spec, self.name = spec, name
        self._loaded: _Loaded | None = None
        self._lock = threading.Lock()
        self._progress: dict[int, dict] = {}
        self._cancel = threading.Event()

    # -- loading ---------------------------------------------------------------------------
    def ready(self) -> dict:
        """Load the engine (raises its MimicError, e.g. missing weights) and describe the worker."""
        return dict(self._load().facts)

    def _load(self) -> _Loaded:
        with self._lock:
            if self._loaded is None:
                import torch

                from mimic.runtime.checkpoint import checkpoint_policy
                from mimic.runtime.executor import JobExecutor
                from mimic.runtime.api import MimicMotion

                if self.spec.torch_threads and not self.spec.options.threads:
                    torch.set_num_threads(self.spec.torch_threads)  # Ray sets OMP_NUM_THREADS per actor
                options = self.spec.options
                if options.device.startswith("cuda"):  # Ray gives each GPU worker its own devices, numbered from 0
                    options = replace(options, device=",".join(f"cuda:{i}" for i in range(len(options.devices))))
                t0 = time.perf_counter()
                mm = MimicMotion(self.spec.layout, options, self.spec.base_config)
                policy = checkpoint_policy(mm, self.spec.checkpoint_every, self.spec.checkpoint_dir, self.spec.resume)
                facts = {
                    "worker": self.name, "node": _node_ip(), "host": socket.gethostname(), "pid": os.getpid(),
                    "device": options.device, "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "load_seconds": round(time.perf_counter() - t0, 3),
                }
                self._loaded = _Loaded(mm, JobExecutor(mm, overlap=self.spec.overlap, checkpoints=policy), facts)
            return self._loaded

    # -- rendering -------------------------------------------------------------------------
    def render(self, index: int, job: Job, attempt: int = 1) -> dict:
        """Render job ``index`` (attempt ``attempt``): ``{"outcome": "done" | "failed" |
        "cancelled", ...}``. A CUDA error that leaves the device unusable ends the process (Ray
        replaces the worker and the farm retries the job elsewhere)."""
        t0 = time.perf_counter()
        base = {"index": index, "attempt": attempt, "worker": self.name, "node": _node_ip(), "pid": os.getpid()}
        self._progress[index] = {"stage": "inputs", "done": 0, "total": 0, "step": 0, "steps": 0}
        try:
            from mimic.runtime.inputs import validate_job

            loaded = self._load()
            validate_job(job, audio=self.spec.options.audio)  # again here: the files as this node sees them
            inner = self.spec.hooks(index, job, attempt) if self.spec.hooks else None
            report = loaded.executor.render(job, hooks=_WorkerHooks(self, index, inner))
            return {**base, "outcome": "done", "seconds": time.perf_counter() - t0, "output": str(report.output),
                    "frames": report.frames, "resumed_from_step": report.resumed_from_step, "stage_seconds": report.seconds, "warnings": report.warnings}
        except Cancelled:
            return {**base, "outcome": "cancelled", "seconds": time.perf_counter() - t0, "error": "cancelled"}
        except MimicError as err:
            return {**base, "outcome": "failed", "seconds": time.perf_counter() - t0, "error": str(err), "exit_code": err.exit_code,
                    "retry": isinstance(err, OutOfMemoryError)}
        except Exception as err:
            if _device_broken(err):
                log.error(f"error: {self.name}: the GPU is unusable ({err}); ending this worker so Ray replaces it")
                os._exit(1)
            traceback.print_exc()
            return {**base, "outcome": "failed", "seconds": time.perf_counter() - t0, "error": f"internal error: {err.__class__.__name__}: {err}",
                    "exit_code": INTERNAL_ERROR_EXIT, "retry": False}
        finally:
            self._progress.pop(index, None)

    def progress(self) -> dict:
        """{job index: {stage, done, total, step, steps}} of the jobs rendering now."""
        return {k: dict(v) for k, v in list(self._progress.items())}

    def cancel(self) -> None:
        """Stop every job at its next unit of work (their temporary files are removed)."""
        self._cancel.set()

    def pid(self) -> int:
        return os.getpid()


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
