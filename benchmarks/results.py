"""Benchmark records: one JSON object per line, self-contained, mergeable across runs and machines.

Every record carries the schema version, its run's id, the date, the exact command and the
environment fingerprint, so any number of result files (one per GPU, say) can be concatenated and
reported together. ``kind`` says what the record measures:

========  ==================================================================================
matmul    the device's dense matrix rate in this run (the efficiency denominator)
stage     one stage on one backend at one shape: median/p90 latency, FLOPs, TFLOP/s, fraction
e2e       one whole job on one backend (or the upstream-faithful reference): seconds, s/frame,
          peak host/device memory, FLOPs and floor time, speedup over the reference (same run)
floor     the floor time of a standard real job (SVD-XT 1.1 at 576x1024) at this run's rate
scaling   one video length in its own process: wall time per phase and peak RSS
workers   one job on 1..K workers (``--device cpu,cpu``, ``cuda:0,cuda:1``): seconds, speedup,
          parallel efficiency, and whether the frames equal the one-worker frames
skip      something asked for that did not run, and why (no GPU for TensorRT, time budget, ...)
========  ==================================================================================
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from mimic.errors import InputError

SCHEMA = "mimic-bench"
SCHEMA_VERSION = 1

_NUM = (int, float)
_OPT_NUM = (int, float, type(None))
_OPT_INT = (int, type(None))
_OPT_STR = (str, type(None))

COMMON_FIELDS = {
    "schema": str,
    "schema_version": int,
    "kind": str,
    "run_id": str,
    "date": str,
    "command": str,
    "env": dict,
    "device": str,
    "model": str,  # "tiny" | "real" (the FLOP model's config name)
}
ENV_FIELDS = {"platform": str, "python": str, "cpu_model": str, "cpu_cores_logical": int, "gpu": (dict, type(None)), "packages": dict}
JOB_SHAPE = {"output_frames": int, "height": int, "width": int, "window": int, "overlap": int, "steps": int, "windows": int}
KIND_FIELDS: dict[str, dict[str, type | tuple]] = {
    "matmul": {"dtype": str, "n": int, "iters": int, "tflops": _NUM, "tflops_best": _NUM},
    "stage": {
        "backend": str,
        "stage": str,
        "shape": str,  # "1024x576 T=16" (WIDTHxHEIGHT)
        "point": dict,  # export.specs shape point (B/F/N/H/W)
        "precision": str,
        "warmup": int,
        "repeats": int,
        "median_s": _NUM,
        "p90_s": _NUM,
        "min_s": _NUM,
        "flops": _OPT_INT,
        "tflops": _OPT_NUM,  # achieved: flops / median
        "fraction_of_matmul": _OPT_NUM,
        "speedup_vs_reference": _OPT_NUM,
    },
    "e2e": {
        "backend": str,
        "precision": str,
        **JOB_SHAPE,
        "seconds": _NUM,
        "seconds_per_frame": _NUM,
        "phases": dict,
        "peak_host_rss_bytes": int,
        "host_rss_growth_bytes": int,
        "peak_device_bytes": _OPT_INT,
        "flops": int,
        "floor_s": _OPT_NUM,
        "speedup_vs_reference": _OPT_NUM,
        "max_abs_diff_vs_reference": _OPT_INT,
    },
    "floor": {"job": str, "output_frames": int, "height": int, "width": int, "window": int, "steps": int, "flops": int, "stage_flops": dict, "matmul_tflops": _NUM, "floor_s": _NUM},
    "scaling": {
        "backend": str,
        **JOB_SHAPE,
        "seconds": _NUM,
        "phases": dict,
        "peak_rss_bytes": int,
        "baseline_rss_bytes": int,
        "flops": int,
    },
    "workers": {
        "backend": str,
        "devices": str,
        "workers": int,
        **JOB_SHAPE,
        "seconds": _NUM,
        "phases": dict,
        "speedup": _NUM,  # one worker's seconds / these seconds (same run)
        "efficiency": _NUM,  # speedup / workers
        "identical_to_one_worker": bool,
    },
    "skip": {"what": str, "reason": str},
}
KINDS = tuple(KIND_FIELDS)


class SchemaError(ValueError):
    """A record that does not follow the schema."""


def _type_name(t) -> str:
    ts = t if isinstance(t, tuple) else (t,)
    return " or ".join("null" if x is type(None) else x.__name__ for x in ts)


def _check_fields(obj: dict, spec: dict, where: str, problems: list[str]) -> None:
    for name, t in spec.items():
        if name not in obj:
            problems.append(f"{where}missing field {name!r}")
            continue
        v = obj[name]
        ts = t if isinstance(t, tuple) else (t,)
        if isinstance(v, bool) and bool not in ts:  # bool is an int subclass: never a number here
            problems.append(f"{where}{name!r} is a bool, expected {_type_name(t)}")
        elif not isinstance(v, ts):
            problems.append(f"{where}{name!r} is {type(v).__name__}, expected {_type_name(t)}")


def record_problems(rec) -> list[str]:
    """Every way ``rec`` breaks the schema (empty when valid)."""
    if not isinstance(rec, dict):
        return [f"a record is a JSON object, got {type(rec).__name__}"]
    problems: list[str] = []
    _check_fields(rec, COMMON_FIELDS, "", problems)
    if rec.get("schema") not in (None, SCHEMA):
        problems.append(f"schema is {rec.get('schema')!r}, expected {SCHEMA!r}")
    version = rec.get("schema_version")
    if isinstance(version, int) and version > SCHEMA_VERSION:
        problems.append(f"schema_version {version} is newer than this reader ({SCHEMA_VERSION})")
    if isinstance(rec.get("date"), str):
        try:
            _dt.datetime.fromisoformat(rec["date"])
        except ValueError:
            problems.append(f"date {rec['date']!r} is not ISO 8601")
    if isinstance(rec.get("env"), dict):
        _check_fields(rec["env"], ENV_FIELDS, "env: ", problems)
    kind = rec.get("kind")
    if isinstance(kind, str):
        if kind not in KIND_FIELDS:
            problems.append(f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
        else:
            _check_fields(rec, KIND_FIELDS[kind], f"{kind}: ", problems)
    for name in ("median_s", "p90_s", "min_s", "seconds", "seconds_per_frame", "tflops"):
        v = rec.get(name)
        if isinstance(v, _NUM) and not isinstance(v, bool) and not v >= 0:
            problems.append(f"{name!r} must be >= 0, got {v}")
    return problems


def validate_record(rec) -> dict:
    """Return ``rec`` when it follows the schema, else raise :class:`SchemaError` listing every problem."""
    problems = record_problems(rec)
    if problems:
        raise SchemaError("; ".join(problems))
    return rec


# ------------------------------------------------------------------------------------- writing
@dataclass(frozen=True)
class RunContext:
    """What every record of one run shares."""

    run_id: str
    date: str
    command: str
    env: dict
    device: str
    model: str

    @classmethod
    def new(cls, command: str, env: dict, device: str, model: str) -> "RunContext":
        now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
        return cls(run_id=f"{now.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}", date=now.isoformat(), command=command, env=env, device=device, model=model)

    def record(self, kind: str, **fields) -> dict:
        rec = {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "kind": kind,
            "run_id": self.run_id,
            "date": self.date,
            "command": self.command,
            "env": self.env,
            "device": self.device,
            "model": self.model,
            **fields,
        }
        return validate_record(rec)


class ResultsWriter:
    """Appends validated records to a JSON-lines file, one flushed line each (a crash keeps the rest)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: list[dict] = []

    def __call__(self, rec: dict) -> dict:
        validate_record(rec)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(rec, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records.append(rec)
        return rec


# ------------------------------------------------------------------------------------- reading
def read_records(path: str | Path) -> list[dict]:
    """All records of one file, validated; a bad line is an :class:`InputError` naming file:line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"results file {path} does not exist")
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}:{lineno}: not JSON ({err.msg})") from None
        problems = record_problems(rec)
        if problems:
            raise InputError(f"{path}:{lineno}: not a benchmark record: {'; '.join(problems[:3])}")
        out.append(rec)
    return out


def record_key(rec: dict) -> str:
    """Identity of a record (a run's same measurement appears once after merging)."""
    body = {k: v for k, v in rec.items() if k not in ("env", "command", "date")}
    return json.dumps(body, sort_keys=True)


def merge_records(groups: Iterable[Iterable[dict]]) -> list[dict]:
    """Concatenate record lists, dropping exact duplicates, ordered by (date, run, original order)."""
    seen: set[str] = set()
    merged = []
    for group in groups:
        for rec in group:
            key = record_key(rec)
            if key not in seen:
                seen.add(key)
                merged.append(rec)
    order = {id(r): i for i, r in enumerate(merged)}
    return sorted(merged, key=lambda r: (r["date"], r["run_id"], order[id(r)]))


def merge_files(paths: Iterable[str | Path], out: str | Path | None = None) -> list[dict]:
    """Read and merge any number of result files; optionally write the merged JSON lines to ``out``."""
    merged = merge_records(read_records(p) for p in paths)
    if out is not None:
        out = Path(out)
        tmp = out.with_name(f".{out.name}.part")
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in merged), encoding="utf-8")
        os.replace(tmp, out)
    return merged
