"""The TensorRT builder path, exercised with TensorRT-RTX (it builds ahead of time on a CPU)."""
from __future__ import annotations

import logging
import sys
import types
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from _export_fixtures import BASE_STAGES, tiny_export  # noqa: F401  (session fixture)
from mimic.engine.builder import BuildOptions, build_serialized_engine, load_trt
from mimic.errors import EngineError
from mimic.spec import DWPOSE_STAGES, PRECISIONS, STAGES, ModelDims, engine_profile

trt_rtx = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX (dev extra) is needed for the build tests")
RTX = BuildOptions(target="tensorrt-rtx")
TINY = ModelDims(embed_dim=32, pose_channels=32, cache_channels=64)


# The UNet's builds take ~20 s each: its fp16 graph is also built by test_engine_cli's
# build-engines run (the shipped engine), so here both UNet builds run with -m slow only.
# Deep-feature caching's pair is built by test_cache_graphs.py (its own export).
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("stage", [pytest.param(s, marks=pytest.mark.slow) if s == "unet" else s for s in BASE_STAGES])
def test_rtx_build_of_every_tiny_graph(tiny_export, stage, precision, caplog):
    """Each exported graph parses and builds (strongly typed) with its stage's tiny profile."""
    caplog.set_level(logging.INFO, logger="mimic")
    window = 16 if STAGES[stage].window_axis else None
    plan = build_serialized_engine(tiny_export.result(stage, precision).path, engine_profile(STAGES[stage], TINY, window=window), RTX)
    lines = caplog.messages
    assert isinstance(plan, bytes) and len(plan) > 10_000
    assert any(line.startswith("  parse ") for line in lines) and any(line.startswith("  built ") for line in lines)
    assert not any("zeroIsPlaceHolder" in line for line in lines)  # run-time reshapes exported with allowzero=1


@pytest.mark.parametrize("stage", list(DWPOSE_STAGES))
def test_rtx_build_of_the_dwpose_signatures(tiny_layout, stage):
    spec = DWPOSE_STAGES[stage]
    path = Path(tiny_layout.det_model if stage == "dwpose_detector" else tiny_layout.pose_model)
    g = onnx.load(str(path)).graph
    assert [i.name for i in g.input] == list(spec.input_names)
    assert [o.name for o in g.output] == list(spec.output_names)
    for vi in (*g.input, *g.output):
        assert tuple(d.dim_value for d in vi.type.tensor_type.shape.dim) == spec.tensor(vi.name).shape({}, TINY)
    assert engine_profile(spec, TINY) is None  # static: no profile
    assert build_serialized_engine(path, None, RTX)


def _write(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def _unknown_op_graph(path: Path) -> Path:
    node = helper.make_node("FrobnicateX", ["x"], ["y"], domain="mimic.test")
    graph = helper.make_graph([node], "broken", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("mimic.test", 1)])
    return _write(model, path)


def _add_graph(path: Path, dims=("n", 4)) -> Path:
    node = helper.make_node("Add", ["x", "x"], ["y"])
    graph = helper.make_graph([node], "add", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(dims))])
    return _write(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), path)


def test_broken_graph_fails_with_the_parser_errors(tmp_path):
    with pytest.raises(EngineError) as err:
        build_serialized_engine(_unknown_op_graph(tmp_path / "broken.onnx"), None, RTX)
    msg = str(err.value)
    assert msg.startswith("cannot parse broken.onnx:") and "FrobnicateX" in msg and "\n" not in msg


def test_garbage_file_fails_clearly(tmp_path):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"not an onnx file at all")
    with pytest.raises(EngineError, match="cannot parse garbage.onnx"):
        build_serialized_engine(bad, None, RTX)
    with pytest.raises(EngineError, match="not found"):
        build_serialized_engine(tmp_path / "missing.onnx", None, RTX)


def test_profile_mistakes_fail_before_the_build(tmp_path):
    path = _add_graph(tmp_path / "add.onnx")
    with pytest.raises(EngineError, match="dynamic inputs .* no optimization profile"):
        build_serialized_engine(path, None, RTX)
    with pytest.raises(EngineError, match="lacks shapes for dynamic input"):
        build_serialized_engine(path, {}, RTX)
    with pytest.raises(EngineError, match="inputs the network lacks: z"):
        build_serialized_engine(path, {"x": ((1, 4), (2, 4), (3, 4)), "z": ((1,), (1,), (1,))}, RTX)
    with pytest.raises(EngineError, match="min <= opt <= max"):
        build_serialized_engine(path, {"x": ((3, 4), (2, 4), (1, 4))}, RTX)
    with pytest.raises(EngineError, match="does not fit"):
        build_serialized_engine(path, {"x": ((1, 5), (1, 5), (1, 5))}, RTX)
    assert build_serialized_engine(path, {"x": ((1, 4), (2, 4), (8, 4))}, RTX)


def test_build_options_and_flags(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="mimic")
    path = _add_graph(tmp_path / "add.onnx")
    prof = {"x": ((1, 4), (2, 4), (8, 4))}
    opts = BuildOptions(target="tensorrt-rtx", optimization_level=1, refittable=True, strip_plan=True,
                        workspace_bytes=1 << 30, timing_cache=tmp_path / "cache.bin", compute_capabilities=("8.6", "12.0"))
    assert build_serialized_engine(path, prof, opts)
    assert any("level 1" in line and "1 profile(s)" in line for line in caplog.messages)
    with pytest.raises(EngineError, match="cannot target compute capability 9.0"):
        build_serialized_engine(path, prof, BuildOptions(target="tensorrt-rtx", compute_capabilities=("9.0",)))
    for bad in (dict(optimization_level=6), dict(workspace_bytes=0), dict(target="tensorrt", compute_capabilities=("8.6",))):
        with pytest.raises(EngineError):
            BuildOptions(**bad)


def test_rtx_builds_request_user_allocation_for_cuda_graphs(tmp_path):
    """TensorRT-RTX engines are only stream-capturable with REQUIRE_USER_ALLOCATION (RTX 1.2 notes);
    the flag is set by default, and such a plan builds ahead of time on this CPU machine."""
    from mimic.engine.builder import builder_flags

    trt = load_trt("tensorrt-rtx")
    assert "REQUIRE_USER_ALLOCATION" in builder_flags(trt, BuildOptions(target="tensorrt-rtx"))
    assert "REQUIRE_USER_ALLOCATION" not in builder_flags(trt, BuildOptions(target="tensorrt-rtx", cuda_graphs=False))
    assert builder_flags(trt, BuildOptions(target="tensorrt-rtx", refittable=True, strip_plan=True, cuda_graphs=False)) == ["REFIT", "STRIP_PLAN"]
    path = _add_graph(tmp_path / "add.onnx")
    assert build_serialized_engine(path, {"x": ((1, 4), (2, 4), (8, 4))}, BuildOptions(target="tensorrt-rtx"))


def test_timing_cache_helpers_round_trip(tmp_path):
    from mimic.engine import builder

    trt = load_trt("tensorrt-rtx")
    config = trt.Builder(trt.Logger(trt.Logger.ERROR)).create_builder_config()
    cache_file = tmp_path / "sub" / "timing.cache"
    assert builder._load_timing_cache(config, cache_file) is not None  # new, empty cache
    builder._save_timing_cache(config, cache_file)
    assert cache_file.is_file() and cache_file.stat().st_size > 0
    assert not list(cache_file.parent.glob(".*part*"))  # written atomically
    (tmp_path / "junk.cache").write_bytes(b"junk")
    assert builder._load_timing_cache(config, tmp_path / "junk.cache") is not None


def test_load_trt_errors(monkeypatch):
    with pytest.raises(EngineError, match="unknown TensorRT target"):
        load_trt("tensorrt-llm")
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails like a missing install
    with pytest.raises(EngineError, match="pip install .*tensorrt-cu13"):
        load_trt("tensorrt")
    old = types.ModuleType("tensorrt")
    old.__version__ = "8.6.1"
    monkeypatch.setitem(sys.modules, "tensorrt", old)
    with pytest.raises(EngineError, match="too old"):
        load_trt("tensorrt")
    assert load_trt("tensorrt-rtx") is trt_rtx


def test_builder_never_creates_a_runtime():
    src = Path(__file__).resolve().parents[1] / "engine" / "builder.py"
    code = src.read_text()
    assert "Runtime(" not in code and "deserialize_cuda_engine" not in code
    assert "BuilderFlag.FP16" not in code and "BuilderFlag.INT8" not in code
