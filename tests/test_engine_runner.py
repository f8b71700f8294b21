"""Runner logic on CPU with fake engines: dtype mapping, IO description, input checks, memory sizing.

Nothing here creates a TensorRT runtime object (this machine may have no GPU).
"""
from __future__ import annotations

import enum

import pytest
import torch

from mimic.engine import runner as rn
from mimic.engine.validate import tolerance_for
from mimic.export.compare import FRAMES_PSNR_PEAK, compare_outputs, format_table
from mimic.errors import EngineError


class Mode(enum.Enum):
    INPUT = 1
    OUTPUT = 2


class DType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT32 = 3
    INT64 = 9


class FakeEngine:
    """The slice of ICudaEngine the runner reads, for a UNet-like signature."""

    def __init__(self, mem=1 << 20):
        self.tensors = [
            ("sample", Mode.INPUT, DType.HALF, (-1, -1, 8, -1, -1), ((1, 2, 8, 8, 8), (2, 16, 8, 40, 24), (2, 32, 8, 64, 64))),
            ("timestep", Mode.INPUT, DType.FLOAT, (-1,), ((1,), (2,), (2,))),
            ("noise_pred", Mode.OUTPUT, DType.HALF, (-1, -1, 4, -1, -1), None),
        ]
        self.device_memory_size_v2 = mem

    @property
    def num_io_tensors(self):
        return len(self.tensors)

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
        assert index == 0
        return self._t(name)[4]


def test_dtype_mapping_by_name():
    assert rn.torch_dtype(DType.HALF) == torch.float16
    assert rn.torch_dtype("DataType.FLOAT") == torch.float32
    assert rn.torch_dtype(DType.INT64) == torch.int64
    with pytest.raises(EngineError, match="INT4"):
        rn.torch_dtype("INT4")


def test_tensorrt_rtx_datatype_names_are_mapped():
    trt = pytest.importorskip("tensorrt_rtx")
    for name in ("FLOAT", "HALF", "BF16", "INT8", "INT32", "INT64", "BOOL", "UINT8"):
        assert rn.torch_dtype(getattr(trt.DataType, name)) == rn.TRT_TO_TORCH[name]


def test_describe_io():
    infos = rn.describe_io(FakeEngine())
    assert [i.name for i in infos] == ["sample", "timestep", "noise_pred"]
    sample = infos[0]
    assert sample.is_input and sample.dtype == torch.float16 and not sample.static
    assert sample.profile[2] == (2, 32, 8, 64, 64)
    assert not infos[2].is_input and infos[2].profile is None


def _feeds(**over):
    feeds = {"sample": torch.zeros(2, 16, 8, 40, 24, dtype=torch.float32), "timestep": torch.zeros(2)}
    feeds.update(over)
    return feeds


def test_check_feeds_ok_and_casts():
    infos = rn.describe_io(FakeEngine())
    dtypes = rn.check_feeds("unet", infos, _feeds())
    assert dtypes == {"sample": torch.float16, "timestep": torch.float32}  # fp32 feed is cast to the fp16 engine input


@pytest.mark.parametrize(
    "feeds, expect",
    [
        (_feeds(sample=torch.zeros(2, 40, 8, 40, 24)), "dim 1 = 40, allowed 2..32"),
        (_feeds(sample=torch.zeros(2, 16, 8, 72, 24)), "dim 3 = 72, allowed 8..64"),
        (_feeds(sample=torch.zeros(2, 16, 9, 40, 24)), "dim 2 = 9, allowed 8..8"),
        (_feeds(sample=torch.zeros(2, 16, 40, 24)), "rank 4"),
        (_feeds(timestep=torch.zeros(2, dtype=torch.int64)), "dtype torch.int64, the engine expects torch.float32"),
        ({"sample": torch.zeros(2, 16, 8, 40, 24)}, "missing 'timestep'"),
        (_feeds(extra=torch.zeros(1)), "unexpected 'extra'"),
        (_feeds(timestep=[0.0, 1.0]), "must be a torch.Tensor"),
    ],
)
def test_check_feeds_errors(feeds, expect):
    with pytest.raises(EngineError) as err:
        rn.check_feeds("unet", rn.describe_io(FakeEngine()), feeds)
    assert expect in str(err.value) and "\n" not in str(err.value)


def test_profile_error_names_the_fix():
    with pytest.raises(EngineError, match="rebuild with `mimic build-engines`"):
        rn.check_feeds("unet", rn.describe_io(FakeEngine()), _feeds(sample=torch.zeros(2, 72, 8, 40, 24)))


def test_shared_memory_sizing():
    assert rn.shared_memory_size([]) == 0
    assert rn.shared_memory_size([1000, 70_000, 3]) == 70_144  # max, 256-aligned
    mem = rn.SharedDeviceMemory("cpu")  # reserve() is bookkeeping only: no allocation
    for e in (FakeEngine(5 << 20), FakeEngine(300 << 20), FakeEngine(1 << 20)):
        mem.reserve(e.device_memory_size_v2)
    assert mem.required == 300 << 20 and mem.allocated == 0


def test_compare_statistics():
    """The one comparison (export and engine validation): max abs, max rel to the reference's peak,
    NaN/Inf fail, PSNR for frames, shape mismatches fail."""
    import numpy as np

    from mimic.spec import UNET, Tolerance

    tol = Tolerance(1e-2, 1e-2)
    ref = np.linspace(-1, 1, 1000).astype(np.float32).reshape(10, 100)
    got = ref.copy()
    got[0, 0] += 0.01
    kw = dict(stage="vae_decoder", precision="fp16", point="opt", output="frames", psnr_peak=FRAMES_PSNR_PEAK)
    r = compare_outputs(got, ref, tol, **kw)
    assert abs(r.max_abs - 0.01) < 1e-6 and abs(r.max_rel - 0.01) < 1e-6 and r.psnr_db > 60 and r.passed
    assert compare_outputs(got, ref, Tolerance(1e-3, 1.0), **kw).passed is False  # max abs over
    assert compare_outputs(got * 0.5, ref * 0.5, tol, **kw).max_rel == pytest.approx(0.01, rel=1e-3)  # relative to the peak
    got[1, 1] = np.nan
    bad = compare_outputs(got, ref, tol, **kw)
    assert bad.nonfinite == 1 and not bad.passed and bad.note == "non-finite output"
    inf = compare_outputs(np.full((2, 2), np.inf, np.float32), np.ones((2, 2), np.float32), tol, **kw)
    assert inf.nonfinite == 4 and not inf.passed
    wrong = compare_outputs(got[:5], ref, tol, **kw)
    assert not wrong.passed and "shape (5, 100) != reference (10, 100)" in wrong.note
    table = format_table([r, bad, wrong])
    assert "FAIL" in table and "pass" in table and "vae_decoder" in table and "nan/inf" in table
    assert tolerance_for("unet", "fp16", scale=1.0) == UNET.tol_fp16
    assert tolerance_for("unet", "fp16") == Tolerance(2 * UNET.tol_fp16.max_abs, 2 * UNET.tol_fp16.max_rel)
    assert tolerance_for("dwpose_pose", "fp16").max_rel > 0  # fp32-only stage: its fp32 tolerance
