"""Export one stage to ONNX: ``export_stage(spec, model, out_dir, precision) -> ExportResult``.

Exporter: the TorchScript ("legacy") exporter, ``torch.onnx.export(..., dynamo=False)``, opset 20.
Measured on this stack (torch 2.13, onnx 1.23): it exports every stage with dynamic batch, frame and
spatial axes, onnxruntime matches torch to ~1e-6, and TensorRT-RTX parses and builds the graphs.
The dynamo exporter was not chosen: onnxscript 0.7.2 mis-exports ``repeat_interleave`` with a
symbolic count (our UNet no longer calls it and diffusers' SVD blocks call it only for attention
masks, which SVD never passes, but one more diffusers change would bring it back), it emits the
opset-23 ``Attention`` op that TensorRT-RTX rejects when asked for newer opsets, and it stores the
exporting machine's source paths in node metadata. The legacy exporter tops out at opset 20; 18-20
are accepted. If a future torch drops it, the dynamo route needs the custom repeat_interleave
translation (the design notes on acceleration, section 7) and the metadata stripping below (already generic).

After export the graph is rewritten once, deterministically:

* doc strings, node metadata and producer-specific metadata are dropped, so no machine path ends up
  in a file (checked by the tests) and the same weights give the same bytes (the engine cache key
  hashes them);
* the wrapper's ``model.`` prefix is stripped from initializer and node names, so ONNX weights are
  named like the checkpoint keys (refit maps weights by name);
* Reshapes with run-time shapes get ``allowzero=1`` (same meaning here; TensorRT then needs no
  run-time placeholder resolution: 44 build warnings gone and a 10% smaller tiny-UNet plan);
* weights go to ``<stage>.onnx.data`` (one file, 4 KiB-aligned offsets, graph order) when the model
  would exceed protobuf's 2 GiB limit, else everything is inline.

Memory (the full-size UNet must export in 24 GiB of host RAM): the command loads the UNet with the
meta-device loader (checkpoint tensors assigned, no random init, no second copy), exports one model
group at a time, exports fp16 from an in-place conversion (``inplace=True``), and this module never
holds the external weights in a protobuf: it loads the exported graph without external data and
streams the exporter's per-tensor weight files one tensor at a time into the final data file.
Measured on the full-size MimicMotion UNet config (1.52 B parameters, random weights, this CPU
machine): fp16 export 54 s, peak RSS 3.9 GB (3.4 GB of it the model); fp32 export 82 s, peak 7.9 GB
(model 6.4 GB). Not measured with the released checkpoint (not available here).
"""
from __future__ import annotations

import hashlib
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from mimic.errors import ExportError, InputError
from mimic.export.dummy import dims_from_module, dummy_inputs
from mimic.export.fp16 import convert_to_fp16
from mimic.export.wrappers import WRAPPED_PREFIX, StageWrapper, wrap
from mimic.files import publish, remove_quietly, temp_path
from mimic.spec import PRECISIONS, ModelDims, StageSpec, onnx_filename

log = logging.getLogger(__name__)

EXPORTER = "torchscript"
DEFAULT_OPSET = 20
SUPPORTED_OPSETS = (18, 19, 20)
# Protobuf refuses messages over 2 GiB; leave room for the graph itself.
EXTERNAL_DATA_THRESHOLD = (2 << 30) - (64 << 20)
DATA_ALIGNMENT = 4096
MIN_EXTERNAL_TENSOR_BYTES = 1024  # smaller tensors stay inline even in an external-data model
_CHUNK = 1 << 22


@dataclass(frozen=True)
class ExportResult:
    stage: str
    precision: str
    path: Path  # the .onnx file
    data_path: Path | None  # its external-data file, when used
    sha256: str  # sha256 over the .onnx bytes followed by the external-data bytes
    opset: int
    exporter: str
    num_nodes: int
    size_bytes: int  # .onnx + external data
    seconds: float

    def to_dict(self, relative_to: Path | None = None) -> dict:
        def rel(p: Path | None) -> str | None:
            if p is None:
                return None
            return p.relative_to(relative_to).as_posix() if relative_to is not None else str(p)

        return {
            "stage": self.stage,
            "precision": self.precision,
            "path": rel(self.path),
            "data_path": rel(self.data_path),
            "sha256": self.sha256,
            "opset": self.opset,
            "exporter": self.exporter,
            "num_nodes": self.num_nodes,
            "size_bytes": self.size_bytes,
        }


def export_stage(
    spec: StageSpec,
    model: torch.nn.Module,
    out_dir: Path,
    precision: str,
    *,
    dims: ModelDims | None = None,
    opset: int = DEFAULT_OPSET,
    external_data: bool | None = None,
    inplace: bool = False,
) -> ExportResult:
    """Export ``model`` (the stage's raw model or its wrapper) to ``out_dir/<precision>/<stage>.onnx``.

    ``precision="fp16"`` exports a half copy with fp32 islands (``inplace=True``: converts ``model``
    itself, to save memory). ``external_data``: None = only when needed, True/False = force.
    """
    if not spec.exported:
        raise InputError(f"stage {spec.name} ships as ONNX and is not exported from PyTorch")
    if precision not in PRECISIONS or precision not in spec.precisions:
        raise InputError(f"unknown precision {precision!r} for stage {spec.name}; use one of {', '.join(spec.precisions)}")
    if opset not in SUPPORTED_OPSETS:
        raise InputError(f"opset {opset} is not supported by the {EXPORTER} exporter; use one of {SUPPORTED_OPSETS}")
    t0 = time.perf_counter()
    wrapper = wrap(spec.name, model)
    if any(p.device.type == "meta" for p in wrapper.parameters()):
        raise ExportError(f"{spec.name}: the model still has meta-device weights (not loaded)")
    dims = dims or dims_from_module(spec.name, wrapper)
    if precision == "fp16":  # also for an fp16 model: the fp32 islands are added here
        wrapper = convert_to_fp16(wrapper, copy=not inplace)
    elif any(p.dtype != torch.float32 for p in wrapper.parameters()):
        raise ExportError(f"{spec.name}: an fp32 graph needs the model in float32 (got {next(wrapper.parameters()).dtype})")

    out_dir = Path(out_dir)
    final = out_dir / onnx_filename(spec.name, precision)
    final.parent.mkdir(parents=True, exist_ok=True)
    args = tuple(dummy_inputs(spec, spec.export_point, dims, precision, seed=0).values())
    with tempfile.TemporaryDirectory(prefix=f".{spec.name}-", dir=final.parent) as tmp:
        raw = Path(tmp) / "model.onnx"
        _torch_export(spec, wrapper, args, raw, opset)
        num_nodes = finalize_onnx(raw, final, spec=spec, precision=precision, external_data=external_data)
    data = final.with_name(final.name + ".data")
    data_path = data if data.exists() else None
    result = ExportResult(
        stage=spec.name,
        precision=precision,
        path=final,
        data_path=data_path,
        sha256=sha256_model_files(final, data_path),
        opset=opset,
        exporter=EXPORTER,
        num_nodes=num_nodes,
        size_bytes=final.stat().st_size + (data_path.stat().st_size if data_path else 0),
        seconds=time.perf_counter() - t0,
    )
    log.info(f"  {spec.name} {precision}: {final.name} ({result.size_bytes / 1e6:.1f} MB, {num_nodes} nodes, {result.seconds:.1f} s)")
    return result


def _torch_export(spec: StageSpec, wrapper: StageWrapper, args: tuple, path: Path, opset: int) -> None:
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings and the exporter's deprecation notice
            torch.onnx.export(
                wrapper,
                args,
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=list(spec.input_names),
                output_names=list(spec.output_names),
                dynamic_axes=spec.dynamic_axes(),
                do_constant_folding=True,
                export_params=True,
            )
    except Exception as err:  # the exporter raises many types; report one line, keep the cause
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise ExportError(f"ONNX export of {spec.name} failed: {first}") from err


# --------------------------------------------------------------------------------- rewriting


def _rename(name: str) -> str:
    if name.startswith(WRAPPED_PREFIX):
        return name[len(WRAPPED_PREFIX) :]
    if name.startswith("/model/"):
        return name[len("/model") :]
    return name


def _graphs(graph):
    """The graph and every subgraph (If/Loop bodies) in it."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _graphs(attr.g)
            for g in attr.graphs:
                yield from _graphs(g)


def _clean(model, spec: StageSpec | None, precision: str | None) -> None:
    """Drop doc strings and metadata in place, strip the wrapper prefix from names."""
    import onnx

    model.doc_string = ""
    del model.metadata_props[:]
    if spec is not None:
        model.metadata_props.add(key="mimic.stage", value=spec.name)
    if precision is not None:
        model.metadata_props.add(key="mimic.precision", value=precision)
    for graph in _graphs(model.graph):
        graph.doc_string = ""
        del graph.metadata_props[:]
        for vi in (*graph.input, *graph.output, *graph.value_info):
            vi.doc_string = ""
            vi.name = _rename(vi.name)
            del vi.metadata_props[:]
        for init in graph.initializer:
            init.doc_string = ""
            init.name = _rename(init.name)
            del init.metadata_props[:]
        for node in graph.node:
            node.doc_string = ""
            del node.metadata_props[:]
            node.name = _rename(node.name)
            node.input[:] = [_rename(n) for n in node.input]
            node.output[:] = [_rename(n) for n in node.output]
    if spec is not None:
        model.graph.name = spec.name
    inline = not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    if inline and model.ByteSize() < EXTERNAL_DATA_THRESHOLD:  # the checker would look for external files
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as err:
            raise ExportError(f"the exported {model.graph.name} graph is invalid: {str(err).splitlines()[0][:300]}") from None


def _reshape_without_placeholders(graph, base_dir: Path) -> int:
    """Set ``allowzero=1`` on Reshapes whose target shape is computed at run time.

    The exporter emits ``allowzero=0`` everywhere, where a 0 in the shape means "copy that input
    dim". For a computed shape TensorRT cannot tell whether a 0 may appear and falls back to
    resolving it at run time ("IShuffleLayer with zeroIsPlaceHolder=true ... may cause excessive
    memory consumption"; 44 warnings on the tiny UNet, and a 10% larger plan). Our computed shapes
    are sizes of real tensors (every profile dim is >= 1), so no 0 ever appears and ``allowzero=1``
    means the same. Shapes with a constant 0 part keep the placeholder meaning. Returns the count.
    """
    from onnx import helper, numpy_helper

    producer = {o: n for n in graph.node for o in n.output}
    inits = {t.name: t for t in graph.initializer}

    def constant(name: str):
        if name in inits:
            return numpy_helper.to_array(inits[name], base_dir=str(base_dir))
        node = producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].HasField("t"):
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    changed = 0
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or constant(node.input[1]) is not None:
            continue
        src = producer.get(node.input[1])
        parts = list(src.input) if src is not None and src.op_type == "Concat" else []
        if any((value := constant(p)) is not None and (value == 0).any() for p in parts):
            continue
        attr = next((a for a in node.attribute if a.name == "allowzero"), None)
        if attr is None:
            node.attribute.append(helper.make_attribute("allowzero", 1))
        elif attr.i == 0:
            attr.i = 1
        else:
            continue
        changed += 1
    return changed


def _tensor_nbytes(t) -> int:
    from onnx.external_data_helper import uses_external_data

    if uses_external_data(t):
        info = {e.key: e.value for e in t.external_data}
        return int(info.get("length", 0)) or -1
    return len(t.raw_data)


def _read_external(t, base: Path) -> bytes:
    info = {e.key: e.value for e in t.external_data}
    loc = base / info["location"]
    with open(loc, "rb") as f:
        f.seek(int(info.get("offset", 0)))
        length = info.get("length")
        return f.read(int(length)) if length is not None else f.read()


def finalize_onnx(src: Path, dst: Path, *, spec: StageSpec | None = None, precision: str | None = None, external_data: bool | None = None) -> int:
    """Rewrite ``src`` (and the external data it references) into ``dst`` deterministically.

    Returns the number of nodes. ``dst``'s external data, if any, is ``dst.name + '.data'``; a stale
    one is removed. Both files are written to temporaries and published (``mimic.files``).
    """
    import onnx
    from onnx.external_data_helper import uses_external_data

    src, dst = Path(src), Path(dst)
    try:
        model = onnx.load(str(src), load_external_data=False)
    except Exception as err:
        raise ExportError(f"cannot read the exported graph {src.name}: {err}") from None
    _clean(model, spec, precision)
    _reshape_without_placeholders(model.graph, src.parent)
    sizes = [_tensor_nbytes(t) for t in model.graph.initializer]
    total = sum(s if s > 0 else 0 for s in sizes) + model.ByteSize()
    has_external = any(s < 0 or uses_external_data(t) for s, t in zip(sizes, model.graph.initializer))
    use_external = external_data if external_data is not None else (has_external or total > EXTERNAL_DATA_THRESHOLD)

    data = dst.with_name(dst.name + ".data")
    data_tmp, proto_tmp = temp_path(data), temp_path(dst)
    try:
        if use_external:
            offset = 0
            with open(data_tmp, "wb") as out:
                for t in model.graph.initializer:
                    if not uses_external_data(t) and len(t.raw_data) < MIN_EXTERNAL_TENSOR_BYTES:
                        continue
                    blob = _read_external(t, src.parent) if uses_external_data(t) else t.raw_data
                    pad = (-offset) % DATA_ALIGNMENT
                    out.write(b"\0" * pad)
                    offset += pad
                    out.write(blob)
                    t.ClearField("raw_data")
                    del t.external_data[:]
                    t.data_location = onnx.TensorProto.EXTERNAL
                    for k, v in (("location", data.name), ("offset", str(offset)), ("length", str(len(blob)))):
                        t.external_data.add(key=k, value=v)
                    offset += len(blob)
                    del blob
        elif has_external:
            raise ExportError(f"{src.name} has external weights; it cannot be written inline")
        proto_tmp.write_bytes(model.SerializeToString(deterministic=True))
        if use_external:
            publish(data_tmp, data)
        else:
            remove_quietly(data)
        publish(proto_tmp, dst)
    except BaseException:
        remove_quietly(data_tmp)
        remove_quietly(proto_tmp)
        raise
    return sum(len(g.node) for g in _graphs(model.graph))


def sha256_model_files(path: Path, data_path: Path | None = None) -> str:
    """sha256 over the .onnx bytes followed by its external-data bytes (the graph hash)."""
    h = hashlib.sha256()
    for p in (path, data_path):
        if p is None:
            continue
        with open(p, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()
