"""Run one TensorRT engine with torch CUDA tensors as buffers (tensor API only).

Streams (TensorRT's ``execute_async_v3`` on the legacy default stream costs a device-wide sync per
call, per its documentation): every runner enqueues on a non-default stream of its own, created on
its device (Polygraphy's TrtRunner and NVIDIA's demoDiffusion do the same). ``run(feeds, stream)``
hands work over with events: the runner's stream waits for an event recorded on the caller's
stream (``stream``, default torch's current stream), so feeds produced there are ready; the caller's
stream waits for an event recorded after the engine, so the outputs are ready for anything the
caller enqueues next, and no host synchronisation happens anywhere on this path.

Devices: every call (construction, run, close) makes the runner's device current first, so worker
threads whose current device is another GPU enqueue on the right one (``--device cuda:1``).

Memory: contexts are created ``USER_MANAGED`` and get their scratch memory from one
:class:`SharedDeviceMemory` block (``set_device_memory(ptr, size)``), sized by the max
``device_memory_size_v2`` over the engines that share it. The block is acquired before the work
that uses it is enqueued (plain execution or graph replay) and released right after it is enqueued:
the release event is what the next user (another engine, another stream) waits for.

CUDA graphs (``use_cuda_graph``): per input shape, the first call binds static buffers on an
execution context of its own (modifying the context a graph was captured from is undefined, so two
shapes never share one; all contexts share the one memory block) and enqueues the engine once: that
enqueue is this call's result and the warm-up TensorRT needs before a capture. Then, if the context
says the stream is capturable, one capture is recorded in thread-local mode
(``capture_error_mode="thread_local"``: the executor's other threads keep enqueueing legally); a shape
that cannot be captured is remembered and runs plainly from then on. Later calls copy their inputs
into the static buffers and replay. A graph that baked a block address that has since moved
(the block grew) is dropped and re-captured.

Lifetime: a context (or a graph) is destroyed only after the work enqueued on it finished: ``close``
synchronises the runner's stream first; graphs evicted while running are kept until an event
recorded after them has completed.

Polygraphy (a declared dependency) has its own ``TrtRunner``; ``mimic validate`` compares through
Polygraphy's ``Comparator`` and the GPU tests use Polygraphy's runner as a second opinion. The
pipeline keeps this runner because it needs what Polygraphy's does not give: one activation block
shared by all engines, the caller's streams and events, and CUDA graphs.

The pure-Python parts (dtype mapping, IO description, feed checks, memory sizing) work on any
engine-like object and are tested on CPU with fakes, as is the order of stream, event, memory and
graph operations (``tests/test_engine_streams.py``); everything that touches CUDA is only reached
after the GPU probe (``mimic.engine.gpu``) succeeded.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import torch

from mimic.errors import EngineError
from mimic.engine.store import build_hint
from mimic.spec import TensorName

log = logging.getLogger(__name__)

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
                    "rebuild with `mimic build-engines` for these shapes (--shapes WIDTHxHEIGHT, --window)"
                )
    for axis, (d, want) in enumerate(zip(shape, info.shape)):
        if want >= 0 and d != want:
            raise EngineError(f"{stage}: input '{info.name}' shape {tuple(shape)}: dim {axis} must be {want}")


def check_feeds(stage: str, infos: Iterable[TensorInfo], feeds: Mapping[str, torch.Tensor]) -> dict[str, torch.dtype]:
    """Check names, shapes and dtype kinds of ``feeds``; returns ``{name: engine dtype}`` for inputs.

    Casting between float dtypes (or between integer dtypes) is allowed (the backend contract says a
    backend casts to what its graph needs); a float where the engine wants an integer (or the
    reverse) is an error. The torch backend's ``cache_depth`` feed (a Python int, no engine input:
    the cached-step engines have their depth built in) is ignored.
    """
    inputs = [i for i in infos if i.is_input]
    want = {i.name for i in inputs}
    missing = sorted(want - set(feeds))
    extra = sorted(set(feeds) - want - {TensorName.CACHE_DEPTH})
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


def deserialize_engine(trt: Any, plan: bytes, where: str, logger: Any = None, rebuild: str = "rebuild with `mimic build-engines`") -> tuple[Any, Any]:
    """``(runtime, engine)`` from verified plan bytes; EngineError (never None) on failure.
    ``rebuild``: how to rebuild the engine (the store's hint: its folder's recorded options).

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
                raise EngineError(f"TensorRT-RTX reports engine {where} invalid on this GPU/driver; {rebuild}")
        except EngineError:
            raise
        except Exception:
            pass
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        detail = "; ".join(getattr(logger, "errors", [])[-3:]) or "no details from TensorRT"
        raise EngineError(f"TensorRT could not deserialize engine {where} ({detail}); {rebuild}")
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
        raise EngineError(f"no engine for stage '{stage}' in {store.root}; {build_hint(store.root, verb='build it')}")
    flavour = manifest["tensorrt"]["flavour"]
    verified = store.verify(stage, runtime_info(flavour, device_index), strict_gpu_name=strict_gpu_name)
    trt = load_trt(flavour)
    logger = make_logger(trt)
    runtime, engine = deserialize_engine(trt, verified.plan, str(verified.path), logger, build_hint(store.root, manifest))
    return OpenedEngine(stage, trt, runtime, engine, logger, verified.manifest, verified.path)


class TrtRunner:
    """One engine on its own CUDA stream; ``run(feeds, stream) -> outputs`` (see the module docstring).

    ``stream``: the stream to enqueue the engine on (default: a new non-default stream of its own,
    created on first use). Counters for tests and benchmarks: ``executions`` (plain enqueues),
    ``captures`` and ``replays`` (CUDA graphs).
    """

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
        self.max_graphs = max(1, int(max_graphs))
        self._keepalive = keepalive  # e.g. the trt.Runtime, which must outlive the engine
        self.infos = describe_io(engine)
        self.inputs = [i for i in self.infos if i.is_input]
        self.outputs = [i for i in self.infos if not i.is_input]
        self.device_memory_size = int(engine.device_memory_size_v2)
        memory.reserve(self.device_memory_size)
        with torch.cuda.device(self.device):
            self.context = self._new_context()
        self._graphs: OrderedDict[tuple, _Graph] = OrderedDict()
        self._not_capturable: set[tuple] = set()
        self._retired: list[tuple[Any, tuple]] = []  # (event, things to drop once it completed)
        self.executions = self.captures = self.replays = 0

    # ----------------------------------------------------------------------------------- helpers

    def _new_context(self):
        ctx = self.engine.create_execution_context(self.trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        if ctx is None:
            raise EngineError(f"{self.stage}: TensorRT could not create an execution context")
        return ctx

    def _own_stream(self):
        if self.stream is None:
            self.stream = torch.cuda.Stream(device=self.device)
        return self.stream

    def _prepare(self, feeds: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        dtypes = check_feeds(self.stage, self.infos, feeds)
        return {n: feeds[n].to(device=self.device, dtype=dtypes[n]).contiguous() for n in dtypes}

    def _bind(self, ctx, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
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

    def _enqueue(self, ctx, stream) -> None:
        """Enqueue the engine on ``stream`` (the shared block is held by the caller)."""
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise EngineError(f"{self.stage}: TensorRT execution failed (execute_async_v3 returned False)")
        self.executions += 1

    def _hold_memory(self, stream):
        """Acquire the shared block for work enqueued on ``stream`` and release it when the block
        exits, i.e. right after that work (graph replays included) is enqueued."""
        runner = self

        class _Hold:
            def __enter__(self):
                return runner.memory.acquire(stream)

            def __exit__(self, *exc):
                runner.memory.release(stream)
                return False

        return _Hold()

    # ------------------------------------------------------------------------------------- run

    def run(self, feeds: Mapping[str, torch.Tensor], stream: "torch.cuda.Stream | None" = None) -> dict[str, torch.Tensor]:
        """Run the engine; ``stream``: the caller's stream (default: torch's current stream on the
        runner's device). Feeds must be ready on it; outputs are ready on it when this returns."""
        with torch.cuda.device(self.device):
            caller = stream if stream is not None else torch.cuda.current_stream(self.device)
            own = self._own_stream()
            ready = torch.cuda.Event()
            ready.record(caller)
            own.wait_event(ready)  # the feeds were produced on the caller's stream
            with torch.cuda.stream(own), self.memory.lock:
                inputs = self._prepare(feeds)
                for t in feeds.values():
                    if isinstance(t, torch.Tensor) and t.is_cuda:
                        t.record_stream(own)  # read on our stream: not reused before the engine is done
                if self.use_cuda_graph:
                    outputs = self._run_graph(inputs, own)
                else:
                    outputs = self._run_plain(inputs, own)
                done = torch.cuda.Event()
                done.record(own)
            caller.wait_event(done)  # results handed back: the caller's next work follows the engine
            for t in outputs.values():
                if t.is_cuda:
                    t.record_stream(caller)
            self._reap()
            return outputs

    def _run_plain(self, inputs: dict[str, torch.Tensor], stream) -> dict[str, torch.Tensor]:
        outputs = self._bind(self.context, inputs)
        with self._hold_memory(stream) as (ptr, size):
            self.context.set_device_memory(ptr, size)
            self._enqueue(self.context, stream)
        return outputs

    def _run_graph(self, inputs: dict[str, torch.Tensor], stream) -> dict[str, torch.Tensor]:
        key = tuple((n, tuple(t.shape), str(t.dtype)) for n, t in sorted(inputs.items()))
        if key in self._not_capturable:
            return self._run_plain(inputs, stream)
        with self._hold_memory(stream) as (ptr, size):
            graph = self._graphs.get(key)
            if graph is not None and graph.generation != self.memory.generation:
                self._drop_graph(key, stream)  # the shared block moved: the captured pointer is stale
                graph = None
            if graph is None:
                return self._warm_up_and_capture(key, inputs, stream, ptr, size)
            self._graphs.move_to_end(key)
            for n, t in inputs.items():
                graph.inputs[n].copy_(t)
            graph.graph.replay()
            self.replays += 1
            return {n: t.clone() for n, t in graph.outputs.items()}

    def _capturable(self, ctx, stream) -> bool:
        if stream == torch.cuda.default_stream(self.device):
            return False  # the legacy default stream cannot be captured
        check = getattr(ctx, "is_stream_capturable", None)
        return check is None or bool(check(stream.cuda_stream))

    def _warm_up_and_capture(self, key: tuple, inputs: dict[str, torch.Tensor], stream, ptr: int, size: int) -> dict[str, torch.Tensor]:
        """First call of a shape: one enqueue on a new context (this call's result, and the warm-up
        TensorRT needs before a capture), then one capture when the context allows it."""
        ctx = self._new_context()
        static_in = {n: t.clone() for n, t in inputs.items()}
        static_out = self._bind(ctx, static_in)
        ctx.set_device_memory(ptr, size)
        self._enqueue(ctx, stream)
        outputs = {n: t.clone() for n, t in static_out.items()}
        if not self._capturable(ctx, stream):
            log.info(f"{self.stage}: shape {[s for _, s, _ in key]} cannot be captured in a CUDA graph; it runs without one")
            self._not_capturable.add(key)
            self._retire(stream, ctx, static_in, static_out)
            return outputs
        g = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(g, stream=stream, capture_error_mode="thread_local"):
                if not ctx.execute_async_v3(stream.cuda_stream):
                    raise EngineError(f"{self.stage}: TensorRT execution failed during CUDA graph capture")
        except Exception as err:  # e.g. an engine that allocates during enqueue: run it without a graph
            log.warning(f"{self.stage}: CUDA graph capture failed ({str(err).splitlines()[0][:160] if str(err) else type(err).__name__}); "
                        "this shape runs without a graph")
            self._not_capturable.add(key)
            self._retire(stream, g, ctx, static_in, static_out)
            return outputs
        self.captures += 1
        self._graphs[key] = _Graph(g, static_in, static_out, self.memory.generation, ctx)
        while len(self._graphs) > self.max_graphs:
            self._drop_graph(next(iter(self._graphs)), stream)
        return outputs

    # ------------------------------------------------------------------------------- lifetime

    def _drop_graph(self, key: tuple, stream) -> None:
        graph = self._graphs.pop(key)
        self._retire(stream, graph.graph, graph.context, graph.inputs, graph.outputs)

    def _retire(self, stream, *things) -> None:
        """Keep ``things`` (a context, a graph, its buffers) until the work enqueued on ``stream``
        so far has finished."""
        event = torch.cuda.Event()
        event.record(stream)
        self._retired.append((event, things))

    def _reap(self) -> None:
        self._retired = [(e, things) for e, things in self._retired if not e.query()]

    @property
    def graph_count(self) -> int:
        return len(self._graphs)

    def synchronize(self) -> None:
        """Wait for everything this runner enqueued."""
        if self.stream is not None:
            with torch.cuda.device(self.device):
                self.stream.synchronize()

    def close(self) -> None:
        """Destroy the graphs and contexts, after the work enqueued on them has finished."""
        if self.context is None and self.engine is None:
            return
        with self.memory.lock:
            self.synchronize()
            self._graphs.clear()
            self._retired.clear()
            self._not_capturable.clear()
            self.context = None
            self.engine = None
            self._keepalive = None


@dataclass
class _Graph:
    graph: Any
    inputs: dict
    outputs: dict
    generation: int
    context: Any  # the execution context it was captured from (one per graph)
