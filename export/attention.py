"""Fused attention for onnxruntime: the exported MatMul-Softmax-MatMul attention rewritten to
onnxruntime's ``com.microsoft`` ``MultiHeadAttention`` op, plus the memory arithmetic behind it.

Why: the TorchScript exporter writes ``scaled_dot_product_attention`` as plain ops (``q * sqrt(s)``,
``k^T * sqrt(s)``, MatMul, Softmax, MatMul), and onnxruntime neither fuses that pattern at session
level nor through its transformers optimizer (``optimize_model(..., model_type="unet")`` finds no
attention to fuse in these graphs: measured on the tiny preset, 16 Softmax before and after). So
every attention materialises its score tensor: at 576x1024 (9216 tokens) with a 72-frame CFG pair
the UNet's first spatial level alone needs 2 x 72 x 5 heads x 9216^2 fp16 scores = 122 GB.
``MultiHeadAttention`` runs flash / memory-efficient kernels on CUDA and a tiled kernel on the CPU,
and takes exactly the tensors the exported graph already has: the (B, S, hidden) projections.

The rewrite (:func:`fuse_attention`) matches, per Softmax::

    q = Transpose(Reshape(Pq, [B, -1, heads, d]), perm=[0,2,1,3])   (or [B, S, -1, d])
    k = Transpose(Reshape(Pk, ...), perm=[0,2,3,1])                   (key already transposed)
    v = Transpose(Reshape(Pv, ...), perm=[0,2,1,3])
    o = MatMul(Softmax(MatMul(q * a, k * b)), v) -> Transpose([0,2,1,3]) -> Reshape(B, S, hidden)

and replaces it by ``MultiHeadAttention(Pq, Pk, Pv, num_heads=heads[, scale=a*b])`` writing the final
Reshape's output (the default scale 1/sqrt(d), which SDPA's export computes as
``sqrt(1/sqrt(d))`` on both sides, is MultiHeadAttention's default too). Anything else is left
alone: the rewrite is exact or absent, and :func:`attention_ops` tells what a graph has.

TensorRT does not read ``com.microsoft`` ops, so the engines keep the plain graphs; the fused graph
is a sibling file, ``<stage>.mha.onnx``, that shares the original's external weight file
(:func:`fused_graph`), used by the onnxruntime backend on CUDA and by ``mimic validate``'s
onnxruntime reference.
"""
from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from pathlib import Path

from mimic.errors import ExportError
from mimic.files import publish, remove_quietly, temp_path

log = logging.getLogger(__name__)

MHA_OP = "MultiHeadAttention"
MHA_DOMAIN = "com.microsoft"
FUSED_SUFFIX = ".mha.onnx"
SOURCE_KEY = "mimic.fused_from"  # metadata: sha256 of the source .onnx file the fused graph came from


def _perm(node) -> list[int]:
    for a in node.attribute:
        if a.name == "perm":
            return [int(x) for x in a.ints]
    return []


class _Graph:
    def __init__(self, graph):
        from onnx import numpy_helper

        self.g = graph
        self.np = numpy_helper
        self.prod = {o: n for n in graph.node for o in n.output}
        self.cons = defaultdict(list)
        for n in graph.node:
            for i in n.input:
                self.cons[i].append(n)
        self.inits = {t.name: t for t in graph.initializer}

    def const(self, name: str):
        if name in self.inits:
            t = self.inits[name]
            if t.data_location == 1:  # EXTERNAL: only small shape constants matter here, never weights
                return None
            return self.np.to_array(t)
        n = self.prod.get(name)
        if n is not None and n.op_type == "Constant" and n.attribute and n.attribute[0].HasField("t"):
            return self.np.to_array(n.attribute[0].t)
        return None

    def scalar(self, name: str) -> float | None:
        c = self.const(name)
        if c is None or c.size != 1:
            return None
        return float(c.reshape(-1)[0])

    def skip_cast(self, name: str):
        n = self.prod.get(name)
        while n is not None and n.op_type == "Cast":
            n = self.prod.get(n.input[0])
        return n

    def default_scale(self, name: str) -> bool:
        """``sqrt(1 / sqrt(d))``: how SDPA's export scales q and k when no scale is given."""
        s = self.skip_cast(name)
        if s is None or s.op_type != "Sqrt":
            return False
        d = self.skip_cast(s.input[0])
        if d is None or d.op_type != "Div":
            return False
        den = self.skip_cast(d.input[1])
        return self.scalar(d.input[0]) == 1.0 and den is not None and den.op_type == "Sqrt"

    def out_features(self, name: str) -> int | None:
        """Width of a projection ``MatMul(x, W)`` (optionally ``+ bias``): W's last dim."""
        n = self.prod.get(name)
        if n is not None and n.op_type == "Add":
            n = next((self.prod.get(i) for i in n.input if self.prod.get(i) is not None and self.prod[i].op_type == "MatMul"), None)
        if n is None or n.op_type != "MatMul":
            return None
        w = self.inits.get(n.input[1])
        return int(w.dims[-1]) if w is not None and len(w.dims) == 2 else None

    def heads_of(self, name: str, perm: list[int]) -> tuple[str, int] | None:
        """``Transpose(Reshape(P, Concat(B, S|-1, heads|-1, d)), perm)`` -> (P, heads)."""
        t = self.prod.get(name)
        if t is None or t.op_type != "Transpose" or _perm(t) != perm:
            return None
        r = self.prod.get(t.input[0])
        if r is None or r.op_type != "Reshape":
            return None
        c = self.prod.get(r.input[1])
        if c is None or c.op_type != "Concat" or len(c.input) != 4:
            return None
        heads, d = self.scalar(c.input[2]), self.scalar(c.input[3])
        if heads is not None and heads > 0:
            return r.input[0], int(heads)
        if heads == -1 and d is not None and d > 0:  # view(B, S, -1, d): heads = width / d
            width = self.out_features(r.input[0])
            if width and width % int(d) == 0:
                return r.input[0], width // int(d)
        return None


def fuse_attention(model) -> int:
    """Rewrite every recognised attention in ``model`` (an ``onnx.ModelProto``, in place) to
    ``com.microsoft`` MultiHeadAttention; returns how many were fused."""
    from onnx import helper

    g = _Graph(model.graph)
    replace: dict[int, object] = {}
    for sm in model.graph.node:
        if sm.op_type != "Softmax" or any(a.name == "axis" and a.i not in (-1, 3) for a in sm.attribute):
            continue
        qk = g.prod.get(sm.input[0])
        if qk is None or qk.op_type != "MatMul":
            continue
        mq, mk = g.prod.get(qk.input[0]), g.prod.get(qk.input[1])
        if mq is None or mk is None or mq.op_type != "Mul" or mk.op_type != "Mul":
            continue
        scale = None
        if not (g.default_scale(mq.input[1]) and g.default_scale(mk.input[1])):
            a, b = g.scalar(mq.input[1]), g.scalar(mk.input[1])
            if a is None or b is None:
                continue
            scale = a * b
        q, k = g.heads_of(mq.input[0], [0, 2, 1, 3]), g.heads_of(mk.input[0], [0, 2, 3, 1])
        users = g.cons[sm.output[0]]
        if q is None or k is None or len(users) != 1 or users[0].op_type != "MatMul" or users[0].input[0] != sm.output[0]:
            continue
        av = users[0]
        v = g.heads_of(av.input[1], [0, 2, 1, 3])
        if v is None or not q[1] == k[1] == v[1]:
            continue
        tr = g.cons[av.output[0]]
        if len(tr) != 1 or tr[0].op_type != "Transpose" or _perm(tr[0]) != [0, 2, 1, 3]:
            continue
        rs = g.cons[tr[0].output[0]]
        if len(rs) != 1 or rs[0].op_type != "Reshape":
            continue
        attrs = {"num_heads": q[1]}
        if scale is not None:
            attrs["scale"] = float(scale)
        name = sm.name[: -len("Softmax")] + MHA_OP if sm.name.endswith("Softmax") else (sm.name or "attention") + "/" + MHA_OP
        replace[id(rs[0])] = helper.make_node(MHA_OP, [q[0], k[0], v[0]], [rs[0].output[0]], name=name, domain=MHA_DOMAIN, **attrs)
    if not replace:
        return 0
    nodes = [replace.get(id(n), n) for n in model.graph.node]
    # drop what fed only the replaced attention (walk back from the graph outputs)
    needed = {o.name for o in model.graph.output}
    keep = []
    for n in reversed(nodes):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(i for i in n.input if i)
            needed.update(_subgraph_inputs(n))
    del model.graph.node[:]
    model.graph.node.extend(reversed(keep))
    used = {i for n in keep for i in n.input}
    unused = [t for t in model.graph.initializer if t.name not in used]
    for t in unused:
        model.graph.initializer.remove(t)
    if not any(o.domain == MHA_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MHA_DOMAIN, 1))
    return len(replace)


def _subgraph_inputs(node) -> set[str]:
    """Names a node's subgraphs (If/Loop bodies) read from the outer scope (a superset)."""
    names: set[str] = set()
    stack = [a.g for a in node.attribute if a.HasField("g")] + [g for a in node.attribute for g in a.graphs]
    while stack:
        graph = stack.pop()
        for n in graph.node:
            names.update(i for i in n.input if i)
            stack.extend([a.g for a in n.attribute if a.HasField("g")] + [g for a in n.attribute for g in a.graphs])
    return names


def attention_ops(model) -> dict[str, int]:
    """``{"softmax": n, "fused": n}`` of a model (subgraphs included)."""
    c: Counter = Counter()
    stack = [model.graph]
    while stack:
        graph = stack.pop()
        for n in graph.node:
            c[n.op_type] += 1
            for a in n.attribute:
                if a.HasField("g"):
                    stack.append(a.g)
                stack.extend(a.graphs)
    return {"softmax": c["Softmax"], "fused": c[MHA_OP] + c["Attention"]}


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def fused_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name[: -len(".onnx")] + FUSED_SUFFIX if path.name.endswith(".onnx") else path.name + FUSED_SUFFIX)


def fused_graph(path: str | Path) -> Path:
    """The onnxruntime graph for the exported graph at ``path``: ``<stage>.mha.onnx`` beside it
    (written once per source file, atomically; external weights are shared, not copied), or
    ``path`` itself when it has no attention to fuse. A folder that cannot be written to keeps the
    plain graph, with a warning naming the cost."""
    import onnx

    path = Path(path)
    if path.name.endswith(FUSED_SUFFIX):
        return path
    out = fused_path(path)
    source = _sha256_file(path)
    if out.is_file():
        try:
            meta = {p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props}
            if meta.get(SOURCE_KEY) == source:
                return out
        except Exception:  # a damaged file: write it again
            pass
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:
        raise ExportError(f"cannot read {path} to fuse its attention: {str(err).splitlines()[0][:200] if str(err) else type(err).__name__}") from None
    if attention_ops(model)["softmax"] == 0:
        return path
    count = fuse_attention(model)
    if count == 0:
        log.warning(f"{path.name}: attention not recognised for fusion; onnxruntime runs it unfused (score tensors in memory)")
        return path
    meta = [p for p in model.metadata_props if p.key != SOURCE_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(meta)
    model.metadata_props.add(key=SOURCE_KEY, value=source)
    tmp = temp_path(out)
    try:
        tmp.write_bytes(model.SerializeToString(deterministic=True))
        publish(tmp, out)
    except OSError as err:
        remove_quietly(tmp)
        log.warning(f"{path.name}: cannot write the fused-attention graph beside it ({err.strerror or err}); "
                    "onnxruntime runs the plain graph (attention scores in memory)")
        return path
    log.info(f"  {path.name}: {count} attention blocks fused for onnxruntime -> {out.name}")
    return out


# ---------------------------------------------------------------------------------- arithmetic


def attention_score_bytes(batch_frames: int, heads: int, tokens: int, itemsize: int = 2) -> int:
    """One unfused score tensor: ``(batch x frames) x heads x tokens^2`` elements."""
    return int(batch_frames) * int(heads) * int(tokens) ** 2 * int(itemsize)


def unet_largest_scores(frames: int, height: int, width: int, heads0: int, batch: int = 2, itemsize: int = 2) -> int:
    """The UNet's largest unfused score tensor: spatial self-attention at the first level
    (``(H/8)(W/8)`` tokens, ``heads0`` heads) over ``batch x frames`` images."""
    return attention_score_bytes(batch * frames, heads0, (height // 8) * (width // 8), itemsize)


# ------------------------------------------------------------------------ a graph's memory need

LIVE_TENSORS = 8  # tensors of the largest size assumed alive at once (onnxruntime frees after last use)
SCORE_COPIES = 5  # score-sized tensors onnxruntime keeps at the peak of an unfused attention (measured, runtime/memory.py)


class GraphMemory:
    """What running an exported graph at given input shapes needs, by arithmetic:
    ``weights`` (file sizes), ``largest`` (the largest intermediate tensor, from ONNX shape
    inference; attention scores excluded), ``scores`` (the largest attention score tensor) and
    ``peak = weights + LIVE_TENSORS x largest + (SCORE_COPIES x scores unless fused)``."""

    def __init__(self, weights: int, largest: int, scores: int, fused: bool):
        self.weights, self.largest, self.scores, self.fused = int(weights), int(largest), int(scores), fused

    @property
    def peak(self) -> int:
        return self.weights + LIVE_TENSORS * self.largest + (0 if self.fused else SCORE_COPIES * self.scores)

    def describe(self) -> str:
        s = f"~{self.peak / 1e9:.1f} GB (weights {self.weights / 1e9:.1f} GB, largest tensor {self.largest / 1e9:.2f} GB"
        return s + (")" if self.fused else f", unfused attention scores {self.scores / 1e9:.1f} GB)")


def graph_memory(path: str | Path, input_shapes: dict[str, tuple[int, ...]], fused: bool | None = None) -> GraphMemory:
    """Estimate the memory onnxruntime needs to run the (plain, exported) graph at ``path`` with
    ``input_shapes``; ``fused``: whether it will run with fused attention (default: whether
    :func:`fused_graph` can fuse every attention in it)."""
    import numpy as np
    import onnx
    from onnx import helper, shape_inference

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    weights = path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(path.name + ".data"))
    if fused is None:
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        fused = fuse_attention(probe) == attention_ops(model)["softmax"]
    for inp in model.graph.input:
        if inp.name in input_shapes:
            dims = inp.type.tensor_type.shape.dim
            for d, v in zip(dims, input_shapes[inp.name]):
                d.ClearField("dim_param")
                d.dim_value = int(v)
    try:
        inferred = shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # shape inference is best effort: fall back to the inputs' sizes
        inferred = model
    known: dict[str, tuple[int, int]] = {}  # name -> (elements, itemsize)
    dims_of: dict[str, list] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        dims_of[vi.name] = dims
        if all(d is not None for d in dims):
            try:
                itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).itemsize
            except Exception:
                itemsize = 4
            known[vi.name] = (int(np.prod(dims)) if dims else 1, itemsize)
    g = _Graph(inferred.graph)
    score_names = {n.input[0] for n in inferred.graph.node if n.op_type == "Softmax"} | {
        n.output[0] for n in inferred.graph.node if n.op_type == "Softmax"}
    largest = max((e * s for name, (e, s) in known.items() if name not in score_names), default=0)
    scores = 0
    for sm in inferred.graph.node:
        if sm.op_type != "Softmax":
            continue
        if sm.input[0] in known:
            e, s = known[sm.input[0]]
            scores = max(scores, e * s)
            continue
        qk = g.prod.get(sm.input[0])
        mq = g.prod.get(qk.input[0]) if qk is not None and qk.op_type == "MatMul" else None
        mk = g.prod.get(qk.input[1]) if qk is not None and qk.op_type == "MatMul" else None
        if mq is None or mk is None or mq.op_type != "Mul" or mk.op_type != "Mul":
            continue
        q, k = g.heads_of(mq.input[0], [0, 2, 1, 3]), g.heads_of(mk.input[0], [0, 2, 3, 1])
        if q is None or k is None or q[0] not in known:
            continue
        qd, kd = dims_of.get(q[0]) or [], dims_of.get(k[0]) or []
        if len(qd) == 3 and len(kd) == 3 and None not in (qd[0], qd[1], kd[1]):
            scores = max(scores, qd[0] * q[1] * qd[1] * kd[1] * known[q[0]][1])
    return GraphMemory(weights, largest, scores, bool(fused))
