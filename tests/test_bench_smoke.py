"""`mimic bench` on the tiny preset (CPU, tiny shapes, one repeat) and `mimic bench report` on its output.
No timing assertions: only that the records follow the schema and the report has its tables and plots."""
import json

import pytest

import typer
from typer.testing import CliRunner

from mimic.benchmarks.results import read_records, validate_record
from mimic.commands import bench


def _app():
    app = typer.Typer()

    @app.callback()
    def _root():
        """test root"""

    app.add_typer(bench.app)
    return app


@pytest.mark.slow  # ~70 s: every section incl. four scaling subprocesses; test_bench_quick_e2e_and_report is the CI smoke
def test_bench_then_report(tiny_cache, tmp_path):
    app, runner = _app(), CliRunner()
    out = tmp_path / "results.jsonl"
    args = [
        "bench", "--preset", "tiny", "--backend", "onnxruntime", "--backend", "torch", "--backend", "tensorrt", "--out", str(out),
        "--size", "64x64", "--window", "4", "--overlap", "1", "--frames", "5", "--steps", "1", "--repeats", "1", "--warmup", "0",
        "--threads", "1", "--scaling", "--quick", "--scaling-frames", "4,8", "--scaling-size", "64x64",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    lines = out.read_text().splitlines()
    records = [validate_record(json.loads(line)) for line in lines]
    kinds = [r["kind"] for r in records]
    assert kinds.count("matmul") == 1 and kinds.count("floor") == 2
    stages = {(r["backend"], r["stage"]) for r in records if r["kind"] == "stage"}
    assert {(b, s) for b in ("reference", "torch", "onnxruntime") for s in ("image_encoder", "vae_encoder", "pose_net", "unet", "vae_decoder")} <= stages
    e2e = {r["backend"]: r for r in records if r["kind"] == "e2e"}
    assert set(e2e) == {"reference", "torch", "onnxruntime"}
    assert e2e["torch"]["speedup_vs_reference"] > 0 and e2e["torch"]["max_abs_diff_vs_reference"] <= 2
    assert e2e["onnxruntime"]["flops"] > 0 and e2e["reference"]["peak_host_rss_bytes"] > 0
    assert any(r["kind"] == "skip" and r["what"] == "tensorrt" for r in records)  # no GPU here: recorded, not crashed
    scaling = [r for r in records if r["kind"] == "scaling"]
    assert {(r["backend"], r["output_frames"]) for r in scaling} == {(b, n) for b in ("onnxruntime", "reference") for n in (4, 8)}
    assert len({r["run_id"] for r in records}) == 1
    assert "end to end" in res.output.splitlines()[-1]  # the short table is printed last

    report_dir = tmp_path / "report"
    res = runner.invoke(app, ["bench", "report", str(out), str(out), "-o", str(report_dir)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    for name in ("stage_latency.png", "speedup.png", "efficiency.png", "scaling.png"):
        png = report_dir / name
        assert png.is_file() and png.stat().st_size > 1000
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (report_dir / "report.md").read_text()
    for heading in ("## Runs", "## Dense matrix rate", "## Stage latency", "## End to end", "## Scaling with video length", "## Not measured"):
        assert heading in md
    assert "| run | device | backend | precision | stage |" in md
    assert md.count("| reference | fp32 | unet |") == 1  # the same file twice merges to one copy
    assert len(read_records(out)) == len(lines)


@pytest.mark.slow  # 16 s; tests/test_quality_bench.py runs a bench end to end in CI
def test_bench_quick_e2e_and_report(tiny_cache, tmp_path):
    """CI smoke: stages and end to end (torch vs the reference) at 64x64, then the report."""
    app, runner = _app(), CliRunner()
    out = tmp_path / "results.jsonl"
    args = [
        "bench", "--preset", "tiny", "--backend", "torch", "--out", str(out), "--size", "64x64", "--window", "4", "--overlap", "1",
        "--frames", "5", "--steps", "1", "--repeats", "1", "--warmup", "0", "--threads", "1",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    records = [validate_record(json.loads(line)) for line in out.read_text().splitlines()]
    e2e = {r["backend"]: r for r in records if r["kind"] == "e2e"}
    assert set(e2e) == {"reference", "torch"}
    assert e2e["torch"]["speedup_vs_reference"] > 0 and e2e["torch"]["max_abs_diff_vs_reference"] <= 2
    # the hardware-independent figure beside the seconds (5 frames in windows of 4 overlapping by 1, 1 step, CFG)
    assert e2e["torch"]["unet_tflop_per_output_frame_576x1024"] > 0 and e2e["torch"]["unet_tflop_per_output_frame"] > 0
    stages = {(r["backend"], r["stage"]) for r in records if r["kind"] == "stage"}
    assert {("torch", s) for s in ("image_encoder", "vae_encoder", "pose_net", "unet", "vae_decoder")} <= stages
    res = runner.invoke(app, ["bench", "report", str(out), "-o", str(tmp_path / "report")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Stage latency" in md and "## End to end" in md


def test_bench_usage_errors(tiny_cache, tmp_path):
    app, runner = _app(), CliRunner()
    res = runner.invoke(app, ["bench", "--out", str(tmp_path / "r.jsonl")])
    assert res.exit_code != 0 and "--preset tiny or --weights" in str(res.exception)
    res = runner.invoke(app, ["bench", "--preset", "tiny", "--size", "100x64", "--out", str(tmp_path / "r.jsonl")])
    assert res.exit_code != 0 and "multiples of 64" in str(res.exception)
    res = runner.invoke(app, ["bench", "report", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "rep")])
    assert res.exit_code != 0 and "does not exist" in str(res.exception)
