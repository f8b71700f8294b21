"""FP16 graphs for strongly typed TensorRT 11: the precision is decided here, in the exported ONNX.

Route: export from a half-precision copy of the model with a few modules kept in fp32 (measured on
this stack; the alternatives are worse: ``onnxconverter_common.float16`` / ``polygraphy --fp-to-fp16``
produce invalid graphs, ``onnxruntime.transformers.float16`` works but casts blindly after the fact,
ModelOpt AutoCast conflicts with this environment's onnx/onnxruntime pins).

What stays fp32, and why:

* every ``GroupNorm`` and ``LayerNorm`` (statistics and affine; weights stay stored fp16): with
  strong typing nothing else guarantees fp32 statistics (TensorRT 11 dropped the normalization
  layer's compute-precision knob), and a sum of squares over a group of e.g. 40 channels x 128 x 72
  latents overflows fp16 long before the values do. Exported as Cast(fp32) -> norm -> Cast(fp16).
  Measured on the tiny UNet (onnxruntime vs fp32 torch): worst abs error 1.2e-3 with, 1.4e-3
  without (the LayerNorms account for the difference; CLIP, VAE and PoseNet are unchanged). The
  cost is two casts per norm; whether TensorRT fuses them into its norm kernels is a GPU benchmark
  question (one tuple, ``FP32_MODULE_TYPES``, turns this off);
* timestep embeddings: the UNet's ``timestep`` and ``added_time_ids`` inputs stay fp32 graph inputs
  (see ``mimic.spec.UNET``) and diffusers' ``Timesteps`` computes the sinusoid in fp32 whatever the model
  dtype (arguments up to 127 rad for the motion bucket need fp32); the small MLP after it runs fp16
  on values in [-1, 1];
* attention is left as exported (fp16 MatMul -> Softmax -> MatMul with q and k pre-scaled): that is
  the pattern TensorRT fuses into its flash-attention kernels, which accumulate and take the softmax
  in fp32 internally. Wrapping the softmax in Casts would break the fusion and bring back the
  unfused score buffer that made SVD builds ask for 86 GB (TensorRT #4254).

Conversion builds the fp16 copy tensor by tensor (``deepcopy`` with a memo of pre-converted
parameters), so peak memory is the fp32 model + its fp16 copy, never two fp32 copies; ``copy=False``
converts in place (what the export command does for the 1.5 B-parameter UNet).
"""
from __future__ import annotations

import copy as _copy
import types

import torch
import torch.nn.functional as F
from torch import nn

FP32_MODULE_TYPES: tuple[type[nn.Module], ...] = (nn.GroupNorm, nn.LayerNorm)
_MARK = "_mimic_fp32_island"


def fp32_module_names(model: nn.Module) -> list[str]:
    """Names of the modules computed in fp32 inside the fp16 graph."""
    return [name for name, m in model.named_modules() if isinstance(m, FP32_MODULE_TYPES)]


def _f32(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.float()


def _group_norm_fp32(self: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    return F.group_norm(x.float(), self.num_groups, _f32(self.weight), _f32(self.bias), self.eps).to(x.dtype)


def _layer_norm_fp32(self: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x.float(), self.normalized_shape, _f32(self.weight), _f32(self.bias), self.eps).to(x.dtype)


def _mark_island(module: nn.Module) -> None:
    """Compute ``module`` in fp32 (its weights stay stored fp16: diffusers probes parameter dtypes,
    e.g. the temporal decoder casts activations to its up-blocks' first parameter dtype). The exporter
    folds the weight casts, so the graph holds fp32 norm weights and Cast -> norm -> Cast."""
    if getattr(module, _MARK, False):
        return
    fn = _group_norm_fp32 if isinstance(module, nn.GroupNorm) else _layer_norm_fp32
    module.forward = types.MethodType(fn, module)
    setattr(module, _MARK, True)


def convert_to_fp16(model: nn.Module, copy: bool = True) -> nn.Module:
    """Half-precision version of ``model`` with the fp32 islands described above.

    ``copy=True`` leaves ``model`` untouched (the copy is built from pre-converted tensors, so the
    peak is fp32 + fp16, never two fp32 copies); ``copy=False`` converts it in place.
    """
    if copy:
        memo: dict[int, object] = {}
        for m in model.modules():
            for p in m.parameters(recurse=False):
                if p.is_floating_point() and id(p) not in memo:
                    memo[id(p)] = nn.Parameter(p.detach().to(torch.float16), requires_grad=False)
            for b in m.buffers(recurse=False):
                if b.is_floating_point() and id(b) not in memo:
                    memo[id(b)] = b.detach().to(torch.float16)
        out = _copy.deepcopy(model, memo)
    else:
        out = model.half()
    for m in out.modules():
        if isinstance(m, FP32_MODULE_TYPES):
            _mark_island(m)
    return out.eval()
