"""`mimic demo`: the embedded default end to end, through the real entry point."""
import cv2
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
