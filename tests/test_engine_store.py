"""Engine store on CPU: cache keys, atomic publish, manifest checks before deserialization.

A real plan is built once per module with TensorRT-RTX (ahead-of-time, no GPU needed) from a tiny
FP16 ONNX written with onnx.helper, through the project's builder code.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mimic.engine import cache_key as ck
from mimic.engine.gpu import GpuInfo, RuntimeInfo, TrtInfo, cuda_device_count, gpu_available, trt_info
from mimic.engine.store import EngineStore
from mimic.errors import EngineError
from mimic.files import atomic_write_bytes

trt_rtx = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX (tensorrt-rtx-cu13) is not installed")

PROFILE = {"x": ((1, 4, 8, 8), (2, 4, 16, 16), (4, 4, 32, 32))}


def write_tiny_onnx(path: Path, seed: int = 0, external: bool = False) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((8, 4, 3, 3)).astype(np.float16), "conv.weight")
    b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float16), "conv.bias")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["n", 4, "h", "w"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["n", 8, "h", "w"])
    nodes = [helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "tiny", [x], [y], [w, b]), opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path.parent.mkdir(parents=True, exist_ok=True)
    if external:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=path.name + ".data", size_threshold=0)
    else:
        onnx.save(model, str(path))
    return path


def build_plan(onnx_path: Path) -> bytes:
    from mimic.engine.builder import BuildOptions, build_serialized_engine

    return build_serialized_engine(onnx_path, PROFILE, BuildOptions(target="tensorrt-rtx", workspace_bytes=1 << 28, optimization_level=0))


RTX = trt_info("tensorrt-rtx")
FOREIGN_GPU = GpuInfo(0, "NVIDIA GeForce RTX 4090", "8.9", 24 << 30)


def rtx_key(onnx_path: Path, options=None):
    spec = ck.build_spec(PROFILE, options or {"optimization_level": 0, "workspace_bytes": 1 << 28})
    return ck.cache_key("tiny", ck.onnx_fingerprint(onnx_path), spec, RTX, ck.gpu_target("tensorrt-rtx"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    onnx_path = write_tiny_onnx(root / "onnx" / "tiny.onnx")
    plan = build_plan(onnx_path)
    key, inputs = rtx_key(onnx_path)
    return root, onnx_path, plan, key, inputs


@pytest.fixture
def store(built, tmp_path):
    _, onnx_path, plan, key, inputs = built
    s = EngineStore(tmp_path / "engines")
    s.publish("tiny", plan, key, inputs, onnx={"path": str(onnx_path)}, build_seconds=0.1)
    return s


# ------------------------------------------------------------------------------------ cache key


def test_key_sensitive_to_every_field(built, tmp_path):
    _, onnx_path, _, key, inputs = built
    fp = ck.onnx_fingerprint(onnx_path)
    spec = inputs["build"]
    gpu = inputs["gpu"]
    variants = {
        "onnx weights": ck.cache_key("tiny", ck.onnx_fingerprint(write_tiny_onnx(tmp_path / "b.onnx", seed=1)), spec, RTX, gpu)[0],
        "opt level": ck.cache_key("tiny", fp, ck.build_spec([PROFILE], {"optimization_level": 3, "workspace_bytes": 1 << 28}), RTX, gpu)[0],
        "workspace": ck.cache_key("tiny", fp, ck.build_spec([PROFILE], {"optimization_level": 0, "workspace_bytes": 1 << 29}), RTX, gpu)[0],
        "refit": ck.cache_key("tiny", fp, ck.build_spec([PROFILE], {"optimization_level": 0, "workspace_bytes": 1 << 28, "refittable": True}), RTX, gpu)[0],
        "profile dim": ck.cache_key("tiny", fp, ck.build_spec([{"x": ((1, 4, 8, 8), (2, 4, 16, 16), (4, 4, 32, 64))}], {"optimization_level": 0, "workspace_bytes": 1 << 28}), RTX, gpu)[0],
        "trt version": ck.cache_key("tiny", fp, spec, TrtInfo("tensorrt-rtx", "tensorrt_rtx", "1.8.0.1"), gpu)[0],
        "trt flavour": ck.cache_key("tiny", fp, spec, TrtInfo("tensorrt", "tensorrt", RTX.version), gpu)[0],
        "gpu cc": ck.cache_key("tiny", fp, spec, RTX, ck.gpu_target("tensorrt-rtx", rtx_targets=("8.6",)))[0],
        "gpu name": ck.cache_key("tiny", fp, spec, RTX, {"name": "NVIDIA H100", "compute_capability": "9.0"})[0],
        "stage": ck.cache_key("unet", fp, spec, RTX, gpu)[0],
    }
    assert key not in variants.values()
    assert len(set(variants.values())) == len(variants)


def test_key_insensitive_to_order_path_and_hash_seed(built, tmp_path):
    _, onnx_path, _, key, inputs = built
    copy = tmp_path / "elsewhere" / "renamed.onnx"
    copy.parent.mkdir()
    copy.write_bytes(onnx_path.read_bytes())
    assert ck.onnx_fingerprint(copy)["sha256"] == ck.onnx_fingerprint(onnx_path)["sha256"]
    shuffled = dict(reversed(list(inputs.items())))
    assert ck.key_of(shuffled) == key
    code = ("from mimic.engine import cache_key as ck;"
            "print(ck.key_of({'b': {3, 1, 2}, 'a': frozenset({'x', 'y', 'z'}), 'c': (1.0, 2)}))")
    keys = set()
    for seed in ("1", "2", "3"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        keys.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip())
    assert len(keys) == 1


def test_external_data_is_hashed(tmp_path):
    path = write_tiny_onnx(tmp_path / "ext" / "m.onnx", external=True)
    fp = ck.onnx_fingerprint(path)
    assert [f["name"] for f in fp["files"]] == ["m.onnx", "m.onnx.data"]
    data = path.parent / "m.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[10] ^= 0xFF  # a weight changes, the .onnx file does not
    data.write_bytes(bytes(raw))
    assert ck.onnx_fingerprint(path)["sha256"] != fp["sha256"]
    data.unlink()
    with pytest.raises(EngineError, match="external data"):
        ck.onnx_fingerprint(path)


def test_enums_are_persisted_by_name():
    assert ck.canonical_json({"flag": trt_rtx.BuilderFlag.REFIT_IDENTICAL}) == '{"flag":"REFIT_IDENTICAL"}'
    with pytest.raises(ValueError):
        ck.canonical_json({"x": float("nan")})


def test_tensorrt_key_needs_a_gpu():
    with pytest.raises(EngineError, match="tensorrt-rtx"):
        ck.gpu_target("tensorrt", None)
    assert ck.gpu_target("tensorrt", FOREIGN_GPU) == {"name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"}


# -------------------------------------------------------------------------------------- publish


def test_publish_writes_plan_and_manifest(store, built):
    _, _, plan, key, inputs = built
    m = json.loads(store.manifest_path("tiny").read_text())
    assert m["cache_key"] == key and m["key_inputs"] == json.loads(json.dumps(inputs))
    assert m["tensorrt"] == {"flavour": "tensorrt-rtx", "version": RTX.version}
    assert m["plan"]["size"] == len(plan) == store.plan_path("tiny").stat().st_size
    assert m["tools"]["tensorrt-rtx"] == RTX.version and m["build"]["seconds"] == 0.1
    assert store.stages() == ["tiny"]
    assert not list(store.root.glob(".*.part*"))  # mimic.files temporaries: none left


def test_lookup_hit_miss_and_corruption(store, built):
    _, _, plan, key, _ = built
    assert store.lookup("tiny", key) is not None
    assert store.lookup("tiny", "0" * 64) is None
    assert store.lookup("other", key) is None
    raw = bytearray(plan)
    raw[len(raw) // 2] ^= 0x01
    store.plan_path("tiny").write_bytes(bytes(raw))
    assert store.lookup("tiny", key) is None  # corrupt entries are rebuilt, not reused


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "a.plan"
    target.write_bytes(b"old")

    def boom(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new-bytes")
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def test_failed_rebuild_keeps_previous_entry(store, built, monkeypatch):
    """A publish that dies while writing the plan leaves "missing", never a torn plan with a valid manifest."""
    _, _, plan, key, inputs = built
    import mimic.engine.store as store_mod

    real = store_mod.atomic_write_bytes

    def fail_on_plan(path, data):
        if str(path).endswith(".plan"):
            raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(store_mod, "atomic_write_bytes", fail_on_plan)
    with pytest.raises(OSError):
        store.publish("tiny", plan[:100], key, inputs)
    assert store.plan_path("tiny").read_bytes() == plan  # old plan untouched
    assert store.lookup("tiny", key) is None  # manifest withdrawn first: reads as missing -> rebuilt
    with pytest.raises(EngineError, match="without a manifest"):
        store.verify("tiny", RuntimeInfo(RTX, FOREIGN_GPU))


# --------------------------------------------------------------------------------------- verify


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_verify_ok_returns_verified_bytes(store, built):
    _, _, plan, _, _ = built
    v = store.verify("tiny", RuntimeInfo(RTX, FOREIGN_GPU))
    assert v.plan == plan and v.manifest["stage"] == "tiny"


@pytest.mark.parametrize("mode", ["truncate", "flip", "text", "missing"])
def test_verify_corrupt_plan(store, built, mode):
    _, _, plan, _, _ = built
    p = store.plan_path("tiny")
    if mode == "truncate":
        p.write_bytes(plan[: len(plan) // 2])
    elif mode == "flip":
        raw = bytearray(plan)
        raw[1234] ^= 0x40
        p.write_bytes(bytes(raw))
    elif mode == "text":
        p.write_text("this is not an engine")
    else:
        p.unlink()
    with pytest.raises(EngineError) as err:
        store.verify("tiny", RuntimeInfo(RTX, FOREIGN_GPU))
    msg = _one_line(err)
    assert {"truncate": "truncated", "flip": "corrupt", "text": "truncated", "missing": "missing"}[mode] in msg
    assert "mimic build-engines" in msg


def _edit_manifest(store, **changes):
    path = store.manifest_path("tiny")
    m = json.loads(path.read_text())
    for dotted, value in changes.items():
        node = m
        *parents, leaf = dotted.split("__")
        for k in parents:
            node = node[k]
        node[leaf] = value
    path.write_text(json.dumps(m))


@pytest.mark.parametrize(
    "edit, runtime, expect",
    [
        ({"tensorrt__version": "1.6.0.9"}, None, "TensorRT version differs: 1.6.0.9 vs"),
        ({"tensorrt__flavour": "tensorrt", "tensorrt__version": "11.4.0.106", "gpu": {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}}, None,
         "built with TensorRT 11.4.0.106 for NVIDIA H100 80GB HBM3 (sm_90), but this machine loads engines with TensorRT-RTX"),
        ({"gpu": {"name": "any", "compute_capability": ["12.0"]}}, None, "not among the plan's targets"),
    ],
)
def test_verify_mismatch(store, edit, runtime, expect):
    _edit_manifest(store, **edit)
    plan_before = store.plan_path("tiny").read_bytes()
    with pytest.raises(EngineError) as err:
        store.verify("tiny", runtime or RuntimeInfo(RTX, FOREIGN_GPU))
    msg = _one_line(err)
    assert expect in msg and "rebuild with `mimic build-engines" in msg
    assert store.plan_path("tiny").read_bytes() == plan_before  # never deleted or overwritten


def test_verify_tensorrt_gpu_mismatch(store):
    h100 = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    _edit_manifest(store, tensorrt__flavour="tensorrt", tensorrt__version="11.4.0.106", gpu=h100)
    trt11 = TrtInfo("tensorrt", "tensorrt", "11.4.0.106")
    with pytest.raises(EngineError) as err:
        store.verify("tiny", RuntimeInfo(trt11, GpuInfo(0, "NVIDIA A100-SXM4-80GB", "8.0", 80 << 30)))
    assert "compute capability differs: 9.0 vs 8.0" in _one_line(err)
    with pytest.raises(EngineError, match="GPU model differs: NVIDIA H100 80GB HBM3 vs NVIDIA H100 PCIe"):
        store.verify("tiny", RuntimeInfo(trt11, GpuInfo(0, "NVIDIA H100 PCIe", "9.0", 80 << 30)))
    # same arch, other model: allowed when asked for (TensorRT warns about performance only)
    store.check_plan("tiny", store.read_manifest("tiny"))
    store.verify("tiny", RuntimeInfo(trt11, GpuInfo(0, "NVIDIA H100 PCIe", "9.0", 80 << 30)), strict_gpu_name=False)
    with pytest.raises(EngineError, match="TensorRT 11.4.0.106, which is not installed here"):
        store.verify("tiny", RuntimeInfo(None, GpuInfo(0, "NVIDIA H100 PCIe", "9.0", 80 << 30)))


def test_verify_without_gpu_or_manifest(store, tmp_path):
    with pytest.raises(EngineError, match="needs an NVIDIA GPU"):
        store.verify("tiny", RuntimeInfo(RTX, None))
    with pytest.raises(EngineError, match="no engine for stage 'unet'"):
        store.verify("unet", RuntimeInfo(RTX, FOREIGN_GPU))
    store.manifest_path("tiny").write_text("{ not json")
    with pytest.raises(EngineError, match="not valid JSON"):
        store.verify("tiny", RuntimeInfo(RTX, FOREIGN_GPU))
    with pytest.raises(EngineError, match="invalid engine stage name"):
        store.plan_path("../evil")


def test_probe_never_raises_and_no_runtime_objects():
    """On this machine the probe answers without raising; on a GPU machine it finds the device."""
    n = cuda_device_count()
    assert n >= 0 and gpu_available() == (n > 0)
    from mimic import fingerprint

    v = fingerprint.versions()  # the one environment fingerprint (job reports, manifests, benchmarks)
    assert {"python", "platform", "torch", "mimic-engine"} <= set(v)
    if n:
        assert fingerprint.gpu_fingerprint(0)["compute_capability"]


def test_clean_temps_and_lock(store):
    from mimic.files import temp_path

    old = temp_path(store.plan_path("tiny"))
    old.write_bytes(b"half a plan")
    os.utime(old, (1, 1))
    fresh = temp_path(store.manifest_path("other"))
    fresh.write_bytes(b"being written")
    assert store.clean_temps() == [old]
    assert fresh.exists() and not old.exists()
    with store.lock("tiny"):  # mimic.files.file_lock (filelock), per stage
        assert (store.root / ".tiny.lock").exists()
