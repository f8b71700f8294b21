"""How many workers a farm may start, and the memory each job is admitted against: decided on the
submitting machine before any worker starts, so an impossible request is one line (exit code 2)
instead of a machine driven out of memory or a job failing after minutes of work.

The rule (README, "Render farms"; ``mimic farm --help``):

* a local cluster (no ``--address``), CPU workers: at most ``os.cpu_count()`` workers, and at most the
  host memory available now divided by one worker's need. One worker's need is the memory
  preflight's estimate of one job at the run's settings in one process
  (``mimic.runtime.memory.estimate_job_memory``: the process, and per device of the worker its
  weights, sessions and arenas);
* GPU workers: at most the cluster's GPUs // ``--devices-per-worker``;
* with ``--address`` the cluster's own resources decide: its CPUs (one per CPU worker) or GPUs,
  checked after connecting and before any worker starts;
* more workers than jobs is no error: only as many workers as jobs start.

Then each job is admitted as ``mimic run`` admits it (``memory.preflight``), on a local CPU cluster
with ``processes=`` the workers: all of them holding such a job must fit the host memory available
before they started. A job that cannot fit fails alone at once (exit code 2, attempts 0); the
others render. (GPU workers and joined clusters: each worker checks on its own node before it
renders the job; a refusal there is exit code 2 too, attempts 1.)
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from mimic.errors import InputError

GB = 1 << 30


@dataclass(frozen=True)
class HostBudget:
    """What this machine holds for CPU workers: ``cores``, ``available`` bytes (measured before
    any worker started) and one worker's ``per_worker`` bytes (module docstring)."""

    cores: int
    available: int
    per_worker: int
    settings: str = ""  # the settings the estimate is for, as flags (for the message)

    @property
    def max_workers(self) -> int:
        """At most one per core and as many as the memory holds (at least one: a job that does not
        fit even alone is refused by the per-job preflight, with what to lower)."""
        return max(1, min(self.cores, self.available // max(1, self.per_worker)))

    def check(self, requested: int | None) -> None:
        if requested is not None and requested > self.max_workers:
            raise InputError(
                f"--workers {requested}: this machine holds at most {self.max_workers} CPU worker(s) ({self.cores} cores; "
                f"{self.available / GB:.1f} GB available, ~{self.per_worker / GB:.1f} GB per worker{self.settings}): lower --workers")


def host_budget(layout, config, backend: str, fp32: bool, devices_per_worker: int = 1, cores: int | None = None,
                available: int | None = None) -> HostBudget:
    """This machine's budget for CPU workers rendering at ``config`` (the run's settings)."""
    from mimic.model.weights import fetch_svd
    from mimic.runtime.memory import available_host_bytes, estimate_job_memory

    est = estimate_job_memory(layout, fetch_svd(layout.svd), config, backend, fp32, workers=max(1, devices_per_worker))
    return HostBudget(cores or os.cpu_count() or 1, available_host_bytes() if available is None else available, est.peak_bytes,
                      f" at --resolution {config.resolution}, --window {config.window}, {backend}")


def check_gpu_workers(requested: int | None, gpus: int, per: int, where: str) -> None:
    """GPU workers: at most ``gpus // per`` (``where``: the cluster, for the message)."""
    most = gpus // per
    if requested is not None and requested > most:
        raise InputError(f"--workers {requested}: {where} has {gpus} GPU(s), room for at most {most} worker(s) of "
                         f"{per} GPU(s) each (--devices-per-worker): lower --workers")


def check_cluster_cpus(requested: int | None, cpus: int, where: str) -> None:
    """CPU workers on a joined cluster: one CPU each, at most the cluster's CPUs."""
    if requested is not None and requested > cpus:
        raise InputError(f"--workers {requested}: {where} has {cpus} CPU(s), one per CPU worker: lower --workers")
