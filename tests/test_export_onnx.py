"""ONNX export of every stage (tiny preset): parity with torch, dynamic frames, clean and
deterministic files, external data."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from _export_fixtures import BASE_STAGES, assert_io_matches_spec, tiny_export  # noqa: F401  (session fixture)
from mimic.export.onnx_export import ExportResult, export_stage, finalize_onnx, sha256_model_files
from mimic.export.validate import format_table, validate_stage
from mimic.spec import CACHE_STAGES, PRECISIONS, STAGES

PARITY_CASES = [(stage, precision) for stage in BASE_STAGES for precision in PRECISIONS]


def _module(models, stage):
    return {"image_encoder": models.image_encoder, "vae_encoder": models.vae, "pose_net": models.pose_net, "unet": models.unet, "vae_decoder": models.vae}[stage]


def test_every_stage_has_an_export_and_parity_test():
    """Meta-test: adding a stage to STAGES without a tiny export + parity case fails here.
    Deep-feature caching's pair has its export and parity tests in test_cache_graphs.py."""
    covered = {stage for stage, _ in PARITY_CASES}
    assert covered | set(CACHE_STAGES) == set(STAGES) and not covered & set(CACHE_STAGES)
    assert {p for _, p in PARITY_CASES} == {"fp32", "fp16"}
    assert all(set(PRECISIONS) <= set(STAGES[s].precisions) for s in STAGES)
    from mimic.export.wrappers import WRAPPERS

    assert set(WRAPPERS) == set(STAGES)


@pytest.mark.parametrize("stage,precision", PARITY_CASES)
def test_parity_with_torch(tiny_export, stage, precision):
    """onnxruntime vs the fp32 torch model at two shapes that differ from the export shape:
    fp32 within 1e-4 abs; fp16 within the spec's measured bound."""
    spec = STAGES[stage]
    rows = tiny_export.rows(stage, precision)
    assert len(rows) >= 2 * len(spec.output_names)
    points = {r.point for r in rows}
    assert len(points) >= 2
    export_point = " ".join(f"{k}={v}" for k, v in spec.export_point.items())
    assert export_point not in points
    tol = spec.tolerance(precision)
    for r in rows:
        assert r.passed, format_table(rows)
        assert r.max_abs <= tol.max_abs and r.max_rel <= tol.max_rel
        if precision == "fp32":
            assert r.max_abs <= 1e-4
    res = tiny_export.result(stage, precision)
    assert res.path == tiny_export.out_dir / precision / f"{stage}.onnx" and res.path.is_file()
    assert res.opset == 20 and res.data_path is None


def test_graph_signatures_follow_the_specs(tiny_export):
    for res in tiny_export.summary.results:
        assert_io_matches_spec(onnx.load(str(res.path), load_external_data=False).graph, STAGES[res.stage], res.precision)


def test_fp16_graphs_are_fp16_with_fp32_norms(tiny_export):
    g = onnx.load(str(tiny_export.result("unet", "fp16").path)).graph
    types = [t.data_type for t in g.initializer]
    assert types.count(onnx.TensorProto.FLOAT16) > 10 * types.count(onnx.TensorProto.FLOAT)
    by_output = {o: n for n in g.node for o in n.output}
    norms = [n for n in g.node if n.op_type in ("InstanceNormalization", "LayerNormalization")]
    assert norms
    inits = {t.name: t.data_type for t in g.initializer}
    for n in norms:  # the statistics run on an fp32 tensor: produced by a Cast to float
        src = n.input[0]
        while src in by_output and by_output[src].op_type == "Reshape":
            src = by_output[src].input[0]
        assert src in by_output and by_output[src].op_type == "Cast", n.name
        assert next(a.i for a in by_output[src].attribute if a.name == "to") == onnx.TensorProto.FLOAT
    assert not any(n.op_type == "Attention" for n in g.node)  # opset-23 op that TensorRT-RTX rejects


@pytest.mark.parametrize("frames", [4, 6])
def test_decoder_frame_count_is_dynamic(tiny_export, tiny_models, frames):
    """The temporal decoder graph (exported with 3 frames) decodes 4 and 6 frames like torch."""
    import onnxruntime as ort

    path = tiny_export.result("vae_decoder", "fp32").path
    z = torch.randn(frames, 4, 8, 16, generator=torch.Generator().manual_seed(frames))
    with torch.no_grad():
        ref = tiny_models.vae.decode(z, num_frames=frames).sample.numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"latents": z.numpy()})
    assert got.shape == (frames, 3, 64, 128)
    assert np.abs(got - ref).max() <= 1e-4
    # Decoding as one clip differs from decoding two halves: the frame count really reaches the
    # temporal layers (a baked-in count would decode chunks of the export's 3 frames).
    with torch.no_grad():
        halves = torch.cat([tiny_models.vae.decode(c, num_frames=c.shape[0]).sample for c in z.chunk(2)]).numpy()
    assert np.abs(got - halves).max() > 1e-3


def _machine_strings() -> list[bytes]:
    here = Path(__file__).resolve()
    cands = {str(Path.home()), str(here.parents[1]), str(Path(torch.__file__).parent), sys.prefix, os.getcwd(), "site-packages", "/tmp/"}
    return [c.encode() for c in cands if c and c != "/"]


def test_no_absolute_paths_or_doc_strings_in_exported_files(tiny_export):
    needles = _machine_strings()
    files = [p for p in tiny_export.out_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".onnx" for p in files)
    for p in files:
        blob = p.read_bytes()
        for needle in needles:
            assert needle not in blob, f"{p.name} contains {needle!r}"
        if p.suffix == ".onnx":
            m = onnx.load(str(p), load_external_data=False)
            assert not m.doc_string and not m.graph.doc_string
            assert not any(n.doc_string or len(n.metadata_props) for n in m.graph.node)
            assert {x.key for x in m.metadata_props} == {"mimic.stage", "mimic.precision"}
            assert not any(t.name.startswith("model.") for t in m.graph.initializer)  # checkpoint key names


def test_manifest(tiny_export):
    import json

    data = json.loads((tiny_export.out_dir / "export_manifest.json").read_text())
    assert data["profile_set"] == "tiny" and data["opset"] == 20 and data["exporter"] == "torchscript"
    assert set(data["stages"]) == set(BASE_STAGES)
    for stage, per in data["stages"].items():
        for precision, entry in per.items():
            res = tiny_export.result(stage, precision)
            assert entry["sha256"] == res.sha256 == sha256_model_files(res.path)
            assert entry["path"] == f"{precision}/{stage}.onnx"
            source = entry["source"]  # the freshness record: relative names only
            assert set(source) == {"weights", "export_code", "torch"} and source["weights"]
            assert all(name.startswith(("svd/", "checkpoint/")) for name in source["weights"])
    assert (tiny_export.out_dir / "model_info.json").is_file()
    from mimic.export.exporter import read_manifest

    dims, _ = read_manifest(tiny_export.out_dir)
    assert dims.embed_dim == 32 and dims.profile_set == "tiny" and dims.cache_channels == 64  # C1: the cached feature's width


def test_freshness_record(tiny_export, tiny_layout, tmp_path):
    """up_to_date: fresh after an export; stale when a graph is damaged, the weights differ or the
    record's export code differs; a touched (same-content) weight file stays fresh."""
    import json
    import shutil

    from mimic.export import freshness
    from mimic.model.tiny import write_tiny_weights

    assert freshness.up_to_date(tiny_export.out_dir, tiny_layout, BASE_STAGES, "fp16") == []
    assert freshness.up_to_date(tiny_export.out_dir, tiny_layout, ["unet", "pose_net"], "fp32") == []
    folder = Path(shutil.copytree(tiny_export.out_dir, tmp_path / "copy"))
    assert freshness.up_to_date(folder, tiny_layout, BASE_STAGES, "fp16") == []  # the folder can move
    with open(folder / "fp16" / "vae_decoder.onnx", "ab") as f:
        f.write(b"\0")
    assert freshness.up_to_date(folder, tiny_layout, BASE_STAGES, "fp16") == ["vae_decoder"]
    manifest = json.loads((folder / freshness.MANIFEST).read_text())
    manifest["stages"]["unet"]["fp16"]["source"]["export_code"] = "0" * 64
    (folder / freshness.MANIFEST).write_text(json.dumps(manifest))
    assert freshness.up_to_date(folder, tiny_layout, BASE_STAGES, "fp16") == ["unet", "vae_decoder"]
    (folder / freshness.MANIFEST).unlink()
    assert freshness.up_to_date(folder, tiny_layout, ["pose_net"], "fp16") == ["pose_net"]

    other = write_tiny_weights(tmp_path / "other", seed=4321)  # same files, other values
    assert freshness.up_to_date(tiny_export.out_dir, other, BASE_STAGES, "fp16") == list(BASE_STAGES)
    ckpt = Path(other.checkpoint)
    before = freshness.stage_source(other, Path(other.svd), "unet")
    os.utime(ckpt, ns=(ckpt.stat().st_atime_ns, ckpt.stat().st_mtime_ns + 10**9))  # touched, same bytes
    freshness._memo_cache.clear()
    assert freshness.stage_source(other, Path(other.svd), "unet") == before


@pytest.mark.parametrize("stage", ["pose_net", pytest.param("unet", marks=pytest.mark.slow)])  # unet: 10 s
def test_export_is_deterministic(tiny_export, tiny_models, tmp_path, stage):
    """Same weights -> same bytes (the engine cache keys hash them), in both precisions."""
    for precision in PRECISIONS:
        again = export_stage(STAGES[stage], _module(tiny_models, stage), tmp_path, precision)
        assert again.sha256 == tiny_export.result(stage, precision).sha256
        assert again.path.read_bytes() == tiny_export.result(stage, precision).path.read_bytes()


def test_fp16_export_leaves_the_model_untouched(tiny_models, tmp_path):
    before = {k: v.clone() for k, v in tiny_models.pose_net.state_dict().items()}
    export_stage(STAGES["pose_net"], tiny_models.pose_net, tmp_path, "fp16")
    after = tiny_models.pose_net.state_dict()
    assert all(after[k].dtype == torch.float32 and torch.equal(after[k], v) for k, v in before.items())


def test_external_data_single_file(tiny_models, tmp_path):
    """The >2 GB layout (forced on a small graph): one <stage>.onnx.data beside the graph, aligned
    offsets, loadable by onnxruntime, hashed, no paths; a later inline export removes it."""
    res = export_stage(STAGES["pose_net"], tiny_models.pose_net, tmp_path, "fp32", external_data=True)
    assert res.data_path == tmp_path / "fp32" / "pose_net.onnx.data" and res.data_path.is_file()
    m = onnx.load(str(res.path), load_external_data=False)
    ext = [t for t in m.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert ext
    for t in ext:
        info = {e.key: e.value for e in t.external_data}
        assert info["location"] == "pose_net.onnx.data" and int(info["offset"]) % 4096 == 0
    assert res.sha256 == sha256_model_files(res.path, res.data_path) != sha256_model_files(res.path)
    rows = validate_stage(STAGES["pose_net"], tiny_models.pose_net, res.path)
    assert all(r.passed for r in rows), format_table(rows)
    inline = export_stage(STAGES["pose_net"], tiny_models.pose_net, tmp_path, "fp32")
    assert inline.data_path is None and not res.data_path.exists()


def test_finalize_gathers_per_tensor_external_files(tiny_models, tmp_path):
    """torch writes one file per weight when a graph exceeds 2 GB; finalize streams them into one."""
    res = export_stage(STAGES["pose_net"], tiny_models.pose_net, tmp_path / "a", "fp32")
    scattered = tmp_path / "scattered"
    scattered.mkdir()
    onnx.save_model(onnx.load(str(res.path)), str(scattered / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0)
    assert len(list(scattered.iterdir())) > 3
    out = tmp_path / "final" / "pose_net.onnx"
    out.parent.mkdir()
    finalize_onnx(scattered / "model.onnx", out, spec=STAGES["pose_net"], precision="fp32")
    assert sorted(p.name for p in out.parent.iterdir()) == ["pose_net.onnx", "pose_net.onnx.data"]
    rows = validate_stage(STAGES["pose_net"], tiny_models.pose_net, out)
    assert all(r.passed for r in rows), format_table(rows)
    # deterministic: the same source gives the same bytes
    again = tmp_path / "again" / "pose_net.onnx"
    again.parent.mkdir()
    finalize_onnx(scattered / "model.onnx", again, spec=STAGES["pose_net"], precision="fp32")
    assert sha256_model_files(again, again.with_name("pose_net.onnx.data")) == sha256_model_files(out, out.with_name("pose_net.onnx.data"))


def test_export_errors_are_clear(tiny_models, tmp_path):
    from mimic.errors import ExportError, InputError

    with pytest.raises(InputError, match="precision"):
        export_stage(STAGES["pose_net"], tiny_models.pose_net, tmp_path, "int8")
    with pytest.raises(InputError, match="opset"):
        export_stage(STAGES["pose_net"], tiny_models.pose_net, tmp_path, "fp32", opset=23)
    half = _half_copy(tiny_models.pose_net)
    with pytest.raises(ExportError, match="float32"):
        export_stage(STAGES["pose_net"], half, tmp_path, "fp32")
    from mimic.spec import DWPOSE_STAGES

    with pytest.raises(InputError, match="ships as ONNX"):
        export_stage(DWPOSE_STAGES["dwpose_pose"], tiny_models.pose_net, tmp_path, "fp32")


def _half_copy(module):
    import copy

    return copy.deepcopy(module).half()


def test_export_result_paths_are_relative_in_dicts(tiny_export):
    d = tiny_export.result("unet", "fp16").to_dict(relative_to=tiny_export.out_dir)
    assert d["path"] == "fp16/unet.onnx" and not re.match(r"^/", d["path"])
    assert isinstance(tiny_export.result("unet", "fp16"), ExportResult)


def test_ort_session_cuda_policy(tiny_export, monkeypatch):
    """One session factory: CPU as asked; CUDA asked and missing (or dropped) is an EngineError
    naming the package, never a silent CPU session."""
    import onnxruntime as ort

    from mimic import ort_session
    from mimic.errors import EngineError

    path = tiny_export.result("pose_net", "fp32").path
    assert ort_session.create_session(path, "cpu", threads=1).get_providers() == ["CPUExecutionProvider"]
    if not ort_session.cuda_available():
        with pytest.raises(EngineError, match="install onnxruntime-gpu, and not the CPU `onnxruntime` wheel beside it"):
            ort_session.create_session(path, "cuda")

    class Dropped:  # an onnxruntime that lists CUDA but falls back to the CPU when creating the session
        def __init__(self, *args, **kwargs):
            pass

        def get_providers(self):
            return ["CPUExecutionProvider"]

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", Dropped)
    assert ort_session.providers_for(torch.device("cuda", 1)) == [("CUDAExecutionProvider", {"device_id": 1, **ort_session.CUDA_OPTIONS}), "CPUExecutionProvider"]
    with pytest.raises(EngineError, match="could not start its CUDA provider"):
        ort_session.create_session(path, "cuda:0")
    with pytest.raises(EngineError, match="cannot load nowhere.onnx"):
        monkeypatch.undo()
        ort_session.create_session("nowhere.onnx", "cpu")
