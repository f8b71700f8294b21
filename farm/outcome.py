"""What a farm worker reports back: the worker once loaded (``WorkerFacts``), a job's progress while
it renders (``JobProgress``) and how one attempt at a job ended (``WorkerOutcome``).

Plain frozen dataclasses, free of Ray and torch: they cross the Ray boundary pickled, and the
scheduler (``mimic.farm.schedule``) consumes them, so its tests build them by hand.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Outcome = Literal["done", "failed", "cancelled"]


@dataclass(frozen=True)
class WorkerFacts:
    """One worker: its name, where it runs and what it loaded (only ``worker`` until it is up)."""

    worker: str
    node: str | None = None
    host: str | None = None
    pid: int | None = None
    device: str | None = None
    gpu: str | None = None  # CUDA_VISIBLE_DEVICES as Ray set it for the worker
    load_seconds: float | None = None
    torch_threads: int | None = None  # CPU: intra-op threads it renders with (the submitting process's counts)
    onnxruntime_threads: int | None = None

    @property
    def loaded(self) -> bool:
        return self.pid is not None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class JobProgress:
    """Where a rendering job is: its stage, denoiser calls ``done`` of ``total``, ``step`` of ``steps``."""

    stage: str = "inputs"
    done: int = 0
    total: int = 0
    step: int = 0
    steps: int = 0


@dataclass(frozen=True)
class WorkerOutcome:
    """How attempt ``attempt`` at job ``index`` ended on ``worker`` (never an exception: a job's own
    failure is data). ``exit_code``: the job's ``ExitCode`` when it failed (the scheduler retries
    by it); ``output``, ``frames``, ``resumed_from_step``: what a done job wrote."""

    index: int
    attempt: int
    outcome: Outcome
    worker: str
    node: str | None = None
    pid: int | None = None
    seconds: float = 0.0
    error: str | None = None
    exit_code: int | None = None
    output: str | None = None
    frames: int = 0
    resumed_from_step: int | None = None
    stage_seconds: tuple[tuple[str, float], ...] = ()
    warnings: tuple[str, ...] = ()
    threads: tuple[int | None, int | None] = (None, None)  # (torch, onnxruntime) intra-op threads; None on a GPU
