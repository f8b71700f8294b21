"""`mimic demo`: the embedded default end to end, through the real entry point."""
import json
import re
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from _runtime_helpers import decode_frames, run_cli
from mimic.media.preview import FOOTER, HEADER


@pytest.mark.slow  # 14 s; tests/test_toy_demo.py runs the default (toy) demo
def test_demo_writes_a_playable_video_and_preview(tiny_cache, tmp_path, capsys):
    code, stdout, stderr = run_cli(["demo", "--preset", "tiny", "--out", str(tmp_path), "--frames", "6", "--steps", "1"], capsys)
    assert code == 0, stderr
    frames = decode_frames(tmp_path / "demo.mp4")
    assert frames.shape == (6, 320, 192, 3)  # tiny preset: 192 px short side, portrait
    preview = cv2.imread(str(tmp_path / "preview.png"))
    row = HEADER + 320 + FOOTER  # labels, panels, "frame N   t = T s"; one row per shown frame
    assert preview.shape == (3 * row, 3 * 192 + 4, 3)  # pose | output | ground truth, 2-px dividers
    assert preview[HEADER:HEADER + 320, :192].max() > 0  # the skeleton is drawn
    for stage in ("load", "poses", "generate"):
        assert f"  {stage}" in stdout
    assert f"wrote {tmp_path / 'demo.mp4'} (6 frames" in stdout


def test_demo_refuses_an_unwritable_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")
    code, _, stderr = run_cli(["demo", "--out", str(blocker / "sub")], capsys)
    assert code == 2 and stderr == f"error: --out {blocker}/sub/demo.mp4: {blocker} is a file, not a folder\n"


@pytest.mark.parametrize("argv, line", [
    (["--preset", "real"], "error: --preset must be one of toy, tiny, got 'real'"),
    (["--backend", "tensorrt"], "error: --backend must be one of torch, onnxruntime, got 'tensorrt'"),
])
def test_demo_names_the_flag_of_a_bad_choice(tmp_path, capsys, argv, line):
    code, _, stderr = run_cli(["demo", "--out", str(tmp_path), *argv], capsys)
    assert code == 2 and stderr == line + "\n"


# ------------------------------------------------- what the demo adds around the model (no model)
@pytest.fixture
def modelless_demo(monkeypatch):
    """`mimic demo` with the model swapped for one that "renders" the ground truth itself (a perfect
    render): its lines, preview, scores and baseline are checked in a second, with no weights."""
    import mimic.runtime.demo as demo
    from mimic.media.video_writer import write_rgb_video

    class Model:
        components = None

        @classmethod
        def from_preset(cls, preset, options):
            return cls()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    def generate(components, job, inputs, hooks=None):
        truth = demo.puppet_sample(inputs.reference.shape[:2], inputs.num_output).frames
        write_rgb_video(job.out, truth, inputs.output_fps)
        return SimpleNamespace(seconds={"denoise": 0.0}, frames=len(truth))

    monkeypatch.setattr(demo, "MimicMotion", Model)
    monkeypatch.setattr(demo, "generate", generate)
    return demo


def test_demo_prints_its_header_first_and_a_baseline_beside_its_scores(modelless_demo, tmp_path, capsys):
    from mimic.toy.score import score_render

    code, stdout, stderr = run_cli(["demo", "--out", str(tmp_path), "--frames", "4"], capsys)
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[0].startswith("mimic demo: toy preset, onnxruntime backend, 4 frames at 128x192")  # before the load timing
    assert lines[1].startswith("  load ")
    # the baseline: the reference image held still, scored against the same ground truth the same way
    sample = modelless_demo.puppet_sample((192, 128), 4)
    still = score_render(np.repeat(sample.reference[None], 4, axis=0), sample)
    scores = json.loads((tmp_path / "scores.json").read_text())
    baseline = scores["baseline"]
    assert baseline["what"] == "reference image held still" and len(baseline["iou"]) == 4
    assert (baseline["median_iou"], baseline["median_psnr_db"], baseline["median_ssim"]) == pytest.approx(
        (still.median_iou, still.median_psnr, still.median_ssim))
    scored = lines.index(next(line for line in lines if line.startswith("against the ground truth: ")))
    assert lines[scored + 1].startswith(f"baseline (reference image held still): {still.line()}")
    assert scores["median_iou"] > baseline["median_iou"]  # the (perfect) render follows the dance; the still image does not


def test_demo_preview_labels_the_frames_it_says_it_shows(modelless_demo, tmp_path, capsys):
    """The printed "frames 1, 3, 4" are the numbers under the preview's rows: counted from 1, time from 0."""
    from mimic.media.preview import label_strip, text_scale

    code, stdout, stderr = run_cli(["demo", "--out", str(tmp_path), "--frames", "4"], capsys)
    assert code == 0, stderr
    fps = float(re.search(r"demo\.mp4 \(4 frames, 128x192, ([\d.]+) fps\)", stdout).group(1))
    shown = [int(n) for n in re.search(r"preview\.png \(pose \| output \| ground truth; frames ([\d, ]+)\)", stdout).group(1).split(", ")]
    assert shown == [1, 3, 4]
    preview = cv2.imread(str(tmp_path / "preview.png"))[:, :, ::-1]  # RGB
    row, width = HEADER + 192 + FOOTER, 3 * 128 + 4
    for k, number in enumerate(shown):
        caption = label_strip(f"frame {number}   t = {(number - 1) / fps:.2f} s", width, FOOTER, text_scale(128))
        assert np.array_equal(preview[(k + 1) * row - FOOTER:(k + 1) * row], caption), (number, fps)
