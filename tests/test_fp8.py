"""``--precision fp8`` (``mimic.runtime.fp8``): the torch backend's UNet with its transformer Linear
layers in FP8 (E4M3) through ``torch._scaled_mm``.

On the CPU: the option is refused in one line (the exact text); the capability check's reasons (a
faked CUDA device of compute capability 8.6 / 8.9 / 9.0); the layers :func:`convert_unet` picks on
the tiny preset's UNet and on the real SVD-XT config (meta device); the numerics. torch's CPU
``_scaled_mm`` does run float8 (torch 2.13: a slow reference kernel, about 30 M multiply-adds a
second), so small products run the real kernel: it equals the emulation (dequantize both operands,
multiply in fp32) within fp32 rounding, and FP8 stays within 6 % (relative Frobenius norm) of the
fp32 product on Gaussian data (measured 3.6 %: E4M3's 3-bit mantissa on both operands). Model-sized
checks (the tiny UNet, a tiny job) run with ``_scaled_mm`` replaced by that emulation.

Stated bounds: tiny UNet, FP8 against fp32, relative Frobenius error <= 0.05 (measured 0.013 on the
CPU with the emulated kernel; fp16: 0.0013); a tiny job's frames, fp8 against fp16, mean |diff| <= 4 of 255
(measured 1.3 on the CPU; fp16 against fp32: 0.3). The GPU tests (``@pytest.mark.gpu``, skipped
without a CUDA GPU of compute capability >= 8.9) hold the real kernel to the same bounds.
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mimic.errors import InputError
from mimic.runtime import fp8
from mimic.runtime.fp8 import Fp8Linear, calibrate, convert_unet, fp8_support, quantize_activation

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_helpers import cpu_noise_everywhere, pose_frame_jobs, read_png_frames  # noqa: E402

CPU_ERROR = ("--precision fp8 needs --backend torch on a CUDA GPU with compute capability >= 8.9 (this is the CPU); "
             "use --precision fp16 or fp32 here")
LINEAR_REL = 0.06  # FP8 (both operands) against the fp32 product, relative Frobenius norm, Gaussian data
UNET_REL = 0.05  # the tiny UNet's output, FP8 against fp32 (relative Frobenius norm)
FRAMES_MEAN_ABS = 4.0  # a tiny job's frames, fp8 against fp16 (uint8 levels)
# tiny preset: 4 transformer models x (10 spatial + 12 temporal Linears); real SVD-XT: 16 of them
TINY_CONVERTED, TINY_KEPT = 88, 36
REAL_CONVERTED, REAL_KEPT = 352, 112


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def emulated_scaled_mm(a, b, scale_a, scale_b, bias=None, scale_result=None, out_dtype=None, use_fast_accum=False):
    """What ``torch._scaled_mm`` computes: both FP8 operands dequantized, multiplied in fp32."""
    y = (a.float() * scale_a.float()) @ (b.float() * scale_b.float())
    if bias is not None:
        y = y + bias.float()
    return y.to(out_dtype or a.dtype)


@pytest.fixture
def emulated_kernel(monkeypatch):
    monkeypatch.setattr(torch, "_scaled_mm", emulated_scaled_mm)


@pytest.fixture
def fake_cuda(monkeypatch):
    """A CUDA device of the capability the test sets (``fake_cuda["cc"] = (8, 6)``), as torch reports it."""
    state = {"cc": (9, 0), "count": 1}
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: state["count"])
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: state["cc"])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Fake GPU")
    return state


# ------------------------------------------------------------------------------- the option


def test_cpu_refuses_fp8_in_one_line():
    from mimic.runtime.api import RuntimeOptions

    with pytest.raises(InputError) as err:
        RuntimeOptions(backend="torch", device="cpu", precision="fp8")
    assert str(err.value) == CPU_ERROR
    with pytest.raises(InputError, match=r"fp8 needs .* \(--backend onnxruntime, this is the CPU\)"):
        RuntimeOptions(device="cpu", precision="fp8")
    with pytest.raises(InputError, match="^unknown precision 'bf16'; choose fp16, fp32, fp8 or int8$"):
        RuntimeOptions(precision="bf16")


def test_cli_says_it_in_one_line(tmp_path, capsys):
    from mimic.cli import main

    (job,) = pose_frame_jobs(tmp_path, 1, frames=3)
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--preset", "tiny", "--backend", "torch", "--precision", "fp8", "--ref", str(job.reference),
              "--pose-frames", str(job.pose_frames), "--ref-pose", str(job.ref_pose), "--out", str(tmp_path / "out")])
    assert exit_.value.code == InputError.exit_code
    assert capsys.readouterr().err.strip() == f"error: {CPU_ERROR}"


def test_capability_reasons(fake_cuda):
    assert fp8_support("cpu") == "this is the CPU"
    fake_cuda["cc"] = (8, 6)
    assert fp8_support("cuda") == "Fake GPU has compute capability 8.6"
    assert fp8_support("cuda:1") == "cuda:1 is not present"
    for cc in ((8, 9), (9, 0), (10, 0)):
        fake_cuda["cc"] = cc
        assert fp8_support("cuda:0") is None


def test_fp8_options_on_a_capable_gpu_are_fp16_models_recorded_as_fp8(fake_cuda):
    from types import SimpleNamespace

    from mimic.runtime.api import RuntimeOptions
    from mimic.runtime.checkpoint import weights_fingerprint

    o = RuntimeOptions(backend="torch", device="cuda", precision="fp8")
    assert o.dtype == torch.float16 and o.precision_name == "fp8"
    assert RuntimeOptions(backend="torch", device="cuda").precision_name == "fp16"
    fake_cuda["cc"] = (8, 0)
    with pytest.raises(InputError, match=r"\(Fake GPU has compute capability 8\.0\)"):
        RuntimeOptions(backend="torch", device="cuda", precision="fp8")
    # the checkpoint key (job_key hashes this fingerprint): an fp8 run never resumes an fp16 one
    layout = SimpleNamespace(svd="hub/id", checkpoint=None, det_model=None, pose_model=None)
    facts = {"backend": "torch", "device": "cpu"}
    assert weights_fingerprint(layout, {**facts, "precision": "fp8"}) != weights_fingerprint(layout, {**facts, "precision": "fp16"})


# --------------------------------------------------------------------------- which layers


def _linear_names(module) -> set[str]:
    return {n for n, m in module.named_modules() if type(m) is torch.nn.Linear}


def test_conversion_picks_the_transformer_blocks_linears(tiny_models):
    unet = copy.deepcopy(tiny_models.unet)
    before = _linear_names(unet)
    result = convert_unet(unet)
    assert (len(result.converted), sum(result.kept.values())) == (TINY_CONVERTED, TINY_KEPT)
    assert result.kept == {"outside the transformer blocks": TINY_KEPT}
    converted = set(result.converted)
    assert converted == {n for n, m in unet.named_modules() if isinstance(m, Fp8Linear)}
    assert _linear_names(unet) == before - converted
    for name in converted:
        assert ".transformer_blocks." in name or ".temporal_transformer_blocks." in name
        assert name.endswith(("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "ff_in.net.0.proj", "ff_in.net.2"))
    kept = before - converted
    assert {n.rsplit(".", 1)[-1] for n in kept} == {"proj_in", "proj_out", "time_emb_proj", "linear_1", "linear_2"}
    assert any(n.startswith("time_embedding.") for n in kept) and any(n.startswith("add_embedding.") for n in kept)
    assert result.fp8_weights == sum(tiny_models.unet.get_submodule(n).weight.numel() for n in converted)


def test_conversion_counts_on_the_real_config():
    from mimic.model.flops import REAL_UNET_CONFIG
    from mimic.model.unet import PoseUNet

    with torch.device("meta"):
        unet = PoseUNet.from_config(dict(REAL_UNET_CONFIG))
    result = convert_unet(unet)
    assert (len(result.converted), sum(result.kept.values())) == (REAL_CONVERTED, REAL_KEPT)
    assert round(result.fp8_weights / 1e6) == 646  # of the UNet's 1.52 B weights


def test_dimensions_not_multiples_of_16_stay():
    block = torch.nn.Module()
    block.transformer_blocks = torch.nn.ModuleList([torch.nn.Linear(32, 48), torch.nn.Linear(40, 32), torch.nn.Linear(32, 24)])
    result = convert_unet(block)
    assert result.converted == ["transformer_blocks.0"]
    assert result.kept == {"dimensions not multiples of 16": 2}


# ------------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("granularity", fp8.GRANULARITIES)
def test_real_cpu_kernel_equals_the_emulation_and_stays_near_fp32(granularity):
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    x = torch.randn(2, 20, 64)
    layer = Fp8Linear.from_linear(linear, granularity)
    with torch.no_grad():
        y = layer(x)  # torch._scaled_mm on the CPU
        q, scale = quantize_activation(x.reshape(-1, 64), granularity)
        emulated = emulated_scaled_mm(q, layer.weight_fp8.t(), scale, layer.weight_scale, linear.bias, out_dtype=torch.float32)
        assert y.shape == (2, 20, 48)
        assert float((y.reshape(-1, 48) - emulated).abs().max()) <= 1e-5 * float(emulated.abs().max())
        assert _rel(y, linear(x)) <= LINEAR_REL
        assert _rel(layer.dequantized_weight(), linear.weight) <= 0.04  # one operand alone: about half the error
        largest = linear.weight.abs().amax(dim=None if granularity == "tensor" else 1)
        assert torch.allclose(layer.dequantized_weight().abs().amax(dim=None if granularity == "tensor" else 1), largest, rtol=1e-6)


def test_quantizing_keeps_zero_inputs_and_the_range():
    x = torch.zeros(4, 32)
    q, scale = quantize_activation(x)
    assert not q.float().any() and torch.isfinite(scale).all()
    x = torch.randn(64, 32, dtype=torch.float16) * 1000
    q, scale = quantize_activation(x)
    assert float(q.float().abs().max()) == fp8.E4M3_MAX  # the largest value lands on E4M3's largest
    assert _rel(q.float() * scale, x) <= 0.04


def test_module_to_dtype_moves_but_never_casts_the_fp8_weights():
    layer = Fp8Linear.from_linear(torch.nn.Linear(32, 16))
    bits, scale = layer.weight_bits.clone(), layer.weight_scale.clone()
    layer.to(torch.float16)
    assert layer.weight_bits.dtype == torch.uint8 and torch.equal(layer.weight_bits, bits)
    assert layer.weight_scale.dtype == torch.float32 and torch.equal(layer.weight_scale, scale)
    assert layer.bias.dtype == torch.float16


def _unet_feeds(config: dict, frames: int = 3, h: int = 8, w: int = 8, seed: int = 0, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    args = (torch.randn(2, frames, config["in_channels"], h, w, generator=g), torch.tensor([0.5, 0.5]),
            torch.randn(2, 1, config["cross_attention_dim"], generator=g), torch.tensor([[6.0, 127.0, 0.02]] * 2))
    pose = torch.randn(2 * frames, config["block_out_channels"][0], h, w, generator=g)
    to = lambda t: t.to(device, dtype if t.is_floating_point() and t.dim() != 1 else t.dtype)  # noqa: E731  (the timestep stays fp32)
    return tuple(map(to, args)), to(pose)


def test_tiny_unet_in_fp8_within_the_stated_bound(tiny_models, emulated_kernel):
    unet = tiny_models.unet
    args, pose = _unet_feeds(unet.config)
    converted = copy.deepcopy(unet)
    convert_unet(converted)
    with torch.inference_mode():
        reference, y = unet(*args, pose_latents=pose), converted(*args, pose_latents=pose)
    assert 0 < _rel(y, reference) <= UNET_REL


def test_calibrated_scales(tiny_models, emulated_kernel):
    """Calibrated on one input, the same input gives the dynamic result; a far larger one is
    clamped into the FP8 range (finite), not turned into NaN."""
    unet = copy.deepcopy(tiny_models.unet)
    convert_unet(unet)
    args, pose = _unet_feeds(unet.config)
    with torch.inference_mode():
        dynamic = unet(*args, pose_latents=pose)
    assert calibrate(unet, lambda: unet(*args, pose_latents=pose)) == TINY_CONVERTED
    assert all(layer.input_multiplier is not None for layer in fp8.fp8_layers(unet))
    assert "activations=calibrated" in repr(unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q)
    with torch.inference_mode():
        assert _rel(unet(*args, pose_latents=pose), dynamic) <= 1e-5
        big = unet(args[0] * 50, *args[1:], pose_latents=pose * 50)
    assert torch.isfinite(big).all()


def test_a_failed_calibration_changes_nothing(tiny_models):
    unet = copy.deepcopy(tiny_models.unet)
    convert_unet(unet)

    def boom():
        raise RuntimeError("no inputs")

    with pytest.raises(RuntimeError):
        calibrate(unet, boom)
    assert all(not layer.observing and layer.input_multiplier is None for layer in fp8.fp8_layers(unet))


def _render(tmp_path, precision: str, device: str, monkeypatch):
    from mimic.runtime.api import MimicMotion, RuntimeOptions
    from mimic.runtime.report import report_path

    cpu_noise_everywhere(monkeypatch)
    (job,) = pose_frame_jobs(tmp_path / precision, 1)
    with MimicMotion.from_preset("tiny", RuntimeOptions(backend="torch", device=device, precision=precision)) as mm:
        report = mm.render(job)
        conversion = mm.fp8_conversion
    assert report.error is None, report.error
    written = json.loads(report_path(job).read_text())  # the run report beside the output
    return read_png_frames(job.out).astype(np.float64), written, conversion


def test_tiny_job_in_fp8_on_the_cpu_with_the_emulated_kernel(tiny_layout, tmp_path, monkeypatch, emulated_kernel):
    """The API path end to end (fp16 models, the UNet converted, the report), the capability check
    waved through and the kernel emulated: the CPU cannot run it otherwise."""
    monkeypatch.setattr(fp8, "fp8_support", lambda device: None)
    base, report16, none = _render(tmp_path, "fp16", "cpu", monkeypatch)
    frames, report, conversion = _render(tmp_path, "fp8", "cpu", monkeypatch)
    assert none is None and conversion.to_dict()["converted"] == TINY_CONVERTED
    assert report["precision"] == "fp8" and report16["precision"] == "fp16"
    assert 0 < np.abs(frames - base).mean() <= FRAMES_MEAN_ABS


# ------------------------------------------------------------------------------ on a GPU


def _cuda_fp8_or_skip() -> None:
    why = fp8_support("cuda")
    if why is not None:
        pytest.skip(f"no FP8 here: {why}")


@pytest.mark.gpu
@pytest.mark.parametrize("granularity", fp8.GRANULARITIES)
def test_cuda_kernel_near_fp16_and_its_emulation(granularity, record_property):
    _cuda_fp8_or_skip()
    torch.manual_seed(0)
    linear = torch.nn.Linear(320, 640).cuda().half()
    x = torch.randn(999, 320, device="cuda", dtype=torch.float16)  # M need not be a multiple of 16
    layer = Fp8Linear.from_linear(linear, granularity)
    try:
        y = layer(x)
    except RuntimeError as err:
        if granularity == "row":
            pytest.skip(f"this torch build has no row-wise FP8 with fp16 output: {str(err).splitlines()[0][:200]}")
        raise
    q, scale = quantize_activation(x, granularity)
    emulated = emulated_scaled_mm(q, layer.weight_fp8.t(), scale, layer.weight_scale, linear.bias, out_dtype=torch.float32)
    with torch.no_grad():
        reference = linear(x)
    record_property("rel_vs_fp16", round(_rel(y, reference), 5))
    assert y.dtype == torch.float16 and _rel(y, emulated) <= 5e-3  # fp16 output and fast accumulation
    assert _rel(y, reference) <= LINEAR_REL


@pytest.mark.gpu
def test_cuda_tiny_unet_fp8_against_fp16(tiny_layout, record_property):
    _cuda_fp8_or_skip()
    from mimic.model.loader import load_reference_models

    unet = load_reference_models(tiny_layout, torch.device("cuda"), torch.float16).unet
    reference = load_reference_models(tiny_layout).unet  # fp32 on the CPU
    args, pose = _unet_feeds(unet.config, device="cuda", dtype=torch.float16)
    with torch.inference_mode():
        y16 = unet(*args, pose_latents=pose)
        y32 = reference(*(a.cpu().float() if a.dim() != 1 else a.cpu() for a in args), pose_latents=pose.cpu().float())
        result = convert_unet(unet)
        y8 = unet(*args, pose_latents=pose)
    assert len(result.converted) == TINY_CONVERTED
    record_property("rel_fp8_vs_fp32", round(_rel(y8.cpu(), y32), 5))
    record_property("rel_fp16_vs_fp32", round(_rel(y16.cpu(), y32), 5))
    assert torch.isfinite(y8).all() and _rel(y8.cpu(), y32) <= UNET_REL


@pytest.mark.gpu
def test_cuda_tiny_job_fp8_against_fp16(tiny_layout, tmp_path, monkeypatch, record_property):
    _cuda_fp8_or_skip()
    base, _, _ = _render(tmp_path, "fp16", "cuda", monkeypatch)
    frames, report, conversion = _render(tmp_path, "fp8", "cuda", monkeypatch)
    diff = np.abs(frames - base)
    record_property("frames_mean_abs_diff", round(float(diff.mean()), 3))
    record_property("frames_max_abs_diff", float(diff.max()))
    assert report["precision"] == "fp8" and len(conversion.converted) == TINY_CONVERTED
    assert diff.mean() <= FRAMES_MEAN_ABS
