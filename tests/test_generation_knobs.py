"""The ComfyUI MimicMotion nodes' knobs as generation settings (issue #23): ``pose_strength``,
``image_embed_strength``, ``pose_start_percent``/``pose_end_percent`` and the body/hands/face
drawing switches. Declared once (``model.config``), so they are ``mimic run``/``mimic farm`` flags,
jobs-file keys (with the wrapper's names as aliases) and Python API overrides; their defaults are
the released behaviour (the parity tests stay untouched), and each does exactly what it says: checked
on the feeds the backend receives."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from _runtime_helpers import make_inputs, one_torch_thread, run_settings
from mimic.errors import InputError
from mimic.model.config import GenerationConfig, settings_from_mapping
from mimic.model.scheduler import SchedulerConfig
from mimic.pose.images import ArrayPoses
from mimic.runtime.denoise import Conditioning, denoise, plan_denoise
from mimic.spec import StageName
from mimic.spec import TensorName as N


class RecordingBackend:
    """Keeps a copy of every UNet pose pair and returns a PoseNet output that is never zero."""

    name = "fake"
    device = torch.device("cpu")

    def __init__(self):
        self.pose_pairs: list[torch.Tensor] = []
        self.pose_net: list[torch.Tensor] = []

    def run(self, stage, feeds, stream=None):
        if stage == StageName.POSE_NET:
            x = feeds[N.POSE_IMAGES]
            out = (x[:, :1].repeat(1, 8, 1, 1)[:, :, ::8, ::8] + 1.0).contiguous()
            self.pose_net.append(out.clone())
            return {N.POSE_LATENTS: out}
        self.pose_pairs.append(feeds[N.POSE_LATENTS].clone())
        return {N.NOISE_PRED: feeds[N.SAMPLE][:, :, :4] * 0.5}


def _denoise(config: GenerationConfig) -> RecordingBackend:
    frames, h, w = 8, 4, 4
    plan = plan_denoise(frames, config, SchedulerConfig(), torch.float32, torch.device("cpu"))
    cond = Conditioning(torch.zeros(2, 1, 8), torch.randn(2, 4, h, w), torch.zeros(2, 3))
    poses = ArrayPoses((np.random.default_rng(0).random((frames, 3, h * 8, w * 8)) * 255).astype(np.uint8))
    backend = RecordingBackend()
    denoise(backend, plan, cond, poses, torch.randn(1, frames, 4, h, w))
    return backend


def _steps_with_pose(backend: RecordingBackend, config: GenerationConfig) -> list[int]:
    calls_per_step = len(backend.pose_pairs) // config.steps
    half = config.window
    return sorted({k // calls_per_step for k, pair in enumerate(backend.pose_pairs) if pair[half:].any()})


def test_pose_guidance_runs_only_in_its_step_interval_and_everywhere_by_default():
    base = GenerationConfig(steps=10, window=4, overlap=1)
    assert _steps_with_pose(_denoise(base), base) == list(range(10))  # released: every step
    ranged = base.with_overrides(pose_start_percent=0.2, pose_end_percent=0.5)
    assert ranged.pose_steps() == (2, 5)  # round(10 x 0.2) .. round(10 x 0.5), both ends included (as the wrapper counts)
    backend = _denoise(ranged)
    assert _steps_with_pose(backend, ranged) == [2, 3, 4, 5]
    assert not any(pair[: ranged.window].any() for pair in backend.pose_pairs)  # the unconditional half: always zeros


def test_pose_strength_scales_the_conditional_pose_latents_exactly():
    config = GenerationConfig(steps=2, window=4, overlap=1)
    plain, scaled = _denoise(config), _denoise(config.with_overrides(pose_strength=0.5))
    assert len(plain.pose_pairs) == len(scaled.pose_pairs) > 0
    for a, b in zip(plain.pose_pairs, scaled.pose_pairs):
        assert torch.equal(b[config.window:], a[config.window:] * 0.5) and a[config.window:].any()
    # 1.0 feeds the PoseNet output itself (no multiply: bit for bit the released feed)
    first = plain.pose_pairs[0][config.window:]
    assert torch.equal(first, plain.pose_net[0])


def test_settings_come_from_the_cli_words_field_names_and_the_wrappers_names():
    overrides, warnings = settings_from_mapping({"pose_strength": 0.8, "image_embed_strength": 1.2, "pose_start_percent": 0.1,
                                                 "include_hand": False, "draw_face": False})
    assert warnings == []
    assert overrides == {"pose_strength": 0.8, "image_embed_strength": 1.2, "pose_start_percent": 0.1, "draw_hands": False, "draw_face": False}
    assert GenerationConfig().to_dict() | {"pose_strength": 1.0, "image_embed_strength": 1.0, "pose_start_percent": 0.0,
                                           "pose_end_percent": 1.0, "draw_body": True, "draw_hands": True, "draw_face": True} == GenerationConfig().to_dict()


@pytest.mark.parametrize("mapping, message", [
    ({"pose_strength": -1}, "--pose-strength must be in 0..10, got -1"),
    ({"pose_end_percent": 1.5}, "--pose-end-percent must be in 0..1, got 1.5"),
    ({"draw_hands": "no"}, "--draw-hands must be true or false, got 'no'"),
    ({"draw_body": 1}, "--draw-body must be true or false, got 1"),
])
def test_bad_values_name_the_flag(mapping, message):
    with pytest.raises(InputError) as err:
        settings_from_mapping(mapping)
    assert str(err.value) == message


def test_a_start_after_the_end_is_refused_in_one_line():
    with pytest.raises(InputError) as err:
        GenerationConfig(pose_start_percent=0.6, pose_end_percent=0.4)
    assert str(err.value) == "--pose-start-percent (0.6) must not be after --pose-end-percent (0.4)"


def test_the_run_command_takes_them_as_flags(monkeypatch):
    """``--no-draw-hands`` and ``--pose-strength`` reach the command's settings (typer parses the
    generated options); nothing is rendered."""
    seen = run_settings(monkeypatch, "--no-draw-hands", "--pose-strength", "0.7", "--pose-end-percent", "0.5")
    assert seen == {"draw_hands": False, "pose_strength": 0.7, "pose_end_percent": 0.5}


@pytest.fixture(scope="module")
def mm(tiny_cache):
    from mimic.runtime.api import MimicMotion, RuntimeOptions

    with MimicMotion.from_preset("tiny", RuntimeOptions(backend="torch")) as mm:
        yield mm


def test_image_embed_strength_and_draw_switches_reach_the_backend(mm, tmp_path, monkeypatch):
    """One small render with ``image_embed_strength`` 0.5 and the hands and face switched off: the
    UNet's conditional embedding is half the image encoder's, and the driving poses are drawn
    without hands and face (the drawing itself: ``tests/test_dwpose_draw.py``)."""
    from mimic.pose.draw import DrawParts
    from mimic.runtime import inputs as inputs_module
    from mimic.runtime.jobs import Job

    ref, video = make_inputs(tmp_path / "in", frames=4)
    backend = mm.components.backend
    encoded, unet_embeds, pose_images = [], [], []
    real_run = backend.run

    def recording_run(stage, feeds, stream=None):
        out = real_run(stage, feeds, stream)
        if stage == StageName.IMAGE_ENCODER:
            encoded.append(out[N.IMAGE_EMBEDS].clone())
        elif stage == StageName.UNET:
            unet_embeds.append(feeds[N.ENCODER_HIDDEN_STATES].clone())
        elif stage == StageName.POSE_NET:
            pose_images.append(feeds[N.POSE_IMAGES].clone())
        return out

    drawers = []
    real_drawer = inputs_module.DrawnPoses

    def spy(first, poses, height, width, parts):
        drawers.append(parts)
        return real_drawer(first, poses, height, width, parts)

    monkeypatch.setattr(backend, "run", recording_run)
    monkeypatch.setattr(inputs_module, "DrawnPoses", spy)
    settings = {"steps": 1, "window": 4, "overlap": 1, "resolution": 64, "sample_stride": 1,
                "image_embed_strength": 0.5, "draw_hands": False, "draw_face": False}
    with one_torch_thread():
        report = mm.render(Job(reference=ref, driving=video, out=tmp_path / "o", overrides=settings))
    assert report.frames == 4
    assert drawers == [DrawParts(body=True, hands=False, face=False)]
    assert unet_embeds and all(torch.equal(e[0], torch.zeros_like(e[0])) for e in unet_embeds)  # unconditional: zeros
    assert all(torch.allclose(e[1, 0], encoded[0][0] * 0.5) for e in unet_embeds)
    assert pose_images  # the PoseNet ran on the images drawn that way
