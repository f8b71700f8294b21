"""`mimic bench quality` end to end at a small size on the toy preset (what CI runs)."""
import json
import math

import pytest

from _runtime_helpers import one_torch_thread, run_cli
from mimic.benchmarks.quality_bench import Variant, recommend, VariantResult
from mimic.errors import InputError


def test_quality_bench_small(tmp_path, capsys):
    with one_torch_thread():
        code, stdout, stderr = run_cli(["bench", "quality", "--preset", "toy", "--resolution", "64", "--frames", "7",
                                        "--variant", "ays-6", "--variant", "karras-6+overlap-2", "--out", str(tmp_path)], capsys)
    assert code == 0, stderr
    report = json.loads((tmp_path / "quality.json").read_text())
    rows = {v["name"]: v for v in report["variants"]}
    assert list(rows) == ["karras-25", "ays-6", "karras-6+overlap-2"]
    ref, ays, fast = rows["karras-25"], rows["ays-6"], rows["karras-6+overlap-2"]
    assert ref["psnr_ref"] is None and ref["ssim_ref"] == pytest.approx(1.0)  # the reference itself (inf dB)
    # 7 driving frames + the reference slot: one 8-frame window
    assert (ref["unet_calls"], ays["unet_calls"], fast["unet_calls"]) == (25, 6, 6)
    assert (ays["schedule"], ays["steps"], fast["overlap"]) == ("ays", 6, 2)
    for row in rows.values():
        assert row["error"] is None and row["seconds"] > 0
        for key in ("psnr_truth", "ssim_truth", "iou_truth", "flicker"):
            assert isinstance(row[key], float), key
    assert 0 < ays["psnr_ref"] < 100 and 0 <= ays["iou_truth"] <= 1
    assert ays["psnr_ref"] > fast["psnr_ref"] + 3  # at 6 steps AYS lands much closer to 25 Karras steps than Karras does
    assert (tmp_path / "quality.png").stat().st_size > 5000
    table = (tmp_path / "quality.md").read_text()
    assert "| variant | backend |" in table and "| ays-6 | torch | fp32 | 6 | ays | 4 |" in table
    assert "silhouette IoU" in stdout


def test_variant_names_parse_into_settings():
    v = Variant.parse("ays-10+overlap-2+ramp+onnxruntime+fp16")
    assert (v.schedule, v.steps, v.overlap, v.guidance, v.backend, v.precision) == ("ays", 10, 2, (1.0, 3.0), "onnxruntime", "fp16")
    assert Variant.parse("karras-25").overrides() == {"steps": 25, "schedule": "karras"}
    with pytest.raises(InputError, match="unknown variant part 'fast'"):
        Variant.parse("ays-10+fast")


def test_the_recommendation_is_the_closest_to_25_steps_at_about_half_the_calls():
    def row(name, calls, psnr_ref, truth=20.0, iou=0.6, seam=1.0, backend="torch"):
        return VariantResult(name, backend, "fp32", 25, "karras", 4, "2", calls / 10, calls, psnr_ref, 1.0, psnr_truth=truth, iou_truth=iou, seam=seam)

    rows = [row("karras-25", 100, math.inf), row("karras-15", 60, 48.0), row("karras-10", 40, 40.0), row("ays-10", 40, 52.0),
            row("ays-6+overlap-2", 20, 55.0, seam=1.3), row("ays-6", 24, 53.0, truth=19.5), row("ramp", 40, 60.0, iou=0.55),
            row("onnxruntime", 40, 90.0, backend="onnxruntime")]
    rec = recommend(rows)
    # karras-15: too many calls; the seam, the truth PSNR and the IoU rule out the others closer to 25 steps
    assert rec["name"] == "ays-10" and rec["calls_fraction"] == 0.4
    assert recommend(rows[:2]) is None
