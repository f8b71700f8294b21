"""Analytic FLOP model of every stage, counted by torch itself on the meta device.

Each component is built from its config on ``torch.device("meta")`` (shapes only: no weights, no
memory, no arithmetic) and run once under :class:`torch.utils.flop_counter.FlopCounterMode`, which
counts matmuls, convolutions and attention as 2 FLOPs per multiply-add. Elementwise work (norms,
activations, softmax) is not counted: the numbers are the dense tensor-core work a GPU must do.

Counts are exact for the given shapes (no extrapolation) and cached per (component config, shape),
so a whole-job estimate costs a few meta-device forwards (about a second each for the real UNet).

At 576x1024 the real SVD-XT 1.1 configuration gives (acceleration spec section 8): UNet 3.20 TFLOP
per frame per pass, VAE decoder 6.94 TFLOP per frame, VAE encoder 2.61, CLIP 0.335.
"""
from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import torch
from mimic.spec import StageName as S

# --- the real SVD-xt-1-1 + MimicMotion 1.1 configurations (mimicmotion spec section 2.2) ---------
# The one place they are written down; with real weights they are read from the SVD folder instead.
REAL_UNET_CONFIG = MappingProxyType(
    {
        "_class_name": "UNetSpatioTemporalConditionModel",
        "in_channels": 8,
        "out_channels": 4,
        "block_out_channels": [320, 640, 1280, 1280],
        "down_block_types": ["CrossAttnDownBlockSpatioTemporal"] * 3 + ["DownBlockSpatioTemporal"],
        "up_block_types": ["UpBlockSpatioTemporal"] + ["CrossAttnUpBlockSpatioTemporal"] * 3,
        "layers_per_block": 2,
        "transformer_layers_per_block": 1,
        "num_attention_heads": [5, 10, 20, 20],
        "cross_attention_dim": 1024,
        "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 768,
        "num_frames": 25,
        "sample_size": 96,
    }
)
REAL_VAE_CONFIG = MappingProxyType(
    {
        "_class_name": "AutoencoderKLTemporalDecoder",
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "block_out_channels": [128, 256, 512, 512],
        "layers_per_block": 2,
        "latent_channels": 4,
        "sample_size": 768,
        "scaling_factor": 0.18215,
        "force_upcast": True,
    }
)
# OpenCLIP ViT-H/14 vision tower in Hugging Face form.
REAL_CLIP_CONFIG = MappingProxyType(
    {
        "model_type": "clip_vision_model",
        "hidden_size": 1280,
        "intermediate_size": 5120,
        "num_hidden_layers": 32,
        "num_attention_heads": 16,
        "patch_size": 14,
        "image_size": 224,
        "projection_dim": 1024,
        "num_channels": 3,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
    }
)

TFLOP = 1e12


def _frozen(cfg: Mapping) -> str:
    """A hashable, order-independent key for a config dict (private ``_`` keys dropped)."""
    return json.dumps({k: v for k, v in dict(cfg).items() if not k.startswith("_")}, sort_keys=True, default=list)


@dataclass(frozen=True)
class ModelConfigs:
    """The three config dicts the FLOP model needs (PoseNet's width is the UNet's first block)."""

    unet: str  # canonical JSON (hashable, so results can be cached per config)
    vae: str
    clip: str
    name: str = "custom"

    @classmethod
    def from_dicts(cls, unet: Mapping, vae: Mapping, clip: Mapping, name: str = "custom") -> "ModelConfigs":
        return cls(_frozen(unet), _frozen(vae), _frozen(clip), name)

    @classmethod
    def real(cls) -> "ModelConfigs":
        return cls.from_dicts(REAL_UNET_CONFIG, REAL_VAE_CONFIG, REAL_CLIP_CONFIG, "real")

    @classmethod
    def tiny(cls) -> "ModelConfigs":
        from mimic.model import tiny

        return cls.from_dicts(tiny.UNET_CONFIG, tiny.VAE_CONFIG, tiny.CLIP_CONFIG, "tiny")

    @classmethod
    def from_svd_dir(cls, svd_dir: str | Path, name: str | None = None) -> "ModelConfigs":
        """Read ``unet/``, ``vae/`` and ``image_encoder/config.json`` of a diffusers SVD folder."""
        svd_dir = Path(svd_dir)

        def read(sub: str) -> dict:
            return json.loads((svd_dir / sub / "config.json").read_text())

        unet = read(S.UNET)
        if name is None:
            name = "real" if int(unet.get("block_out_channels", [320])[0]) >= 320 else "tiny"
        return cls.from_dicts(unet, read("vae"), read(S.IMAGE_ENCODER), name)

    def dict(self, which: str) -> dict:
        return json.loads(getattr(self, which))

    @property
    def pose_channels(self) -> int:
        return int(self.dict(S.UNET)["block_out_channels"][0])


# ------------------------------------------------------------------------------ meta-device models
@functools.lru_cache(maxsize=8)
def _meta_model(kind: str, config_json: str) -> torch.nn.Module:
    cfg = json.loads(config_json)
    with torch.device("meta"):
        if kind == S.UNET:
            from mimic.model.unet import PoseUNet

            model = PoseUNet.from_config(cfg)
        elif kind == "vae":
            from diffusers import AutoencoderKLTemporalDecoder

            model = AutoencoderKLTemporalDecoder.from_config(cfg)
        elif kind == "clip":
            from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

            model = CLIPVisionModelWithProjection(CLIPVisionConfig.from_dict(cfg))
        elif kind == S.POSE_NET:
            from mimic.model.pose_net import PoseNet

            model = PoseNet(noise_latent_channels=int(cfg["channels"]))
        else:  # pragma: no cover - programming error
            raise ValueError(kind)
    # Legacy constructors (torch.Tensor([...]) in diffusers' AlphaBlender) ignore the device context.
    return model.to("meta").eval()


def _count(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.device("meta"), counter, torch.no_grad():
        fn()
    return int(counter.get_total_flops())


def _latent(height: int, width: int) -> tuple[int, int]:
    if height % 8 or width % 8:
        raise ValueError(f"height and width must be multiples of 8, got {height}x{width}")
    return height // 8, width // 8


@functools.lru_cache(maxsize=256)
def _unet(config_json: str, frames: int, height: int, width: int, batch: int) -> int:
    cfg = json.loads(config_json)
    model = _meta_model(S.UNET, config_json)
    h, w = _latent(height, width)
    c0, d = int(cfg["block_out_channels"][0]), int(cfg["cross_attention_dim"])

    def run():
        model(
            torch.empty(batch, frames, int(cfg.get("in_channels", 8)), h, w),
            torch.zeros(batch),
            torch.empty(batch, 1, d),
            torch.zeros(batch, 3),
            pose_latents=torch.empty(batch * frames, c0, h, w),
        )

    return _count(run)


@functools.lru_cache(maxsize=256)
def _vae_decoder(config_json: str, frames: int, height: int, width: int) -> int:
    cfg = json.loads(config_json)
    model = _meta_model("vae", config_json)
    h, w = _latent(height, width)
    return _count(lambda: model.decode(torch.empty(frames, int(cfg.get("latent_channels", 4)), h, w), num_frames=frames))


@functools.lru_cache(maxsize=64)
def _vae_encoder(config_json: str, height: int, width: int, batch: int) -> int:
    cfg = json.loads(config_json)
    model = _meta_model("vae", config_json)
    return _count(lambda: model.encode(torch.empty(batch, int(cfg.get("in_channels", 3)), height, width)).latent_dist.mode())


@functools.lru_cache(maxsize=16)
def _clip(config_json: str, batch: int) -> int:
    cfg = json.loads(config_json)
    model = _meta_model("clip", config_json)
    size = int(cfg.get("image_size", 224))
    return _count(lambda: model(torch.empty(batch, int(cfg.get("num_channels", 3)), size, size)).image_embeds)


@functools.lru_cache(maxsize=64)
def _pose_net(channels: int, frames: int, height: int, width: int) -> int:
    model = _meta_model(S.POSE_NET, json.dumps({"channels": channels}))
    return _count(lambda: model(torch.empty(frames, 3, height, width)))


# ---------------------------------------------------------------------------------- per stage API
def unet_flops(configs: ModelConfigs, frames: int, height: int, width: int, batch: int = 1) -> int:
    """One UNet call on ``batch`` videos of ``frames`` frames at ``height`` x ``width`` pixels."""
    return _unet(configs.unet, int(frames), int(height), int(width), int(batch))


def unet_flops_per_frame(configs: ModelConfigs, height: int = 576, width: int = 1024, frames: int = 16) -> float:
    """UNet FLOPs per frame per pass (batch 1), counted on a ``frames``-frame window."""
    return unet_flops(configs, frames, height, width, 1) / frames


def vae_decoder_flops(configs: ModelConfigs, frames: int, height: int, width: int) -> int:
    """Temporal decoder over ``frames`` latents (one chunk) to ``height`` x ``width`` pixels."""
    return _vae_decoder(configs.vae, int(frames), int(height), int(width))


def vae_encoder_flops(configs: ModelConfigs, height: int, width: int, batch: int = 1) -> int:
    return _vae_encoder(configs.vae, int(height), int(width), int(batch))


def clip_flops(configs: ModelConfigs, batch: int = 1) -> int:
    return _clip(configs.clip, int(batch))


def pose_net_flops(configs: ModelConfigs, frames: int, height: int, width: int) -> int:
    return _pose_net(configs.pose_channels, int(frames), int(height), int(width))


def stage_flops(stage: str, point: Mapping[str, int], configs: ModelConfigs) -> int:
    """FLOPs of one backend call of ``stage`` at an ``export.specs`` shape point (B/F/N/H/W)."""
    if stage == S.UNET:
        return unet_flops(configs, point["F"], point["H"], point["W"], point.get("B", 1))
    if stage == S.VAE_DECODER:
        return vae_decoder_flops(configs, point["N"], point["H"], point["W"])
    if stage == S.VAE_ENCODER:
        return vae_encoder_flops(configs, point["H"], point["W"], point.get("B", 1))
    if stage == S.IMAGE_ENCODER:
        return clip_flops(configs, point.get("B", 1))
    if stage == S.POSE_NET:
        return pose_net_flops(configs, point["N"], point["H"], point["W"])
    raise ValueError(f"no FLOP model for stage {stage!r}")


# ---------------------------------------------------------------------------------- whole job
@dataclass(frozen=True)
class JobFlops:
    """The work of one job: stage totals (FLOPs) and the counts they come from."""

    output_frames: int  # N driving/output frames
    frames: int  # F = reference slot + N, padded to at least one window
    height: int
    width: int
    window: int
    overlap: int
    steps: int
    windows: int
    unet_passes: int  # batch-1 UNet passes (2 per window per step with CFG)
    pose_net_calls: int
    stages: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return int(sum(self.stages.values()))

    def floor_seconds(self, tflops: float) -> float:
        """The time the job needs at a dense matrix rate of ``tflops`` TFLOP/s (no overheads)."""
        return self.total / (tflops * TFLOP)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["total"] = self.total
        return d


def job_frames(num_output_frames: int, window: int) -> int:
    """F: the reference slot plus the output frames, padded to one window (as the runtime pads)."""
    return max(int(num_output_frames) + 1, int(window))


def job_flops(
    config,
    num_output_frames: int,
    height: int = 576,
    width: int = 1024,
    configs: ModelConfigs | None = None,
    pose_net_every_step: bool = False,
) -> JobFlops:
    """The whole job for a :class:`GenerationConfig` (window, overlap, steps used).

    Work counted: steps x windows x CFG pair (two batch-1 UNet passes, or one batch-2 call: the same
    FLOPs) + PoseNet per window (the runtime caches it across steps; ``pose_net_every_step=True`` is
    the released loop) + temporal decode of every frame (reference slot included) + the VAE encoder
    and CLIP on the reference. ``configs`` defaults to the real SVD-XT 1.1 configuration.
    """
    from mimic.model.windows import window_indices

    configs = configs or ModelConfigs.real()
    frames = job_frames(num_output_frames, config.window)
    windows = len(window_indices(frames, config.window, config.overlap))
    passes = 2 * config.steps * windows
    pose_calls = windows * (config.steps if pose_net_every_step else 1)
    per_pass = unet_flops(configs, config.window, height, width, 1)
    chunk = max(1, min(int(config.decode_chunk), frames))
    full, rest = divmod(frames, chunk)
    decode = full * vae_decoder_flops(configs, chunk, height, width) + (vae_decoder_flops(configs, rest, height, width) if rest else 0)
    stages = {
        S.IMAGE_ENCODER: clip_flops(configs, 1),
        S.VAE_ENCODER: vae_encoder_flops(configs, height, width, 1),
        S.POSE_NET: pose_calls * pose_net_flops(configs, config.window, height, width),
        S.UNET: passes * per_pass,
        S.VAE_DECODER: decode,
    }
    return JobFlops(
        output_frames=int(num_output_frames), frames=frames, height=int(height), width=int(width), window=int(config.window),
        overlap=int(config.overlap), steps=int(config.steps), windows=windows, unet_passes=passes, pose_net_calls=pose_calls, stages=stages,
    )
