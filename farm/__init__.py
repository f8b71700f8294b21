"""The render farm on Ray: ``Farm`` (a pool of workers, one per GPU, each loading the weights
once), ``JobResult`` / ``FarmReport``, the Ray Data callable ``RenderBatch`` and the Open Job
Description template writer. Ray is the optional ``farm`` extra; nothing here imports it until a
farm starts. Modules: ``farm`` (Ray glue), ``schedule`` (every decision, Ray-free), ``worker``
(the actor), ``outcome`` / ``results`` (what workers and the farm report), ``sizing`` (how many
workers, each job's memory), ``signals`` (Ctrl-C/SIGTERM with Ray in the process), ``cluster``,
``view``, ``data``, ``openjd``.
"""
from __future__ import annotations

_EXPORTS = {
    "Farm": "mimic.farm.farm",
    "FarmReport": "mimic.farm.results",
    "JobResult": "mimic.farm.results",
    "RenderBatch": "mimic.farm.data",
    "openjd_template": "mimic.farm.openjd",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mimic.farm' has no attribute {name!r}")
