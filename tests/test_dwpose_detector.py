"""DWPoseDetector: signature checks, dynamic batching, video extraction, pose files, ``mimic pose``."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from mimic.errors import EngineError, InputError, WeightsError
from mimic.media.video_reader import iter_sampled_frames
from mimic.media.video_writer import write_rgb_video
from mimic.model.tiny_dwpose import planted_detector, planted_pose, save_model, write_tiny_dwpose
from mimic.pose.detector import DWPoseDetector, OnnxModel, select_providers
from mimic.pose.extract import extract_video_poses, pose_command
from mimic.pose.files import load_poses, save_poses
from mimic.spec import DWPOSE_DETECTOR, DWPOSE_POSE

CPU = ["CPUExecutionProvider"]
FIGURE = (40, 160)       # width, height of the bright synthetic "person"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_dwpose(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def detector(tiny):
    return DWPoseDetector(*tiny)


def figure_frame(left: int, height: int = 320, width: int = 256) -> np.ndarray:
    frame = np.full((height, width, 3), 30, dtype=np.uint8)
    frame[80:80 + FIGURE[1], left:left + FIGURE[0]] = 220
    return frame


def test_tiny_models_are_deterministic_and_small(tiny, tmp_path):
    again = write_tiny_dwpose(tmp_path)
    for first, second in zip(tiny, again):
        assert first.read_bytes() == second.read_bytes()
        assert first.stat().st_size < 2_000_000
    assert write_tiny_dwpose(tmp_path / "other", seed=1)[1].read_bytes() != tiny[1].read_bytes()


def test_missing_and_non_onnx_files(tmp_path, tiny):
    with pytest.raises(WeightsError, match="model file not found: .*nope.onnx.*YOLOX"):
        DWPoseDetector(tmp_path / "nope.onnx", tiny[1])
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf at all \xff\xfe" * 50)
    with pytest.raises(WeightsError, match="junk.onnx.*expected the YOLOX"):
        DWPoseDetector(junk, tiny[1])


def test_swapped_or_wrong_models(tmp_path, tiny):
    with pytest.raises(WeightsError, match="dw-ll_ucoco_384.onnx has inputs input \\[1, 3, 384, 288\\]"):
        DWPoseDetector(tiny[1], tiny[0])
    model = onnx.load(str(tiny[1]))
    for value in model.graph.output:
        for node in model.graph.node:
            node.output[:] = [f"{name}_renamed" if name == value.name else name for name in node.output]
        value.name += "_renamed"
    renamed = tmp_path / "renamed.onnx"
    onnx.save(model, str(renamed))
    with pytest.raises(WeightsError, match="renamed.onnx has outputs simcc_x_renamed .*expected .*simcc_x"):
        DWPoseDetector(tiny[0], renamed)


def test_runtime_output_shape_is_checked(tmp_path):
    wrong = planted_pose(np.zeros((133, 500)), np.zeros((133, 768)), gain_x=np.zeros((133, 500)))
    for dim in wrong.graph.output[0].type.tensor_type.shape.dim:
        dim.dim_param = "any"                                 # declared shape no longer says 576
    path = save_model(wrong, tmp_path / "wrong.onnx")
    with pytest.raises(WeightsError, match="wrong.onnx: produced outputs .*133, 500"):
        OnnxModel(path, DWPOSE_POSE, CPU)


def test_dynamic_batch_rewrite_equals_batch1_graph(tiny):
    rng = np.random.default_rng(3)
    for path, spec, batch in ((tiny[0], DWPOSE_DETECTOR, rng.uniform(0, 255, (3, 3, 640, 640))),
                              (tiny[1], DWPOSE_POSE, rng.normal(0, 1, (3, 3, 384, 288)))):
        model = OnnxModel(path, spec, CPU)
        assert model.batching == "rewritten"
        reference = ort.InferenceSession(str(path), providers=CPU)      # the untouched batch-1 graph
        assert reference.get_inputs()[0].shape[0] == 1
        batched = model.run(batch.astype(np.float32))
        for index in range(3):
            single = reference.run(model.output_names, {model.input_name: batch[index:index + 1].astype(np.float32)})
            for got, want in zip(batched, single):
                np.testing.assert_allclose(got[index], want[0], rtol=1e-5, atol=1e-5)


def test_batch_hostile_graph_falls_back_to_per_item(tmp_path):
    raw = np.zeros((8400, 85), dtype=np.float32)
    gain = np.zeros((8400, 85), dtype=np.float32)
    gain[0, 0] = 1.0
    path = save_model(planted_detector(raw, gain, batch_hostile=True), tmp_path / "hostile.onnx")
    model = OnnxModel(path, DWPOSE_DETECTOR, CPU)
    assert model.batching == "per-item" and model.batching_note
    batch = np.stack([np.full((3, 640, 640), v, dtype=np.float32) for v in (1.0, 7.0)])
    assert model.run(batch)[0][:, 0, 0].tolist() == [1.0, 7.0]        # mean(images[b]) · 1


def test_batched_detection_equals_per_item(tiny, detector):
    frames = [figure_frame(20 + 12 * i) for i in range(6)]
    per_item = DWPoseDetector(*tiny, batching=False)
    assert per_item.detector.batching == "per-item"
    batched = detector.detect_frames(frames, batch_size=4)
    single = per_item.detect_frames(frames, batch_size=1)
    for a, b in zip(batched, single):
        assert a.num_people == b.num_people == 1
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-9)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


def test_bad_images_and_devices(detector):
    with pytest.raises(InputError, match="RGB uint8"):
        detector.detect_image(np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(InputError, match="batch size"):
        detector.detect_frames([], batch_size=0)
    assert select_providers("cpu") == CPU
    if "CUDAExecutionProvider" not in ort.get_available_providers():  # one policy: an error, never a CPU fallback
        with pytest.raises(EngineError, match="has no CUDA provider here: install onnxruntime-gpu"):
            select_providers("cuda:0")
    with pytest.raises(InputError, match="bad device"):
        select_providers("tpu")


def test_extract_save_load_round_trip(tmp_path, detector):
    video = write_rgb_video(tmp_path / "walk.mp4", [figure_frame(20 + 8 * i) for i in range(12)], fps=30)
    poses = extract_video_poses(detector, video, sample_stride=2, batch_size=4)
    assert len(poses.frames) == 6 and poses.frame_stride == 2 and poses.video_hw == (320, 256)
    assert poses.frame_times_s == pytest.approx([k * 2 / 30 for k in range(6)])
    for k, pose in enumerate(poses.frames):                # the figure moves 16 px per sample
        cx = (pose.boxes[0, 0] + pose.boxes[0, 2]) / 2
        assert pose.person_detected and abs(cx - (20 + 16 * k + FIGURE[0] / 2)) <= 24
    print(f"tiny DWPose on CPU: {poses.detect_frames_per_s:.1f} frames/s")
    loaded = load_poses(save_poses(tmp_path / "walk.npz", poses))
    assert (loaded.video_hw, loaded.fps, loaded.sample_stride, loaded.frame_stride, loaded.source) == \
        (poses.video_hw, poses.fps, poses.sample_stride, poses.frame_stride, poses.source)
    assert loaded.frame_times_s == poses.frame_times_s
    for a, b in zip(loaded.frames, poses.frames):
        assert np.array_equal(a.keypoints, b.keypoints) and np.array_equal(a.scores, b.scores)
        assert np.array_equal(a.boxes, b.boxes) and a.person_detected == b.person_detected


def test_rotated_video_poses_are_in_display_orientation(tmp_path, detector):
    display = [figure_frame(150) for _ in range(2)]                  # portrait 256×320, figure right
    stored = [np.ascontiguousarray(np.rot90(f, -1)) for f in display]  # landscape 320×256 on disk
    video = write_rgb_video(tmp_path / "phone.mp4", stored, fps=30, rotation_deg=90)
    poses = extract_video_poses(detector, video, sample_stride=1)
    assert poses.video_hw == (320, 256)
    box = poses.frames[0].boxes[0]
    assert abs((box[0] + box[2]) / 2 - (150 + FIGURE[0] / 2)) <= 24
    assert abs((box[1] + box[3]) / 2 - (80 + FIGURE[1] / 2)) <= 24


def test_bad_pose_files(tmp_path, detector):
    with pytest.raises(InputError, match="pose file not found"):
        load_poses(tmp_path / "none.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match="junk.npz is not a pose file"):
        load_poses(junk)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    with pytest.raises(InputError, match="format marker"):
        load_poses(foreign)
    video = write_rgb_video(tmp_path / "v.mp4", [figure_frame(40)] * 2, fps=30)
    good = save_poses(tmp_path / "good.npz", extract_video_poses(detector, video, sample_stride=1))
    fields = dict(np.load(good))
    for name, value, message in (("format_version", np.array(99), "format version"),
                                 ("people_per_frame", np.array([1, 5]), "does not add up"),
                                 ("scores", np.full_like(fields["scores"], np.nan), "NaN"),
                                 ("boxes", fields["boxes"][:, :3], "field 'boxes'")):
        broken = tmp_path / f"broken_{name}.npz"
        np.savez(broken, **{**fields, name: value})
        with pytest.raises(InputError, match=message):
            load_poses(broken)


def test_pose_command_summary_and_preview(tmp_path, tiny, caplog):
    video = write_rgb_video(tmp_path / "clip.mp4", [figure_frame(30 + 6 * i) for i in range(8)], fps=30)
    caplog.set_level("INFO", logger="mimic.pose")
    summary = pose_command(video, tmp_path / "clip.npz", *tiny, preview=tmp_path / "clip_pose.mp4",
                           sample_stride=2)
    assert summary["frames"] == 4 and summary["frame_stride"] == 2 and summary["pose_fps"] == 15.0
    assert summary["frames_with_one_person"] == 4 and summary["batching"] == {"detector": "rewritten",
                                                                              "pose": "rewritten"}
    assert len(load_poses(tmp_path / "clip.npz").frames) == 4
    preview = [frame for _, frame in iter_sampled_frames(summary["preview"], 1)]
    assert len(preview) == 4 and preview[0].shape == (22 + 640 + 22, 2 * 512 + 2, 3) and preview[0].any()  # source | pose
    assert (tmp_path / "clip_pose.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any("frames/s" in line for line in caplog.messages)
    with pytest.raises(InputError, match=".mp4"):
        pose_command(video, tmp_path / "x.npz", *tiny, preview=tmp_path / "x.gif")


# ------------------------------------------------------------------ random weights (the tiny preset's)
def test_tiny_dwpose_files_say_their_weights_are_random_old_ones_too(tiny, tmp_path):
    from mimic.model.tiny_dwpose import RANDOM_WEIGHTS_KEY, RANDOM_WEIGHTS_WARNING

    assert RANDOM_WEIGHTS_WARNING == ("the tiny preset's DWPose has random weights: poses are meaningless; "
                                      "use --weights or a pose file")
    for path in tiny:
        assert {p.key: p.value for p in onnx.load(str(path)).metadata_props} == {RANDOM_WEIGHTS_KEY: RANDOM_WEIGHTS_WARNING}
    assert DWPoseDetector(*tiny, batching=False).weights_warning == RANDOM_WEIGHTS_WARNING
    old = []                                                 # as written before the marker (an older cache)
    for path in tiny:
        model = onnx.load(str(path))
        del model.metadata_props[:]
        old.append(save_model(model, tmp_path / "old" / path.name))
    assert DWPoseDetector(*old, batching=False).weights_warning == RANDOM_WEIGHTS_WARNING
    planted = (save_model(planted_detector(np.zeros((8400, 85))), tmp_path / "det.onnx"),
               save_model(planted_pose(np.zeros((133, 576)), np.zeros((133, 768))), tmp_path / "pose.onnx"))
    assert DWPoseDetector(*planted, batching=False).weights_warning is None   # trained (here: chosen) outputs: no warning
    assert DWPoseDetector(planted[0], tiny[1], batching=False).weights_warning == RANDOM_WEIGHTS_WARNING


def test_random_weights_are_warned_once_per_extraction_and_reach_the_warnings(tmp_path, detector, caplog):
    from mimic.model.tiny_dwpose import RANDOM_WEIGHTS_WARNING
    from mimic.pose.extract import detection_warnings

    video = write_rgb_video(tmp_path / "v.mp4", [figure_frame(40)] * 4, fps=30)
    caplog.set_level("INFO", logger="mimic.pose")
    for extraction in (1, 2):                                 # one warning per job, not per batch
        poses = extract_video_poses(detector, video, sample_stride=1, batch_size=1)
        warned = [r for r in caplog.records if r.levelname == "WARNING"]
        assert [r.getMessage() for r in warned] == [RANDOM_WEIGHTS_WARNING] * extraction
        assert caplog.records.index(warned[-1]) < min(i for i, r in enumerate(caplog.records) if "frames of v.mp4" in r.getMessage()
                                                      and caplog.records.index(warned[-1]) < i)  # before its progress
        assert poses.extraction_warnings == (RANDOM_WEIGHTS_WARNING,)
        assert detection_warnings(poses)[0] == RANDOM_WEIGHTS_WARNING
    caplog.clear()
    detector.weights_warning = None                           # real weights: nothing to say
    try:
        poses = extract_video_poses(detector, video, sample_stride=1)
    finally:
        detector.weights_warning = RANDOM_WEIGHTS_WARNING
    assert not [r for r in caplog.records if r.levelname == "WARNING"] and poses.extraction_warnings == ()


# ------------------------------------------------------------------ what `mimic pose` and `mimic run` print
def test_mimic_pose_stdout_is_the_json_alone_progress_and_warnings_on_stderr(tiny, tmp_path, monkeypatch, capsys):
    """The tiny preset's files given by path (no preset named): the marker in them is what warns."""
    import json

    from _runtime_helpers import run_cli
    from mimic.model.tiny_dwpose import RANDOM_WEIGHTS_WARNING
    from mimic.pose import extract

    monkeypatch.setattr(extract, "PROGRESS_EVERY_S", 0.0)      # a line after every batch
    video = write_rgb_video(tmp_path / "clip.mp4", [figure_frame(30 + 6 * i) for i in range(6)], fps=30)
    code, stdout, stderr = run_cli(["pose", str(video), "-o", str(tmp_path / "p.npz"), "--det-model", str(tiny[0]),
                                    "--pose-model", str(tiny[1]), "--sample-stride", "1", "--batch-size", "2"], capsys)
    assert code == 0, stderr
    summary = json.loads(stdout)                               # `mimic pose ... | jq` works
    assert summary["frames"] == 6 and summary["warnings"][0] == RANDOM_WEIGHTS_WARNING
    lines = stderr.splitlines()
    assert lines.count(f"warning: {RANDOM_WEIGHTS_WARNING}") == 1 and lines[0] == f"warning: {RANDOM_WEIGHTS_WARNING}"
    progress = [line for line in lines if "ETA" in line]
    assert [line.split(" frames of")[0] for line in progress] == ["DWPose: 2/6", "DWPose: 4/6", "DWPose: 6/6"]
    assert all(" frames/s, ETA " in line for line in progress)


def test_mimic_run_shows_extraction_progress_and_the_random_weights_warning(tmp_path, detector, monkeypatch, capsys):
    """``mimic run --driving`` (and the farm and the Python API: the same step 2) on the CLI's
    logging: the progress lines are printed, the warning once, and it is in the job's warnings."""
    from _runtime_helpers import make_inputs
    from mimic.logs import setup_cli_logging
    from mimic.model.config import GenerationConfig
    from mimic.model.tiny_dwpose import RANDOM_WEIGHTS_WARNING
    from mimic.pose import extract
    from mimic.runtime.inputs import open_inputs, prepare_poses
    from mimic.runtime.jobs import Job

    monkeypatch.setattr(extract, "PROGRESS_EVERY_S", 0.0)
    ref, video = make_inputs(tmp_path / "in", frames=12)
    config = GenerationConfig(resolution=128, window=4, overlap=1, sample_stride=1)
    job = Job(reference=ref, driving=video, out=tmp_path / "o.mp4")
    setup_cli_logging()
    capsys.readouterr()
    inputs = prepare_poses(open_inputs(job, config), config, lambda: detector)
    out, err = capsys.readouterr()
    printed = (out + err).splitlines()
    assert [line.split(" frames of")[0] for line in printed if "ETA" in line] == ["DWPose: 8/12", "DWPose: 12/12"]
    assert printed.count(f"warning: {RANDOM_WEIGHTS_WARNING}") == 1
    assert inputs.warnings.count(RANDOM_WEIGHTS_WARNING) == 1   # so the job's report lists it
