"""Deep-feature caching's graph pair on the tiny preset: ``unet_features`` (the UNet that also
outputs the feature to cache) and ``unet_shallow`` (the UNet's outermost level around it).

Exported once per module (fp32 + fp16, validated against torch, plus the plain UNet in fp32 to
compare with; the session export of the other tests leaves the pair out), then: the pair's maths in
onnxruntime, the TensorRT-RTX build through ``build-engines`` (a CPU is enough), the graph backends'
``cache_depths()`` and their lazy loading, and the ONNX cache's handling of older export folders.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import onnx
import pytest
import torch

from _export_fixtures import TinyExport, assert_io_matches_spec, captured_log
from mimic.errors import InputError
from mimic.export.compare import format_table
from mimic.export.dummy import dummy_inputs
from mimic.runtime.backend_ort import OnnxRuntimeBackend
from mimic.spec import CACHE_STAGES, GRAPH_CACHE_DEPTH, PRECISIONS, STAGE_NAMES, STAGES, ModelDims, onnx_filename
from mimic.spec import StageName as S
from mimic.spec import TensorName as N

TINY = ModelDims(embed_dim=32, pose_channels=32, cache_channels=64)  # the tiny UNet: block_out_channels (32, 64)
BASE = tuple(s for s in STAGE_NAMES if s not in CACHE_STAGES)


@pytest.fixture(scope="module")
def pair(tiny_layout, tmp_path_factory) -> TinyExport:
    """The pair exported fp32 + fp16 and validated, and the plain ``unet`` fp32 beside it (one folder)."""
    from mimic.export.exporter import export_weight_set

    out = tmp_path_factory.mktemp("cache-graphs")
    with captured_log() as lines:
        summary = export_weight_set(out, layout=tiny_layout, precision="both", validate=True, stages=CACHE_STAGES)
        plain = export_weight_set(out, layout=tiny_layout, precision="fp32", stages=[S.UNET])
    summary.results.extend(plain.results)
    return TinyExport(out_dir=out, summary=summary, log=tuple(lines))


def _feeds(point: dict, precision: str, seed: int) -> dict[str, torch.Tensor]:
    return dummy_inputs(STAGES[S.UNET], point, TINY, precision, seed=seed)


# ----------------------------------------------------------------------------------- export


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("stage", CACHE_STAGES)
def test_the_pair_validates_against_torch(pair, stage, precision):
    """onnxruntime vs the fp32 torch UNet (forward_with_features / forward_shallow at the graphs'
    depth) at the spec's two validation points, every output within the stage's tolerance."""
    spec = STAGES[stage]
    rows = pair.rows(stage, precision)
    assert {(r.point, r.output) for r in rows} == {(p, o) for p in {r.point for r in rows} for o in spec.output_names}
    points = {r.point for r in rows}
    assert len(points) == 2 and " ".join(f"{k}={v}" for k, v in spec.export_point.items()) not in points
    assert rows and all(r.passed for r in rows), format_table(rows)
    if precision == "fp32":
        assert max(r.max_abs for r in rows) <= 1e-5  # measured <= 1.1e-6
    res = pair.result(stage, precision)
    assert res.path == pair.out_dir / onnx_filename(stage, precision) and res.data_path is None


def test_one_unet_load_serves_both_graphs(pair):
    loads = [line for line in pair.log if "loading weights for" in line]
    assert loads[0].endswith("loading weights for unet_features, unet_shallow ...") and len(loads) == 2  # the pair; the plain unet


def test_graph_signatures_and_weight_names(pair, tiny_models):
    """Inputs/outputs as the specs say (the cached feature: C1 = 64 channels at the latent's size);
    weights named by their checkpoint keys, the same set in unet_features as in the plain unet (one
    refit source) and a strict subset in unet_shallow."""
    keys = set(tiny_models.unet.state_dict())
    named = {}
    for res in pair.summary.results:
        spec = STAGES[res.stage]
        m = onnx.load(str(res.path))
        g = m.graph
        assert_io_matches_spec(g, spec, res.precision)
        deep = next(vi for vi in (*g.input, *g.output) if vi.name == N.DEEP_FEATURES) if res.stage in CACHE_STAGES else None
        if deep is not None:
            assert deep.type.tensor_type.shape.dim[1].dim_value == TINY.cache_channels
        assert {p.key: p.value for p in m.metadata_props} == {"mimic.stage": res.stage, "mimic.precision": res.precision}
        assert not any(t.name.startswith("model.") for t in g.initializer)
        named[res.stage, res.precision] = {t.name for t in g.initializer} & keys
    assert named[S.UNET_FEATURES, "fp32"] == named[S.UNET, "fp32"]
    for precision in PRECISIONS:
        assert named[S.UNET_SHALLOW, precision] < named[S.UNET_FEATURES, precision]


def test_manifest_records_the_pair_and_the_cached_width(pair, tiny_layout):
    from mimic.export import freshness
    from mimic.export.exporter import read_manifest

    dims, data = read_manifest(pair.out_dir)
    assert dims == TINY and data["model_dims"]["cache_channels"] == 64
    assert set(data["stages"]) == {S.UNET, *CACHE_STAGES} and set(data["stages"][S.UNET_SHALLOW]) == set(PRECISIONS)
    assert freshness.up_to_date(pair.out_dir, tiny_layout, CACHE_STAGES, "fp16") == []
    assert freshness.STAGE_SOURCES[S.UNET_FEATURES] == freshness.STAGE_SOURCES[S.UNET_SHALLOW] == freshness.STAGE_SOURCES[S.UNET]


def test_attention_fuses_in_both_graphs(pair, tmp_path):
    """The CUDA onnxruntime path runs ``<stage>.mha.onnx``: every attention of both graphs fuses."""
    from mimic.export.attention import attention_ops, fused_graph

    for stage in CACHE_STAGES:
        src = Path(shutil.copy(pair.result(stage, "fp16").path, tmp_path / f"{stage}.onnx"))
        before = attention_ops(onnx.load(str(src)))
        fused = fused_graph(src)
        assert fused.name == f"{stage}.mha.onnx" and before["softmax"] > 0
        assert attention_ops(onnx.load(str(fused))) == {"softmax": 0, "fused": before["softmax"]}


# ------------------------------------------------------------------------ the pair's maths


@pytest.mark.parametrize("precision", PRECISIONS)
def test_onnxruntime_pair_reproduces_the_full_unet(pair, precision):
    """On onnxruntime's CPU provider: unet_features' noise_pred is the plain unet graph's (fp32), and
    unet_shallow fed that step's own deep_features reproduces it (measured: bit-identical in both
    precisions; bounds 1e-6 of the peak, fp32, and 1e-3, fp16). The backend ignores the torch
    backend's ``cache_depth`` feed at the graphs' depth."""
    graphs = {s: pair.result(s, precision).path for s in CACHE_STAGES}
    if precision == "fp32":
        graphs[S.UNET] = pair.result(S.UNET, "fp32").path
    backend = OnnxRuntimeBackend(graphs, threads=1)
    bound = 1e-6 if precision == "fp32" else 1e-3
    for seed, point in enumerate(STAGES[S.UNET].validation_points, start=7):
        feeds = _feeds(point, precision, seed)
        full = backend.run(S.UNET_FEATURES, {**feeds, N.CACHE_DEPTH: GRAPH_CACHE_DEPTH})
        ref = full[N.NOISE_PRED].double()
        peak = float(ref.abs().max())
        assert tuple(full[N.DEEP_FEATURES].shape) == STAGES[S.UNET_FEATURES].output_shapes(point, TINY)[N.DEEP_FEATURES]
        if precision == "fp32":
            plain = backend.run(S.UNET, feeds)[N.NOISE_PRED].double()
            assert float((plain - ref).abs().max()) <= bound * peak
        cheap = backend.run(S.UNET_SHALLOW, {**feeds, N.DEEP_FEATURES: full[N.DEEP_FEATURES], N.CACHE_DEPTH: GRAPH_CACHE_DEPTH})
        assert float((cheap[N.NOISE_PRED].double() - ref).abs().max()) <= bound * peak
        # another step's feature gives another prediction: the graph really reads it
        other = backend.run(S.UNET_SHALLOW, {**feeds, N.DEEP_FEATURES: torch.zeros_like(full[N.DEEP_FEATURES])})
        assert float((other[N.NOISE_PRED].double() - ref).abs().max()) > 1e-2 * peak


# ---------------------------------------------------------------------------------- backends


def test_ort_cache_depths_and_lazy_sessions(pair):
    graphs = {s: pair.result(s, "fp32").path for s in (S.UNET, *CACHE_STAGES)}
    backend = OnnxRuntimeBackend(graphs, threads=1)
    assert backend.cache_depths() == (GRAPH_CACHE_DEPTH,) == (1,)
    assert set(backend._sessions) == {S.UNET}  # the pair's sessions (UNet weight copies) load on first use
    feeds = _feeds(STAGES[S.UNET].validation_points[0], "fp32", 3)
    backend.run(S.UNET_FEATURES, feeds)
    assert set(backend._sessions) == {S.UNET, S.UNET_FEATURES}
    backend.release(S.UNET_FEATURES)
    assert set(backend._sessions) == {S.UNET}
    with pytest.raises(InputError, match="cache depth 2 is not available here; .* depth 1 only"):
        backend.run(S.UNET_FEATURES, {**feeds, N.CACHE_DEPTH: 2})
    assert OnnxRuntimeBackend({S.UNET: graphs[S.UNET]}, preload=False).cache_depths() == ()
    assert OnnxRuntimeBackend({S.UNET: graphs[S.UNET], S.UNET_FEATURES: graphs[S.UNET_FEATURES]}, preload=False).cache_depths() == ()


def test_trt_backend_drops_the_depth_feed_and_reads_the_store(tmp_path):
    """Without a GPU: the parts of the tensorrt backend that need none (cache_depths from the store's
    manifests; the torch backend's cache_depth feed never reaches an engine)."""
    from mimic.engine.runner import TensorInfo, check_feeds
    from mimic.engine.store import EngineStore
    from mimic.runtime.backend_trt import TensorRTBackend

    class Runner:
        def run(self, feeds, stream=None):
            self.feeds = feeds
            return {}

    backend = TensorRTBackend.__new__(TensorRTBackend)
    backend._runners = {S.UNET_SHALLOW: Runner()}
    backend.run(S.UNET_SHALLOW, {"x": torch.zeros(1), N.CACHE_DEPTH: 1})
    assert set(backend._runners[S.UNET_SHALLOW].feeds) == {"x"}
    with pytest.raises(InputError, match="cache depth 3"):
        backend.run(S.UNET_SHALLOW, {"x": torch.zeros(1), N.CACHE_DEPTH: 3})
    backend.store = EngineStore(tmp_path)
    assert backend.cache_depths() == ()
    # the engine runner's own feed check ignores it too
    info = TensorInfo("x", True, torch.float16, (-1,), ((1,), (2,), (4,)))
    assert check_feeds(S.UNET_SHALLOW, [info], {"x": torch.zeros(2), N.CACHE_DEPTH: 1}) == {"x": torch.float16}


def test_graphs_in_lists_the_pair_only_when_complete(pair, tmp_path):
    """An export folder from before deep-feature caching (no pair) still serves non-caching jobs."""
    from mimic.errors import EngineError
    from mimic.runtime.onnx_cache import graphs_in

    folder = tmp_path / "old"
    for s in BASE:
        path = folder / onnx_filename(s, "fp32")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    assert set(graphs_in(folder, "fp32")) == set(BASE)
    shutil.copy(pair.result(S.UNET_FEATURES, "fp32").path, folder / onnx_filename(S.UNET_FEATURES, "fp32"))
    assert set(graphs_in(folder, "fp32")) == set(BASE)  # half a pair: not listed
    shutil.copy(pair.result(S.UNET_SHALLOW, "fp32").path, folder / onnx_filename(S.UNET_SHALLOW, "fp32"))
    assert set(graphs_in(folder, "fp32")) == set(STAGE_NAMES)
    (folder / onnx_filename(S.VAE_DECODER, "fp32")).unlink()
    with pytest.raises(EngineError, match="lacks fp32 graphs for vae_decoder"):
        graphs_in(folder, "fp32")


def test_onnx_cache_exports_the_pair_only_when_asked(tiny_layout, tmp_path, monkeypatch):
    """The runtime's ONNX cache: a job that does not cache never pays the pair's export, and a stale
    pair is never listed (freshness and export faked: the bookkeeping only)."""
    from mimic.export import exporter, freshness
    from mimic.runtime import onnx_cache

    stale: set[str] = set(STAGE_NAMES)
    exported: list[list[str]] = []

    def fake_export(folder, *, layout, precision, stages):
        exported.append(list(stages))
        for s in stages:
            path = Path(folder) / onnx_filename(s, precision)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        stale.difference_update(stages)

    monkeypatch.setattr(onnx_cache, "cache_folder", lambda layout: tmp_path)
    monkeypatch.setattr(freshness, "up_to_date", lambda folder, layout, stages, precision: [s for s in stages if s in stale])
    monkeypatch.setattr(exporter, "export_weight_set", fake_export)
    ensure = onnx_cache.ensure_onnx_graphs
    assert set(ensure(tiny_layout, "fp32")) == set(BASE) and exported == [list(BASE)]
    assert set(ensure(tiny_layout, "fp32", cache_stages=True)) == set(STAGE_NAMES) and exported[1:] == [list(CACHE_STAGES)]
    assert set(ensure(tiny_layout, "fp32")) == set(STAGE_NAMES) and len(exported) == 2  # fresh: listed, nothing exported
    stale.update({S.UNET, *CACHE_STAGES})  # e.g. another checkpoint: the whole UNet group is stale
    assert set(ensure(tiny_layout, "fp32")) == set(BASE) and exported[2:] == [[S.UNET]]  # the stale pair is left out


# -------------------------------------------------------------------------------- TensorRT-RTX


def test_build_engines_builds_the_pair_with_tensorrt_rtx(pair, tiny_cache, tmp_path, caplog):
    """``build-engines`` (its default stage list has the pair) builds both engines ahead of time on
    this CPU from the fp16 graphs (the export folder's freshness record: no re-export), with the
    cached feature's width from the export manifest in the profile."""
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX (dev extra) is needed for the build test")
    from mimic.engine.build import build_engine_set, build_stage_names
    from mimic.engine.refit import UNET_WEIGHT_STAGES
    from mimic.engine.store import EngineStore
    from mimic.engine.validate import check_engines
    from mimic.runtime.backend_trt import TensorRTBackend

    assert set(CACHE_STAGES) <= set(build_stage_names()) and set(UNET_WEIGHT_STAGES) == {S.UNET, *CACHE_STAGES}
    out = tmp_path / "engines"
    shutil.copytree(pair.out_dir, out / "onnx", ignore=shutil.ignore_patterns("fp32", "*.lock"))
    caplog.set_level(logging.INFO, logger="mimic")
    summary = build_engine_set(out, preset="tiny", target="tensorrt-rtx", stages=list(CACHE_STAGES), window=4)
    assert summary.built == list(CACHE_STAGES)
    assert any("fp16 graph(s)" in m and "are up to date" in m for m in caplog.messages)  # no second export
    for stage in CACHE_STAGES:
        m = json.loads((out / f"{stage}.manifest.json").read_text())
        assert m["onnx"]["path"] == f"onnx/fp16/{stage}.onnx" and m["plan"]["size"] > 100_000
        assert m["io"] == {"inputs": list(STAGES[stage].input_names), "outputs": list(STAGES[stage].output_names)}
        profile = m["key_inputs"]["build"]["profiles"][0]
        assert profile[N.SAMPLE]["opt"][1] == 4  # the window, fixed
    deep = json.loads((out / "unet_shallow.manifest.json").read_text())["key_inputs"]["build"]["profiles"][0][N.DEEP_FEATURES]
    assert deep["min"][1] == deep["max"][1] == 64 and deep["max"][0] == 2 * 4  # (B*F, C1, h, w)
    assert check_engines(out) == list(CACHE_STAGES)
    backend = TensorRTBackend.__new__(TensorRTBackend)  # its store answers without a GPU
    backend.store = EngineStore(out)
    assert backend.cache_depths() == (1,)
