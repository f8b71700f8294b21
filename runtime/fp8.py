"""FP8 (E4M3) Linear layers for the torch backend, with torch alone (no torchao, no TensorRT).

``--backend torch --precision fp8`` on a CUDA GPU of compute capability >= 8.9 (Ada, Hopper and
later) loads every model in fp16, then :func:`convert_unet` swaps the Linear layers of the UNet's
transformer blocks for :class:`Fp8Linear`: the weight kept in ``float8_e4m3fn`` with a scale
computed once, the activation quantized with a fresh scale on every call (or a calibrated one,
:func:`calibrate`), and the product taken by ``torch._scaled_mm`` (fp16 out, the bias fused).

Which layers: the attention projections (``to_q/to_k/to_v/to_out.0``, self- and cross-attention)
and the feed-forwards (``ff``, ``ff_in``: the GEGLU projection and the output Linear) of every
spatial and temporal transformer block: 352 layers of the real SVD-XT UNet, about 96 % of its Linear
FLOPs (about 43 % of all its FLOPs at 72 frames; the rest are convolutions and attention, which torch
has no FP8 kernels for). Kept in fp16: ``proj_in``/``proj_out`` (about 2 % each of the Linear FLOPs;
``proj_out`` writes straight into the residual stream and NVIDIA's FP8 recipe for SVD keeps it too),
the time embeddings, ``add_embedding`` and every resnet's ``time_emb_proj`` (a few rows each: no
speed to gain, and the conditioning is the part most sensitive to rounding), and any Linear whose
dimensions are not multiples of 16 (``_scaled_mm``'s constraint).

Scales are per tensor by default (``granularity="tensor"``: the widely supported ``_scaled_mm``
path); ``"row"`` (a scale per output channel and per token) is more accurate where the GPU's torch
build supports row-wise scaling with fp16 output. Weights and scales are stored as raw bytes
(``uint8``), so ``Module.to(dtype)`` cannot cast them (it only casts floating-point tensors) while
``Module.to(device)`` still moves them.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

E4M3 = getattr(torch, "float8_e4m3fn", None)
E4M3_MAX = 448.0  # the largest finite float8_e4m3fn
MIN_CAPABILITY = (8, 9)  # FP8 tensor cores: Ada (8.9), Hopper (9.0) and later
MAX_MULTIPLIER = 2.0 ** 15  # an activation's quantizing factor stays finite in fp16 (all-zero inputs)
DIM_MULTIPLE = 16  # _scaled_mm: the weight's both dimensions multiples of 16
GRANULARITIES = ("tensor", "row")
SCOPE = ("transformer_blocks", "temporal_transformer_blocks")  # module-name parts whose Linears convert
HINT = "needs --backend torch on a CUDA GPU with compute capability >= 8.9"


def fp8_support(device: str | torch.device) -> str | None:
    """None when ``device`` can run :class:`Fp8Linear` with FP8 tensor cores, else why not."""
    device = torch.device(device)
    if device.type != "cuda":
        return "this is the CPU" if device.type == "cpu" else f"{device.type} is not a CUDA device"
    if E4M3 is None or not hasattr(torch, "_scaled_mm"):
        return f"this PyTorch {torch.__version__} lacks float8_e4m3fn or _scaled_mm"
    if getattr(torch.version, "hip", None):
        return "a ROCm build of PyTorch (its FP8 types differ)"
    if not torch.backends.cuda.is_built() or not torch.cuda.is_available():
        return "PyTorch sees no CUDA GPU here"
    index = torch.cuda.current_device() if device.index is None else device.index
    if index >= torch.cuda.device_count():
        return f"cuda:{index} is not present"
    major, minor = torch.cuda.get_device_capability(index)
    if (major, minor) < MIN_CAPABILITY:
        return f"{torch.cuda.get_device_name(index)} has compute capability {major}.{minor}"
    return None


# ------------------------------------------------------------------------------------ quantizing


def quantize_weight(weight: torch.Tensor, granularity: str = "tensor") -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) weight -> (float8 weight, float32 scale): ``weight ~= q * scale``; the scale is one
    number (``tensor``) or one per output row, shaped (1, N) as ``_scaled_mm``'s ``scale_b`` (``row``)."""
    w = weight.detach().float()
    amax = w.abs().amax() if granularity == "tensor" else w.abs().amax(dim=1)
    scale = (amax / E4M3_MAX).clamp(min=torch.finfo(torch.float32).tiny)  # an all-zero weight: scale tiny, q zero
    q = (w / (scale if granularity == "tensor" else scale[:, None])).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
    return q, (scale.reshape(1) if granularity == "tensor" else scale.reshape(1, -1))


def quantize_activation(x: torch.Tensor, granularity: str = "tensor", multiplier: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, K) activation -> (float8, float32 dequantizing scale), ``x ~= q * scale``. The factor
    ``multiplier`` (448 / amax) comes from the tensor itself (one per tensor, or one per row for
    ``row``) unless a calibrated one is given; a calibrated factor can overflow, so then the values
    are clamped to the FP8 range."""
    if multiplier is None:
        if granularity == "tensor":
            amax = torch.linalg.vector_norm(x, float("inf")).float()  # one read; exact in x's own dtype
        else:
            amax = torch.linalg.vector_norm(x, float("inf"), dim=1, keepdim=True).float()
        multiplier = (E4M3_MAX / amax).clamp(max=MAX_MULTIPLIER)  # max |x * m| <= 448 up to rounding, which E4M3 absorbs
        q = (x * multiplier.to(x.dtype)).to(E4M3)
    else:
        q = (x * multiplier.to(x.dtype)).clamp_(-E4M3_MAX, E4M3_MAX).to(E4M3)
    return q.contiguous(), multiplier.reciprocal().reshape(1 if granularity == "tensor" else (-1, 1))


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.uint8)


class Fp8Linear(nn.Module):
    """``y = x W^T + b`` with W in float8_e4m3fn and x quantized to it on each call; the product
    by ``torch._scaled_mm`` in ``x``'s dtype. Built with :meth:`from_linear`."""

    def __init__(self, in_features: int, out_features: int, weight_fp8: torch.Tensor, weight_scale: torch.Tensor,
                 bias: torch.Tensor | None, granularity: str = "tensor", fast_accum: bool = True):
        super().__init__()
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
        self.in_features, self.out_features = in_features, out_features
        self.granularity, self.fast_accum = granularity, fast_accum
        self.register_buffer("weight_bits", _bytes(weight_fp8))  # (N, K) float8 as bytes
        self.register_buffer("weight_scale_bits", _bytes(weight_scale.float()))
        self.register_buffer("input_multiplier_bits", None)  # set by calibration: a static activation scale
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False) if bias is not None else None
        self.observing = False
        self.observed_amax: torch.Tensor | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, granularity: str = "tensor", fast_accum: bool = True) -> "Fp8Linear":
        q, scale = quantize_weight(linear.weight, granularity)
        return cls(linear.in_features, linear.out_features, q, scale, linear.bias, granularity, fast_accum)

    # the stored bytes, read back as what they are (views: no copy)
    @property
    def weight_fp8(self) -> torch.Tensor:
        return self.weight_bits.view(E4M3)

    @property
    def weight_scale(self) -> torch.Tensor:
        return self.weight_scale_bits.view(torch.float32).reshape(1 if self.granularity == "tensor" else (1, -1))

    @property
    def input_multiplier(self) -> torch.Tensor | None:
        bits = self.input_multiplier_bits
        return None if bits is None else bits.view(torch.float32)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        scale = self.weight_scale if self.granularity == "tensor" else self.weight_scale.reshape(-1, 1)
        return (self.weight_fp8.float() * scale).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if x2.shape[0] == 0:
            return x.new_empty(*lead, self.out_features)
        if self.observing:
            amax = torch.linalg.vector_norm(x2, float("inf")).float()
            self.observed_amax = amax if self.observed_amax is None else torch.maximum(self.observed_amax, amax)
        q, scale = quantize_activation(x2, self.granularity, None if self.observing else self.input_multiplier)
        out_dtype = x.dtype
        bias = self.bias
        fuse = bias is not None and out_dtype in (torch.float16, torch.bfloat16) and bias.dtype == out_dtype
        y = torch._scaled_mm(q, self.weight_fp8.t(), scale_a=scale, scale_b=self.weight_scale, bias=bias if fuse else None,
                             out_dtype=out_dtype, use_fast_accum=self.fast_accum)
        if bias is not None and not fuse:
            y = y + bias.to(out_dtype)
        return y.reshape(*lead, self.out_features)

    def freeze_input_scale(self, margin: float = 1.0) -> bool:
        """After observing: a static activation scale from the largest |x| seen (times ``margin``);
        False when nothing was observed (the layer stays dynamic)."""
        self.observing = False
        amax, self.observed_amax = self.observed_amax, None
        if amax is None:
            return False
        if self.granularity != "tensor":
            raise ValueError("calibrated activation scales need granularity='tensor'")
        multiplier = (E4M3_MAX / (amax * margin)).clamp(max=MAX_MULTIPLIER).reshape(1)
        self.input_multiplier_bits = _bytes(multiplier.float())
        return True

    def extra_repr(self) -> str:
        scales = "calibrated" if self.input_multiplier_bits is not None else "dynamic"
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"granularity={self.granularity}, activations={scales}, fast_accum={self.fast_accum}")


# ------------------------------------------------------------------------------------ converting


@dataclass
class Fp8Conversion:
    """What :func:`convert_unet` did: the layers converted and, per reason, how many Linears stayed."""

    converted: list[str] = field(default_factory=list)
    kept: Counter = field(default_factory=Counter)
    fp8_weights: int = 0  # weight elements now stored in FP8

    def summary(self) -> str:
        kept = ", ".join(f"{n} {why}" for why, n in sorted(self.kept.items())) or "none"
        return (f"{len(self.converted)} Linear layers in FP8 ({self.fp8_weights / 1e6:.0f} M weights); "
                f"kept in 16 bits: {kept}")

    def to_dict(self) -> dict:
        return {"converted": len(self.converted), "kept": dict(self.kept), "fp8_weights": self.fp8_weights}


def keep_reason(name: str, layer: nn.Module) -> str | None:
    """None when the Linear ``name`` (its path in the UNet) converts, else why it stays."""
    if not any(part in SCOPE for part in name.split(".")):
        return "outside the transformer blocks"
    if layer.in_features % DIM_MULTIPLE or layer.out_features % DIM_MULTIPLE:
        return f"dimensions not multiples of {DIM_MULTIPLE}"
    return None


def convert_unet(unet: nn.Module, granularity: str = "tensor", fast_accum: bool = True) -> Fp8Conversion:
    """Swap, in place, the eligible ``nn.Linear`` s of ``unet`` (``keep_reason``) for :class:`Fp8Linear`."""
    result = Fp8Conversion()
    targets = [(name, m) for name, m in unet.named_modules() if type(m) is nn.Linear]
    for name, layer in targets:
        why = keep_reason(name, layer)
        if why is not None:
            result.kept[why] += 1
            continue
        parent_name, _, child = name.rpartition(".")
        parent = unet.get_submodule(parent_name) if parent_name else unet
        setattr(parent, child, Fp8Linear.from_linear(layer, granularity, fast_accum))
        result.converted.append(name)
        result.fp8_weights += layer.weight.numel()
    return result


def fp8_layers(module: nn.Module) -> list[Fp8Linear]:
    return [m for m in module.modules() if isinstance(m, Fp8Linear)]


@torch.inference_mode()
def calibrate(module: nn.Module, run: Callable[[], object], margin: float = 1.0) -> int:
    """Calibrated (static) activation scales: every :class:`Fp8Linear` of ``module`` records the
    largest |input| while ``run()`` calls the model on representative inputs (a few denoising steps
    of real jobs), then keeps 448 / (that * ``margin``) as its fixed factor; inputs beyond it are
    clamped. Saves the per-call reduction of dynamic scaling. Returns the layers calibrated."""
    layers = fp8_layers(module)
    for layer in layers:
        layer.observing, layer.observed_amax = True, None
    try:
        run()
    except BaseException:
        for layer in layers:  # a failed calibration changes nothing
            layer.observing, layer.observed_amax = False, None
        raise
    return sum(layer.freeze_input_scale(margin) for layer in layers)
