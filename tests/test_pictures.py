"""The pictures mimic writes for people: the labelled demo preview (and its short video), the pose
contact sheet and the benchmark plots. Each is rendered here and checked for what can be checked:
its size, its labels (the exact pixels of the expected text), line widths, the colour of every
backend in every plot (pixels and the PNG's recorded mapping), axes and the report's numbers."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from mimic.media import preview
from mimic.pose import sheet


def _images(h=64, w=48, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (3, h, w), dtype=np.uint8), rng.integers(0, 256, (3, h, w), dtype=np.uint8))


# ------------------------------------------------------------------------------- demo preview
def test_preview_puts_pose_left_output_right_with_labels_frame_and_time():
    pose, frame = _images()
    pic = preview.labelled_side_by_side(pose, frame, frame_index=5, fps=15.0)
    H, F = preview.HEADER, preview.FOOTER
    assert pic.shape == (H + 64 + F, 2 * 48 + 2, 3) and pic.dtype == np.uint8
    assert np.array_equal(pic[H:H + 64, :48], pose.transpose(1, 2, 0))  # pose on the left
    assert np.array_equal(pic[H:H + 64, 50:], frame.transpose(1, 2, 0))  # output on the right
    scale = preview.text_scale(48)
    assert np.array_equal(pic[:H, :48], preview.label_strip("pose", 48, H, scale))
    assert np.array_equal(pic[:H, 50:], preview.label_strip("output", 48, H, scale))
    assert np.array_equal(pic[H + 64:], preview.label_strip("frame 6   t = 0.33 s", 98, F, scale))  # index 5: the 6th frame
    for strip in (pic[:H, :48], pic[:H, 50:], pic[H + 64:]):  # text drawn: light pixels on the dark strip
        assert (strip.max(axis=-1) > 150).sum() > 20
    assert not np.array_equal(preview.label_strip("pose", 48, H, scale), preview.label_strip("output", 48, H, scale))


def test_preview_panels_generalise_to_three_columns():
    pose, frame = _images()
    truth = np.zeros_like(pose)
    pic = preview.labelled_panels([pose, frame, truth], ["pose", "toy output", "ground truth"], 0, 8.0)
    H = preview.HEADER
    assert pic.shape == (H + 64 + preview.FOOTER, 3 * 48 + 4, 3)
    assert np.array_equal(pic[H:H + 64, 100:], truth.transpose(1, 2, 0))
    assert np.array_equal(pic[:H, 100:], preview.label_strip("ground truth", 48, H, preview.text_scale(48)))
    # frame numbers count from 1, times from 0: the first frame reads "frame 1   t = 0.00 s", as the demo prints
    assert np.array_equal(pic[H + 64:], preview.label_strip("frame 1   t = 0.00 s", 3 * 48 + 4, preview.FOOTER, preview.text_scale(48)))
    with pytest.raises(Exception, match="a label each"):
        preview.labelled_panels([pose, frame], ["pose"], 0, 8.0)


def test_preview_refuses_mismatched_images():
    pose, _ = _images()
    with pytest.raises(Exception, match="one size"):
        preview.labelled_side_by_side(pose, pose[:, :32], 0, 15.0)


def test_side_by_side_video_has_every_frame_labelled(tmp_path):
    import av

    pairs = [_images(64, 48, seed=k) for k in range(4)]
    path = preview.write_side_by_side_video(tmp_path / "sbs.mp4", (p for p, _ in pairs), (f for _, f in pairs), fps=8.0, max_frames=3)
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 3 and frames[0].shape == (preview.HEADER + 64 + preview.FOOTER, 98, 3)


# ----------------------------------------------------------------------------- contact sheet
def _dance(n=40, hw=(1280, 720)):
    from mimic.runtime.demo_assets import synthetic_poses

    return synthetic_poses(n, hw), hw


def test_contact_sheet_size_labels_and_limb_width():
    poses, hw = _dance()
    times = [k / 24 for k in range(len(poses))]
    pic = sheet.contact_sheet(poses, hw, times)
    tile_w, tile_h = sheet.TILE_WIDTH, round(hw[0] * sheet.TILE_WIDTH / hw[1])
    picks = sheet.pick_frames(len(poses))
    assert len(picks) == 32 and picks[0] == 0 and picks[-1] == len(poses) - 1
    cell = tile_h + sheet.LABEL_HEIGHT + sheet.GAP
    assert pic.shape == (4 * cell + sheet.GAP, 8 * (tile_w + sheet.GAP) + sheet.GAP, 3)
    # the second tile: its picture is the pose drawn at tile size, its label the frame and time
    x, y = sheet.GAP + tile_w + sheet.GAP, sheet.GAP
    index = int(picks[1])
    assert np.array_equal(pic[y:y + tile_h, x:x + tile_w], sheet.draw_preview_pose(poses[index], tile_h, tile_w))
    label = pic[y + tile_h:y + tile_h + sheet.LABEL_HEIGHT, x:x + tile_w]
    import cv2

    expected = np.full_like(label, 24)
    text = f"frame {index + 1}  {times[index] - times[0]:.2f} s"  # 1-based, as every frame number printed
    cv2.putText(expected, text, (4, sheet.LABEL_HEIGHT - 5), cv2.FONT_HERSHEY_SIMPLEX, sheet.label_scale(text, tile_w),
                sheet.LABEL_TEXT, 1, lineType=cv2.LINE_AA)
    assert np.array_equal(label, expected) and (label.max(axis=-1) > 150).sum() > 20


def test_contact_sheet_limbs_are_full_colour_and_several_pixels_wide():
    """Limb 1-8 (neck to right hip) is pure green, limb width scaled to the tile: across the limb's
    middle, at least limb_width(160) - 1 pixels are that green (the model's image, shrunk, had 1)."""
    from mimic.pose.draw import BODY_COLORS, BODY_LIMBS

    poses, hw = _dance(1)
    tile_h, tile_w = round(hw[0] * 160 / hw[1]), 160
    img = sheet.draw_preview_pose(poses[0], tile_h, tile_w)
    limb = BODY_LIMBS.index((1, 8))
    green = np.array(BODY_COLORS[limb][::-1])  # drawn like the model's images: BGR colours shown as RGB
    a, b = (poses[0].candidate[j] * [tile_w, tile_h] for j in (1, 8))
    mx, my = ((a + b) / 2).round().astype(int)
    row = img[my, max(0, mx - 8):mx + 9]
    assert (np.abs(row.astype(int) - green).max(axis=1) < 40).sum() >= sheet.limb_width(tile_w) - 1
    assert sheet.limb_width(160) == 4 and sheet.limb_width(40) == 2


def test_pose_preview_writes_the_labelled_sheet(tmp_path):
    from mimic.pose.extract import _write_previews
    from mimic.pose.sequence import PoseSequence

    poses, hw = _dance(6, (128, 96))
    seq = PoseSequence(tuple(poses), tuple(k / 12 for k in range(6)), hw, 24.0, 2, 2)
    video, png = _write_previews(seq, tmp_path / "prev.mp4")
    from mimic.media.images import read_image

    img = read_image(png)
    assert img.shape == (1 * (round(128 * 160 / 96) + sheet.LABEL_HEIGHT + 2) + 2, 6 * 162 + 2, 3)


# ------------------------------------------------------------------------------- bench plots
def _records():
    """Two runs: stage, end-to-end and scaling records for the reference, torch and onnxruntime."""
    env = {"platform": "linux", "python": "3.11", "cpu_model": "CPU X", "cpu_cores_logical": 2, "gpu": None, "packages": {}}
    recs = []
    for run, scale in (("20260101T000000Z-aaaaaaaa", 1.0), ("20260102T000000Z-bbbbbbbb", 1.3)):
        base = {"run_id": run, "date": run[:8], "command": "mimic bench", "env": env, "device": "cpu", "model": "tiny"}
        for backend, t in (("reference", 0.08), ("torch", 0.06), ("onnxruntime", 0.5)):
            for stage, f in (("image_encoder", 0.1), ("unet", 1.0)):
                recs.append({**base, "kind": "stage", "backend": backend, "stage": stage, "shape": "128x64 T=8", "point": {}, "precision": "fp32",
                             "warmup": 1, "repeats": 3, "median_s": t * f * scale, "p90_s": t * f * scale, "min_s": t * f * scale, "flops": 10**9,
                             "tflops": 0.01, "fraction_of_matmul": 0.05, "speedup_vs_reference": None if backend == "reference" else 0.08 / t})
            recs.append({**base, "kind": "e2e", "backend": backend, "precision": "fp32", "output_frames": 10, "height": 64, "width": 128, "window": 8,
                         "overlap": 2, "steps": 2, "windows": 2, "seconds": 5 * t, "seconds_per_frame": 0.5 * t, "phases": {"encode": 0.1},
                         "peak_host_rss_bytes": int(800.25 * 2**20), "host_rss_growth_bytes": int(32.059 * 2**20), "peak_device_bytes": None,
                         "flops": 10**12, "floor_s": 0.1, "speedup_vs_reference": None if backend == "reference" else 0.08 / t,
                         "max_abs_diff_vs_reference": None if backend == "reference" else 1})
            if backend != "torch":
                for n in (16, 32):
                    recs.append({**base, "kind": "scaling", "backend": backend, "output_frames": n, "height": 64, "width": 128, "window": 8,
                                 "overlap": 2, "steps": 1, "windows": n // 6, "seconds": 0.02 * n, "phases": {"denoise": 0.01 * n},
                                 "peak_rss_bytes": int((520 + n / 4) * 2**20), "baseline_rss_bytes": 400 * 2**20, "flops": 10**9,
                                 "load_s": 1.5, "warmup_s": 0.25})
    return recs


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from mimic.benchmarks.report import build_report

    return build_report(_records(), tmp_path_factory.mktemp("report"))


def _pixels(path):
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")), dict(im.text)


def test_every_plot_is_written_at_its_size(report):
    from PIL import Image

    sizes = {p.name: Image.open(p).size for p in report.plots}
    assert sizes == {"stage_latency.png": (800, 550), "speedup.png": (1400, 550), "efficiency.png": (800, 550), "scaling.png": (1300, 500)}


def test_one_colour_per_backend_in_every_plot(report):
    from mimic.benchmarks.report import BACKEND_COLOURS

    for path in report.plots:
        pixels, text = _pixels(path)
        used = json.loads(text["mimic:colours"])
        assert used == {b: BACKEND_COLOURS[b] for b in used}, path.name  # the same mapping in every plot
        assert set(used) >= {"onnxruntime"}
        for backend, colour in used.items():
            rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
            assert (np.abs(pixels.astype(int) - rgb).max(axis=-1) <= 2).sum() > 200, (path.name, backend)  # drawn in its colour
    speedup = json.loads(_pixels(report.plots[1])[1]["mimic:colours"])
    assert speedup == {"torch": BACKEND_COLOURS["torch"], "onnxruntime": BACKEND_COLOURS["onnxruntime"]}  # the two e2e bars differ


def test_bars_carry_values_and_axes_are_sensible():
    from mimic.benchmarks import report as rep

    records = _records()
    fig, _ = rep.stage_latency_figure(records)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.texts]
    assert "80.0ms" in labels and "500ms" in labels  # every bar labelled with its value
    assert ax.get_yscale() == "log" and len([t for t in ax.get_yticklabels() if t.get_text()]) >= 4  # a log axis with ticks to read
    fig, _ = rep.scaling_figure(records)
    time_ax, memory_ax = fig.axes
    assert memory_ax.get_ylim()[0] == 0 and time_ax.get_ylim()[0] == 0  # memory from zero: growth is not magnified
    assert list(time_ax.get_xticks()) == [16, 32]
    fig, _ = rep.efficiency_figure(records)
    assert fig.axes[0].get_yscale() == "linear" and fig.axes[0].get_ylim()[0] == 0  # one decade or less: linear


def test_report_numbers_are_formatted_and_warm_up_is_excluded(report):
    from mimic.benchmarks.report import _fmt, _mib

    assert (_fmt(98.238), _fmt(0.003906), _fmt(1234.5), _mib(32.059 * 2**20)) == ("98.2", "0.00391", "1,234", "32.1")
    md = report.markdown.read_text()
    tables = "\n".join(line for line in md.splitlines() if line.startswith("|") and not line.startswith("| run |"))
    cells = [c.strip() for line in tables.splitlines() for c in line.split("|")]
    numbers = [c for c in cells if re.fullmatch(r"-?[\d,]*\.\d+", c)]
    # 3 significant digits (98.2, 0.0903), or MiB with one decimal (800.2)
    assert numbers and all(len(re.sub(r"[^\d]", "", n).lstrip("0")) <= 3 or re.fullmatch(r"[\d,]+\.\d", n) for n in numbers), numbers
    assert "32.1" in md and "32.059" not in md
    scaling = md[md.index("## Scaling"):]
    assert "exclude loading" in scaling and "untimed warm-up job" in scaling and "| warm-up s |" in scaling and "0.250" in scaling
    assert "warm-up excluded" in scaling  # the per-frame slopes say so too
