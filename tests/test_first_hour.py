"""The first hour with your own video (issue #23), the rendering side: the output plays at the
motion's speed by default (driving fps / sample stride), the end line says size, frames, fps and
duration, the audio drift warning comes before rendering, ``--audio`` works from a pose file that
carries its source video, decoding reports progress, and missing weights are listed at once with
where each part comes from."""
from __future__ import annotations

import json
import logging

import numpy as np

from _runtime_helpers import decode_frames, make_inputs, one_torch_thread, run_cli, write_video_with_audio

SMALL = ["--steps", "1", "--window", "6", "--overlap", "2", "--resolution", "128"]


def test_the_output_plays_at_the_motions_speed_and_the_end_line_says_so(tiny_cache, tmp_path, capsys):
    """24 fps sampled every 2nd frame is 12 fps of motion: 10 frames become 5 frames lasting 0.42 s
    (before: 15 fps, a clip shorter than its motion, silently)."""
    ref, video = make_inputs(tmp_path / "in", frames=10)
    out = tmp_path / "out.mp4"
    code, stdout, stderr = run_cli(["run", "--preset", "tiny", "--backend", "torch", "--ref", str(ref), "--driving", str(video), "--out", str(out),
                                    *SMALL, "--sample-stride", "2"], capsys)
    assert code == 0, stderr
    import av

    with av.open(str(out)) as c:
        assert float(c.streams.video[0].average_rate) == 12.0
    assert len(decode_frames(out)) == 5
    report = json.loads(out.with_name("out.mp4.report.json").read_text())
    assert (report["fps"], report["size"], report["duration_s"], report["config"]["output_fps"]) == (12.0, [128, 192], 0.4167, None)
    assert f"wrote {out} (128x192, 5 frames at 12 fps (0.42 s); inputs " in stdout
    assert "decoded 5/5 frames" in stderr  # decoding reports progress too (plain lines off a terminal)


def test_fps_still_overrides_and_the_drift_warning_comes_before_rendering(tiny_cache, tmp_path, caplog):
    """With ``--audio``, an ``--fps`` that does not play the motion in real time is warned about once
    the poses are known, before the first denoising step; the report lists it, the end does not repeat it."""
    from mimic.runtime.api import MimicMotion, RuntimeOptions
    from mimic.runtime.jobs import Job

    video = write_video_with_audio(tmp_path / "dance.mp4", frames=6)
    ref, _ = make_inputs(tmp_path / "in", frames=2)
    seen_at_denoise = []

    class Watch:
        def on_progress(self, done, total):
            if not seen_at_denoise:
                seen_at_denoise.append([r.getMessage() for r in caplog.records if r.levelno == logging.WARNING])

    settings = {"steps": 1, "window": 4, "overlap": 1, "resolution": 64, "sample_stride": 1, "fps": 8}
    caplog.set_level(logging.WARNING, logger="mimic")
    with MimicMotion.from_preset("tiny", RuntimeOptions(backend="torch", audio=True)) as mm, one_torch_thread():
        report = mm.render(Job(reference=ref, driving=video, out=tmp_path / "o.mp4", overrides=settings), hooks=Watch())
    drift = "output plays at 8 fps but the sampled motion is 24 fps: audio follows the source clock and will drift (use --fps 24, the default)"
    assert seen_at_denoise == [[drift]] or drift in seen_at_denoise[0]
    assert drift in report.warnings and drift in report.printed
    assert report.fps == 8.0 and report.frames == 6


def test_missing_weights_are_listed_at_once_with_their_sources(tmp_path, capsys):
    ref, video = make_inputs(tmp_path / "in", frames=2)
    empty = tmp_path / "models"
    empty.mkdir()
    code, _, stderr = run_cli(["pose", str(video), "-o", str(tmp_path / "p.npz"), "--weights", str(empty)], capsys)
    assert code == 3
    assert stderr.strip() == (
        "error: missing weights (1 part): DWPose/yolox_l.onnx and DWPose/dw-ll_ucoco_384.onnx (DWPose ONNX: "
        f"`hf download yzd-v/DWPose yolox_l.onnx dw-ll_ucoco_384.onnx --local-dir {empty}/DWPose`) (README, \"Real weights\")")
    code, stdout, stderr = run_cli(["run", "--weights", str(empty), "--ref", str(ref), "--driving", str(video), "--out", str(tmp_path / "o.mp4")], capsys)
    assert code == 3 and len(stderr.strip().splitlines()) == 1
    line = stderr.strip()
    assert line.startswith("error: missing weights (3 parts): MimicMotion_1-1.pth (MimicMotion checkpoint: "
                           f"`hf download tencent/MimicMotion MimicMotion_1-1.pth --local-dir {empty}`); DWPose/yolox_l.onnx and ")
    assert "SVD img2vid-xt 1.1 (not in" in line and "gated hub repo stabilityai/stable-video-diffusion-img2vid-xt-1-1" in line
    assert not (tmp_path / "o.mp4").exists()


def test_audio_comes_from_the_video_a_pose_file_names_even_after_both_moved(tiny_cache, tmp_path):
    """``--audio`` with ``--pose``: the pose file records its source video; moved together, the video
    is found beside the pose file. A pose file whose video is gone renders without audio, with a warning."""
    import shutil

    import av

    from mimic.pose.files import save_poses
    from mimic.pose.sequence import PoseSequence
    from mimic.runtime.api import MimicMotion, RuntimeOptions
    from mimic.runtime.demo_assets import synthetic_poses
    from mimic.runtime.jobs import Job

    made = tmp_path / "made"
    made.mkdir()
    video = write_video_with_audio(made / "dance.mp4", frames=6)
    save_poses(made / "dance.npz", PoseSequence(tuple(synthetic_poses(6, (320, 192))), tuple(i / 24 for i in range(6)), (320, 192), 24.0, 1, 1,
                                                str(video.resolve())))
    moved = tmp_path / "moved"
    shutil.move(str(made), str(moved))
    ref, _ = make_inputs(tmp_path / "in", frames=2)
    settings = {"steps": 1, "window": 4, "overlap": 1, "resolution": 64}
    with MimicMotion.from_preset("tiny", RuntimeOptions(backend="torch", audio=True)) as mm, one_torch_thread():
        report = mm.render(Job(reference=ref, poses=moved / "dance.npz", out=tmp_path / "o.mp4", overrides=settings))
        (moved / "dance.mp4").unlink()
        gone = mm.admit(Job(reference=ref, poses=moved / "dance.npz", out=tmp_path / "p.mp4", overrides=settings))
    assert report.fps == 24.0 and report.frames == 6
    # the only warning: the tiny preset's DWPose found the reference's pose (no --ref-pose given)
    assert report.warnings == ["the reference's pose comes from DWPose with random weights (meaningless): give --ref-pose REF.npz, "
                               "or real DWPose weights"]
    with av.open(str(tmp_path / "o.mp4")) as c:
        assert sorted(s.type for s in c.streams) == ["audio", "video"]
        audio_s = sum(f.samples for f in c.decode(audio=0)) / 44100
    assert 0.2 < audio_s < 0.3  # the 0.25 s of motion
    assert gone.warnings == (f"--audio: the source video of {moved / 'dance.npz'}, {made / 'dance.mp4'}, is not found (nor beside the pose file): "
                             "the output has no audio",)


def test_preview_is_checked_before_anything_loads(tmp_path, capsys):
    ref, video = make_inputs(tmp_path / "in", frames=2)
    base = ["run", "--preset", "tiny", "--ref", str(ref), "--driving", str(video), "--out", str(tmp_path / "o.mp4")]
    code, _, stderr = run_cli([*base, "--preview", str(tmp_path / "p.png")], capsys)
    assert (code, stderr.strip()) == (2, f"error: --preview {tmp_path / 'p.png'}: use an .mp4 file (the contact sheet goes beside it as .png)")
    code, _, stderr = run_cli([*base, "--preview", str(tmp_path / "o.mp4")], capsys)
    assert (code, stderr.strip()) == (2, f"error: --preview {tmp_path / 'o.mp4'} would overwrite {tmp_path / 'o.mp4'}, a file of this job: choose another path")
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(f"- {{ref: {ref}, driving: {video}, out: {tmp_path / 'a.mp4'}}}\n- {{ref: {ref}, driving: {video}, out: {tmp_path / 'b.mp4'}}}\n")
    code, _, stderr = run_cli(["run", "--preset", "tiny", "--jobs", str(jobs), "--preview", str(tmp_path / "p.mp4")], capsys)
    assert (code, stderr.strip()) == (2, "error: --preview writes one job's pose preview, but there are 2 jobs (use --job-index N)")
    assert not list(tmp_path.glob("*.mp4"))


def test_a_reference_pose_file_is_moved_into_the_output_crop_and_replaces_dwpose_on_the_reference(tmp_path):
    """``--ref-pose REF.npz``: the reference's own pose (from a pose file of that image) goes through the
    image's cover-resize and centre crop; a pose file of another size is refused naming the flag."""
    from mimic.errors import InputError
    from mimic.model.config import GenerationConfig
    from mimic.pose.files import save_poses
    from mimic.pose.postprocess import NUM_KEYPOINTS, PoseFrame
    from mimic.pose.sequence import PoseSequence
    from mimic.runtime.inputs import open_inputs
    from mimic.runtime.jobs import Job

    ref, video = make_inputs(tmp_path / "in", frames=2)  # the reference is 224x400 (w x h)
    keypoints = np.zeros((1, NUM_KEYPOINTS, 2))
    keypoints[0, 0] = (0.5, 0.5)  # the image centre
    keypoints[0, 1] = (112 / 224, 40 / 400)  # x at the centre, 40 px from the top
    pose = PoseFrame(keypoints, np.ones((1, NUM_KEYPOINTS)), np.array([[0.0, 0.0, 224.0, 400.0]]), True, (400, 224))
    save_poses(tmp_path / "ref.npz", PoseSequence((pose,), (0.0,), (400, 224), 1.0, 1, 1, str(ref)))
    raw = open_inputs(Job(reference=ref, driving=video, ref_pose=tmp_path / "ref.npz", out=tmp_path / "o.mp4"), GenerationConfig(resolution=128))
    moved = raw.ref_pose_frame
    assert raw.reference.shape[:2] == moved.image_hw == (192, 128)
    # cover-resize 224x400 -> 128x229, centre crop round(37 / 2) = 18 rows off the top (19 off the bottom)
    assert np.allclose(moved.keypoints[0, 0], (0.5, (200 * 229 / 400 - 18) / 192), atol=1e-9)
    assert np.allclose(moved.keypoints[0, 1], (0.5, (40 * 229 / 400 - 18) / 192), atol=1e-9)
    assert np.allclose(moved.boxes[0], (0.0, -18.0, 128.0, 229.0 - 18.0))
    save_poses(tmp_path / "other.npz", PoseSequence((pose,), (0.0,), (300, 224), 1.0, 1, 1, ""))
    try:
        open_inputs(Job(reference=ref, driving=video, ref_pose=tmp_path / "other.npz", out=tmp_path / "o.mp4"), GenerationConfig(resolution=128))
    except InputError as err:
        assert str(err) == (f"--ref-pose {tmp_path / 'other.npz'} was made from a 224x300 image, but --ref is 224x400: "
                            "give the reference's own pose file")
    else:
        raise AssertionError("a pose file of another size was accepted")


def test_a_pose_file_made_with_random_dwpose_weights_says_so_when_it_drives_a_job(tmp_path):
    """The extraction's warnings travel in the pose file (an optional field; older files load as before)
    and come back in every job it drives."""
    from mimic.model.config import GenerationConfig
    from mimic.pose.files import load_poses, save_poses
    from mimic.pose.sequence import PoseSequence
    from mimic.runtime.demo_assets import synthetic_poses
    from mimic.runtime.inputs import open_inputs, prepare_poses
    from mimic.runtime.jobs import Job

    warning = "the tiny preset's DWPose has random weights: poses are meaningless; use --weights or a pose file"
    poses = tuple(synthetic_poses(3, (320, 192)))
    save_poses(tmp_path / "random.npz", PoseSequence(poses, (0.0, 0.1, 0.2), (320, 192), 10.0, 1, 1, "", 0.0, (warning,)))
    save_poses(tmp_path / "plain.npz", PoseSequence(poses, (0.0, 0.1, 0.2), (320, 192), 10.0, 1, 1))
    assert load_poses(tmp_path / "random.npz").extraction_warnings == (warning,)
    assert load_poses(tmp_path / "plain.npz").extraction_warnings == ()
    ref, _ = make_inputs(tmp_path / "in", frames=2)
    ref_pose = poses[0]
    config = GenerationConfig(resolution=64, window=4, overlap=1)

    class Detector:  # a real-looking reference detection: no random-weights warning of its own
        weights_warning = None

        def detect_image(self, image):
            return ref_pose

    job = Job(reference=ref, poses=tmp_path / "random.npz", out=tmp_path / "o.mp4")
    inputs = prepare_poses(open_inputs(job, config), config, lambda: Detector())
    assert inputs.warnings[0] == f"random.npz: {warning}" and inputs.output_fps == 10.0
