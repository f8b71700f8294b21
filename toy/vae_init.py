"""A near-identity starting point for the toy VAE, so a few hundred CPU steps are enough.

From scratch, the SVD temporal VAE needs far more steps than the toy's budget to learn even where
things are. This start makes it a working (blurry) autoencoder at step 0: every residual branch
and attention output is zeroed (the blocks pass their input through), channel-changing shortcuts
copy channels, each encoder downsampler averages 2x2 pixels and each decoder upsampler is the
nearest-neighbour upsampling it already does. RGB enters in channels 0, 2, 4 (each alone in its
GroupNorm group with an idle channel) and the latent's first three channels are the 8x8 block means
of R, G, B. The last GroupNorm of the decoder normalises each channel per frame, so the output is
``mean + std * normalised colour``, with ``mean``/``std`` measured on the training frames (the toy's
backdrops share their per-channel statistics, so these are nearly fixed). Training then sharpens
edges and corrects colours. The posterior's log-variance starts at -8.
"""
from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, TemporalResnetBlock, Upsample2D

RGB_CHANNELS = (0, 2, 4)  # channel of R, G, B inside the encoder/decoder (one per GroupNorm pair)
SILU_SHIFT = 4.0  # GroupNorm bias that moves normalised values into SiLU's near-linear range


def _eye_(conv: torch.nn.Module, pairs=None, scale: float = 1.0) -> None:
    """Identity at the kernel's centre tap: out channel o <- in channel i for (o, i) in ``pairs``
    (default: i -> i for every channel both sides have)."""
    w = conv.weight
    w.zero_()
    if conv.bias is not None:
        conv.bias.zero_()
    centre = tuple(k // 2 for k in w.shape[2:])
    for o, i in pairs if pairs is not None else ((c, c) for c in range(min(w.shape[0], w.shape[1]))):
        w[(o, i, *centre)] = scale


@torch.no_grad()
def init_vae_near_identity(vae, mean: tuple[float, float, float] = (0.0, 0.0, 0.0), std: tuple[float, float, float] = (0.5, 0.5, 0.5)) -> None:
    """Rewrite ``vae``'s weights in place (see the module docstring). ``mean``/``std``: the typical
    per-frame mean and standard deviation of R, G, B in [-1, 1] units."""
    for m in vae.modules():
        if isinstance(m, (ResnetBlock2D, TemporalResnetBlock)):
            m.conv2.weight.zero_()
            m.conv2.bias.zero_()
            if getattr(m, "conv_shortcut", None) is not None:
                _eye_(m.conv_shortcut)
        elif isinstance(m, Attention):
            m.to_out[0].weight.zero_()
            m.to_out[0].bias.zero_()
        elif isinstance(m, Downsample2D):
            w = m.conv.weight
            w.zero_()
            m.conv.bias.zero_()
            for c in range(min(w.shape[0], w.shape[1])):
                w[c, c, 0:2, 0:2] = 0.25  # 2x2 mean (the block pads right/bottom; taps 0-1 stay inside)
        elif isinstance(m, Upsample2D):
            _eye_(m.conv)
    enc, dec = vae.encoder, vae.decoder
    rgb = list(enumerate(RGB_CHANNELS))
    _eye_(enc.conv_in, [(c, k) for k, c in rgb])
    for norm in (enc.conv_norm_out, dec.conv_norm_out):
        norm.weight.fill_(1.0)
        norm.bias.zero_()
        norm.bias[list(RGB_CHANNELS)] = SILU_SHIFT
    _eye_(enc.conv_out, [(k, c) for k, c in rgb])
    enc.conv_out.bias[:3] = -SILU_SHIFT
    latent = vae.config.latent_channels
    enc.conv_out.bias[latent:] = -8.0  # log-variance
    _eye_(vae.quant_conv)
    vae.quant_conv.bias[latent:] = -8.0
    _eye_(dec.conv_in, [(c, k) for k, c in rgb])
    _eye_(dec.conv_out, [(k, c) for k, c in rgb])
    for k, c in rgb:
        dec.conv_out.weight[k, c, 1, 1] = std[k]
        dec.conv_out.bias[k] = mean[k] - std[k] * SILU_SHIFT
    _eye_(dec.time_conv_out)
