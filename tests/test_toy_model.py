"""The toy preset: trained weights committed in the released formats, loaded by the real loaders,
and good enough that a held-out puppet follows a held-out dance (silhouette IoU >= 0.5 and
PSNR >= 18 dB against the ground truth, per-frame medians)."""
import json

import numpy as np
import pytest
import torch

from _runtime_helpers import one_torch_thread
from safetensors import safe_open

from mimic.model.weights import CHECKPOINT_NAMES, SVD_SUBDIR
from mimic.toy.configs import TOY_HW, WEIGHTS_DIR

MAX_BYTES = 8 * 1024 * 1024
FRAMES = 7  # one 8-frame window with the reference slot


def test_the_committed_weights_are_the_released_formats_within_8_mb():
    svd = WEIGHTS_DIR / SVD_SUBDIR
    files = [p for p in WEIGHTS_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= MAX_BYTES
    for sub in ("unet", "vae", "image_encoder", "scheduler", "feature_extractor"):
        assert (svd / sub).is_dir()
    assert json.loads((svd / "model_index.json").read_text())["_class_name"] == "StableVideoDiffusionPipeline"
    for path in (svd / "vae" / "diffusion_pytorch_model.fp16.safetensors", svd / "image_encoder" / "model.fp16.safetensors"):
        with safe_open(str(path), "pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    ckpt = torch.load(WEIGHTS_DIR / CHECKPOINT_NAMES[0], map_location="cpu", weights_only=True)
    assert {k.split(".", 1)[0] for k in ckpt} == {"unet", "pose_net"}
    assert {v.dtype for v in ckpt.values()} == {torch.float16}


def test_the_toy_preset_resolves_to_the_committed_files_and_its_defaults():
    from mimic.model.presets import default_generation, layout_from_options
    from mimic.model.preprocess import target_size

    layout = layout_from_options(preset="toy")
    assert layout.checkpoint == WEIGHTS_DIR / CHECKPOINT_NAMES[0] and layout.svd == str(WEIGHTS_DIR / SVD_SUBDIR)
    assert layout.det_model.is_file() and layout.pose_model.is_file()  # the tiny preset's DWPose pair
    cfg = default_generation("toy")
    assert target_size(2, 1, cfg.resolution) == TOY_HW and (cfg.window, cfg.steps, cfg.schedule) == (8, 10, "karras")


@pytest.fixture(scope="module")
def toy_render():
    """The held-out demo puppet rendered with the toy preset (torch backend, toy defaults); loading
    it goes through the strict loaders real weights use (a missing or mis-shaped key fails here)."""
    from mimic.pose.draw import draw_pose
    from mimic.pose.images import DrawnPoses
    from mimic.runtime.demo_assets import puppet_sample
    from mimic.runtime.inputs import JobInputs
    from mimic.runtime.pipeline import FrameCollector, generate, in_memory_job
    from mimic.runtime.api import MimicMotion, RuntimeOptions

    sample = puppet_sample(TOY_HW, FRAMES)
    h, w = TOY_HW
    poses = DrawnPoses(draw_pose(sample.ref_pose, h, w), sample.driving, h, w)
    with one_torch_thread(), MimicMotion.from_preset("toy", RuntimeOptions(backend="torch")) as mm:
        sink = FrameCollector()
        generate(mm.components, in_memory_job(mm.base_config), inputs=JobInputs(sample.reference, poses, FRAMES, 8.0), sink=sink)
    return sample, sink.frames().transpose(0, 2, 3, 1)


def test_a_held_out_puppet_follows_a_held_out_dance(toy_render):
    from mimic.media.quality import iou, silhouette
    from mimic.toy.score import score_render

    sample, frames = toy_render
    scores = score_render(frames, sample)
    assert scores.median_iou >= 0.5, scores.line()
    assert scores.median_psnr >= 18.0, scores.line()
    # it follows the dance: the render's silhouette matches the posed truth better than the
    # reference's rest-pose silhouette does
    rest = iou(np.repeat(silhouette(sample.reference[None], sample.backdrop), len(frames), 0), sample.masks[: len(frames)])
    assert scores.median_iou > float(np.median(rest)) + 0.05, (scores.line(), float(np.median(rest)))
