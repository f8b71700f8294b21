"""Run one TensorRT engine with torch CUDA tensors as buffers (tensor API only).

- ``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3`` on an explicit CUDA stream;
  the engine stream waits on an event recorded on torch's current stream, so feeds produced there are
  ready; outputs are produced on the engine stream (like any torch op under ``torch.cuda.stream``).
- Contexts are created ``USER_MANAGED`` and get their scratch memory from one
  :class:`SharedDeviceMemory` block (``set_device_memory(ptr, size)``, the v2 setter), sized by the
  max ``device_memory_size_v2`` over the engines that share it. Sharing is safe because those engines
  never run at the same time: every run waits for the previous user of the block.
- Inputs are checked against the engine's profile (names, rank, every dim in [min, max], dtype kind)
  with one-line EngineErrors instead of TensorRT binding errors mid-run.
- Optional CUDA graph capture for repeated fixed shapes (torch.cuda.CUDAGraph around
  ``execute_async_v3``; the engine is run once before capture, as TensorRT requires).

The pure-Python parts (dtype mapping, IO description, feed checks, memory sizing) work on any
engine-like object and are tested on CPU with fakes; everything that touches CUDA is only reached
after the GPU probe (``mimic.engine.gpu``) succeeded.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import torch

from mimic.errors import EngineError

# TensorRT DataType name -> torch dtype (by *name*: enum values differ between flavours/versions).
TRT_TO_TORCH: dict[str, torch.dtype] = {
    "FLOAT": torch.float32,
    "HALF": torch.float16,
    "BF16": torch.bfloat16,
    "INT8": torch.int8,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "BOOL": torch.bool,
    "UINT8": torch.uint8,
}
if hasattr(torch, "float8_e4m3fn"):
    TRT_TO_TORCH["FP8"] = torch.float8_e4m3fn


def _enum_name(value: Any) -> str:
    name = getattr(value, "name", None)
    return str(name if name is not None else value).split(".")[-1].upper()


def torch_dtype(trt_dtype: Any) -> torch.dtype:
    """torch dtype of a TensorRT ``DataType`` (or its name)."""
    name = _enum_name(trt_dtype)
    try:
        return TRT_TO_TORCH[name]
    except KeyError:
        raise EngineError(f"TensorRT data type {name} has no torch equivalent") from None


@dataclass(frozen=True)
class TensorInfo:
    """One engine I/O tensor: dims are -1 where dynamic; ``profile`` = (min, opt, max) for inputs."""

    name: str
    is_input: bool
    dtype: torch.dtype
    shape: tuple[int, ...]
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None

    @property
    def static(self) -> bool:
        return all(d >= 0 for d in self.shape)


def describe_io(engine: Any, profile_index: int = 0) -> list[TensorInfo]:
    """The engine's I/O tensors in engine order (works on ``ICudaEngine`` and on test fakes)."""
    infos = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = _enum_name(engine.get_tensor_mode(name)) == "INPUT"
        shape = tuple(int(d) for d in engine.get_tensor_shape(name))
        profile = None
        if is_input:
            mn, opt, mx = engine.get_tensor_profile_shape(name, profile_index)
            profile = (tuple(int(d) for d in mn), tuple(int(d) for d in opt), tuple(int(d) for d in mx))
        infos.append(TensorInfo(name, is_input, torch_dtype(engine.get_tensor_dtype(name)), shape, profile))
    return infos


def _kind(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "bool"
    if dtype.is_floating_point:
        return "float"
    if dtype.is_complex:
        return "complex"
    return "int"


def check_shape(stage: str, info: TensorInfo, shape: tuple[int, ...]) -> None:
    """EngineError unless ``shape`` fits the tensor's rank, static dims and profile range."""
    if len(shape) != len(info.shape):
        raise EngineError(f"{stage}: input '{info.name}' has rank {len(shape)} {tuple(shape)}, the engine expects rank {len(info.shape)} {info.shape}")
    if info.profile is not None:
        mn, _, mx = info.profile
        for axis, (d, lo, hi) in enumerate(zip(shape, mn, mx)):
            if not lo <= d <= hi:
                raise EngineError(
                    f"{stage}: input '{info.name}' shape {tuple(shape)} is outside the engine's profile "
                    f"(dim {axis} = {d}, allowed {lo}..{hi}; profile min {mn} max {mx}); "
                    "rebuild with `mimic build-engines` for these shapes (--shapes/--window)"
                )
    for axis, (d, want) in enumerate(zip(shape, info.shape)):
        if want >= 0 and d != want:
            raise EngineError(f"{stage}: input '{info.name}' shape {tuple(shape)}: dim {axis} must be {want}")


def check_feeds(stage: str, infos: Iterable[TensorInfo], feeds: Mapping[str, torch.Tensor]) -> dict[str, torch.dtype]:
    """Check names, shapes and dtype kinds of ``feeds``; returns ``{name: engine dtype}`` for inputs.

    Casting between float dtypes (or between integer dtypes) is allowed (the backend contract says a
    backend casts to what its graph needs); a float where the engine wants an integer (or the
    reverse) is an error.
    """
    inputs = [i for i in infos if i.is_input]
    want = {i.name for i in inputs}
    missing = sorted(want - set(feeds))
    extra = sorted(set(feeds) - want)
    if missing or extra:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(f"'{n}'" for n in missing))
        if extra:
            parts.append("unexpected " + ", ".join(f"'{n}'" for n in extra))
        raise EngineError(f"{stage}: engine inputs are {sorted(want)}; {' and '.join(parts)}")
    dtypes = {}
    for info in inputs:
        t = feeds[info.name]
        if not isinstance(t, torch.Tensor):
            raise EngineError(f"{stage}: input '{info.name}' must be a torch.Tensor, got {type(t).__name__}")
        if _kind(t.dtype) != _kind(info.dtype):
            raise EngineError(f"{stage}: input '{info.name}' has dtype {t.dtype}, the engine expects {info.dtype}")
        check_shape(stage, info, tuple(t.shape))
        dtypes[info.name] = info.dtype
    return dtypes


def shared_memory_size(sizes: Iterable[int]) -> int:
    """Bytes for one block shared by engines that never run concurrently: the max, 256-byte aligned."""
    biggest = max((int(s) for s in sizes), default=0)
    if biggest < 0:
        raise EngineError(f"negative device memory size {biggest}")
    return (biggest + 255) // 256 * 256


class SharedDeviceMemory:
    """One user-managed device-memory block for engines that never run at the same time.

    Runs that do overlap (other host threads or streams) stay correct: they are serialized on the
    host by ``lock`` and on the GPU by the release/acquire events, at the cost of the overlap.

    ``reserve(n)`` records a need (no allocation); ``acquire(stream)`` allocates/grows lazily and
    makes ``stream`` wait for the previous user when that ran on another stream; ``release(stream)``
    records the event the next user waits for. ``generation`` changes whenever the block moves
    (CUDA graphs that baked the old pointer must be re-captured).
    """

    def __init__(self, device: torch.device | str = "cuda"):
        import threading

        self.device = torch.device(device)
        # Held by a runner from binding to enqueue: two host threads never interleave their use of
        # the block (the GPU-side order comes from the events below).
        self.lock = threading.RLock()
        self.required = 0
        self.generation = 0
        self._block: torch.Tensor | None = None
        self._last_stream = None
        self._last_event = None

    def reserve(self, nbytes: int) -> None:
        self.required = max(self.required, shared_memory_size([nbytes]))

    @property
    def allocated(self) -> int:
        return 0 if self._block is None else self._block.numel()

    def acquire(self, stream) -> tuple[int, int]:
        """``(pointer, size)`` of the block, ordered after its previous user."""
        if self._last_event is not None and self._last_stream is not None and stream != self._last_stream:
            stream.wait_event(self._last_event)
        if self.allocated < self.required:
            if self._last_event is not None:
                self._last_event.synchronize()  # the old block may still be in use
            self._block = None
            self._block = torch.empty(self.required, dtype=torch.uint8, device=self.device)
            self.generation += 1
        if self._block is None:  # nothing reserved: TensorRT still wants a valid pointer
            self._block = torch.empty(256, dtype=torch.uint8, device=self.device)
            self.generation += 1
        return self._block.data_ptr(), self._block.numel()

    def release(self, stream) -> None:
        event = torch.cuda.Event()
        event.record(stream)
        self._last_event, self._last_stream = event, stream

    def free(self) -> None:
        if self._last_event is not None:
            self._last_event.synchronize()
        self._block = None
        self._last_event = self._last_stream = None


def make_logger(trt: Any, min_severity: str = "WARNING"):
    """A ``trt.ILogger`` that keeps error lines (for the message when deserialization fails)."""

    class CapturingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self._min = int(getattr(trt.ILogger.Severity, min_severity))
            self._error = int(trt.ILogger.Severity.ERROR)

        def log(self, severity, msg):  # noqa: D401 - TensorRT callback
            if int(severity) <= self._error:
                self.errors.append(str(msg).strip())
            if int(severity) <= self._min:
                import sys

                print(f"[TRT] {_enum_name(severity)}: {msg}", file=sys.stderr)

    return CapturingLogger()


def deserialize_engine(trt: Any, plan: bytes, where: str, logger: Any = None) -> tuple[Any, Any]:
    """``(runtime, engine)`` from verified plan bytes; EngineError (never None) on failure.

    Callers must have probed the GPU first: a TensorRT Runtime in a process without a GPU crashes
    that process at exit.
    """
    from mimic.engine.gpu import require_gpu

    require_gpu(f"loading TensorRT engine {where}")
    logger = logger or make_logger(trt)
    runtime = trt.Runtime(logger)
    if runtime is None:
        raise EngineError(f"could not create a TensorRT runtime to load {where}")
    if hasattr(runtime, "get_engine_validity"):  # TensorRT-RTX preflight
        try:
            validity = runtime.get_engine_validity(plan)
            validity = validity[0] if isinstance(validity, tuple) else validity
            if _enum_name(validity) == "INVALID":
                raise EngineError(f"TensorRT-RTX reports engine {where} invalid on this GPU/driver; rebuild with `mimic build-engines`")
        except EngineError:
            raise
        except Exception:
            pass
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        detail = "; ".join(getattr(logger, "errors", [])[-3:]) or "no details from TensorRT"
        raise EngineError(f"TensorRT could not deserialize engine {where} ({detail}); rebuild with `mimic build-engines`")
    return runtime, engine


@dataclass
class OpenedEngine:
    """A deserialized engine and what must outlive it (the TensorRT runtime and its logger)."""

    stage: str
    trt: Any
    runtime: Any
    engine: Any
    logger: Any
    manifest: dict
    path: Any  # the plan file

    @property
    def keepalive(self) -> tuple:
        return (self.runtime, self.logger)


def open_engine(store: Any, stage: str, device_index: int = 0, strict_gpu_name: bool = True) -> OpenedEngine:
    """Load a published engine: the store's checks first (manifest vs this machine's TensorRT and
    GPU, plan size and sha256), then deserialization of exactly the verified bytes (GPU)."""
    from mimic.engine.builder import load_trt
    from mimic.engine.gpu import runtime_info

    manifest = store.read_manifest(stage)
    if manifest is None:
        raise EngineError(f"no engine for stage '{stage}' in {store.root}; build it with `mimic build-engines --out {store.root}`")
    flavour = manifest["tensorrt"]["flavour"]
    verified = store.verify(stage, runtime_info(flavour, device_index), strict_gpu_name=strict_gpu_name)
    trt = load_trt(flavour)
    logger = make_logger(trt)
    runtime, engine = deserialize_engine(trt, verified.plan, str(verified.path), logger)
    return OpenedEngine(stage, trt, runtime, engine, logger, verified.manifest, verified.path)


class TrtRunner:
    """One engine + one USER_MANAGED execution context; ``run(feeds) -> outputs``."""

    def __init__(
        self,
        stage: str,
        engine: Any,
        trt: Any,
        memory: SharedDeviceMemory,
        device: torch.device | str = "cuda",
        stream: "torch.cuda.Stream | None" = None,
        use_cuda_graph: bool = False,
        max_graphs: int = 2,
        keepalive: Any = None,
    ):
        self.stage = stage
        self.engine = engine
        self.trt = trt
        self.device = torch.device(device)
        self.memory = memory
        self.stream = stream
        self.use_cuda_graph = use_cuda_graph
        self.max_graphs = max_graphs
        self._keepalive = keepalive  # e.g. the trt.Runtime, which must outlive the engine
        self.infos = describe_io(engine)
        self.inputs = [i for i in self.infos if i.is_input]
        self.outputs = [i for i in self.infos if not i.is_input]
        self.device_memory_size = int(engine.device_memory_size_v2)
        memory.reserve(self.device_memory_size)
        self.context = engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        if self.context is None:
            raise EngineError(f"{stage}: TensorRT could not create an execution context")
        self._graphs: OrderedDict[tuple, _Graph] = OrderedDict()

    # ----------------------------------------------------------------------------------- helpers

    def _prepare(self, feeds: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        dtypes = check_feeds(self.stage, self.infos, feeds)
        return {n: feeds[n].to(device=self.device, dtype=dtypes[n]).contiguous() for n in dtypes}

    def _bind(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ctx = self.context
        for name, t in inputs.items():
            if not ctx.set_input_shape(name, tuple(t.shape)):
                raise EngineError(f"{self.stage}: TensorRT rejected shape {tuple(t.shape)} for input '{name}'")
        unresolved = ctx.infer_shapes()
        if unresolved:
            raise EngineError(f"{self.stage}: output shapes cannot be inferred for {list(unresolved)}")
        outputs = {}
        for info in self.outputs:
            shape = tuple(int(d) for d in ctx.get_tensor_shape(info.name))
            if any(d < 0 for d in shape):
                raise EngineError(f"{self.stage}: output '{info.name}' has a data-dependent shape {shape} (unsupported)")
            outputs[info.name] = torch.empty(shape, dtype=info.dtype, device=self.device)
        for name, t in list(inputs.items()) + list(outputs.items()):
            if not ctx.set_tensor_address(name, t.data_ptr()):
                raise EngineError(f"{self.stage}: TensorRT rejected the address of tensor '{name}'")
        return outputs

    def _execute(self, stream) -> None:
        ptr, size = self.memory.acquire(stream)
        self.context.set_device_memory(ptr, size)
        ok = self.context.execute_async_v3(stream.cuda_stream)
        self.memory.release(stream)
        if not ok:
            raise EngineError(f"{self.stage}: TensorRT execution failed (execute_async_v3 returned False)")

    # ------------------------------------------------------------------------------------- run

    def run(self, feeds: Mapping[str, torch.Tensor], stream: "torch.cuda.Stream | None" = None) -> dict[str, torch.Tensor]:
        """Run on ``stream`` (else the runner's stream, else torch's current stream)."""
        current = torch.cuda.current_stream(self.device)
        exec_stream = stream or self.stream or current
        if exec_stream != current:
            ready = torch.cuda.Event()
            ready.record(current)
            exec_stream.wait_event(ready)  # feeds were produced on the current stream
        with torch.cuda.stream(exec_stream), self.memory.lock:
            inputs = self._prepare(feeds)
            for t in feeds.values():
                if t.is_cuda and exec_stream != current:
                    t.record_stream(exec_stream)
            if self.use_cuda_graph:
                return self._run_graph(inputs, exec_stream)
            outputs = self._bind(inputs)
            self._execute(exec_stream)
            for t in inputs.values():  # keep converted copies alive until the engine is done
                t.record_stream(exec_stream)
            return outputs

    def _run_graph(self, inputs: dict[str, torch.Tensor], stream) -> dict[str, torch.Tensor]:
        key = tuple((n, tuple(t.shape)) for n, t in sorted(inputs.items()))
        # Order after the block's previous user (and let it grow) *before* trusting a captured pointer.
        self.memory.acquire(stream)
        graph = self._graphs.get(key)
        if graph is not None and graph.generation != self.memory.generation:
            del self._graphs[key]  # the shared block moved: the captured pointer is stale
            graph = None
        if graph is None:
            graph = self._capture(inputs, stream)
            if graph is None:  # not capturable here: plain execution
                outputs = self._bind(inputs)
                self._execute(stream)
                return outputs
            self._graphs[key] = graph
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
            for n, t in inputs.items():
                graph.inputs[n].copy_(t)
            graph.graph.replay()
            self.memory.release(stream)
        return {n: t.clone() for n, t in graph.outputs.items()}

    def _capture(self, inputs: dict[str, torch.Tensor], stream) -> "_Graph | None":
        static_in = {n: t.clone() for n, t in inputs.items()}
        outputs = self._bind(static_in)
        self._execute(stream)  # TensorRT needs one enqueue before capture (deferred updates)
        if stream == torch.cuda.default_stream(self.device):
            return None  # cannot capture on the legacy default stream
        capturable = getattr(self.context, "is_stream_capturable", None)
        if capturable is not None and not capturable(stream.cuda_stream):
            return None
        g = torch.cuda.CUDAGraph()
        ptr, size = self.memory.acquire(stream)
        self.context.set_device_memory(ptr, size)
        with torch.cuda.graph(g, stream=stream):
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise EngineError(f"{self.stage}: TensorRT execution failed during CUDA graph capture")
        self.memory.release(stream)
        graph = _Graph(g, static_in, outputs, self.memory.generation)
        g.replay()
        return graph

    def close(self) -> None:
        self._graphs.clear()
        self.context = None
        self.engine = None
        self._keepalive = None


@dataclass
class _Graph:
    graph: Any
    inputs: dict
    outputs: dict
    generation: int
