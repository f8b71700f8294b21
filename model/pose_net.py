"""PoseNet: drawn pose images -> latent-resolution features added after the UNet's conv_in (spec 2.4)."""
from __future__ import annotations

import math

import torch
from torch import nn

# (in, out, kernel, stride, padding) of the eight convolutions; a SiLU follows each.
_CONV_PLAN = (
    (3, 3, 3, 1, 1),
    (3, 16, 4, 2, 1),
    (16, 16, 3, 1, 1),
    (16, 32, 4, 2, 1),
    (32, 32, 3, 1, 1),
    (32, 64, 4, 2, 1),
    (64, 64, 3, 1, 1),
    (64, 128, 3, 1, 1),
)


class PoseNet(nn.Module):
    """Eight convs (three of them stride 2) with SiLU, a zero-initialised 1x1 projection to the UNet's
    first block width, times a learnable scalar (init 2.0). Input in [-1, 1], (N, 3, H, W) or
    (B, F, 3, H, W); output (N, C, H/8, W/8)."""

    def __init__(self, noise_latent_channels: int = 320):
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out, k, s, p in _CONV_PLAN:
            layers += [nn.Conv2d(c_in, c_out, k, s, p), nn.SiLU()]
        self.conv_layers = nn.Sequential(*layers)
        self.final_proj = nn.Conv2d(128, noise_latent_channels, kernel_size=1)
        self.scale = nn.Parameter(torch.full((1,), 2.0))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.conv_layers:
            if isinstance(m, nn.Conv2d):
                fan_in = m.kernel_size[0] * m.kernel_size[1] * m.in_channels
                nn.init.normal_(m.weight, mean=0.0, std=math.sqrt(2.0 / fan_in))
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.final_proj.weight)
        nn.init.zeros_(self.final_proj.bias)

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        if pose.dim() == 5:
            pose = pose.flatten(0, 1)
        return self.final_proj(self.conv_layers(pose)) * self.scale
