"""onnxruntime runs the UNet with fused attention, and that is what makes full size fit on a GPU.

The arithmetic (real SVD-xt 1.1 + MimicMotion 1.1 UNet, 576x1024, a 72-frame window, the CFG pair as
one batch-2 call, fp16):

* unfused, the first level's spatial self-attention holds a score tensor of
  (2 x 72 frames) x 5 heads x (72 x 128 = 9216 tokens)^2 x 2 bytes = 122.3 GB: more than any GPU
  (80 GB H100, 141 GB H200 once the rest is counted), so the exported MatMul-Softmax-MatMul graph
  cannot run at full size on onnxruntime at all;
* fused (onnxruntime's ``MultiHeadAttention``: flash / memory-efficient kernels that never hold the
  scores), the largest tensor of the whole forward pass is a module output, measured below on the
  meta device (the feed-forward's GEGLU projection at level 0: 144 x 9216 x 2560 x 2 bytes = 6.8 GB),
  and the weights are 1.52 B parameters x 2 bytes = 3.0 GB. Even if eight tensors of the largest
  size were alive at once (onnxruntime frees each after its last use), 3.0 + 8 x 6.8 = 57 GB < 80 GB.

The CPU checks: the fused tiny UNet graph has no Softmax left (every attention became one
``com.microsoft`` MultiHeadAttention node, so no Softmax over a 9216 x 9216 score tensor at full
size), and its outputs still match PyTorch within the spec's tolerance (fp32 and fp16), on
onnxruntime's CPU provider.
"""
from __future__ import annotations

import onnx
import pytest
import torch

from mimic.export.attention import FUSED_SUFFIX, attention_ops, fuse_attention, fused_graph, unet_largest_scores
from mimic.export.onnx_export import export_stage
from mimic.export.validate import reference_cases, validate_stage
from mimic.spec import UNET

GB = 1e9
H100 = 80 * GB


@pytest.fixture(scope="module")
def unet_graphs(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("unet-attention")
    cases = reference_cases(UNET, tiny_models.unet)
    paths = {p: export_stage(UNET, tiny_models.unet, out, p).path for p in ("fp32", "fp16")}
    return paths, cases


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_fused_unet_has_no_softmax_and_matches_torch(unet_graphs, precision):
    paths, cases = unet_graphs
    plain = onnx.load(str(paths[precision]), load_external_data=False)
    before = attention_ops(plain)
    assert before["softmax"] > 0 and before["fused"] == 0  # what the exporter writes: unfused
    path = fused_graph(paths[precision])
    assert path.name == "unet" + FUSED_SUFFIX and path.parent == paths[precision].parent
    fused = onnx.load(str(path), load_external_data=False)
    after = attention_ops(fused)
    assert after == {"softmax": 0, "fused": before["softmax"]}, after
    assert {n.domain for n in fused.graph.node if n.op_type == "MultiHeadAttention"} == {"com.microsoft"}
    rows = validate_stage(UNET, None, path, precision=precision, cases=cases)
    assert rows and all(r.passed for r in rows), [(r.point, r.max_abs, r.max_rel, r.tolerance) for r in rows]
    assert fused_graph(paths[precision]) == path  # reused, not rewritten
    assert fused_graph(path) == path


def test_fusion_leaves_unrecognised_attention_alone(unet_graphs):
    paths, _ = unet_graphs
    model = onnx.load(str(paths["fp32"]), load_external_data=False)
    sm = next(n for n in model.graph.node if n.op_type == "Softmax")
    sm.attribute[0].i = 1  # softmax over another axis: not attention as exported; must not be fused
    total = attention_ops(model)["softmax"]
    assert fuse_attention(model) == total - 1
    assert attention_ops(model) == {"softmax": 1, "fused": total - 1}


def test_full_size_cfg_pair_fits_an_80gb_gpu_only_fused():
    from mimic.benchmarks.flops import REAL_UNET_CONFIG

    heads0 = REAL_UNET_CONFIG["num_attention_heads"][0]
    unfused = unet_largest_scores(frames=72, height=576, width=1024, heads0=heads0, batch=2)
    assert unfused == 2 * 72 * 5 * 9216**2 * 2 and round(unfused / GB, 1) == 122.3
    assert unfused > H100

    from mimic.model.unet import PoseUNet

    with torch.device("meta"):
        model = PoseUNet.from_config(dict(REAL_UNET_CONFIG))
    model = model.to(device="meta", dtype=torch.float16).eval()  # legacy constructors ignore the device context
    weights = sum(p.numel() for p in model.parameters()) * 2
    largest = [0]

    def hook(_m, _inp, out):
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                largest[0] = max(largest[0], t.numel() * t.element_size())

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    frames, h, w = 72, 576 // 8, 1024 // 8
    with torch.device("meta"), torch.no_grad():
        model(torch.empty(2, frames, 8, h, w, dtype=torch.float16), torch.zeros(2), torch.empty(2, 1, 1024, dtype=torch.float16),
              torch.zeros(2, 3, dtype=torch.float16), pose_latents=torch.empty(2 * frames, 320, h, w, dtype=torch.float16))
    for hd in handles:
        hd.remove()
    assert 2.9 * GB < weights < 3.2 * GB
    assert largest[0] == 2 * frames * h * w * 2560 * 2  # GEGLU projection at level 0 (6.8 GB)
    assert weights + 8 * largest[0] < H100
