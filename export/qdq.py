"""Q/DQ ONNX of an 8-bit UNet (``mimic.model.quantize``), validated against its fake-quantized torch model.

TensorRT 11 and TensorRT-RTX build strongly typed: 8-bit precision comes only from
QuantizeLinear/DequantizeLinear pairs in the graph (no INT8/FP8 builder flags exist any more). The
export goes through the project's own path (``mimic.export.onnx_export``: the TorchScript exporter,
the same names, dynamic axes, clean-up and external-data handling as every other graph) from the
ModelOpt-quantized UNet, whose quantizers export themselves:

* INT8: standard ``QuantizeLinear``/``DequantizeLinear`` (int8 zero points), per-channel for weights;
* FP8: ModelOpt emits TensorRT's custom ``trt::TRT_FP8QuantizeLinear`` / ``TRT_FP8DequantizeLinear``
  (scale = amax / 448). :func:`native_fp8_qdq` rewrites each into the standard opset-19+ op with a
  ``FLOAT8E4M3FN`` zero point: same scale, same rounding (to nearest even, saturating at +-448), so
  ``onnx.checker``, onnxruntime's CPU provider and TensorRT all read the graph. (NVIDIA's demo gets
  the same result another way: INT8-style Q/DQ with amax scaled by 127/448, then the zero-point type
  rewritten to FP8.)

The graph body is ``fp16`` (the engine graph: fp16 weights and activations with the fp32 islands of
``mimic.export.fp16``, Q/DQ in fp16; ``<dir>/<precision>/unet.onnx``) or ``fp32`` (Q/DQ in fp32;
``<dir>/<precision>/unet_fp32.onnx``: the closest to the torch model, for validation). Opset 20:
FP8 and fp16-scale Q/DQ need >= 19 and the TorchScript exporter stops at 20 (ModelOpt's own ONNX
path asks for 21).

Validation (:func:`validate_qdq`) runs the graph in onnxruntime on the CPU at the UNet's validation
shapes and compares it with the fake-quantized torch model (fp32) on the same inputs. The two are
the same arithmetic, but a value that lands on a rounding boundary can round to the neighbouring
8-bit step on one side and not the other (different summation order upstream), and that one step
travels on through the network; the tolerances (``QDQ_TOLERANCE``) bound what that costs, measured
on the tiny preset.
"""
from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mimic.errors import ExportError, InputError
from mimic.export.compare import CompareRow, compare_outputs
from mimic.export.dummy import dims_from_module, dummy_inputs, torch_dtype
from mimic.export.fp16 import convert_to_fp16
from mimic.export.onnx_export import EXPORTER, ExportResult, _torch_export, finalize_onnx, sha256_model_files
from mimic.export.validate import describe_point
from mimic.export.wrappers import wrap
from mimic.spec import UNET, ModelDims, ShapePoint, Tolerance

log = logging.getLogger(__name__)

QDQ_OPSET = 20
BODIES = ("fp16", "fp32")
ENGINE_BODY = "fp16"
# The whole network, onnxruntime (CPU, basic optimisations) vs the fake-quantized fp32 torch model at
# the UNet's two validation points x two input seeds: the difference is quantization noise, not a bug
# (see "validation" below), so the bound is relative to the output's peak and no absolute one is set
# (the peak differs from model to model). Measured worst max rel (2026-12-06), calibrated on toy dances
# by `mimic quantize` / on random batches: int8 5.3e-2 / 3.6e-2 (tiny, fp32 body), 6.7e-2 (tiny, fp16
# body), 2.4e-2 (toy); fp8 5.8e-2 / 6.9e-2 (tiny, fp32 body), 6.2e-2 / 7.0e-2 (tiny, fp16 body),
# 6.3e-2 (toy, fp16 body). The bound is ~2x the worst.
QDQ_MAX_REL = 0.15
QDQ_TOLERANCE: dict[tuple[str, str], Tolerance] = {(p, b): Tolerance(max_abs=math.inf, max_rel=QDQ_MAX_REL)
                                                   for p in ("fp8", "int8") for b in BODIES}
_TRT_DOMAIN = "trt"
_FP8_OPS = {"TRT_FP8QuantizeLinear": "QuantizeLinear", "TRT_FP8DequantizeLinear": "DequantizeLinear"}


def qdq_filename(precision: str, body: str = ENGINE_BODY) -> str:
    """``fp8/unet.onnx`` (the fp16-body engine graph) or ``fp8/unet_fp32.onnx``."""
    _check(precision, body)
    return f"{precision}/{UNET.name}.onnx" if body == ENGINE_BODY else f"{precision}/{UNET.name}_{body}.onnx"


def _check(precision: str, body: str) -> None:
    from mimic.model.quantize import check_precision

    check_precision(precision, "precision")
    if body not in BODIES:
        raise InputError(f"unknown Q/DQ graph body {body!r}; choose one of {', '.join(BODIES)}")


# ------------------------------------------------------------------------------------- export


def _set_qdq_dtype(model: torch.nn.Module, body: str) -> None:
    """INT8 Q/DQ compute in the body's dtype (ModelOpt's default, fp32, would leave fp32 outputs in
    an fp16 graph); FP8 Q/DQ always take the input's dtype."""
    from mimic.model.quantize import quantizers

    for q in quantizers(model).values():
        q.trt_high_precision_dtype = "Half" if body == "fp16" else "Float"


def export_qdq_unet(unet: torch.nn.Module, out_dir: Path, precision: str, *, body: str = ENGINE_BODY, dims: ModelDims | None = None,
                    opset: int = QDQ_OPSET, external_data: bool | None = None) -> ExportResult:
    """Export the quantized ``unet`` (fp32, calibrated; left unchanged) to ``out_dir/`` +
    :func:`qdq_filename` and check the graph (``onnx.checker``, full check where it fits in memory)."""
    _check(precision, body)
    if opset < 19:
        raise InputError(f"8-bit Q/DQ graphs need opset >= 19 (FP8 and fp16 scales), got {opset}")
    from mimic.model.quantize import quantized_layers

    if not quantized_layers(unet):
        raise ExportError("the UNet has no enabled quantizers: quantize it first (`mimic quantize`)")
    t0 = time.perf_counter()
    wrapper = wrap(UNET.name, unet)
    dims = dims or dims_from_module(UNET.name, wrapper)
    if body == "fp16":
        wrapper = convert_to_fp16(wrapper, copy=True)
    _set_qdq_dtype(wrapper, body)
    final = Path(out_dir) / qdq_filename(precision, body)
    final.parent.mkdir(parents=True, exist_ok=True)
    args = tuple(dummy_inputs(UNET, UNET.export_point, dims, body, seed=0).values())
    with tempfile.TemporaryDirectory(prefix=".qdq-", dir=final.parent) as tmp:
        raw, native = Path(tmp) / "model.onnx", Path(tmp) / "native.onnx"
        _torch_export(UNET, wrapper, args, raw, opset)
        counts = native_fp8_qdq(raw, native)
        num_nodes = finalize_onnx(native, final, spec=UNET, precision=precision, external_data=external_data)
    del wrapper
    data = final.with_name(final.name + ".data")
    data_path = data if data.exists() else None
    check_qdq_graph(final)
    result = ExportResult(stage=UNET.name, precision=precision, path=final, data_path=data_path, sha256=sha256_model_files(final, data_path),
                          opset=opset, exporter=EXPORTER, num_nodes=num_nodes,
                          size_bytes=final.stat().st_size + (data_path.stat().st_size if data_path else 0), seconds=time.perf_counter() - t0)
    rewritten = f" ({counts['rewritten']} rewritten from TensorRT's FP8 ops)" if counts["rewritten"] else ""
    log.info(f"  {UNET.name} {precision} Q/DQ ({body} body): {final.name}, {counts['QuantizeLinear']} Q + {counts['DequantizeLinear']} DQ "
             f"nodes{rewritten}, {result.size_bytes / 1e6:.1f} MB, {result.seconds:.1f} s")
    return result


def native_fp8_qdq(src: Path, dst: Path) -> dict[str, int]:
    """Rewrite ModelOpt's ``trt::TRT_FP8(De)QuantizeLinear`` nodes in ``src`` into standard
    ``QuantizeLinear``/``DequantizeLinear`` with a FLOAT8E4M3FN zero point (0) and write ``dst``
    (beside ``src``: external-data references stay valid). Returns node counts."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(src), load_external_data=False)
    graph = model.graph
    zp_name = "qdq_fp8_zero_point"
    rewritten, quantized = 0, set()
    for node in graph.node:
        if node.domain == _TRT_DOMAIN and node.op_type in _FP8_OPS:
            if len(node.input) != 2:
                raise ExportError(f"unexpected {node.op_type} with {len(node.input)} inputs in the exported graph")
            node.op_type = _FP8_OPS[node.op_type]
            node.domain = ""
            node.input.append(zp_name)
            del node.attribute[:]
            if node.op_type == "QuantizeLinear":
                quantized.update(node.output)
            rewritten += 1
    if rewritten:
        graph.initializer.append(helper.make_tensor(zp_name, TensorProto.FLOAT8E4M3FN, [], [0.0]))
        # The exporter typed the custom op's output uint8; it is FLOAT8E4M3FN now.
        keep = [vi for vi in graph.value_info if vi.name not in quantized]
        del graph.value_info[:]
        graph.value_info.extend(keep)
    if not any(n.domain == _TRT_DOMAIN for n in graph.node):
        kept = [o for o in model.opset_import if o.domain != _TRT_DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(kept)
    ops = [n.op_type for n in graph.node]
    Path(dst).write_bytes(model.SerializeToString())
    return {"rewritten": rewritten, "QuantizeLinear": ops.count("QuantizeLinear"), "DequantizeLinear": ops.count("DequantizeLinear")}


def check_qdq_graph(path: Path) -> dict[str, int]:
    """``onnx.checker`` (with shape inference when the graph is inline) and the Q/DQ census:
    ExportError when the graph is invalid, holds custom-domain ops, or has no Q/DQ."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    inline = not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    try:
        if inline:
            onnx.checker.check_model(model, full_check=True)
        else:
            onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as err:
        raise ExportError(f"the Q/DQ graph {path.name} is invalid: {str(err).splitlines()[0][:300]}") from None
    custom = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if custom:
        raise ExportError(f"the Q/DQ graph {path.name} still has custom ops: {', '.join(custom)}")
    ops = [n.op_type for n in model.graph.node]
    counts = {"QuantizeLinear": ops.count("QuantizeLinear"), "DequantizeLinear": ops.count("DequantizeLinear")}
    if not counts["QuantizeLinear"] or counts["QuantizeLinear"] != counts["DequantizeLinear"]:
        raise ExportError(f"the Q/DQ graph {path.name} has {counts['QuantizeLinear']} Q and {counts['DequantizeLinear']} DQ nodes")
    return counts


# --------------------------------------------------------------------------------- validation
# Two checks against the fake-quantized torch UNet (fp32, CPU):
#
# 1. Every Q/DQ pair alone (``check_qdq_pairs``, fp32 body): the pair's scale, zero point and axis,
#    run by onnxruntime on exactly the tensor the matching torch quantizer received (captured in one
#    torch forward), must reproduce that quantizer's output. Two implementations of the same rounding
#    can still disagree on an element whose value sits within a float rounding error of a step
#    boundary: torch multiplies by 1/scale, ONNX divides by scale, so an input exactly halfway between
#    two 8-bit values (common when the weights were trained in low precision) can round up on one
#    side and down, to even, on the other. The rule: every element agrees, or sits on such a tie and
#    differs by one 8-bit step.
# 2. The whole network (``validate_qdq``): onnxruntime on the graph vs the torch model at the UNet's
#    validation points. Here those one-step disagreements do not stay put: each moves the inputs of
#    every later quantizer a little, some of which then round differently too, and over the UNet's
#    ~100 quantized layers the two outputs drift apart by about as much as quantization itself moves
#    them (measured: the root-mean-square difference graph - torch is 0.8-1.0x the fake quantization's
#    own error vs the unquantized model, while single pairs agree to 1e-7). So the network-level rule
#    is that the graph's quantization error has the fake quantization's size: rms(graph - fp32) /
#    rms(fake - fp32) within NOISE_RATIO, and the max error within QDQ_TOLERANCE.

NOISE_RATIO = (0.8, 1.25)


@dataclass(frozen=True)
class PairCheck:
    pairs: int  # Q/DQ pairs checked
    elements: int
    mismatched: int  # elements where onnxruntime and torch differ
    worst_fraction: float  # the largest mismatched fraction of one pair's elements
    worst_steps: float  # the largest difference, in 8-bit steps of that pair
    failures: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {"pairs": self.pairs, "elements": self.elements, "mismatched_elements": self.mismatched, "worst_mismatch_fraction": self.worst_fraction,
                "worst_difference_steps": self.worst_steps, "failures": list(self.failures), "passed": self.passed,
                "rule": "every element agrees, or its input sits on a rounding tie and the two differ by one 8-bit step"}


@dataclass(frozen=True)
class QdqValidation:
    precision: str
    body: str
    rows: tuple[CompareRow, ...]  # the whole network vs the fake-quantized torch model, per point and seed
    noise_ratios: tuple[float, ...]  # rms(graph - fp32) / rms(fake - fp32), per row
    rms_vs_fake: tuple[float, ...]  # rms(graph - fake) / rms(fake), per row
    pairs: PairCheck | None
    seconds: float

    @property
    def passed(self) -> bool:
        lo, hi = NOISE_RATIO
        return all(r.passed for r in self.rows) and all(lo <= x <= hi for x in self.noise_ratios) and (self.pairs is None or self.pairs.passed)

    @property
    def worst_abs(self) -> float:
        return max(r.max_abs for r in self.rows)

    @property
    def worst_rel(self) -> float:
        return max(r.max_rel for r in self.rows)

    def to_dict(self) -> dict:
        tol = self.rows[0].tolerance
        return {"precision": self.precision, "body": self.body, "passed": self.passed,
                "reference": "fake-quantized torch UNet (fp32, CPU)", "runtime": "onnxruntime CPUExecutionProvider, basic graph optimisations",
                "network": {"worst_max_abs": self.worst_abs, "worst_max_rel": self.worst_rel,
                            "tolerance": {"max_abs": tol.max_abs if math.isfinite(tol.max_abs) else None, "max_rel": tol.max_rel},
                            "noise_ratio": list(self.noise_ratios), "noise_ratio_range": list(NOISE_RATIO), "rms_vs_fake_rel": list(self.rms_vs_fake),
                            "cases": [{"point": r.point, "max_abs": r.max_abs, "max_rel": r.max_rel, "passed": r.passed} for r in self.rows]},
                "pairs": self.pairs.to_dict() if self.pairs is not None else None}

    def summary(self) -> str:
        tol = self.rows[0].tolerance
        bound = f"{tol.max_abs:g} / {tol.max_rel:g}" if math.isfinite(tol.max_abs) else f"max rel {tol.max_rel:g}"
        text = (f"{'passed' if self.passed else 'FAILED'} ({self.body} body): network worst max abs {self.worst_abs:.2e}, max rel {self.worst_rel:.2e} "
                f"(tolerance {bound}), quantization-noise ratio {min(self.noise_ratios):.2f}-{max(self.noise_ratios):.2f} "
                f"(allowed {NOISE_RATIO[0]:g}-{NOISE_RATIO[1]:g})")
        if self.pairs is not None:
            text += (f"; {self.pairs.pairs} Q/DQ pairs alone: {self.pairs.mismatched} of {self.pairs.elements} elements differ "
                     f"(worst {self.pairs.worst_fraction:.1e} of a pair, {self.pairs.worst_steps:.2f} step)")
        return text


def literal_session(onnx_path, threads: int | None = None):
    """An onnxruntime CPU session that runs the Q/DQ nodes as written: graph optimisations at the
    basic level (constant folding, no fusion). Measured: at onnxruntime's default level its QDQ
    fusions replace DequantizeLinear -> MatMul with integer kernels that quantize the activations
    themselves, which changes the numbers (2.8e-3 max abs on the toy UNet from one INT8 weight alone,
    7e-7 at the basic level): a different computation from the one TensorRT and the fake quantization do.
    ``onnx_path``: a path or serialized model bytes."""
    from mimic.ort_session import import_onnxruntime

    ort = import_onnxruntime("cpu")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.add_session_config_entry("session.disable_prepacking", "1")
    if threads:
        opts.intra_op_num_threads = threads
    label = "the Q/DQ graph" if isinstance(onnx_path, bytes) else Path(onnx_path).name
    try:
        return ort.InferenceSession(onnx_path if isinstance(onnx_path, bytes) else str(onnx_path), opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's untyped errors (e.g. an op type its CPU provider lacks)
        raise ExportError(f"onnxruntime (CPU) cannot run {label}: {str(err).splitlines()[0][:300] if str(err) else type(err).__name__}") from None


def _enabled_state(unet: torch.nn.Module) -> dict[str, bool]:
    from mimic.model.quantize import quantizers

    return {n: bool(q.is_enabled) for n, q in quantizers(unet).items()}


def _restore_state(unet: torch.nn.Module, state: dict[str, bool]) -> None:
    from mimic.model.quantize import quantizers

    for n, q in quantizers(unet).items():
        q.enable() if state.get(n) else q.disable()


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a.astype(np.float64)))))


def validate_qdq(onnx_path: Path, unet: torch.nn.Module, precision: str, body: str, *, points: Sequence[ShapePoint] | None = None,
                 seeds: Sequence[int] = (1, 2), tolerance: Tolerance | None = None, dims: ModelDims | None = None,
                 pairs: bool | None = None) -> QdqValidation:
    """Both checks above: the network at the UNet's validation ``points`` x input ``seeds``, and (``pairs``:
    default for the fp32 body) every Q/DQ pair alone."""
    _check(precision, body)
    t0 = time.perf_counter()
    tol = tolerance or QDQ_TOLERANCE[(precision, body)]
    wrapper = wrap(UNET.name, unet)
    dims = dims or dims_from_module(UNET.name, wrapper)
    sess = literal_session(onnx_path)
    state = _enabled_state(unet)
    rows, ratios, vs_fake = [], [], []
    points = list(points if points is not None else UNET.validation_points)
    try:
        for point in points:
            for seed in seeds:
                feeds = dummy_inputs(UNET, point, dims, "fp32", seed=seed)
                with torch.no_grad():
                    fake = wrapper(*feeds.values()).float().numpy()
                    _restore_state(unet, {})
                    fp32 = wrapper(*feeds.values()).float().numpy()
                    _restore_state(unet, state)
                got = sess.run(list(UNET.output_names), {k: v.to(torch_dtype(UNET.tensor(k), body)).numpy() for k, v in feeds.items()})[0]
                got = np.asarray(got, dtype=np.float32)
                rows.append(compare_outputs(got, fake, tol, stage=UNET.name, precision=f"{precision}/{body}",
                                            point=f"{describe_point(point)} seed={seed}", output=UNET.output_names[0]))
                noise = _rms(fake - fp32)
                ratios.append(_rms(got - fp32) / noise if noise > 0 else float("inf"))
                vs_fake.append(_rms(got - fake) / max(_rms(fake), 1e-30))
    finally:
        _restore_state(unet, state)
    del sess
    pair_check = None
    if pairs if pairs is not None else body == "fp32":
        pair_check = check_qdq_pairs(onnx_path, unet, dummy_inputs(UNET, points[0], dims, "fp32", seed=seeds[0]), body)
    return QdqValidation(precision, body, tuple(rows), tuple(ratios), tuple(vs_fake), pair_check, time.perf_counter() - t0)


def _quantizer_of(node) -> str:
    """``/down_blocks.0/.../conv1/input_quantizer/QuantizeLinear`` -> ``down_blocks.0....conv1.input_quantizer``."""
    parts = node.name.strip("/").split("/")
    return ".".join(parts[:-1])


def check_qdq_pairs(onnx_path: Path, unet: torch.nn.Module, feeds: dict[str, torch.Tensor], body: str = "fp32") -> PairCheck:
    """Every Q/DQ pair of the graph, run by onnxruntime alone on the input its torch quantizer saw
    in one forward of ``unet`` on ``feeds`` (fp32), against that quantizer's output."""
    import onnx
    from onnx import helper

    from mimic.model.quantize import quantizers

    model = onnx.load(str(onnx_path), load_external_data=False)
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inits = {t.name: t for t in graph.initializer}

    def constant(name: str):
        if name in inits:
            return inits[name]
        node = producer.get(name)
        if node is not None and node.op_type == "Constant":
            return node.attribute[0].t
        raise ExportError(f"Q/DQ input {name} is not a constant in {Path(onnx_path).name}")

    named = quantizers(unet)
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    def keep(name: str):
        def hook(module, args, output) -> None:  # returns None: the output is left as it is
            seen.setdefault(name, (args[0].detach().float().clone(), output.detach().float().clone()))
        return hook

    hooks = [q.register_forward_hook(keep(n)) for n, q in named.items() if q.is_enabled]
    try:
        with torch.no_grad():
            wrap(UNET.name, unet)(*feeds.values())
    finally:
        for h in hooks:
            h.remove()
    elem = {"fp32": onnx.TensorProto.FLOAT, "fp16": onnx.TensorProto.FLOAT16}[body]
    failures, total, mismatched, worst_frac, worst_steps, count = [], 0, 0, 0.0, 0.0, 0
    for q in (n for n in graph.node if n.op_type == "QuantizeLinear"):
        name = _quantizer_of(q)
        dq = next((c for c in consumers.get(q.output[0], []) if c.op_type == "DequantizeLinear"), None)
        if name not in seen or dq is None:
            failures.append(f"{q.name}: no {'torch quantizer ' + name if name not in seen else 'DequantizeLinear'}")
            continue
        x, y = seen[name]
        scale, zp = onnx.TensorProto(), onnx.TensorProto()
        scale.CopyFrom(constant(q.input[1]))
        zp.CopyFrom(constant(q.input[2]))
        scale.name, zp.name = "scale", "zero_point"
        axis = [a for a in q.attribute if a.name == "axis"]
        kw = {"axis": axis[0].i} if axis else {}
        mini = helper.make_model(helper.make_graph(
            [helper.make_node("QuantizeLinear", ["x", "scale", "zero_point"], ["q"], **kw),
             helper.make_node("DequantizeLinear", ["q", "scale", "zero_point"], ["y"], **kw)],
            "pair", [helper.make_tensor_value_info("x", elem, list(x.shape))], [helper.make_tensor_value_info("y", elem, list(x.shape))],
            [scale, zp]), opset_imports=list(model.opset_import))
        xs = x.numpy() if body == "fp32" else x.half().numpy()
        got = np.asarray(literal_session(mini.SerializeToString(), threads=1).run(None, {"x": xs})[0], dtype=np.float32)
        ref, xin = y.numpy(), xs.astype(np.float32)
        diff = np.abs(got - ref)
        step = _step(onnx.numpy_helper.to_array(scale).astype(np.float64), zp.data_type)
        steps = float(diff.max() / step) if diff.size else 0.0
        differs = diff > 1e-6 * max(float(np.abs(ref).max()), 1e-30)
        # A tie: the input sits on the midpoint of the two values the implementations chose.
        off_tie = differs & (np.abs(xin - (got + ref) / 2) > 1e-6 * np.abs(xin) + 1e-30)
        bad = int(np.count_nonzero(differs))
        frac = bad / max(diff.size, 1)
        count += 1
        total += diff.size
        mismatched += bad
        worst_frac, worst_steps = max(worst_frac, frac), max(worst_steps, steps)
        if steps > 1.0 + 1e-3 or off_tie.any():
            failures.append(f"{name}: {bad} of {diff.size} elements differ, {int(np.count_nonzero(off_tie))} not at a rounding tie "
                            f"(up to {steps:.2f} steps)")
    if count == 0:
        failures.append("no Q/DQ pair found")
    return PairCheck(count, total, mismatched, worst_frac, worst_steps, tuple(failures))


def _step(scale: np.ndarray, zp_type: int) -> float:
    """The largest 8-bit step of a pair: ``scale`` for INT8, 32 x ``scale`` for E4M3 (its top binade, 256..448)."""
    import onnx

    top = float(np.max(np.abs(scale)))
    return top * (32.0 if zp_type == onnx.TensorProto.FLOAT8E4M3FN else 1.0)
