"""Build the reference modules from a :class:`WeightsLayout`, strictly and without random init.

Modules are constructed on the meta device from the configs found in the SVD folder and the
checkpoint tensors are assigned in place, so loading the 1.5 B-parameter UNet costs no random
initialisation and no second copy in RAM.
"""
from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKLTemporalDecoder
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from mimic.errors import WeightsError
from mimic.model.models import RefModels
from mimic.model.pose_net import PoseNet
from mimic.model.scheduler import SchedulerConfig
from mimic.model.unet import PoseUNet
from mimic.model.weights import (
    WeightsLayout,
    fetch_svd,
    find_weights_file,
    load_checkpoint,
    load_safetensors,
    load_strict,
    read_json,
)

SVD_SUBFOLDERS = ("unet", "vae", "image_encoder", "scheduler", "feature_extractor")


def check_svd_folder(svd_dir: Path) -> None:
    missing = [s for s in SVD_SUBFOLDERS if not (svd_dir / s).is_dir()]
    if missing:
        raise WeightsError(f"SVD folder {svd_dir} lacks subfolder(s) {', '.join(missing)} (expected the diffusers layout of {SVD_SUBFOLDERS})")


def unet_from_config(config: dict) -> PoseUNet:
    try:
        with torch.device("meta"):
            return PoseUNet.from_config(config)
    except (TypeError, ValueError, KeyError) as err:
        raise WeightsError(f"unet/config.json is not a UNetSpatioTemporalConditionModel config: {err}") from None


def _assign(module: torch.nn.Module, state: dict, what: str, prefix: str = "") -> None:
    load_strict(module, state, what, prefix, assign=True)  # meta tensors become the loaded ones


def load_unet_and_posenet(unet_config: dict, checkpoint: Path) -> tuple[PoseUNet, PoseNet]:
    unet = unet_from_config(unet_config)
    unet_state, pose_state = load_checkpoint(checkpoint)
    _assign(unet, unet_state, f"checkpoint {Path(checkpoint).name} (UNet part)", "unet.")
    with torch.device("meta"):
        pose_net = PoseNet(noise_latent_channels=unet.config.block_out_channels[0])
    _assign(pose_net, pose_state, f"checkpoint {Path(checkpoint).name} (PoseNet part)", "pose_net.")
    return unet, pose_net


def load_vae(svd_dir: Path) -> AutoencoderKLTemporalDecoder:
    cfg = read_json(svd_dir / "vae" / "config.json")
    with torch.device("meta"):
        vae = AutoencoderKLTemporalDecoder.from_config(cfg)
    _assign(vae, load_safetensors(find_weights_file(svd_dir / "vae", ("diffusion_pytorch_model",))), "vae weights")
    return vae


def load_image_encoder(svd_dir: Path) -> CLIPVisionModelWithProjection:
    cfg = CLIPVisionConfig.from_dict(read_json(svd_dir / "image_encoder" / "config.json"))
    with torch.device("meta"):
        enc = CLIPVisionModelWithProjection(cfg)
    state = load_safetensors(find_weights_file(svd_dir / "image_encoder", ("model",)))
    state.pop("vision_model.embeddings.position_ids", None)  # a buffer older transformers saved
    _assign(enc, state, "image_encoder weights")
    emb = enc.vision_model.embeddings
    emb.register_buffer("position_ids", torch.arange(emb.num_positions).expand((1, -1)), persistent=False)
    return enc


def load_clip_normalisation(svd_dir: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    cfg = read_json(svd_dir / "feature_extractor" / "preprocessor_config.json")
    try:
        return tuple(float(v) for v in cfg["image_mean"]), tuple(float(v) for v in cfg["image_std"])
    except (KeyError, TypeError, ValueError):
        raise WeightsError("feature_extractor/preprocessor_config.json lacks image_mean/image_std") from None


def load_reference_models(layout: WeightsLayout, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> RefModels:
    """Everything the reference pipeline needs, on ``device`` in ``dtype``."""
    svd_dir = fetch_svd(layout.svd)
    check_svd_folder(svd_dir)
    unet, pose_net = load_unet_and_posenet(read_json(svd_dir / "unet" / "config.json"), layout.checkpoint)
    vae = load_vae(svd_dir)
    image_encoder = load_image_encoder(svd_dir)
    if unet.config.cross_attention_dim != image_encoder.config.projection_dim:
        raise WeightsError(
            f"unet cross_attention_dim {unet.config.cross_attention_dim} != image encoder projection_dim "
            f"{image_encoder.config.projection_dim}: the SVD folder and the checkpoint do not belong together"
        )
    mean, std = load_clip_normalisation(svd_dir)
    scheduler = SchedulerConfig.from_json_dict(read_json(svd_dir / "scheduler" / "scheduler_config.json"))
    models = RefModels(unet=unet, pose_net=pose_net, vae=vae, image_encoder=image_encoder, scheduler=scheduler, clip_mean=mean, clip_std=std)
    return models.to(device, dtype)
