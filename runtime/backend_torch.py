"""The ``torch`` backend: the reference modules behind the stage interface (CPU or CUDA; fp16 on
CUDA, with PyTorch's SDPA attention, which diffusers uses by default)."""
from __future__ import annotations

import torch

from mimic.errors import InputError
from mimic.model.models import RefModels
from mimic.runtime.determinism import set_cuda_numerics
from mimic.spec import GRAPH_CACHE_DEPTH
from mimic.spec import StageName as S
from mimic.spec import TensorName as N


class TorchBackend:
    """``deterministic``: the job(s) promise bit identity across processes or devices (several
    devices, or checkpoints that a later process may resume): cuDNN autotuning off. Otherwise each
    stage runs at a few fixed shapes per job (one window, one decode chunk), so cuDNN may time its
    Conv3d/Conv2d algorithms once per shape and keep the fastest. A process that already promised
    stays deterministic (``mimic.runtime.determinism``)."""

    name = "torch"

    def __init__(self, models: RefModels, deterministic: bool = False):
        self.models = models
        self.device = models.device
        self.dtype = models.dtype
        if self.device.type == "cuda":
            set_cuda_numerics(deterministic or torch.backends.cudnn.deterministic)

    def _stream_ctx(self, stream):
        return torch.cuda.stream(stream) if stream is not None else _null()

    @torch.inference_mode()
    def run(self, stage: str, feeds: dict[str, torch.Tensor], stream=None) -> dict[str, torch.Tensor]:
        m, dt = self.models, self.dtype
        with self._stream_ctx(stream):
            if stage == S.IMAGE_ENCODER:
                return {N.IMAGE_EMBEDS: m.image_encoder(feeds[N.PIXEL_VALUES].to(self.device, dt)).image_embeds}
            if stage == S.VAE_ENCODER:
                return {N.LATENT_MEAN: m.vae.encode(feeds["image"].to(self.device, dt)).latent_dist.mode()}
            if stage == S.POSE_NET:
                return {N.POSE_LATENTS: m.pose_net(feeds[N.POSE_IMAGES].to(self.device, dt))}
            if stage == S.UNET:
                return {N.NOISE_PRED: m.unet(*self._unet_args(feeds))}
            if stage == S.UNET_FEATURES:  # deep-feature caching: a full step that keeps its deep feature
                out, features = m.unet.forward_with_features(*self._unet_args(feeds), self._depth(feeds))
                return {N.NOISE_PRED: out, N.DEEP_FEATURES: features}
            if stage == S.UNET_SHALLOW:  # deep-feature caching: a cheap step around the kept feature
                out = m.unet.forward_shallow(*self._unet_args(feeds), feeds[N.DEEP_FEATURES].to(self.device, dt), self._depth(feeds))
                return {N.NOISE_PRED: out}
            if stage == S.VAE_DECODER:
                z = feeds["latents"].to(self.device, dt)
                return {"frames": m.vae.decode(z, num_frames=z.shape[0]).sample}
        raise InputError(f"unknown stage {stage!r}")

    def _unet_args(self, feeds: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        dt = self.dtype
        return (feeds[N.SAMPLE].to(self.device, dt), feeds[N.TIMESTEP].to(self.device, torch.float32),
                feeds[N.ENCODER_HIDDEN_STATES].to(self.device, dt), feeds[N.ADDED_TIME_IDS].to(self.device, dt),
                feeds[N.POSE_LATENTS].to(self.device, dt))

    @staticmethod
    def _depth(feeds) -> int:
        return int(feeds.get(N.CACHE_DEPTH, GRAPH_CACHE_DEPTH))

    def cache_depths(self) -> range:
        """The deep-feature cache depths this backend runs: any the UNet has (the graph backends: one)."""
        from mimic.model.unet import cache_depths

        return cache_depths(self.models.unet.config.block_out_channels)

    def close(self) -> None:
        self.models = None  # type: ignore[assignment]


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
