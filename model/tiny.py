"""The ``tiny`` preset: a complete, deterministic weight set in the REAL file formats.

It is generated on demand into a cache folder (never committed) with upstream's layout, so it goes
through exactly the loaders real weights go through::

    <cache>/tiny-v1/SVD/stable-video-diffusion-img2vid-xt-1-1/{model_index.json, unet/config.json,
        vae/{config.json, diffusion_pytorch_model.fp16.safetensors},
        image_encoder/{config.json, model.fp16.safetensors}, scheduler/scheduler_config.json,
        feature_extractor/preprocessor_config.json}
    <cache>/tiny-v1/MimicMotion_1-1.pth      (flat fp16 state dict, ``unet.`` + ``pose_net.`` keys)
    <cache>/tiny-v1/DWPose/{yolox_l.onnx, dw-ll_ucoco_384.onnx}   (the released I/O signatures)
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from mimic.model.weights import CHECKPOINT_NAMES, DET_MODEL, POSE_MODEL, SVD_SUBDIR, WeightsLayout

TINY_VERSION = "tiny-v1"
SEED = 20240701

UNET_CONFIG = {
    "_class_name": "UNetSpatioTemporalConditionModel",
    "sample_size": 32,
    "in_channels": 8,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"],
    "up_block_types": ["UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"],
    "block_out_channels": [32, 64],
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 24,
    "layers_per_block": 1,
    "cross_attention_dim": 32,
    "transformer_layers_per_block": 1,
    "num_attention_heads": [2, 4],
    "num_frames": 16,
}
VAE_CONFIG = {
    "_class_name": "AutoencoderKLTemporalDecoder",
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "block_out_channels": [32, 32, 64, 64],
    "layers_per_block": 1,
    "latent_channels": 4,
    "sample_size": 256,
    "scaling_factor": 0.18215,
    "force_upcast": True,
}
CLIP_CONFIG = {
    "architectures": ["CLIPVisionModelWithProjection"],
    "model_type": "clip_vision_model",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "projection_dim": 32,
    "image_size": 224,
    "patch_size": 32,
    "num_channels": 3,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "torch_dtype": "float16",
}
SCHEDULER_CONFIG = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "sigma_max": 700.0,
    "sigma_min": 0.002,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "timestep_type": "continuous",
    "trained_betas": None,
    "use_karras_sigmas": True,
}
FEATURE_EXTRACTOR_CONFIG = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "CLIPImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 224},
}
MODEL_INDEX = {
    "_class_name": "StableVideoDiffusionPipeline",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "unet": ["diffusers", "UNetSpatioTemporalConditionModel"],
    "vae": ["diffusers", "AutoencoderKLTemporalDecoder"],
}

def cache_root() -> Path:
    """``$MIMIC_CACHE_DIR`` or ``~/.cache/mimic``."""
    return Path(os.environ.get("MIMIC_CACHE_DIR") or Path.home() / ".cache" / "mimic")


def unwritable_cache(folder: Path, err: OSError):
    """The one line (a :class:`~mimic.errors.WeightsError`: the machine's setup, not the job's input)
    for a cache folder that cannot be written: read-only, missing mount, a file in its path."""
    from mimic.errors import WeightsError

    named = "MIMIC_CACHE_DIR" if os.environ.get("MIMIC_CACHE_DIR") and Path(folder) == cache_root() else "the cache folder"
    return WeightsError(f"{named} {folder} is not writable ({err.strerror or err}): set MIMIC_CACHE_DIR to a writable folder")


def tiny_layout(root: Path) -> WeightsLayout:
    return WeightsLayout(svd=str(root / SVD_SUBDIR), checkpoint=root / CHECKPOINT_NAMES[0], det_model=root / DET_MODEL, pose_model=root / POSE_MODEL)


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _fp16(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to(torch.float16).contiguous() for k, v in state.items()}


def write_tiny_weights(root: Path, seed: int = SEED) -> WeightsLayout:
    """Write the whole tiny weight set into ``root`` (deterministic for a seed)."""
    from diffusers import AutoencoderKLTemporalDecoder
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from mimic.model.tiny_dwpose import write_tiny_dwpose
    from mimic.model.pose_net import PoseNet
    from mimic.model.unet import PoseUNet

    svd = root / SVD_SUBDIR
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = PoseUNet.from_config(UNET_CONFIG)
        pose_net = PoseNet(noise_latent_channels=UNET_CONFIG["block_out_channels"][0])
        # Released init zeroes the projection (pose is a no-op); tiny weights make the pose matter.
        torch.nn.init.normal_(pose_net.final_proj.weight, std=0.05)
        vae = AutoencoderKLTemporalDecoder.from_config(VAE_CONFIG)
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig.from_dict(CLIP_CONFIG))

    _write_json(svd / "model_index.json", MODEL_INDEX)
    _write_json(svd / "unet" / "config.json", UNET_CONFIG)
    _write_json(svd / "vae" / "config.json", VAE_CONFIG)
    _write_json(svd / "image_encoder" / "config.json", CLIP_CONFIG)
    _write_json(svd / "scheduler" / "scheduler_config.json", SCHEDULER_CONFIG)
    _write_json(svd / "feature_extractor" / "preprocessor_config.json", FEATURE_EXTRACTOR_CONFIG)
    save_file(_fp16(vae.state_dict()), str(svd / "vae" / "diffusion_pytorch_model.fp16.safetensors"))
    save_file(_fp16(clip.state_dict()), str(svd / "image_encoder" / "model.fp16.safetensors"))
    ckpt = {f"unet.{k}": v for k, v in _fp16(unet.state_dict()).items()}
    ckpt.update({f"pose_net.{k}": v for k, v in _fp16(pose_net.state_dict()).items()})
    torch.save(ckpt, str(root / CHECKPOINT_NAMES[0]))
    (root / DET_MODEL).parent.mkdir(parents=True, exist_ok=True)
    write_tiny_dwpose(root / DET_MODEL.parent)
    return tiny_layout(root)


def ensure_tiny_weights(cache_dir: Path | None = None) -> WeightsLayout:
    """The tiny weight set, generated once into ``<cache>/tiny-v1``."""
    base = Path(cache_dir) if cache_dir is not None else cache_root()
    return tiny_layout(_published(base, TINY_VERSION, write_tiny_weights))


def ensure_tiny_dwpose() -> tuple[Path, Path]:
    """The tiny preset's two DWPose files alone (the toy preset's), written once into ``<cache>/tiny-dwpose-v1``."""
    from mimic.model.tiny_dwpose import write_tiny_dwpose

    root = _published(cache_root(), "tiny-dwpose-v1", lambda tmp: write_tiny_dwpose(tmp / DET_MODEL.parent))
    return root / DET_MODEL, root / POSE_MODEL


def _published(base: Path, version: str, write) -> Path:
    """``base/version``, written by ``write(folder)`` on first use, atomically (temp dir + rename)
    so concurrent processes never see half a weight set."""
    root = base / version
    if (root / ".complete").is_file():
        return root
    try:
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=base))
    except OSError as err:
        raise unwritable_cache(base, err) from None
    try:
        write(tmp)
        (tmp / ".complete").write_text(version + "\n")
        try:
            os.rename(tmp, root)
        except OSError:  # another process published it first
            if not (root / ".complete").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
