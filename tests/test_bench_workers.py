"""`mimic bench workers`: the scaling row of one job over 1..K workers (schema-valid records)."""
from __future__ import annotations

import json

import pytest

from _runtime_helpers import run_cli
from mimic.benchmarks.results import validate_record
from mimic.benchmarks.worker_scaling import WorkerPlan


def test_worker_counts_double_up_to_the_listed_devices():
    assert WorkerPlan(devices="cpu").counts() == [1]
    assert WorkerPlan(devices="cpu,cpu,cpu").counts() == [1, 2, 3]
    assert WorkerPlan(devices=",".join(["cuda"] * 8)).counts() == [1, 2, 4, 8]


@pytest.mark.slow  # 15 s; tests/test_parallel.py checks the frames themselves
def test_bench_workers_writes_one_record_per_worker_count(tmp_path, capsys):
    out = tmp_path / "w.jsonl"
    code, stdout, stderr = run_cli(["bench", "workers", "--preset", "tiny", "--device", "cpu,cpu", "--frames", "12", "--steps", "1",
                                    "--window", "6", "--overlap", "2", "--resolution", "64", "--out", str(out)], capsys)
    assert code == 0, stderr
    records = [validate_record(json.loads(line)) for line in out.read_text().splitlines()]
    assert [(r["kind"], r["workers"], r["devices"]) for r in records] == [("workers", 1, "cpu"), ("workers", 2, "cpu,cpu")]
    assert all(r["identical_to_one_worker"] for r in records) and records[0]["speedup"] == 1.0
    assert abs(records[1]["efficiency"] - records[1]["speedup"] / 2) <= 1e-3 and records[1]["windows"] == 3
    assert "2 worker(s)" in stdout and records[0]["command"].startswith("mimic bench workers --preset tiny")
    from mimic.benchmarks.report import report_files

    markdown = report_files([out], tmp_path / "report").markdown.read_text()
    assert "## One job on several workers" in markdown and "| cpu,cpu | 2 |" in markdown
