"""`mimic bench quality`: a real run on the toy preset at a small size, stopped by SIGTERM (what CI
runs); the progress lines and the per-variant writes with a stand-in renderer; variant names; an
honest plot."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mimic.benchmarks.quality_bench import QualityPlan, Variant, VariantResult, eta_seconds, plot, plot_panels, recommend, run_quality
from mimic.errors import ExitCode, InputError


def test_quality_bench_small_keeps_what_it_measured_when_stopped_by_sigterm(tmp_path):
    """The toy preset at 64x64, one 8-frame window: the reference, ays-6 and karras-6+overlap-2 land in
    quality.json one by one; SIGTERM during the long last variant exits 143 and leaves them, marked partial."""
    cmd = [sys.executable, "-m", "mimic.cli", "bench", "quality", "--preset", "toy", "--resolution", "64", "--frames", "7", "--threads", "1",
           "--variant", "ays-6", "--variant", "karras-6+overlap-2", "--variant", "karras-400", "--out", str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    path, deadline = tmp_path / "quality.json", time.monotonic() + 300  # generous: a loaded CI machine (12 s when quiet)
    try:
        while True:  # rewritten atomically after each variant: never half a file
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            if path.is_file() and len(json.loads(path.read_text())["variants"]) >= 3:
                break
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == ExitCode.TERMINATED == 143, stderr
    assert stderr.strip().splitlines()[-1] == "interrupted (SIGTERM): temporary files removed, earlier outputs left as they were", stderr
    report = json.loads(path.read_text())
    assert (report["complete"], report["pending"], report["stopped"]) == (False, ["karras-400"], "SIGTERM")
    rows = {v["name"]: v for v in report["variants"]}
    assert list(rows) == ["karras-25", "ays-6", "karras-6+overlap-2"]
    ref, ays, fast = rows["karras-25"], rows["ays-6"], rows["karras-6+overlap-2"]
    assert ref["psnr_ref"] is None and ref["ssim_ref"] == pytest.approx(1.0)  # the reference itself (inf dB)
    # 7 driving frames + the reference slot: one 8-frame window
    assert (ref["unet_calls"], ays["unet_calls"], fast["unet_calls"]) == (25, 6, 6)
    assert (ays["schedule"], ays["steps"], fast["overlap"]) == ("ays", 6, 2)
    # the UNet work per output frame, costed at 576x1024: steps x CFG pair x 8 window frames x 3.2000 TFLOP / 7 output frames
    assert ref["unet_tflop_per_frame_576x1024"] == pytest.approx(25 * 2 * 8 * 3.2000354 / 7, rel=1e-5)
    assert ays["unet_tflop_per_frame_576x1024"] == pytest.approx(6 * 2 * 8 * 3.2000354 / 7, rel=1e-5)
    for row in rows.values():
        assert row["error"] is None and row["seconds"] > 0
        for key in ("psnr_truth", "ssim_truth", "iou_truth", "flicker"):
            assert isinstance(row[key], float), key
    assert 0 < ays["psnr_ref"] < 100 and 0 <= ays["iou_truth"] <= 1
    assert ays["psnr_ref"] > fast["psnr_ref"] + 3  # at 6 steps AYS lands much closer to 25 Karras steps than Karras does
    table = (tmp_path / "quality.md").read_text()
    assert table.startswith("**Partial run**: 3 of 4 variants measured (stopped by SIGTERM); not measured: karras-400.")
    assert "| ays-6 | torch | fp32 | 6 | ays | 4 |" in table
    assert "[1/4] karras-25: started (25 UNet calls); ETA after the first variant" in stdout
    assert "[4/4] karras-400: started (400 UNet calls); ETA ~" in stdout
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


class FakeRenderer:
    """Stands in for the models: frames = the reference image plus noise that shrinks with the steps;
    records what quality.json held when each variant started, and fails the onnxruntime variants."""

    def __init__(self, json_path):
        self.json_path, self.loaded, self.seen, self.configs = json_path, set(), [], {}

    def needs_loading(self, v):
        return (v.backend, v.precision) not in self.loaded

    def render(self, v, cfg, inputs):
        rep = json.loads(self.json_path.read_text())
        self.seen.append(([r["name"] for r in rep["variants"]], rep["pending"], rep["complete"]))
        if v.backend == "onnxruntime":
            raise RuntimeError("onnxruntime is not installed here\nsecond line")
        self.loaded.add((v.backend, v.precision))
        self.configs[v.name] = cfg
        noise = np.random.default_rng(0).normal(0, 40 / cfg.steps, (inputs.num_output, *inputs.reference.shape))
        return np.clip(inputs.reference[None] + noise, 0, 255).astype(np.uint8), 0.01 * cfg.steps, cfg.steps

    def close(self):
        pass


def test_progress_lines_and_quality_json_after_every_variant(tmp_path):
    lines = []
    fake = FakeRenderer(tmp_path / "quality.json")
    plan = QualityPlan(preset="toy", variants=("ays-6", "onnxruntime", "pose_strength=0.5"), resolution=64, frames=7)
    rep = run_quality(plan, tmp_path, lines.append, renderer=fake)
    names = ["karras-25", "ays-6", "onnxruntime", "pose_strength=0.5"]
    # when each variant started, the file held every variant before it and named the rest as not measured
    assert fake.seen == [(names[:k], names[k:], False) for k in range(4)]
    assert fake.configs["pose_strength=0.5"].pose_strength == 0.5 and fake.configs["ays-6"].schedule == "ays"
    assert lines[1] == "[1/4] karras-25: started (25 UNet calls); ETA after the first variant"
    ended = next(line for line in lines if line.startswith("[1/4] karras-25: 0.25 s, 25 UNet calls"))
    assert "1 of 4 done after" in ended and "ETA ~" in ended and "for 3 variants left" in ended
    assert "[3/4] onnxruntime: skipped: onnxruntime is not installed here" in lines
    assert any(line.startswith("[4/4] pose_strength=0.5: ") and line.endswith("nothing left") for line in lines)
    assert (rep["complete"], rep["pending"], rep["stopped"]) == (True, [], None)
    written = json.loads((tmp_path / "quality.json").read_text())
    assert (written["complete"], written["pending"], [v["name"] for v in written["variants"]]) == (True, [], names)
    table = (tmp_path / "quality.md").read_text()
    assert "Partial" not in table and "| other settings |" in table and "| pose_strength=0.5 |" in table
    assert (tmp_path / "quality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_eta_is_the_measured_seconds_per_unet_call_times_the_calls_left():
    assert eta_seconds([], [25, 6]) is None
    assert eta_seconds([(25, 5.0)], [6, 100]) == pytest.approx(106 * 0.2)
    assert eta_seconds([(25, 5.0), (75, 25.0)], [50]) == pytest.approx(15.0)


def test_variant_names_parse_into_settings():
    v = Variant.parse("ays-10+overlap-2+ramp+onnxruntime+fp16")
    assert (v.schedule, v.steps, v.overlap, v.guidance, v.backend, v.precision) == ("ays", 10, 2, (1.0, 3.0), "onnxruntime", "fp16")
    assert Variant.parse("karras-25").overrides() == {"steps": 25, "schedule": "karras"}
    # any generation setting, in the jobs file's words, with its own checks
    assert Variant.parse("ays-10+pose_strength=0.5+draw_hands=false").overrides() == \
        {"steps": 10, "schedule": "ays", "pose_strength": 0.5, "draw_hands": False}
    assert Variant.parse("guidance=3").overrides() == {"steps": 25, "schedule": "karras", "guidance_min": 3, "guidance_max": 3}
    with pytest.raises(InputError, match="unknown variant part 'fast'"):
        Variant.parse("ays-10+fast")
    with pytest.raises(InputError, match="did you mean 'pose_strength'"):
        Variant.parse("pose_strenght=0.5")
    with pytest.raises(InputError, match=r"--pose-strength must be in 0\.\.10, got 20"):
        Variant.parse("pose_strength=20")


def _row(name, calls, psnr_ref, truth=20.0, iou=0.6, seam=1.0, backend="torch", schedule="karras", precision="fp32"):
    return VariantResult(name, backend, precision, 25, schedule, 4, "2", calls / 10, calls, psnr_ref, 1.0, psnr_truth=truth, iou_truth=iou, seam=seam)


def test_the_plot_starts_at_zero_db_states_the_spread_and_names_only_what_it_plots(tmp_path):
    rows = [_row("karras-25", 100, math.inf, truth=17.70), _row("karras-10", 40, 40.0, truth=17.65),
            _row("ays-10", 40, 52.0, truth=17.72, schedule="ays")]
    truth, ref = plot_panels(rows, truth=True)
    assert truth["xlim"][0] == 0.0 and ref["xlim"][0] == 0.0  # no axis that makes 0.07 dB look like a ranking
    assert truth["title"] == "against the ground truth: spread across variants 0.07 dB"
    assert truth["legend"] == [("C0", "torch fp32")]  # nothing about onnxruntime: none is plotted
    # one bar per variant, cheapest first; the reference has no finite distance to itself
    assert [(name, calls, q) for name, calls, q, _ in ref["bars"]] == [("ays-10", 40, 52.0), ("karras-10", 40, 40.0), ("karras-25", 100, None)]
    rows.append(_row("onnxruntime+fp16", 100, 55.0, truth=17.69, backend="onnxruntime", precision="fp16"))
    rows.append(VariantResult("tensorrt", "tensorrt", "fp16", 25, "karras", 4, "2", math.nan, 0, math.nan, math.nan, error="no GPU"))
    truth, _ = plot_panels(rows, truth=True)
    assert truth["legend"] == [("C0", "torch fp32"), ("C2", "onnxruntime fp16")] and truth["not_run"] == ["tensorrt"]
    assert plot(rows, tmp_path / "q.png", truth=True).stat().st_size > 5000


def test_the_recommendation_is_the_closest_to_25_steps_at_about_half_the_calls():
    rows = [_row("karras-25", 100, math.inf), _row("karras-15", 60, 48.0), _row("karras-10", 40, 40.0), _row("ays-10", 40, 52.0),
            _row("ays-6+overlap-2", 20, 55.0, seam=1.3), _row("ays-6", 24, 53.0, truth=19.5), _row("ramp", 40, 60.0, iou=0.55),
            _row("onnxruntime", 40, 90.0, backend="onnxruntime")]
    rec = recommend(rows)
    # karras-15: too many calls; the seam, the truth PSNR and the IoU rule out the others closer to 25 steps
    assert rec["name"] == "ays-10" and rec["calls_fraction"] == 0.4
    assert recommend(rows[:2]) is None
