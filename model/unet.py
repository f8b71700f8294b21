"""The SVD spatio-temporal UNet with MimicMotion's pose input (spec 2.3).

Built from diffusers' ``UNetSpatioTemporalConditionModel`` blocks; only ``forward`` is ours: it
adds ``pose_latents`` right after ``conv_in`` (so the first skip connection carries the pose) and
broadcasts per-video embeddings over frames with expand+reshape, which equals upstream's
``repeat_interleave`` and exports to ONNX without the exporter's repeat_interleave bugs.
"""
from __future__ import annotations

import torch
from diffusers import UNetSpatioTemporalConditionModel


def _per_frame(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B, ...) -> (B*F, ...), each row repeated F times consecutively (= repeat_interleave(F, 0))."""
    b = x.shape[0]
    return x.unsqueeze(1).expand(b, num_frames, *x.shape[1:]).reshape(b * num_frames, *x.shape[1:])


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
        skips: tuple[torch.Tensor, ...] = (sample,)
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                sample, res = block(hidden_states=sample, temb=emb, encoder_hidden_states=context, image_only_indicator=indicator)
            else:
                sample, res = block(hidden_states=sample, temb=emb, image_only_indicator=indicator)
            skips += res

        sample = self.mid_block(hidden_states=sample, temb=emb, encoder_hidden_states=context, image_only_indicator=indicator)

        for block in self.up_blocks:
            res, skips = skips[-len(block.resnets):], skips[: -len(block.resnets)]
            if getattr(block, "has_cross_attention", False):
                sample = block(hidden_states=sample, temb=emb, res_hidden_states_tuple=res, encoder_hidden_states=context, image_only_indicator=indicator)
            else:
                sample = block(hidden_states=sample, temb=emb, res_hidden_states_tuple=res, image_only_indicator=indicator)

        sample = self.conv_out(self.conv_act(self.conv_norm_out(sample)))
        return sample.reshape(batch, num_frames, *sample.shape[1:])
