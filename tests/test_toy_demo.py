"""`mimic demo` on the toy preset through the real entry point: video, labelled preview, scores."""
import json

import cv2
import pytest

from _runtime_helpers import decode_frames, one_torch_thread, run_cli


def test_demo_renders_the_puppet_with_the_toy_preset(tiny_cache, tmp_path, capsys):
    with one_torch_thread():
        code, stdout, stderr = run_cli(["demo", "--out", str(tmp_path), "--frames", "4", "--steps", "2", "--backend", "torch"], capsys)
    assert code == 0, stderr
    assert decode_frames(tmp_path / "demo.mp4").shape == (4, 192, 128, 3)  # toy preset: 128 px short side, portrait
    preview = cv2.imread(str(tmp_path / "preview.png"))
    from mimic.media.preview import FOOTER, HEADER, STRIP_GREY

    row = HEADER + 192 + FOOTER  # labels, panels, "frame N   t = T s"; one row per shown frame
    assert preview.shape == (3 * row, 3 * 128 + 4, 3)  # pose | output | truth, 2-px dividers
    assert preview[HEADER:HEADER + 192, :128].max() > 0  # skeleton drawn
    assert preview[:HEADER].max() > STRIP_GREY and preview[row - FOOTER:row].max() > STRIP_GREY  # label and caption written
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["preset"] == "toy" and len(scores["iou"]) == 4 and 0 <= scores["median_iou"] <= 1
    assert "mimic demo: toy preset" in stdout and "against the ground truth: silhouette IoU" in stdout


@pytest.mark.slow
def test_make_demo_default_puppet_follows_the_dance(tiny_cache, tmp_path, capsys):
    """What `make demo` runs (onnxruntime, 24 frames, toy defaults), judged on the written video."""
    code, _, stderr = run_cli(["demo", "--out", str(tmp_path)], capsys)
    assert code == 0, stderr
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["median_iou"] >= 0.5 and scores["median_psnr_db"] >= 18.0, scores
