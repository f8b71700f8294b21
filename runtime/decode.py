"""Step 7's decode: latents -> uint8 frames, one temporal-decoder chunk at a time (the chunks are
independent, so ``mimic.runtime.parallel.decode_parallel`` spreads them over devices)."""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch

from mimic.runtime.backend_api import Backend
from mimic.runtime.denoise import check_finite
from mimic.spec import StageName
from mimic.spec import TensorName as N


def decode_frames(backend: Backend, latents: torch.Tensor, scaling_factor: float, chunk: int, stream=None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first_frame_index, uint8 (n, 3, H, W)) per temporal-decoder chunk, frame 0 included."""
    z = latents.flatten(0, 1) / scaling_factor
    for s in range(0, z.shape[0], chunk):
        yield s, decode_chunk(backend, z[s : s + chunk], s, stream)


def decode_chunk(backend: Backend, z: torch.Tensor, start: int, stream=None) -> np.ndarray:
    """Scaled latents (n, 4, h, w) of frames ``start..`` -> uint8 (n, 3, H, W) on the host.

    ``stream``: the CUDA stream the decoder is enqueued on; the checks, the conversion and the copy
    to the host are enqueued on it too (whatever stream the calling thread has current), so they
    read the frames after the decoder wrote them."""
    with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
        frames = backend.run(StageName.VAE_DECODER, {N.LATENTS: z}, stream)[N.FRAMES]
        check_finite(frames, f"decoded frames {start}..{start + frames.shape[0] - 1}", frames.dtype)
        # to uint8 where the frames are (on a GPU: a quarter of the fp32 transfer), then to the host
        pixels = ((frames.float() / 2 + 0.5).clamp(0, 1) * 255.0).to(torch.uint8)
        return pixels.cpu().numpy()
