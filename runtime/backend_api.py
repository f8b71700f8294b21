"""The one small interface every execution backend implements (torch, onnxruntime, tensorrt).

A backend runs *stages*. Stage names and tensor names/shapes/dtypes are defined once in
``mimic.spec``; a backend takes a dict of named input tensors and returns a dict of named output
tensors. Inputs arrive as torch tensors on ``backend.device``; a backend casts to the dtypes its
graphs need and returns outputs as torch tensors on ``backend.device``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

BACKENDS = ("torch", "onnxruntime", "tensorrt")  # every backend's ``name``, in the order the CLI lists them


@runtime_checkable
class Backend(Protocol):
    name: str  # "torch" | "onnxruntime" | "tensorrt"
    device: "torch.device"

    def run(self, stage: str, feeds: "dict[str, torch.Tensor]", stream: "torch.cuda.Stream | None" = None) -> "dict[str, torch.Tensor]":
        """Run one stage. ``stream``: the CUDA stream to enqueue on (None = current stream)."""
        ...

    def close(self) -> None:
        """Release sessions/engines/device memory."""
        ...
