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
