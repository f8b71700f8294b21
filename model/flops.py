"""Analytic FLOP model of every stage, counted by torch itself on the meta device.

Each component is built from its config on ``torch.device("meta")`` (shapes only: no weights, no
memory, no arithmetic) and run once under :class:`torch.utils.flop_counter.FlopCounterMode`, which
counts matmuls, convolutions and attention as 2 FLOPs per multiply-add. Elementwise work (norms,
activations, softmax) is not counted: the numbers are the dense tensor-core work a GPU must do.

Counts are exact for the given shapes (no extrapolation) and cached per (component config, shape).
Measured on the 2-core CPU machine (torch 2.13, diffusers 0.42): one UNet count of the tiny or toy
preset at its default shape takes about 0.4 s (the first count in a process also imports diffusers,
about 3 s more); the real UNet at 72x576x1024 takes about 1.7 s (1.3 s once its meta model is built).
The real UNet's batch-1 72-frame 576x1024 count, which every run report needs for its 576x1024
figure, is pinned (``PINNED_UNET_FLOPS``, checked against a fresh count by the tests), so a run pays
only for its own model's count.

At 576x1024 the real SVD-XT 1.1 configuration gives (acceleration spec section 8): UNet 3.20 TFLOP
per frame per pass, VAE decoder 6.94 TFLOP per frame, VAE encoder 2.61, CLIP 0.335.

This module is the run's FLOP model (``mimic.runtime`` puts UNet TFLOP per output frame into every
run report); ``mimic.benchmarks.flops`` re-exports it and adds the whole-job estimate.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
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
# The reference frame of the hardware-independent speed figure: the released model's frame size and window.
REFERENCE_HEIGHT, REFERENCE_WIDTH, REFERENCE_WINDOW = 576, 1024, 72


def frozen_config(cfg: Mapping) -> str:
    """A hashable, order-independent key for a config dict (private ``_`` keys dropped)."""
    return json.dumps({k: v for k, v in dict(cfg).items() if not k.startswith("_")}, sort_keys=True, default=list)


REAL_UNET_KEY = frozen_config(REAL_UNET_CONFIG)
# Meta-device counts pinned so that a run does not pay for them (``unet_flops`` returns them without
# counting): (UNet config key, frames, height, width, batch) -> FLOPs. Each is checked against a
# fresh count in tests/test_bench_flops.py (a change of torch's counter or of the UNet code shows there).
# A fifth key item > 0 is a cached step's shallow pass at that depth (deep-feature caching).
PINNED_UNET_FLOPS: Mapping[tuple, int] = MappingProxyType({
    (REAL_UNET_KEY, REFERENCE_WINDOW, REFERENCE_HEIGHT, REFERENCE_WIDTH, 1): 230_402_545_582_080,
    (REAL_UNET_KEY, REFERENCE_WINDOW, REFERENCE_HEIGHT, REFERENCE_WIDTH, 1, 1): 95_684_891_934_720,
    (REAL_UNET_KEY, REFERENCE_WINDOW, REFERENCE_HEIGHT, REFERENCE_WIDTH, 1, 2): 160_868_701_470_720,
    (REAL_UNET_KEY, REFERENCE_WINDOW, REFERENCE_HEIGHT, REFERENCE_WIDTH, 1, 3): 220_328_387_051_520,
})


@dataclass(frozen=True)
class ModelConfigs:
    """The three config dicts the FLOP model needs (PoseNet's width is the UNet's first block)."""

    unet: str  # canonical JSON (hashable, so results can be cached per config)
    vae: str
    clip: str
    name: str = "custom"

    @classmethod
    def from_dicts(cls, unet: Mapping, vae: Mapping, clip: Mapping, name: str = "custom") -> "ModelConfigs":
        return cls(frozen_config(unet), frozen_config(vae), frozen_config(clip), name)

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


def count_unet_flops(config_json: str, frames: int, height: int, width: int, batch: int) -> int:
    """One fresh meta-device count of a UNet call (no cache, no pin: what the pins are checked against)."""
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


def count_unet_shallow_flops(config_json: str, frames: int, height: int, width: int, batch: int, depth: int) -> int:
    """One fresh meta-device count of a cached step's shallow UNet pass at ``depth`` (deep-feature
    caching: only the blocks that run around the cached feature)."""
    from mimic.model.unet import feature_channels, feature_scale

    cfg = json.loads(config_json)
    model = _meta_model(S.UNET, config_json)
    h, w = _latent(height, width)
    c0, d = int(cfg["block_out_channels"][0]), int(cfg["cross_attention_dim"])
    c, scale = feature_channels(cfg["block_out_channels"], depth), feature_scale(depth)

    def run():
        model.forward_shallow(
            torch.empty(batch, frames, int(cfg.get("in_channels", 8)), h, w),
            torch.zeros(batch),
            torch.empty(batch, 1, d),
            torch.zeros(batch, 3),
            torch.empty(batch * frames, c0, h, w),
            torch.empty(batch * frames, c, h // scale, w // scale),
            depth,
        )

    return _count(run)


@functools.lru_cache(maxsize=256)
def _unet(config_json: str, frames: int, height: int, width: int, batch: int, depth: int = 0) -> int:
    """A full pass (``depth`` 0) or a cached step's shallow pass at ``depth``."""
    pinned = PINNED_UNET_FLOPS.get((config_json, frames, height, width, batch) + ((depth,) if depth else ()))
    if pinned is not None:
        return pinned
    if depth:
        return count_unet_shallow_flops(config_json, frames, height, width, batch, depth)
    return count_unet_flops(config_json, frames, height, width, batch)


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


# ------------------------------------------------------------------ the UNet work of a run (reports)
def unet_call_flops(unet_config: str | Mapping, frames: int, height: int, width: int, batch: int = 1, depth: int = 0) -> int:
    """One UNet call of ``batch`` x ``frames`` frames at ``height`` x ``width`` px for a UNet config
    (a dict or its ``frozen_config`` key): the batch-1 count (cached) times ``batch``. Exact: the
    UNet's FLOPs are linear in the batch (a batch-2 CFG pair counts exactly twice a batch-1 pass;
    tests/test_bench_flops.py), so one count per (config, frames, height, width) serves both.
    ``depth`` > 0: a cached step's shallow pass at that depth (only the blocks it runs)."""
    key = unet_config if isinstance(unet_config, str) else frozen_config(unet_config)
    return int(batch) * _unet(key, int(frames), int(height), int(width), 1, int(depth))


def _call(key: tuple[int, ...]) -> tuple[int, int, int]:
    """A ``calls`` key, (frames, batch) for a full pass or (frames, batch, depth) for a shallow
    pass -> (frames, batch, depth) with depth 0 for a full pass."""
    frames, batch, *rest = key
    return int(frames), int(batch), int(rest[0]) if rest else 0


def reference_frame_pass_flops(depth: int = 0) -> float:
    """The real SVD-XT 1.1 UNet's FLOPs for one frame of one pass at 576x1024, counted on a 72-frame
    batch-1 window and divided by 72 (3.20 TFLOP; ``depth`` > 0: a cached step's shallow pass at that
    depth, 1.33 TFLOP at depth 1, 41.5 % of a full pass: the outermost level holds the attention over
    the most tokens)."""
    return _unet(REAL_UNET_KEY, REFERENCE_WINDOW, REFERENCE_HEIGHT, REFERENCE_WIDTH, 1, depth) / REFERENCE_WINDOW


def unet_work_flops(unet_config: str | Mapping, calls: Mapping[tuple[int, ...], int], height: int, width: int) -> int:
    """The UNet FLOPs of a sequence of calls: ``calls`` maps (frames, batch) -> number of full passes
    and (frames, batch, depth) -> number of cached steps' shallow passes, all at ``height`` x ``width`` px."""
    total = 0
    for key, n in calls.items():
        frames, batch, depth = _call(key)
        total += n * unet_call_flops(unet_config, frames, height, width, batch, depth) if n else 0
    return total


def unet_work_flops_576x1024(calls: Mapping[tuple[int, ...], int]) -> float:
    """The same sequence of calls with every frame costed as a frame of the released model at the
    released size: the hardware- and model-independent part of a job's speed.

    Scaling: each call runs ``batch x frames`` frame-passes (a CFG pair of a 72-frame window: 144);
    each frame-pass is costed as one frame of one pass of the real SVD-XT 1.1 UNet at 576x1024 in a
    72-frame window (``reference_frame_pass_flops``, 3.20 TFLOP). Exact in the batch; in the frames
    the real UNet's count per frame differs by under 0.01 % between 16- and 72-frame windows
    (temporal attention is negligible), and the job's own frame size and model do not enter at all.
    So the figure keeps everything the job's settings decide (steps run, CFG pair or conditional half
    per step, windows and their overlap, the reference slot every window carries, a short clip's
    padding) and answers "what would these passes cost the released model at 576x1024". For a job
    of the real model at 576x1024 with 72-frame windows it equals the job's own figure."""
    total = 0.0
    for key, n in calls.items():
        frames, batch, depth = _call(key)
        total += n * frames * batch * reference_frame_pass_flops(depth)
    return total


# A run knows its SVD folder's UNet config when it is given one (``Components.unet_config``); else
# it is identified from the model info among the configurations this project knows (MimicMotion
# always runs on SVD-xt's UNet config; the tiny and toy presets have their own).
def known_unet_configs() -> dict[str, Mapping]:
    """Name -> UNet config of the configurations known here: real (SVD-xt 1.1), tiny, toy (read from
    the committed toy weights, when present)."""
    from mimic.model import tiny
    from mimic.model.presets import TOY_WEIGHTS_DIR

    known: dict[str, Mapping] = {"real": REAL_UNET_CONFIG, "tiny": tiny.UNET_CONFIG}
    for path in sorted(Path(TOY_WEIGHTS_DIR).glob("SVD/*/unet/config.json")):
        try:
            known["toy"] = json.loads(path.read_text())
        except (OSError, ValueError):  # pragma: no cover - a damaged toy folder: no toy figure
            pass
        break
    return known


def identify_unet_config(pose_channels: int, embed_dim: int) -> str | None:
    """The ``frozen_config`` key of the known UNet config with this first-block width (PoseNet's
    output width) and cross-attention width, or None when none or several match."""
    found = [frozen_config(cfg) for cfg in known_unet_configs().values()
             if int(cfg["block_out_channels"][0]) == int(pose_channels) and int(cfg["cross_attention_dim"]) == int(embed_dim)]
    return found[0] if len(set(found)) == 1 else None
