"""Benchmark record schema, writing, reading and merging (no measurement)."""
import json

import pytest

from mimic.benchmarks.env import device_label, fingerprint
from mimic.benchmarks.results import SchemaError, RunContext, ResultsWriter, merge_files, read_records, record_problems, validate_record
from mimic.errors import InputError


@pytest.fixture(scope="module")
def ctx():
    return RunContext.new("mimic bench --preset tiny", fingerprint(), "cpu", "tiny")


def test_fingerprint_is_safe_and_complete_without_a_gpu():
    env = fingerprint()
    for key in ("platform", "python", "cpu_model", "cpu_cores_logical", "gpu", "packages", "tensorrt"):
        assert key in env
    assert env["packages"]["torch"]
    if env["gpu"] is None:
        assert device_label(env).startswith("CPU ")


def test_records_validate_and_bad_ones_are_rejected(ctx):
    rec = ctx.record("matmul", dtype="float32", n=64, iters=1, tflops=0.1, tflops_best=0.2)
    assert validate_record(rec) is rec and rec["schema_version"] == 1
    with pytest.raises(SchemaError, match="missing field 'tflops'"):
        ctx.record("matmul", dtype="float32", n=64, iters=1, tflops_best=0.2)
    bad = dict(rec, kind="nope")
    assert any("unknown kind" in p for p in record_problems(bad))
    assert any("bool" in p for p in record_problems(dict(rec, n=True)))
    assert any("ISO" in p for p in record_problems(dict(rec, date="yesterday")))
    assert record_problems([1]) and record_problems({})


def test_writer_reader_and_merge(ctx, tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    wa = ResultsWriter(a)
    r1 = wa(ctx.record("skip", what="tensorrt", reason="no GPU"))
    wa(ctx.record("matmul", dtype="float32", n=64, iters=1, tflops=0.1, tflops_best=0.2))
    other = RunContext.new("mimic bench --weights w", ctx.env, "cuda", "real")
    ResultsWriter(b)(other.record("skip", what="x", reason="y"))
    b.open("a").write(json.dumps(r1) + "\n")  # the same record in two files appears once
    assert len(read_records(a)) == 2
    merged = merge_files([a, b], out=tmp_path / "m.jsonl")
    assert len(merged) == 3 and len(read_records(tmp_path / "m.jsonl")) == 3
    (tmp_path / "bad.jsonl").write_text('{"kind": "stage"}\n')
    with pytest.raises(InputError, match="bad.jsonl:1"):
        read_records(tmp_path / "bad.jsonl")
    with pytest.raises(InputError, match="does not exist"):
        read_records(tmp_path / "missing.jsonl")


def test_an_interrupted_end_to_end_keeps_the_rounds_it_measured(ctx, tmp_path, monkeypatch):
    """`mimic bench` appends each record as it is measured; the end-to-end records (medians over the
    rounds) are written when SIGTERM/Ctrl-C stops the rounds too, from the rounds measured, marked."""
    import numpy as np

    from mimic.benchmarks import stage_bench
    from mimic.errors import Interrupted
    from mimic.model.config import GenerationConfig

    class Flops:
        total, stages, windows = 10**9, {}, 3
        unet_tflop_per_output_frame, unet_tflop_per_output_frame_576x1024 = 0.01, 50.0

        def floor_seconds(self, rate):
            return 0.5

    monkeypatch.setattr(stage_bench, "job_flops", lambda *a, **k: Flops())
    out = tmp_path / "results.jsonl"
    bench = stage_bench.Bench(stage_bench.BenchPlan(preset="tiny", backends=("torch",), e2e_repeats=3), "mimic bench --preset tiny",
                              ResultsWriter(out), lambda line: None)
    bench.ctx, bench.config, bench.configs, bench.rate, bench.precision = ctx, GenerationConfig(window=16, overlap=6), None, 0.1, "fp32"
    started = []

    def run_e2e(name, backend):
        started.append(name)
        if len(started) == 4:  # round 2, torch: the signal arrives
            raise Interrupted("SIGTERM", 143)
        memory = {"peak_rss_bytes": 200, "start_rss_bytes": 100, "device_used_peak_bytes": None}
        return stage_bench.E2EResult(name, float(len(started)), {"denoise": 1.0}, memory, np.zeros((24, 3, 8, 8), np.uint8))

    bench.run_e2e = run_e2e
    with pytest.raises(Interrupted):
        bench.bench_e2e({"reference": None, "torch": None})
    e2e = {r["backend"]: r for r in read_records(out)}
    assert (e2e["reference"]["rounds"], e2e["reference"]["seconds_all"], e2e["torch"]["rounds"]) == (2, [1.0, 3.0], 1)
    assert all(r["interrupted"] and r["rounds_planned"] == 3 for r in e2e.values())
    assert e2e["torch"]["speedup_vs_reference"] == 1.0 and e2e["torch"]["max_abs_diff_vs_reference"] == 0
