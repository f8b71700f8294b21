"""The order of stream, event, memory and CUDA-graph operations in the TensorRT runner, on CPU.

TensorRT and ``torch.cuda`` are replaced by fakes that record what the runner asks for, in order
(one log per test): a fake engine/execution context (``execute_async_v3`` logs the stream handle, the
current device and whether a capture is running), fake streams/events (``wait_event``/``record``/
``synchronize``), a fake ``torch.cuda.graph`` (capture mode, captures per context) and a logging
:class:`SharedDeviceMemory`. The tests then check the invariants of ``engine/runner.py``'s docstring:

* nothing executes on the legacy default stream (handle 0); feeds are waited for with an event
  recorded on the caller's stream, results are handed back with an event the caller waits for;
* the runner's device is current whenever it enqueues, whichever thread calls;
* every execution and every graph replay happens while the shared block is held (acquired and not
  yet released): "memory released before replay" fails;
* exactly one execution (plain enqueue or replay) per ``run()``: a warm-up that is executed again,
  or a capture followed by a replay, fails; a shape that cannot be captured is remembered;
* one execution context per captured graph: two shapes never capture on one context;
* capture in thread-local mode;
* a context is destroyed only after the work enqueued on it has finished.

Each invariant fails on the runner of commit d331213 (checked by running this file against that
file's copy); nothing here touches a GPU or creates a TensorRT object.
"""
from __future__ import annotations

import contextlib
import enum
import gc
import threading

import pytest
import torch

from mimic.engine import runner as rn

LOG: list[tuple] = []


# ------------------------------------------------------------------------------ fake torch.cuda


class FakeStream:
    _next = [1]

    def __init__(self, device=None, priority=0, handle=None):
        if handle is None:
            handle = FakeStream._next[0]
            FakeStream._next[0] += 1
        self.cuda_stream = handle
        self.device = device

    def wait_event(self, event):
        LOG.append(("wait", self.cuda_stream, event))

    def wait_stream(self, other):
        LOG.append(("wait_stream", self.cuda_stream, other.cuda_stream))

    def synchronize(self):
        LOG.append(("sync", self.cuda_stream))

    def query(self):
        return True

    def __repr__(self):
        return f"<stream {self.cuda_stream}>"


DEFAULT = FakeStream(handle=0)  # the legacy default stream


class FakeEvent:
    def __init__(self, enable_timing=False, blocking=False, interprocess=False):
        self.stream = None

    def record(self, stream=None):
        self.stream = stream if stream is not None else _current_stream()
        LOG.append(("record", self.stream.cuda_stream, self))

    def synchronize(self):
        LOG.append(("event_sync", self.stream.cuda_stream if self.stream else None, self))

    def query(self):
        LOG.append(("event_done", self.stream.cuda_stream if self.stream else None, self))
        return True


_tls = threading.local()
MAIN_DEVICE = "cuda:0"  # what a fresh thread has current (CUDA's per-thread default)


def _current_stream(device=None):
    return getattr(_tls, "stream", None) or DEFAULT


def _current_device():
    return getattr(_tls, "device", MAIN_DEVICE)


@contextlib.contextmanager
def fake_stream_ctx(stream):
    old = getattr(_tls, "stream", None)
    if stream is not None:
        _tls.stream = stream
    try:
        yield stream
    finally:
        _tls.stream = old


@contextlib.contextmanager
def fake_device_ctx(device):
    old = _current_device()
    _tls.device = str(torch.device(device)) if device is not None else old
    LOG.append(("set_device", _tls.device))
    try:
        yield
    finally:
        _tls.device = old


class FakeGraph:
    def __init__(self, *a, **k):
        self.captured_on = None

    def replay(self):
        LOG.append(("replay", _current_stream().cuda_stream, self, _current_device()))


CAPTURING: list = []


@contextlib.contextmanager
def fake_graph_ctx(graph, pool=None, stream=None, capture_error_mode="global"):
    stream = stream or _current_stream()
    LOG.append(("capture_begin", stream.cuda_stream, graph, capture_error_mode))
    CAPTURING.append(graph)
    try:
        with fake_stream_ctx(stream):
            yield graph
    finally:
        CAPTURING.pop()
        LOG.append(("capture_end", stream.cuda_stream, graph))


# ---------------------------------------------------------------------------------- fake TensorRT


class Mode(enum.Enum):
    INPUT = 1
    OUTPUT = 2


class DType(enum.Enum):
    FLOAT = 0
    HALF = 1


class FakeContext:
    """Logged by number (the log must not keep a context alive)."""

    _count = [0]

    def __init__(self, engine):
        self.engine = engine
        self.shapes = {}
        self.captures = 0
        FakeContext._count[0] += 1
        self.n = FakeContext._count[0]
        LOG.append(("create_context", self.n))

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return True

    def infer_shapes(self):
        return []

    def get_tensor_shape(self, name):
        b, f, _, h, w = self.shapes["sample"]
        return (b, f, 4, h, w)

    def set_tensor_address(self, name, ptr):
        return True

    def set_device_memory(self, ptr, size):
        LOG.append(("set_device_memory", self.n, ptr, size))

    def is_stream_capturable(self, handle):
        return self.engine.capturable

    def execute_async_v3(self, handle):
        if CAPTURING:
            self.captures += 1
            LOG.append(("captured", handle, self.n, CAPTURING[-1]))
        else:
            LOG.append(("execute", handle, self.n, _current_device()))
        return True

    def __del__(self):
        LOG.append(("destroy", self.n))


class FakeEngine:
    def __init__(self, mem=1 << 16, capturable=True):
        self.capturable = capturable
        self.device_memory_size_v2 = mem
        self.tensors = [
            ("sample", Mode.INPUT, DType.HALF, (-1, -1, 8, -1, -1), ((1, 2, 8, 8, 8), (2, 4, 8, 8, 8), (2, 8, 8, 16, 16))),
            ("noise_pred", Mode.OUTPUT, DType.HALF, (-1, -1, 4, -1, -1), None),
        ]

    num_io_tensors = property(lambda self: len(self.tensors))

    def _t(self, name):
        return next(t for t in self.tensors if t[0] == name)

    def get_tensor_name(self, i):
        return self.tensors[i][0]

    def get_tensor_mode(self, name):
        return self._t(name)[1]

    def get_tensor_dtype(self, name):
        return self._t(name)[2]

    def get_tensor_shape(self, name):
        return self._t(name)[3]

    def get_tensor_profile_shape(self, name, index):
        return self._t(name)[4]

    def create_execution_context(self, strategy):
        assert strategy == "USER_MANAGED"
        return FakeContext(self)


class FakeTrt:
    class ExecutionContextAllocationStrategy:
        USER_MANAGED = "USER_MANAGED"


class LoggedMemory(rn.SharedDeviceMemory):
    def acquire(self, stream):
        LOG.append(("acquire", stream.cuda_stream, self))
        return super().acquire(stream)

    def release(self, stream):
        LOG.append(("release", stream.cuda_stream, self))
        super().release(stream)


@pytest.fixture(autouse=True)
def fake_cuda(monkeypatch):
    gc.collect()
    LOG.clear()
    _tls.__dict__.clear()
    for name, value in {
        "Stream": FakeStream,
        "Event": FakeEvent,
        "current_stream": _current_stream,
        "default_stream": lambda device=None: DEFAULT,
        "stream": fake_stream_ctx,
        "device": fake_device_ctx,
        "current_device": _current_device,
        "CUDAGraph": FakeGraph,
        "graph": fake_graph_ctx,
    }.items():
        monkeypatch.setattr(torch.cuda, name, value)
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda self, s: LOG.append(("record_stream", s.cuda_stream)), raising=False)
    yield
    LOG.clear()


def feeds(frames=4, size=8):
    return {"sample": torch.zeros(2, frames, 8, size, size)}


def make_runner(memory=None, engine=None, **kw):
    return rn.TrtRunner("unet", engine or FakeEngine(), FakeTrt, memory or LoggedMemory("cpu"), device="cpu", **kw)


def calls(log):
    """Split the log into one list per ``run()`` call (the test marks call boundaries)."""
    out, cur = [], None
    for entry in log:
        if entry[0] == "call":
            cur = []
            out.append(cur)
        elif cur is not None:
            cur.append(entry)
    return out


def run_marked(runner, f, stream=None):
    LOG.append(("call",))
    return runner.run(f, stream=stream) if stream is not None else runner.run(f)


def executions(entries):
    return [e for e in entries if e[0] in ("execute", "replay")]


def held_violations(log):
    """Executions/replays while the shared block is not held (memory released before the work)."""
    held: dict = {}
    bad = []
    for e in log:
        if e[0] == "acquire":
            held[id(e[2])] = True
        elif e[0] == "release":
            held[id(e[2])] = False
        elif e[0] in ("execute", "replay") and not any(held.values()):
            bad.append(e)
    return bad


# ----------------------------------------------------------------------------------------- tests


def test_engine_never_runs_on_the_default_stream_and_hands_results_back():
    r = make_runner()
    caller = FakeStream()
    with fake_stream_ctx(DEFAULT):
        run_marked(r, feeds())  # the caller is on the legacy default stream
    with fake_stream_ctx(caller):
        run_marked(r, feeds())
    for entries in calls(LOG):
        ex = executions(entries)
        assert ex and all(e[1] != 0 for e in ex), f"execute on the default stream: {ex}"
        engine_stream = ex[0][1]
        first = entries.index(ex[0])
        # feeds: the engine stream waits for an event recorded on the caller's stream before executing
        rec = {id(e[2]): e[1] for e in entries if e[0] == "record"}
        waits_before = [e for e in entries[:first] if e[0] == "wait" and e[1] == engine_stream]
        caller_handle = next(e[1] for e in entries if e[0] == "record")  # the first event: on the caller
        assert any(rec.get(id(w[2])) == caller_handle for w in waits_before), "feeds not waited for with an event"
        # results: the caller waits for an event recorded on the engine stream after the execution
        after = entries[first + 1:]
        done = [e[2] for e in after if e[0] == "record" and e[1] == engine_stream]
        assert any(e[0] == "wait" and e[1] == caller_handle and e[2] in done for e in after), "results not handed back"
    assert not any(e[0] in ("sync", "event_sync") for e in LOG), "a host synchronisation on the run path"


def test_explicit_caller_stream_gets_the_results():
    r = make_runner()
    mine = FakeStream()
    run_marked(r, feeds(), stream=mine)  # the caller names its stream; torch's current one is the default
    entries = calls(LOG)[0]
    ex = executions(entries)
    assert len(ex) == 1 and ex[0][1] != 0
    after = entries[entries.index(ex[0]) + 1:]
    done = [e[2] for e in after if e[0] == "record" and e[1] == ex[0][1]]
    assert ex[0][1] == mine.cuda_stream or any(e[0] == "wait" and e[1] == mine.cuda_stream and e[2] in done for e in after)


def test_runner_device_is_current_when_it_enqueues_from_any_thread():
    r = make_runner()
    seen = []

    def worker():  # a fresh thread: CUDA's current device is device 0 there
        run_marked(r, feeds())
        seen.extend(e[3] for e in LOG if e[0] == "execute")

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen and all(d == str(r.device) for d in seen), f"run() without the engine's device current: {seen}"


def test_cuda_graph_captured_once_replayed_and_memory_held_during_replay():
    r = make_runner(use_cuda_graph=True)
    caller = FakeStream()
    with fake_stream_ctx(caller):
        for _ in range(3):
            run_marked(r, feeds())
    per_call = [executions(c) for c in calls(LOG)]
    assert [len(x) for x in per_call] == [1, 1, 1], f"engine executed more than once per call: {per_call}"
    assert [x[0][0] for x in per_call] == ["execute", "replay", "replay"]
    captures = [e for e in LOG if e[0] == "capture_begin"]
    assert len(captures) == 1 and captures[0][3] == "thread_local", captures
    assert captures[0][1] != 0
    assert not held_violations(LOG), f"memory released before replay: {held_violations(LOG)}"
    # the captured enqueue came after the warm-up enqueue on the same context
    ctx = next(e[2] for e in LOG if e[0] == "captured")
    first_exec = next(e for e in LOG if e[0] == "execute")
    assert first_exec[2] == ctx


def test_not_capturable_shape_runs_once_per_call_and_is_remembered():
    r = make_runner(engine=FakeEngine(capturable=False), use_cuda_graph=True)
    with fake_stream_ctx(FakeStream()):
        for _ in range(3):
            run_marked(r, feeds())
    per_call = [executions(c) for c in calls(LOG)]
    assert [len(x) for x in per_call] == [1, 1, 1], f"engine executed twice: {per_call}"
    assert not any(e[0] == "capture_begin" for e in LOG)
    later = [e for c in calls(LOG)[1:] for e in c if e[0] == "create_context"]
    assert not later, "'not capturable' was not remembered: a new context per call"
    assert not held_violations(LOG)


def test_one_context_per_captured_shape_and_alternating_shapes_replay():
    r = make_runner(use_cuda_graph=True)
    with fake_stream_ctx(FakeStream()):
        for frames in (8, 3, 8, 3, 8):  # the decoder's chunk of 8 and a remainder
            run_marked(r, feeds(frames=frames))
    captured = [e for e in LOG if e[0] == "captured"]
    contexts = [e[2] for e in captured]
    assert len(captured) == 2 and contexts[0] != contexts[1], "two graphs on one context"
    per_call = [executions(c) for c in calls(LOG)]
    assert [x[0][0] for x in per_call] == ["execute", "execute", "replay", "replay", "replay"]
    assert [len(x) for x in per_call] == [1] * 5
    assert not held_violations(LOG)


def test_engines_sharing_the_block_each_hold_it_while_they_run():
    memory = LoggedMemory("cpu")
    unet = make_runner(memory, use_cuda_graph=True)
    decoder = make_runner(memory, engine=FakeEngine(mem=1 << 15))
    caller = FakeStream()
    with fake_stream_ctx(caller):
        for r in (unet, decoder, unet, decoder, unet):
            run_marked(r, feeds())
    assert not held_violations(LOG), f"memory released before the work that uses it: {held_violations(LOG)}"
    assert unet.stream is not decoder.stream
    # an engine on another stream than the block's last user waits for that user's release event
    releases = {id(e[2]) for e in LOG if e[0] == "record"}
    acquires = [i for i, e in enumerate(LOG) if e[0] == "acquire"]
    for i in acquires[1:]:
        stream = LOG[i][1]
        prev_release = max(j for j in range(i) if LOG[j][0] == "release")
        if LOG[prev_release][1] != stream:
            assert any(e[0] == "wait" and e[1] == stream and id(e[2]) in releases for e in LOG[i:i + 3])


def test_close_waits_for_in_flight_work_before_destroying_contexts():
    r = make_runner(use_cuda_graph=True)
    with fake_stream_ctx(FakeStream()):
        run_marked(r, feeds(frames=8))
        run_marked(r, feeds(frames=3))
    r.close()
    gc.collect()
    destroyed = [i for i, e in enumerate(LOG) if e[0] == "destroy"]
    assert destroyed, "contexts were never destroyed"
    last_work = max(i for i, e in enumerate(LOG) if e[0] in ("execute", "replay", "captured"))
    stream = next(e[1] for e in LOG if e[0] == "execute")
    finished = [i for i, e in enumerate(LOG) if i > last_work and ((e[0] == "sync" and e[1] == stream) or (e[0] == "event_sync" and e[1] == stream))]
    assert finished and finished[0] < destroyed[0], "a context was destroyed before its work finished"


def test_evicted_graph_context_outlives_its_work():
    r = make_runner(use_cuda_graph=True, max_graphs=1)
    with fake_stream_ctx(FakeStream()):
        run_marked(r, feeds(frames=8))
        run_marked(r, feeds(frames=3))  # evicts the 8-frame graph
        run_marked(r, feeds(frames=3))  # replays; the evicted graph's work has finished by now
        gc.collect()
        assert any(e[0] == "destroy" for e in LOG), "the evicted graph's context was never released"
        for i, e in enumerate(LOG):
            if e[0] == "destroy":
                done = [j for j, x in enumerate(LOG[:i]) if x[0] in ("event_done", "sync", "event_sync")]
                assert done, "an evicted context was destroyed before an event after its work completed"
    r.close()
