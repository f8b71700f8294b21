"""`mimic run` end to end on the tiny preset: backends agree, executor overlap is exact, bad input
gives one line and a non-zero exit, nothing half-written is left behind."""
import json
import os

import numpy as np
import pytest

from _runtime_helpers import SMALL_ARGS, decode_frames, make_inputs, run_cli, write_video_with_audio


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"))


def _run(capsys, tmp_path, inputs, backend, name, extra=()):
    ref, video = inputs
    out = tmp_path / name
    code, stdout, stderr = run_cli(["run", "--preset", "tiny", "--backend", backend, "--ref", str(ref), "--driving", str(video), "--out", str(out), *SMALL_ARGS, *extra], capsys)
    assert code == 0, stderr
    return out, stdout


def _pngs(folder):
    import cv2

    return np.stack([cv2.imread(str(p))[:, :, ::-1] for p in sorted(folder.glob("frame_*.png"))])


def test_onnxruntime_and_torch_backends_render_the_same_frames(tiny_cache, tmp_path, inputs, capsys):
    ort_out, _ = _run(capsys, tmp_path, inputs, "onnxruntime", "ort")  # folders: lossless numbered PNGs
    torch_out, _ = _run(capsys, tmp_path, inputs, "torch", "torch")
    a, b = _pngs(ort_out), _pngs(torch_out)
    assert a.shape == b.shape == (10, 192, 128, 3)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # within 1/255
    assert a.std() > 1  # not a blank video
    report = json.loads((ort_out / "report.json").read_text())
    assert report["backend"] == "onnxruntime" and report["frames"] == 10 and report["config"]["steps"] == 2
    assert set(report["seconds"]) >= {"inputs", "encode", "denoise", "decode_write"}
    assert json.loads((torch_out / "report.json").read_text())["backend"] == "torch"


def test_mp4_output_decodes_to_the_frame_count(tiny_cache, tmp_path, inputs, capsys):
    out, stdout = _run(capsys, tmp_path, inputs, "onnxruntime", "ort.mp4")
    frames = decode_frames(out)
    assert frames.shape == (10, 192, 128, 3)
    assert f"wrote {out} (128x192, 10 frames at 24 fps (0.42 s); " in stdout


def test_short_clip_is_padded_and_trimmed(tiny_cache, tmp_path, capsys):
    ref, video = make_inputs(tmp_path / "short", frames=3)
    out = tmp_path / "short.mp4"
    code, stdout, stderr = run_cli(["run", "--preset", "tiny", "--ref", str(ref), "--driving", str(video), "--out", str(out), *SMALL_ARGS], capsys)
    assert code == 0, stderr
    assert len(decode_frames(out)) == 3
    assert "warning: 3 driving frames < window 6: padded with the last pose" in stderr  # warnings go to stderr
    code, _, stderr = run_cli(["run", "--preset", "tiny", "--ref", str(ref), "--driving", str(video), "--out", str(tmp_path / "x.mp4"), "--no-pad", *SMALL_ARGS], capsys)
    assert code == 2 and stderr.strip().splitlines()[-1].startswith("error: 3 driving frames is shorter than the window")
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.slow  # 40 s; the farm test and the GPU executor test cover overlap too
def test_overlapped_executor_equals_sequential(tiny_cache, tmp_path, inputs, capsys):
    ref, video = inputs
    pose_file = tmp_path / "poses.npz"
    code, _, stderr = run_cli(["pose", str(video), "-o", str(pose_file), "--preset", "tiny", "--sample-stride", "1"], capsys)
    assert code == 0, stderr

    def jobs_file(folder):
        folder.mkdir()
        jobs = [
            {"reference": str(ref), "driving": str(video), "out": str(folder / "a.mp4")},
            {"reference": str(ref), "poses": str(pose_file), "out": str(folder / "b.mp4"), "seed": 5},
            {"reference": str(ref), "driving": str(video), "out": str(folder / "c.mp4"), "guidance_max": 3.0},
        ]
        path = folder / "jobs.json"
        path.write_text(json.dumps(jobs))
        return path

    for mode, extra in (("overlap", []), ("sequential", ["--sequential"])):
        code, _, stderr = run_cli(["run", "--preset", "tiny", "--jobs", str(jobs_file(tmp_path / mode)), *SMALL_ARGS, *extra], capsys)
        assert code == 0, stderr
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        assert (tmp_path / "overlap" / name).read_bytes() == (tmp_path / "sequential" / name).read_bytes()
    assert (tmp_path / "overlap" / "a.mp4").read_bytes() != (tmp_path / "overlap" / "c.mp4").read_bytes()


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


# Bad input (exact one-line messages, nothing created) is table-tested in tests/test_reliability.py.


def test_interrupted_write_leaves_no_file(tmp_path):
    from mimic.media.video_writer import VideoWriter

    target = tmp_path / "out.mp4"
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(target, 15, (64, 64)) as w:
            w.write(np.zeros((4, 3, 64, 64), np.uint8))
            raise KeyboardInterrupt
    assert not target.exists()
    assert os.listdir(tmp_path) == []  # no temp file left either


@pytest.mark.slow  # 7 s
def test_upstream_config_file_is_accepted(tiny_cache, tmp_path, inputs, capsys):
    ref, video = inputs
    cfg = tmp_path / "test.yaml"
    cfg.write_text(
        "base_model_path: stabilityai/stable-video-diffusion-img2vid-xt-1-1\nckpt_path: models/MimicMotion_1-1.pth\n"
        f"test_case:\n  - ref_video_path: {video}\n    ref_image_path: {ref}\n    num_frames: 6\n    resolution: 128\n"
        "    frames_overlap: 2\n    num_inference_steps: 2\n    noise_aug_strength: 0\n    guidance_scale: 2.0\n    sample_stride: 1\n    fps: 15\n    seed: 42\n"
    )
    code, stdout, stderr = run_cli(["run", "--preset", "tiny", "--config", str(cfg)], capsys)
    assert code == 0, stderr
    out = tmp_path / "outputs" / "drive.mp4"
    assert len(decode_frames(out)) == 10
    report = json.loads(out.with_name("drive.mp4.report.json").read_text())
    assert report["config"]["window"] == 6 and report["config"]["guidance_max"] == 2.0


@pytest.mark.slow  # 7 s
def test_audio_is_copied_for_the_rendered_duration(tiny_cache, tmp_path, capsys):
    import av

    ref, _ = make_inputs(tmp_path / "in", frames=2)
    video = write_video_with_audio(tmp_path / "in" / "with_audio.mp4", frames=24)  # 1 s at 24 fps with a 440 Hz tone
    out = tmp_path / "o.mp4"
    # stride 2 on 24 fps samples 12 frames; --fps 12 plays them in real time: 1 s of video and audio
    code, stdout, stderr = run_cli(["run", "--preset", "tiny", "--ref", str(ref), "--driving", str(video), "--out", str(out), *SMALL_ARGS, "--sample-stride", "2", "--fps", "12", "--audio"], capsys)
    assert code == 0, stderr
    with av.open(str(out)) as c:
        kinds = sorted(s.type for s in c.streams)
        audio_s = sum(f.samples for f in c.decode(audio=0)) / 44100
    assert kinds == ["audio", "video"]
    assert 0.9 < audio_s < 1.1
    assert "drift" not in stdout


def test_pose_file_preview_and_drawn_pose_frames(tiny_cache, tmp_path, inputs, capsys):
    import cv2

    ref, video = inputs
    poses, preview = tmp_path / "poses.npz", tmp_path / "prev.mp4"
    code, stdout, stderr = run_cli(["pose", str(video), "-o", str(poses), "--preview", str(preview), "--preset", "tiny", "--sample-stride", "1"], capsys)
    assert code == 0, stderr
    assert json.loads(stdout[stdout.index("{\n"):])["frames"] == 10 and len(decode_frames(preview)) == 10
    assert preview.with_suffix(".png").is_file()  # contact sheet
    # already-drawn pose images as a folder, plus the reference's own drawn pose; 100 px rounds to 128
    frames_dir = tmp_path / "drawn"
    frames_dir.mkdir()
    for i, frame in enumerate(decode_frames(preview)[:7]):
        cv2.imwrite(str(frames_dir / f"{i:03d}.png"), frame[:, :, ::-1])
    out = tmp_path / "from_frames.mp4"
    code, stdout, stderr = run_cli(
        ["run", "--preset", "tiny", "--ref", str(ref), "--pose-frames", str(frames_dir), "--ref-pose", str(frames_dir / "000.png"),
         "--out", str(out), *SMALL_ARGS, "--resolution", "100"], capsys)
    assert code == 0, stderr
    assert "resolution 100 is not a multiple of 64; using 128" in stderr  # a warning: stderr
    assert decode_frames(out).shape == (7, 192, 128, 3)
    # the printed warning is in the run report too
    assert "resolution 100 is not a multiple of 64; using 128" in json.loads(out.with_name(out.name + ".report.json").read_text())["warnings"]
