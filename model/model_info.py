"""What the runtime, export and engines must know about a model besides its weights: read from the
SVD folder's config files (so ONNX and TensorRT backends need no PyTorch weights), saved beside
exports. The one model-dimension reader: every key it needs must be present (WeightsError otherwise)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from mimic.errors import WeightsError
from mimic.files import atomic_write_text
from mimic.model.scheduler import SchedulerConfig
from mimic.model.weights import read_json
from mimic.spec import ModelDims

MODEL_INFO_FILE = "model_info.json"


@dataclass(frozen=True)
class ModelInfo:
    latent_channels: int
    pose_channels: int  # UNet block_out_channels[0]: PoseNet's output width
    embed_dim: int  # CLIP projection_dim = UNet cross_attention_dim
    scaling_factor: float
    clip_mean: tuple[float, float, float]
    clip_std: tuple[float, float, float]
    sigma_min: float
    sigma_max: float
    clip_image_size: int = 224
    cache_channels: int = 0  # UNet block_out_channels[1]: the deep feature cached at depth 1 (0: an older model_info.json)

    @property
    def dims(self) -> ModelDims:
        """The sizes the stage shapes need (mimic.spec symbols D, C0, L, S, C1)."""
        return ModelDims(embed_dim=self.embed_dim, pose_channels=self.pose_channels, latent_channels=self.latent_channels,
                         clip_image_size=self.clip_image_size, cache_channels=self.cache_channels)

    @property
    def scheduler(self) -> SchedulerConfig:
        return SchedulerConfig(sigma_min=self.sigma_min, sigma_max=self.sigma_max)

    @classmethod
    def from_svd_dir(cls, svd_dir: Path) -> "ModelInfo":
        svd_dir = Path(svd_dir)
        unet = read_json(svd_dir / "unet" / "config.json")
        vae = read_json(svd_dir / "vae" / "config.json")
        fe = read_json(svd_dir / "feature_extractor" / "preprocessor_config.json")
        clip = read_json(svd_dir / "image_encoder" / "config.json")
        sched = SchedulerConfig.from_json_dict(read_json(svd_dir / "scheduler" / "scheduler_config.json"))
        try:
            return cls(
                latent_channels=int(vae.get("latent_channels", 4)),
                pose_channels=int(unet["block_out_channels"][0]),
                embed_dim=int(unet["cross_attention_dim"]),
                scaling_factor=float(vae.get("scaling_factor", 0.18215)),
                clip_mean=tuple(float(v) for v in fe["image_mean"]),
                clip_std=tuple(float(v) for v in fe["image_std"]),
                sigma_min=sched.sigma_min,
                sigma_max=sched.sigma_max,
                clip_image_size=int(clip.get("image_size", 224)),  # transformers' CLIPVisionConfig default
                cache_channels=int(unet["block_out_channels"][1]),
            )
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise WeightsError(f"incomplete config in {svd_dir}: {err}") from None

    @classmethod
    def from_models(cls, models) -> "ModelInfo":
        return cls(
            latent_channels=int(models.vae.config.latent_channels),
            pose_channels=int(models.unet.config.block_out_channels[0]),
            embed_dim=int(models.unet.config.cross_attention_dim),
            scaling_factor=models.scaling_factor,
            clip_mean=tuple(models.clip_mean),
            clip_std=tuple(models.clip_std),
            sigma_min=models.scheduler.sigma_min,
            sigma_max=models.scheduler.sigma_max,
            clip_image_size=int(models.image_encoder.config.image_size),
            cache_channels=int(models.unet.config.block_out_channels[1]),
        )

    def save(self, folder: Path) -> Path:
        path = Path(folder) / MODEL_INFO_FILE
        atomic_write_text(path, json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: Path) -> "ModelInfo":
        data = read_json(Path(folder) / MODEL_INFO_FILE)
        try:
            data["clip_mean"], data["clip_std"] = tuple(data["clip_mean"]), tuple(data["clip_std"])
            return cls(**data)
        except (KeyError, TypeError) as err:
            raise WeightsError(f"{Path(folder) / MODEL_INFO_FILE} is not a model info file: {err}") from None
