"""Write trained toy modules in exactly the released file formats (the layout ``tiny.py`` documents):
a diffusers SVD folder (configs + fp16 safetensors) and ``MimicMotion_1-1.pth``, a flat fp16 state dict
with ``unet.`` and ``pose_net.`` keys. DWPose is not part of it: the toy preset borrows the tiny
preset's detector files (the demo gives the puppet's poses directly)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from mimic.model.weights import CHECKPOINT_NAMES, SVD_SUBDIR
from mimic.toy import configs as C


def _json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _half(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to(torch.float16).contiguous() for k, v in module.state_dict().items()}


def write_toy_weights(root: Path, *, unet, pose_net, vae, clip, scaling_factor: float) -> Path:
    """Write every file of the toy weight set under ``root``; returns ``root``."""
    root = Path(root)
    svd = root / SVD_SUBDIR
    _json(svd / "model_index.json", C.TOY_MODEL_INDEX)
    _json(svd / "unet" / "config.json", C.TOY_UNET_CONFIG)
    _json(svd / "vae" / "config.json", {**C.TOY_VAE_CONFIG, "scaling_factor": float(scaling_factor)})
    _json(svd / "image_encoder" / "config.json", C.TOY_CLIP_CONFIG)
    _json(svd / "scheduler" / "scheduler_config.json", C.TOY_SCHEDULER_CONFIG)
    _json(svd / "feature_extractor" / "preprocessor_config.json", C.TOY_FEATURE_EXTRACTOR_CONFIG)
    save_file(_half(vae), str(svd / "vae" / "diffusion_pytorch_model.fp16.safetensors"))
    save_file(_half(clip), str(svd / "image_encoder" / "model.fp16.safetensors"))
    ckpt = {f"unet.{k}": v for k, v in _half(unet).items()}
    ckpt.update({f"pose_net.{k}": v for k, v in _half(pose_net).items()})
    torch.save(ckpt, str(root / CHECKPOINT_NAMES[0]))
    return root


def total_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())
