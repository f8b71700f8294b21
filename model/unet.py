"""The SVD spatio-temporal UNet with MimicMotion's pose input (spec 2.3).

Built from diffusers' ``UNetSpatioTemporalConditionModel`` blocks; only ``forward`` is ours: it
adds ``pose_latents`` right after ``conv_in`` (so the first skip connection carries the pose) and
broadcasts per-video embeddings over frames with expand+reshape, which equals upstream's
``repeat_interleave`` and exports to ONNX without the exporter's repeat_interleave bugs.

Deep-feature caching (DeepCache, Ma et al., CVPR 2024) splits the same network at a *depth* ``d``
(1 .. levels - 1). The *shallow* part is ``conv_in``, the first ``d`` down blocks (the last of them
without its downsampler, whose output only the deep part reads), the last ``d`` up blocks and the
output head; the *deep* part is everything in between. ``forward_with_features`` is the full UNet
that also returns the deep part's output (the hidden state entering ``up_blocks[-d]``);
``forward_shallow`` runs only the shallow part around such a cached feature. At depth 1 a cheap
step runs the outermost level alone (NVIDIA Model Optimizer's SVD cache configuration likewise keeps
only the last up block live). ``forward`` is the released maths, op for op.
"""
from __future__ import annotations

import torch
from diffusers import UNetSpatioTemporalConditionModel


def _per_frame(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B, ...) -> (B*F, ...), each row repeated F times consecutively (= repeat_interleave(F, 0))."""
    b = x.shape[0]
    return x.unsqueeze(1).expand(b, num_frames, *x.shape[1:]).reshape(b * num_frames, *x.shape[1:])


def cache_depths(block_out_channels) -> range:
    """The deep-feature cache depths a UNet with these level widths supports (1 .. levels - 1)."""
    return range(1, len(block_out_channels))


def feature_channels(block_out_channels, depth: int) -> int:
    """Channels of the cached feature at ``depth``: the output width of ``up_blocks[-depth - 1]``."""
    return int(block_out_channels[depth])


def feature_scale(depth: int) -> int:
    """The cached feature is the latent's height and width divided by this (``up_blocks[-depth-1]``
    upsamples to the resolution of level ``depth - 1``)."""
    return 2 ** (depth - 1)


class PoseUNet(UNetSpatioTemporalConditionModel):
    """UNetSpatioTemporalConditionModel + ``pose_latents`` (B*F, C0, h, w) added after conv_in."""

    def forward(  # type: ignore[override]
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor,
        added_time_ids: torch.Tensor,
        pose_latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self._full(sample, timestep, encoder_hidden_states, added_time_ids, pose_latents, depth=0)[0]

    def forward_with_features(self, sample, timestep, encoder_hidden_states, added_time_ids, pose_latents, depth: int):
        """(noise_pred, feature): the full UNet (the same output as ``forward``) and the feature to
        cache at ``depth``, the hidden state entering ``up_blocks[-depth]``."""
        self.check_depth(depth)
        return self._full(sample, timestep, encoder_hidden_states, added_time_ids, pose_latents, depth)

    def forward_shallow(self, sample, timestep, encoder_hidden_states, added_time_ids, pose_latents, features, depth: int) -> torch.Tensor:
        """The shallow part only, around ``features`` cached by ``forward_with_features`` at the same depth."""
        self.check_depth(depth)
        batch, num_frames = sample.shape[0], sample.shape[1]
        sample, emb, context, indicator = self._prelude(sample, timestep, encoder_hidden_states, added_time_ids, pose_latents)
        skips: tuple[torch.Tensor, ...] = (sample,)
        for k, block in enumerate(self.down_blocks[:depth]):
            if k < depth - 1:
                sample, res = self._down(block, sample, emb, context, indicator)
            else:  # the last shallow down block: its downsampler feeds only the deep part
                res = self._down_resnets(block, sample, emb, context, indicator)
            skips += res
        sample = self._up(self.up_blocks[len(self.up_blocks) - depth:], features, skips, emb, context, indicator)
        return self._head(sample, batch, num_frames)

    def check_depth(self, depth: int) -> None:
        depths = cache_depths(self.config.block_out_channels)
        if depth not in depths:
            raise ValueError(f"cache depth {depth} outside {depths.start}..{depths.stop - 1} for this UNet")

    # --------------------------------------------------------------------------------- the parts
    def _full(self, sample, timestep, encoder_hidden_states, added_time_ids, pose_latents, depth: int):
        batch, num_frames = sample.shape[0], sample.shape[1]
        sample, emb, context, indicator = self._prelude(sample, timestep, encoder_hidden_states, added_time_ids, pose_latents)
        skips: tuple[torch.Tensor, ...] = (sample,)
        for block in self.down_blocks:
            sample, res = self._down(block, sample, emb, context, indicator)
            skips += res

        sample = self.mid_block(hidden_states=sample, temb=emb, encoder_hidden_states=context, image_only_indicator=indicator)

        split = len(self.up_blocks) - depth
        sample = self._up(self.up_blocks[:split], sample, skips, emb, context, indicator)
        features = sample if depth else None
        rest = skips[: len(skips) - sum(len(b.resnets) for b in self.up_blocks[:split])]
        sample = self._up(self.up_blocks[split:], sample, rest, emb, context, indicator)
        return self._head(sample, batch, num_frames), features

    def _prelude(self, sample, timestep, encoder_hidden_states, added_time_ids, pose_latents):
        batch, num_frames = sample.shape[0], sample.shape[1]
        if not torch.is_tensor(timestep):
            timestep = torch.tensor([timestep], dtype=torch.float32, device=sample.device)
        timestep = timestep.reshape(-1).to(sample.device)
        timestep = timestep.expand(batch) if timestep.shape[0] == 1 else timestep

        emb = self.time_embedding(self.time_proj(timestep).to(sample.dtype))
        time_ids = self.add_time_proj(added_time_ids.flatten()).reshape(batch, -1).to(emb.dtype)
        emb = emb + self.add_embedding(time_ids)

        sample = sample.flatten(0, 1)
        emb = _per_frame(emb, num_frames)
        context = _per_frame(encoder_hidden_states, num_frames)

        sample = self.conv_in(sample)
        if pose_latents is not None:
            sample = sample + pose_latents
        indicator = torch.zeros(batch, num_frames, dtype=sample.dtype, device=sample.device)
        return sample, emb, context, indicator

    @staticmethod
    def _down(block, sample, emb, context, indicator):
        if getattr(block, "has_cross_attention", False):
            return block(hidden_states=sample, temb=emb, encoder_hidden_states=context, image_only_indicator=indicator)
        return block(hidden_states=sample, temb=emb, image_only_indicator=indicator)

    @staticmethod
    def _down_resnets(block, sample, emb, context, indicator) -> tuple[torch.Tensor, ...]:
        """A down block's skip outputs without its downsampler (the same layers, in the same order)."""
        out: tuple[torch.Tensor, ...] = ()
        attentions = getattr(block, "attentions", None) if getattr(block, "has_cross_attention", False) else None
        for k, resnet in enumerate(block.resnets):
            sample = resnet(sample, emb, image_only_indicator=indicator)
            if attentions is not None:
                sample = attentions[k](sample, encoder_hidden_states=context, image_only_indicator=indicator, return_dict=False)[0]
            out += (sample,)
        return out

    @staticmethod
    def _up(blocks, sample, skips, emb, context, indicator):
        for block in blocks:
            res, skips = skips[-len(block.resnets):], skips[: -len(block.resnets)]
            if getattr(block, "has_cross_attention", False):
                sample = block(hidden_states=sample, temb=emb, res_hidden_states_tuple=res, encoder_hidden_states=context, image_only_indicator=indicator)
            else:
                sample = block(hidden_states=sample, temb=emb, res_hidden_states_tuple=res, image_only_indicator=indicator)
        return sample

    def _head(self, sample, batch, num_frames):
        sample = self.conv_out(self.conv_act(self.conv_norm_out(sample)))
        return sample.reshape(batch, num_frames, *sample.shape[1:])
