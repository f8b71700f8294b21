"""The ``onnxruntime`` backend: the exported graphs run by onnxruntime (CPU provider, or CUDA with
I/O binding so torch CUDA tensors are used in place, without host round trips). Sessions come from
the one factory, ``mimic.ort_session`` (its CUDA policy: no silent CPU fallback, and a start-up
check of the onnxruntime install that names the package to install).

On CUDA:

* attention is fused: each graph with attention runs as its ``<stage>.mha.onnx`` sibling
  (``mimic.export.attention``: onnxruntime's ``MultiHeadAttention`` op, flash / memory-efficient
  kernels), since the exported MatMul-Softmax-MatMul would hold the full score tensor (122 GB for a
  72-frame 576x1024 CFG pair in the UNet's first level). The CPU keeps the plain graphs by default
  (``fuse_attention=None``), so CPU renders stay byte-identical to what they were;
* inputs are bound by address from torch tensors; outputs are allocated by onnxruntime on the
  device and handed to torch through DLPack (``torch.from_dlpack(OrtValue)``: no copy). An
  onnxruntime whose ``OrtValue`` has neither ``__dlpack__`` nor ``to_dlpack`` gets a host round trip
  per output instead, with one warning (at load, once per process) naming its version;
* onnxruntime enqueues on its own CUDA stream and synchronises it before ``run`` returns, so the
  caller's stream is synchronised once before the run (the feeds must be complete) and the outputs
  are ready on return.

Deep-feature caching: the graphs ``unet_features`` (a full step that also returns the feature to
keep) and ``unet_shallow`` (a cheap step around it) come in a pair at one depth,
``mimic.spec.GRAPH_CACHE_DEPTH``; :meth:`OnnxRuntimeBackend.cache_depths` is ``(1,)`` when both
were given and ``()`` otherwise (an older export folder still serves every job that does not
cache). Their sessions are never preloaded: each is created on its stage's first run. Weight memory
of a caching job: each session holds its own copy of the weights it reads, so next to the plain
``unet`` session (preloaded for every job) ``unet_features`` adds a second full copy of the UNet
weights (1.52 B parameters: ~3.05 GB fp16, 6.1 GB fp32, for the released MimicMotion UNet) and
``unet_shallow`` a small one (conv_in, the first down block's layers, the last up block, the
embeddings and the head: 62 M parameters, 4%, ~0.12 GB fp16). :meth:`OnnxRuntimeBackend.release`
drops a session (e.g. the plain ``unet`` while only caching jobs run) to give its memory back.
Graph backends run only that depth: the torch backend's ``cache_depth`` feed is accepted when it
names it and refused otherwise (:func:`check_cache_depth`).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from mimic.errors import EngineError, InputError
from mimic.ort_session import create_session, import_onnxruntime, providers_for
from mimic.spec import CACHE_STAGES, GRAPH_CACHE_DEPTH
from mimic.spec import TensorName as N

log = logging.getLogger(__name__)

_ORT_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}
_NUMPY_TO_TORCH = {np.float32: torch.float32, np.float16: torch.float16, np.float64: torch.float64, np.int64: torch.int64, np.int32: torch.int32}


def ort_value_to_torch(value, device: torch.device) -> torch.Tensor:
    """A torch view of an onnxruntime output (DLPack: no copy), on ``device``; an onnxruntime without
    DLPack gets a copy through host memory (see :func:`dlpack_outputs`)."""
    if hasattr(value, "__dlpack__"):
        t = torch.from_dlpack(value)
    elif hasattr(value, "to_dlpack"):  # onnxruntime < 1.20
        t = torch.utils.dlpack.from_dlpack(value.to_dlpack())
    else:  # no DLPack at all: a host round trip
        t = torch.from_numpy(value.numpy())
    return t if t.device == device else t.to(device)


_warned_no_dlpack = False


def dlpack_outputs(ort) -> bool:
    """Whether this onnxruntime's ``OrtValue`` exports DLPack (``__dlpack__``, or ``to_dlpack``
    before 1.20). Checked once per CUDA backend; without it every CUDA output is copied device ->
    host -> device, which is said once per process rather than found in a profile."""
    global _warned_no_dlpack
    value_type = getattr(ort, "OrtValue", None)
    if hasattr(value_type, "__dlpack__") or hasattr(value_type, "to_dlpack"):
        return True
    if not _warned_no_dlpack:
        _warned_no_dlpack = True
        log.warning(f"onnxruntime {getattr(ort, '__version__', '?')} cannot hand outputs to torch through DLPack (OrtValue has no "
                    f"__dlpack__ or to_dlpack): every stage output takes a host round trip (device -> host -> device) per call; "
                    f"a newer onnxruntime-gpu avoids it")
    return False


def check_cache_depth(stage: str, feeds) -> None:
    """The graph backends run deep-feature caching at the exported depth only: a ``cache_depth`` feed
    (the torch backend's) naming another one is an InputError, never a silently different result."""
    depth = feeds.get(N.CACHE_DEPTH)
    if depth is not None and int(depth) != GRAPH_CACHE_DEPTH:
        raise InputError(f"stage {stage}: cache depth {int(depth)} is not available here; the exported graphs and engines cache at depth "
                         f"{GRAPH_CACHE_DEPTH} only (the torch backend runs any)")


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, graphs: dict[str, Path], device: str | torch.device = "cpu", threads: int | None = None,
                 fuse_attention: bool | None = None, preload: bool = True):
        self.device = torch.device(device)
        self._graphs = {k: Path(v) for k, v in graphs.items()}
        missing = [f"{k} ({p})" for k, p in self._graphs.items() if not p.is_file()]
        if missing:
            raise EngineError(f"missing ONNX graphs: {', '.join(missing)}; run `mimic export` first")
        providers_for(self.device)  # no CUDA provider for a CUDA device: fail now, not at the first stage
        if self.device.type == "cuda":
            dlpack_outputs(import_onnxruntime(self.device))
        self._threads = threads
        self.fuse_attention = self.device.type == "cuda" if fuse_attention is None else bool(fuse_attention)
        self._sessions: dict = {}
        self.paths: dict[str, Path] = {}  # the graph each stage's session runs (fused or not)
        if preload:  # every session now, while loading: the first job's phase timings then hold no session creation
            for stage in self._graphs:
                if stage not in CACHE_STAGES:  # another copy of the UNet weights each: only a caching job loads them
                    self.session(stage)

    def cache_depths(self) -> tuple[int, ...]:
        """The deep-feature cache depths this backend runs: the graphs' one depth when it has both
        cached-step graphs, else none."""
        return (GRAPH_CACHE_DEPTH,) if all(s in self._graphs for s in CACHE_STAGES) else ()

    def add_graphs(self, graphs: dict[str, Path]) -> None:
        """More stages' graphs (deep-feature caching's pair, exported when a job first asks for it);
        their sessions load on first use."""
        missing = [f"{k} ({p})" for k, p in graphs.items() if not Path(p).is_file()]
        if missing:
            raise EngineError(f"missing ONNX graphs: {', '.join(missing)}")
        self._graphs.update({k: Path(v) for k, v in graphs.items()})

    def release(self, stage: str) -> None:
        """Drop ``stage``'s session (its weights' memory); the stage's next run creates it again."""
        self._sessions.pop(stage, None)
        self.paths.pop(stage, None)

    def graph_path(self, stage: str) -> Path:
        if stage not in self._graphs:
            raise InputError(f"no ONNX graph for stage {stage!r} (have {sorted(self._graphs)})")
        path = self._graphs[stage]
        if self.fuse_attention:
            from mimic.export.attention import fused_graph

            path = fused_graph(path)
        return path

    def session(self, stage: str):
        sess = self._sessions.get(stage)
        if sess is None:
            path = self.graph_path(stage)
            sess = create_session(path, self.device, self._threads)
            self._sessions[stage] = sess
            self.paths[stage] = path
        return sess

    def run(self, stage: str, feeds: dict[str, torch.Tensor], stream=None) -> dict[str, torch.Tensor]:
        check_cache_depth(stage, feeds)  # then ignored, like any feed the graph has no input for
        sess = self.session(stage)
        if self.device.type == "cuda":
            return self._run_bound(sess, stage, feeds, stream)
        inputs = {}
        for meta in sess.get_inputs():
            if meta.name not in feeds:
                raise InputError(f"stage {stage} needs input {meta.name!r}")
            inputs[meta.name] = feeds[meta.name].detach().cpu().numpy().astype(_ORT_TO_NUMPY[meta.type], copy=False)
        outs = sess.run(None, inputs)
        return {meta.name: torch.from_numpy(np.ascontiguousarray(o)) for meta, o in zip(sess.get_outputs(), outs)}

    def _run_bound(self, sess, stage: str, feeds: dict[str, torch.Tensor], stream=None) -> dict[str, torch.Tensor]:  # GPU only
        binding = sess.io_binding()
        index = self.device.index or 0
        keep = []
        for meta in sess.get_inputs():
            if meta.name not in feeds:
                raise InputError(f"stage {stage} needs input {meta.name!r}")
            t = feeds[meta.name].to(self.device, _NUMPY_TO_TORCH[_ORT_TO_NUMPY[meta.type]]).contiguous()
            keep.append(t)
            binding.bind_input(meta.name, "cuda", index, _ORT_TO_NUMPY[meta.type], tuple(t.shape), t.data_ptr())
        for meta in sess.get_outputs():
            binding.bind_output(meta.name, "cuda", index)
        # onnxruntime runs on its own stream: the feeds (and their conversions above) must be done
        (stream if stream is not None else torch.cuda.current_stream(self.device)).synchronize()
        sess.run_with_iobinding(binding)
        binding.synchronize_outputs()
        outs = binding.get_outputs()
        return {meta.name: ort_value_to_torch(o, self.device) for meta, o in zip(sess.get_outputs(), outs)}

    def close(self) -> None:
        self._sessions.clear()
