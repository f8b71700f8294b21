"""GPU-path defects checked on the CPU, with fakes: stream order of the multi-device decode, the
CUDA numerics flags, the device of the seeded draws, and no list indexing (a host sync per use on a
GPU) in the denoising loops. ``tests/test_gpu_streams.py`` checks the same on a real GPU.

The decode test fails on the ``decode_parallel`` before the fix (checked by running it against
that file's copy): the pool thread ran decode_chunk's NaN check, uint8 conversion and host copy on
its own current stream while the decoder was enqueued on the job stream.
"""
from __future__ import annotations

import contextlib
import threading
import types

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from mimic.model.config import GenerationConfig
from mimic.model.scheduler import SchedulerConfig
from mimic.pose.images import ArrayPoses
from mimic.runtime import decode as decode_mod
from mimic.runtime import determinism, parallel
from mimic.runtime.denoise import Conditioning, denoise, plan_denoise
from mimic.runtime.parallel import decode_parallel, denoise_parallel
from mimic.spec import StageName
from mimic.spec import TensorName as N

# ------------------------------------------------------------------- defect 4: decode stream order


class FakeStream:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"<stream {self.name}>"


DEFAULT = FakeStream("default")  # what a thread has current until it makes another stream current
_tls = threading.local()


def _current(device=None):
    return getattr(_tls, "stream", DEFAULT)


@contextlib.contextmanager
def _stream_ctx(stream):
    old = _current()
    if stream is not None:
        _tls.stream = stream
    try:
        yield stream
    finally:
        _tls.stream = old


class _CurrentStream:
    """``torch.cuda.current_stream(d)``: the thread's fake current stream, logging ``synchronize``."""

    def __init__(self, log):
        self.log = log

    def __call__(self, device=None):
        stream = _current()
        log = self.log
        return types.SimpleNamespace(synchronize=lambda: log.append((threading.current_thread().name, "sync", stream)))


class HostCuda(torch.Tensor):
    """A host tensor that takes ``.to("cuda:N")`` as done (and stays on the host)."""

    @classmethod
    def __torch_function__(cls, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.to:
            device, dtype, _, _ = torch._C._nn._parse_to(*args[1:], **kwargs)
            if device is not None and device.type == "cuda":
                return args[0] if dtype is None else args[0].to(dtype)
        return super().__torch_function__(func, types_, args, kwargs)


class LoggingDecoder:
    """A "cuda:0" decoder computing on the host; logs the stream each call was enqueued on."""

    name = "fake"
    device = torch.device("cuda:0")

    def __init__(self, log):
        self.log = log

    def run(self, stage, feeds, stream=None):
        assert stage == StageName.VAE_DECODER
        self.log.append((threading.current_thread().name, "decode", stream if stream is not None else _current()))
        return {N.FRAMES: torch.tanh(feeds[N.LATENTS][:, :3]).as_subclass(torch.Tensor)}


def test_parallel_decode_reads_the_frames_on_the_stream_that_wrote_them(monkeypatch):
    """Every chunk's checks, conversion and host copy run with the decoder's stream current (and
    the worker waits on that stream), on both workers of ``cuda:0,cuda:0``."""
    log: list[tuple] = []
    monkeypatch.setattr(torch.cuda, "stream", _stream_ctx)
    monkeypatch.setattr(torch.cuda, "device", lambda device=None: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", _CurrentStream(log))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    real_check = decode_mod.check_finite

    def logged_check(x, what, dtype=None):
        log.append((threading.current_thread().name, "post", _current()))
        real_check(x, what, dtype)

    monkeypatch.setattr(decode_mod, "check_finite", logged_check)
    job = FakeStream("job")
    latents = torch.randn(1, 13, 4, 2, 3).as_subclass(HostCuda)
    chunks = list(decode_parallel([LoggingDecoder(log), LoggingDecoder(log)], latents, 0.5, 4, stream=job))

    assert [s for s, _ in chunks] == [0, 4, 8, 12]
    z = latents.as_subclass(torch.Tensor).flatten(0, 1) / 0.5
    want = ((torch.tanh(z[:, :3]) / 2 + 0.5).clamp(0, 1) * 255.0).to(torch.uint8).numpy()
    assert np.array_equal(np.concatenate([f for _, f in chunks]), want)
    threads = {t for t, _, _ in log}
    assert len(threads) == 2
    for t in threads:  # per worker thread: decode on the job stream, then post-process and wait on it
        assert [(what, s) for tt, what, s in log if tt == t] == [("decode", job), ("post", job), ("sync", job)] * 2


# --------------------------------------------------------------------- defect 5: numerics flags


@pytest.fixture
def cuda_flags():
    """Restore the process-wide flags after a test that sets them."""
    names = [(torch.backends.cuda.matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32"), (torch.backends.cudnn, "benchmark"),
             (torch.backends.cudnn, "deterministic")]
    saved = [(m, n, getattr(m, n)) for m, n in names]
    yield
    for m, n, v in saved:
        setattr(m, n, v)


def _flags():
    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)


def test_cuda_numerics_flags_are_set_explicitly(cuda_flags):
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    determinism.set_cuda_numerics(False)
    assert _flags() == (False, False, True, False)  # no TF32; autotuning
    determinism.set_cuda_numerics(True)
    assert _flags() == (False, False, False, True)  # no TF32; deterministic algorithms


def test_torch_backend_autotunes_unless_bit_identity_was_promised(cuda_flags):
    from mimic.runtime.backend_torch import TorchBackend

    models = types.SimpleNamespace(device=torch.device("cuda:0"), dtype=torch.float16)
    determinism.set_cuda_numerics(False)
    TorchBackend(models)
    assert _flags() == (False, False, True, False)
    TorchBackend(models, deterministic=True)
    assert _flags() == (False, False, False, True)
    TorchBackend(models)  # a process that promised stays deterministic
    assert _flags() == (False, False, False, True)
    determinism.set_cuda_numerics(False)
    determinism.promise_bit_identity()
    assert _flags() == (False, False, False, True)
    TorchBackend(types.SimpleNamespace(device=torch.device("cpu"), dtype=torch.float32))  # the CPU: flags untouched
    assert _flags() == (False, False, False, True)


# ----------------------------------------------------------------------- defect 8: seeded draws


def test_job_noise_on_the_cpu_is_the_previous_draw():
    pixel, window = determinism.job_noise(7, torch.device("cpu"), (1, 3, 16, 8), (1, 4, 4, 2, 1), torch.float16)
    g = torch.Generator().manual_seed(7)
    assert torch.equal(pixel, torch.randn((1, 3, 16, 8), generator=g, dtype=torch.float32))
    assert torch.equal(window, torch.randn((1, 4, 4, 2, 1), generator=g, dtype=torch.float16))
    assert pixel.dtype == torch.float32 and window.dtype == torch.float16


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1"])
def test_the_generator_is_on_the_main_device(monkeypatch, device):
    """On a GPU the generator is made there (the released script's draws); the host one stands in."""
    asked = []
    real = torch.Generator

    def recording(device="cpu"):
        asked.append(torch.device(device))
        return real()

    monkeypatch.setattr(torch, "Generator", recording)
    pixel, window = determinism.job_noise(3, torch.device(device), (1, 3, 4, 4), (1, 2, 4, 1, 1), torch.float32)
    assert asked == [torch.device(device)]
    g = real().manual_seed(3)
    assert torch.equal(pixel, torch.randn((1, 3, 4, 4), generator=g)) and torch.equal(window, torch.randn((1, 2, 4, 1, 1), generator=g))


# ---------------------------------------------------------------- defect 6: no list indexing


class _ListIndexes(TorchFunctionMode):
    """Records tensor indexing with a Python list (on a GPU: the list is copied over and waited for).
    Modes are per thread: ``found`` is shared by the instances entered in the workers' threads."""

    def __init__(self, found: list):
        super().__init__()
        self.found = found

    def __torch_function__(self, func, types_, args=(), kwargs=None):
        if func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__):
            key = args[1] if isinstance(args[1], tuple) else (args[1],)
            self.found += [k for k in key if isinstance(k, list)]
        return func(*args, **(kwargs or {}))


class _Unet:
    name = "fake"
    device = torch.device("cpu")

    def run(self, stage, feeds, stream=None):
        if stage == StageName.POSE_NET:
            return {N.POSE_LATENTS: feeds[N.POSE_IMAGES][:, :2, ::8, ::8] * 0.37}
        x = feeds[N.SAMPLE]
        return {N.NOISE_PRED: torch.sin(3.1 * x[:, :, :4]) + 0.29 * x[:, :, 4:8]}


@pytest.mark.parametrize("workers", [1, 2])
def test_the_loops_index_with_device_tensors_not_lists(monkeypatch, workers):
    torch.manual_seed(0)
    config = GenerationConfig(window=8, overlap=7, steps=2, guidance_min=1.5, guidance_max=2.5)
    plan = plan_denoise(17, config, SchedulerConfig(), torch.float32, torch.device("cpu"), pose_cache_bytes=1 << 20)
    cond = Conditioning(torch.randn(2, 1, 8), torch.randn(2, 4, 4, 3), torch.randn(2, 3))
    poses = ArrayPoses(np.random.default_rng(0).integers(0, 255, (17, 3, 32, 24), dtype=np.uint8))
    latents = torch.randn(1, 17, 4, 4, 3)
    found: list = []
    in_device = parallel._Worker._in_device

    def watched(self, fn, *args):
        with _ListIndexes(found):
            return in_device(self, fn, *args)

    monkeypatch.setattr(parallel._Worker, "_in_device", watched)
    with _ListIndexes(found):
        if workers == 1:
            denoise(_Unet(), plan, cond, poses, latents)
        else:
            denoise_parallel([_Unet(), _Unet()], plan, cond, poses, latents)
    assert found == []
