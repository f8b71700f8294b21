"""8-bit UNets (issue #25): the ModelOpt recipe, quantize + save/load on the tiny preset, the Q/DQ ONNX
(onnx.checker, onnxruntime on the CPU, against the fake-quantized torch model), the TensorRT-RTX
ahead-of-time build, `mimic quantize`'s one-line errors and the quality bench's fp8/int8 variants.

Needs the `quant` extra (nvidia-modelopt) for most tests: they skip, saying so, without it. The
calibration here is a few random UNet batches (fast); `mimic quantize` end to end, calibrated on a
toy dance, is the `slow` test at the end."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mimic.errors import ExportError, InputError
from mimic.model.quantize import (MANIFEST_FILE, NVIDIA_KEPT_16BIT, NVIDIA_LAYER_TYPES, STATE_FILE, QuantRecipe, default_recipe,
                                  layer_block, layer_kind, modelopt_available)

needs_modelopt = pytest.mark.skipif(not modelopt_available(), reason="nvidia-modelopt is not installed (pip install 'mimic-engine[quant]')")


def _rtx_available() -> bool:
    try:
        import tensorrt_rtx  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


# ------------------------------------------------------------------------------- the recipe


def test_recipe_is_nvidias_svd_choice_plus_conv3d_in_list_form():
    cfg = default_recipe("fp8").modelopt_config()
    entries = cfg["quant_cfg"]
    assert cfg["algorithm"] == "max" and isinstance(entries, list)  # ModelOpt 0.47's list form (the dict form warns)
    assert entries[0] == {"quantizer_name": "*", "enable": False}  # deny all, then enable
    enabled = {(e["parent_class"], e["quantizer_name"]): e["cfg"] for e in entries if "cfg" in e}
    for kind in ("nn.Linear", "nn.Conv2d", "nn.Conv3d"):
        assert enabled[(kind, "*weight_quantizer")] == {"num_bits": (4, 3), "axis": None}  # per-tensor E4M3
        assert enabled[(kind, "*input_quantizer")] == {"num_bits": (4, 3), "axis": None}
    kept = [e["quantizer_name"] for e in entries if e.get("enable") is False][1:]
    assert kept == [f"*{n}*" for n in NVIDIA_KEPT_16BIT]
    int8 = default_recipe("int8")
    assert int8.weight_format == {"num_bits": 8, "axis": 0} and int8.input_format == {"num_bits": 8, "axis": None}


def test_differences_from_nvidia_are_stated():
    ours = default_recipe("fp8").differences()
    assert any("Conv3d" in d and "ONNX export failed" in d for d in ours)
    assert any("whole denoising jobs" in d for d in ours)
    nvidia = QuantRecipe("fp8", NVIDIA_LAYER_TYPES).differences()
    assert not any("Conv3d" in d for d in nvidia)  # NVIDIA's own layer set: only the calibration differs
    assert any(d.startswith("INT8") for d in default_recipe("int8").differences())
    assert QuantRecipe.from_dict(default_recipe("int8").to_dict()) == default_recipe("int8")
    with pytest.raises(InputError, match="unknown 8-bit precision 'fp4'; choose one of fp8, int8"):
        QuantRecipe("fp4")


def test_layer_groups():
    assert layer_kind("down_blocks.0.resnets.0.temporal_res_block.conv1") == "temporal_conv"
    assert layer_kind("up_blocks.1.attentions.0.temporal_transformer_blocks.0.attn1.to_q") == "temporal_attention"
    assert layer_kind("mid_block.attentions.0.transformer_blocks.0.ff.net.2") == "spatial_attention"
    assert layer_kind("down_blocks.0.resnets.0.spatial_res_block.time_emb_proj") == "embedding"
    assert layer_kind("conv_in") == "io" and layer_block("conv_in") == "outer"
    assert layer_block("up_blocks.1.attentions.0.proj_in") == "up_blocks.1"


# ---------------------------------------------------------------------------- quantized tiny UNets


def _batches(unet, n=4):
    from mimic.export.dummy import dims_from_module, dummy_inputs
    from mimic.spec import UNET

    dims = dims_from_module(UNET.name, unet)
    return [dummy_inputs(UNET, {"B": 2, "F": 4, "H": 64, "W": 64}, dims, seed=100 + s) for s in range(n)]


def _fresh_unet(layout):
    from mimic.model.loader import load_reference_models

    return load_reference_models(layout).unet.eval()


@pytest.fixture(scope="module")
def quantized(tiny_layout):
    """{precision: (quantized tiny UNet, QuantSummary)}, calibrated on four random UNet batches."""
    if not modelopt_available():
        pytest.skip("nvidia-modelopt is not installed (pip install 'mimic-engine[quant]')")
    from mimic.model.quantize import quantize_unet

    torch.set_num_threads(1)
    out = {}
    for precision in ("fp8", "int8"):
        unet = _fresh_unet(tiny_layout)
        batches = _batches(unet)

        def loop(model, batches=batches):
            with torch.no_grad():
                for b in batches:
                    model(*b.values())

        out[precision] = (unet, quantize_unet(unet, default_recipe(precision), loop))
    return out


@needs_modelopt
@pytest.mark.parametrize("precision", ["fp8", "int8"])
def test_quantizes_what_the_recipe_selects(quantized, precision, tiny_layout):
    from mimic.model.quantize import quantizable_layers, quantized_layers, set_enabled_layers

    unet, summary = quantized[precision]
    recipe = default_recipe(precision)
    expected = [n for n, m in quantizable_layers(unet).items() if recipe.selects(n, m)]
    assert quantized_layers(unet) == expected and summary.layers == len(expected) == 126
    assert summary.quantizers == 2 * summary.layers  # input + weight per layer
    assert summary.groups["by_kind"]["temporal_conv"] == 16  # the Conv3d layers
    assert not any(layer_kind(n) in ("io", "embedding", "shortcut") for n in expected)
    assert not any("proj_out" in n for n in expected)
    # fake quantization changes the output; with every quantizer off it is the fp32 UNet again
    feeds = _batches(unet, 1)[0]
    with torch.no_grad():
        fake = unet(*feeds.values())
        set_enabled_layers(unet, lambda n: False)
        plain = unet(*feeds.values())
        set_enabled_layers(unet, lambda n: n in set(expected))
        again = unet(*feeds.values())
        fresh = _fresh_unet(tiny_layout)(*feeds.values())
    assert torch.equal(fake, again) and torch.equal(plain, fresh)
    assert 1e-3 < float((fake - plain).abs().max() / plain.abs().max()) < 0.2


@needs_modelopt
def test_save_and_load_round_trip(quantized, tiny_layout, tmp_path):
    from mimic.model.quantize import load_quantized, read_manifest, save_quantized

    unet, summary = quantized["fp8"]
    calib = {"source": "toy puppet dances", "seeds": [1], "steps": 2}
    save_quantized(unet, tmp_path, default_recipe("fp8"), summary, calibration=calib, weights={"preset": "tiny"})
    manifest = read_manifest(tmp_path)
    assert manifest["precision"] == "fp8" and manifest["state_file"] == STATE_FILE
    assert manifest["recipe"] == json.loads(json.dumps(default_recipe("fp8").to_dict()))
    assert manifest["calibration"] == calib and manifest["weights"] == {"preset": "tiny"}
    assert manifest["versions"]["nvidia-modelopt"] == "0.47.0" and manifest["versions"]["torch"] == torch.__version__
    assert manifest["quantized"]["layers"] == 126 and any("Conv3d" in d for d in manifest["differences_from_nvidia"])
    assert manifest["modelopt_config"]["quant_cfg"][0] == {"quantizer_name": "*", "enable": False}
    assert str(tmp_path) not in (tmp_path / MANIFEST_FILE).read_text()  # no machine paths

    restored = load_quantized(_fresh_unet(tiny_layout), tmp_path)
    feeds = _batches(unet, 1)[0]
    with torch.no_grad():
        assert torch.equal(restored(*feeds.values()), unet(*feeds.values()))
    with pytest.raises(InputError, match="holds no quantized UNet"):
        load_quantized(_fresh_unet(tiny_layout), tmp_path / "nothing")


# ------------------------------------------------------------------------------------ Q/DQ ONNX


@pytest.fixture(scope="module")
def graphs(quantized, tmp_path_factory):
    """The int8 graph with an fp32 body and the fp8 graph with an fp16 body (the engine graph)."""
    from mimic.export.qdq import export_qdq_unet

    out = tmp_path_factory.mktemp("qdq")
    return {("int8", "fp32"): export_qdq_unet(quantized["int8"][0], out, "int8", body="fp32"),
            ("fp8", "fp16"): export_qdq_unet(quantized["fp8"][0], out, "fp8", body="fp16")}


@needs_modelopt
def test_qdq_graphs_pass_the_checker_with_standard_ops(graphs):
    import onnx

    from mimic.export.qdq import check_qdq_graph

    for (precision, body), result in graphs.items():
        assert result.path.name == ("unet_fp32.onnx" if body == "fp32" else "unet.onnx") and result.path.parent.name == precision
        assert check_qdq_graph(result.path) == {"QuantizeLinear": 252, "DequantizeLinear": 252}
        model = onnx.load(str(result.path))
        assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"} and result.opset == 20
        zero_points = {model.graph.initializer[i].data_type for i in range(len(model.graph.initializer))
                       if model.graph.initializer[i].name == "qdq_fp8_zero_point"}
        assert zero_points == ({onnx.TensorProto.FLOAT8E4M3FN} if precision == "fp8" else set())


@needs_modelopt
def test_int8_graph_matches_fake_quantization_in_onnxruntime(graphs, quantized):
    from mimic.export.qdq import QDQ_TOLERANCE, validate_qdq

    check = validate_qdq(graphs[("int8", "fp32")].path, quantized["int8"][0], "int8", "fp32")
    assert check.passed, check.summary()
    assert check.pairs.pairs == 252 and check.pairs.mismatched < 1e-4 * check.pairs.elements and check.pairs.worst_steps <= 1.0 + 1e-3
    assert check.worst_rel <= QDQ_TOLERANCE[("int8", "fp32")].max_rel
    assert all(0.8 <= r <= 1.25 for r in check.noise_ratios)


@needs_modelopt
def test_fp8_engine_graph_runs_in_onnxruntime_cpu(graphs, quantized):
    from mimic.export.qdq import validate_qdq

    check = validate_qdq(graphs[("fp8", "fp16")].path, quantized["fp8"][0], "fp8", "fp16")
    assert check.passed, check.summary()
    assert check.pairs is None  # the pair check runs on fp32 bodies (an fp16 body rounds the scales)


@needs_modelopt
def test_pair_check_catches_a_wrong_scale(graphs, quantized, tmp_path):
    import onnx
    from onnx import numpy_helper

    from mimic.export.dummy import dims_from_module, dummy_inputs
    from mimic.export.qdq import check_qdq_pairs
    from mimic.spec import UNET

    model = onnx.load(str(graphs[("int8", "fp32")].path))
    # 1% off: every element stays within one step of torch's (weights never reach the clamp), so only
    # the tie rule can tell
    node = next(n for n in model.graph.node if n.op_type == "Constant" and "temporal_res_block/conv1/weight_quantizer" in n.name
                and n.attribute[0].t.data_type == onnx.TensorProto.FLOAT)
    node.attribute[0].t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(node.attribute[0].t) * 1.01))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    unet = quantized["int8"][0]
    check = check_qdq_pairs(bad, unet, dummy_inputs(UNET, UNET.validation_points[0], dims_from_module(UNET.name, unet), seed=1))
    assert not check.passed and len(check.failures) == 1 and "temporal_res_block.conv1.weight_quantizer" in check.failures[0]
    assert "not at a rounding tie (up to 1.00 steps)" in check.failures[0] or "not at a rounding tie (up to 0." in check.failures[0]


# ------------------------------------------------------------------------------------ TensorRT-RTX


@needs_modelopt
@pytest.mark.skipif(not _rtx_available(), reason="tensorrt-rtx is not installed (the `dev` extra)")
def test_fp8_unet_builds_ahead_of_time_for_ada_and_blackwell(graphs):
    from mimic.engine.quant_build import QUANT_SMS, build_quantized_unet
    from mimic.spec import ModelDims

    engine = build_quantized_unet(graphs[("fp8", "fp16")].path, "fp8", ModelDims(embed_dim=32, pose_channels=32), profile_set="tiny",
                                  window=16, hw_sizes=[(256, 128)])
    assert QUANT_SMS == ("8.9", "12.0") and engine.compute_capabilities == QUANT_SMS and len(engine.plan) > 1_000_000


def test_fp8_below_ada_is_refused_before_the_build():
    from mimic.engine.quant_build import check_quant_targets

    with pytest.raises(InputError, match=r"--compute-capability 8\.6: FP8 needs compute capability 8\.9 or newer"):
        check_quant_targets("fp8", "tensorrt-rtx", ("8.6", "8.9"))
    check_quant_targets("int8", "tensorrt-rtx", ("8.6",))  # INT8 builds there (measured)


@needs_modelopt
def test_engine_key_fields_name_precision_and_calibration(quantized, tmp_path):
    from mimic.engine.quant_build import quant_build_spec_extra, quant_manifest_fields
    from mimic.model.quantize import save_quantized

    unet, summary = quantized["int8"]
    calib = {"source": "toy puppet dances", "seeds": [7], "steps": 1}
    save_quantized(unet, tmp_path / "int8", default_recipe("int8"), summary, calibration=calib, weights={"preset": "tiny"})
    fields = quant_manifest_fields(tmp_path, "int8")
    extra = quant_build_spec_extra(fields)
    assert extra["precision"] == {"onnx": "fp16", "qdq": "int8", "typing": "strong"}
    assert extra["quantization"]["calibration"] == calib and len(extra["quantization"]["state_sha256"]) == 64
    with pytest.raises(InputError, match="holds no quantized UNet"):
        quant_manifest_fields(tmp_path, "fp8")


# ----------------------------------------------------------------------------------------- CLI


def _mimic(args: list[str], capsys) -> tuple[int, list[str]]:
    from mimic.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return int(exit_info.value.code), err


@pytest.mark.parametrize("args, code, message", [
    (["--precision", "fp4"], 2, "error: --precision: unknown 8-bit precision 'fp4'; choose one of fp8, int8"),
    (["--precision", "fp8", "--jobs", "missing.yaml"], 2, "error: --jobs missing.yaml: no such file"),
    (["--precision", "fp8", "--device", "gpu"], 2, "error: --device: unknown device 'gpu'"),
])
def test_bad_options_are_one_line_errors(args, code, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    got, err = _mimic(["quantize", "--preset", "tiny", "--out", str(tmp_path / "q"), *args], capsys)
    assert got == code and len(err) == 1 and err[0].startswith(message), err
    assert not (tmp_path / "q").exists()  # checked before any work


def test_missing_modelopt_names_the_extra(tmp_path, capsys, monkeypatch):
    for name in ("modelopt", "modelopt.torch", "modelopt.torch.opt", "modelopt.torch.quantization"):
        monkeypatch.setitem(sys.modules, name, None)  # `import modelopt...` raises ImportError
    got, err = _mimic(["quantize", "--preset", "tiny", "--precision", "int8", "--out", str(tmp_path / "q")], capsys)
    assert got == ExportError.exit_code and len(err) == 1, err
    assert err[0].startswith("error: quantization needs NVIDIA Model Optimizer (nvidia-modelopt==0.47.0), which cannot be imported")
    assert err[0].endswith(": pip install 'mimic-engine[quant]'")


def test_the_extra_is_declared():
    import tomllib

    root = Path(__file__).resolve().parents[1]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["quant"] == ["nvidia-modelopt==0.47.0"]
    assert ".[dev,cpu,farm,quant]" in (root / "Makefile").read_text()


# ------------------------------------------------------------------------------- quality bench


def test_quality_bench_parses_the_8bit_variants():
    from mimic.benchmarks.quality_bench import BENCH_SEED, Variant, markdown
    from mimic.benchmarks.quant_sensitivity import BENCH_JOB_SEED, CALIBRATION_SEEDS, QUALITY_CALIBRATION_SEED
    from mimic.toy.samples import DEMO_SEED

    assert BENCH_JOB_SEED == BENCH_SEED  # the sensitivity bench renders the quality bench's job...
    assert not {BENCH_SEED, DEMO_SEED} & {*CALIBRATION_SEEDS, QUALITY_CALIBRATION_SEED}  # ...and calibrates on other dances
    from mimic.benchmarks.quant_sensitivity import CalibrationSet
    from mimic.model.presets import default_generation

    toy = CalibrationSet().resolved(default_generation("toy")).describe()  # the manifest names what ran
    assert toy == {"source": "toy puppet dances", "seeds": list(CALIBRATION_SEEDS), "frames": 12, "steps": 10}

    v = Variant.parse("fp8")
    assert (v.backend, v.precision, v.quant, v.shown_precision) == ("torch", "fp32", "fp8", "fp8")
    w = Variant.parse("ays-10+int8")
    assert w.quant == "int8" and w.steps == 10 and w.schedule == "ays"
    assert Variant.parse("karras-25").quant is None
    with pytest.raises(InputError, match="quantizes the torch fp32 UNet"):
        Variant.parse("onnxruntime+fp8")
    row = {"name": "fp8", "backend": "torch", "precision": "fp8", "steps": 25, "schedule": "karras", "overlap": 4, "guidance": "2",
           "seconds": 1.0, "unet_calls": 100, "psnr_ref": 40.0, "ssim_ref": 0.99, "psnr_fp16": 41.5}
    text = markdown({"variants": [row], "complete": True})
    assert "PSNR to fp16 (dB)" in text and "| 41.50 |" in text
    assert "PSNR to fp16" not in markdown({"variants": [{**row, "psnr_fp16": None}], "complete": True})


# ----------------------------------------------------------------------------------- end to end


@needs_modelopt
@pytest.mark.slow
def test_mimic_quantize_end_to_end(tiny_cache, tmp_path):
    """`mimic quantize` on the tiny preset, calibrated on one short toy dance: manifest, graphs,
    validation (~30 s)."""
    from mimic.commands.quantize import run_quantize

    lines: list[str] = []
    manifest = run_quantize(tmp_path, "fp8", preset="tiny", samples=1, frames=2, steps=1, threads=1, echo=lines.append)
    assert any("UNet call" in line or "calibrated on dance 1/1" in line for line in lines)
    assert manifest["calibration"]["source"] == "toy puppet dances" and manifest["calibration"]["steps"] == 1
    assert manifest["onnx"]["fp16"]["path"] == "unet.onnx" and manifest["onnx"]["fp16"]["validation"]["passed"]
    assert manifest["onnx"]["fp32"]["validation"]["pairs"]["passed"]
    assert (tmp_path / "fp8" / STATE_FILE).is_file() and np.isfinite(manifest["onnx"]["fp32"]["validation"]["network"]["worst_max_abs"])


# ------------------------------------------------------------------------ build-engines --precision


@needs_modelopt
@pytest.mark.skipif(not _rtx_available(), reason="tensorrt-rtx is not installed (the `dev` extra)")
def test_build_engines_precision_fp8_builds_the_qdq_unet_and_a_run_picks_it(quantized, graphs, tiny_cache, tmp_path):
    """`build-engines --precision fp8 --quantized DIR` builds the UNet from `mimic quantize`'s Q/DQ
    graph (key and manifest name the precision and the calibration); a TensorRT run takes the
    engines' precision, and a mismatch is one line (all checked without a GPU: manifests only)."""
    import shutil

    from mimic.engine.build import build_engine_set
    from mimic.engine.store import EngineStore
    from mimic.model.quantize import save_quantized
    from mimic.runtime.api import RuntimeOptions
    from mimic.spec import StageName

    qdir = tmp_path / "quant"
    unet, summary = quantized["fp8"]
    calib = {"source": "toy puppet dances", "seeds": [7], "steps": 1}
    save_quantized(unet, qdir / "fp8", default_recipe("fp8"), summary, calibration=calib, weights={"preset": "tiny"})
    (qdir / "fp8").mkdir(exist_ok=True)
    shutil.copy(graphs[("fp8", "fp16")].path, qdir / "fp8" / "unet.onnx")
    engines = tmp_path / "engines"
    with pytest.raises(InputError, match=r"^--precision fp8 builds the UNet from `mimic quantize --precision fp8 --out DIR`: give --quantized DIR$"):
        build_engine_set(engines, preset="tiny", target="tensorrt-rtx", precision="fp8", stages=[StageName.UNET])
    with pytest.raises(InputError, match=r"^--compute-capability 8\.6: FP8 needs compute capability 8\.9 or newer"):
        build_engine_set(engines, preset="tiny", target="tensorrt-rtx", precision="fp8", quantized=qdir, stages=[StageName.UNET],
                         compute_capabilities=("8.6",))
    built = build_engine_set(engines, preset="tiny", target="tensorrt-rtx", precision="fp8", quantized=qdir, stages=[StageName.UNET], window=4)
    assert [s.status for s in built.stages] == ["built"]
    assert not (engines / "onnx" / "fp16" / "unet.onnx").exists()  # the Q/DQ graph is the UNet's: no fp16 UNet export
    manifest = EngineStore(engines).read_manifest(StageName.UNET)
    assert manifest["onnx"]["precision"] == "fp8" and manifest["quantization"]["calibration"] == calib
    assert manifest["key_inputs"]["build"]["precision"] == {"onnx": "fp16", "qdq": "fp8", "typing": "strong"}
    assert manifest["key_inputs"]["build"]["options"]["optimization_level"] == 4
    args = manifest["rebuild_args"]
    assert args[args.index("--precision") + 1] == "fp8" and args[args.index("--quantized") + 1] == str(qdir.resolve())
    assert RuntimeOptions(backend="tensorrt", engines=engines).precision == "fp8"  # the engines' precision
    assert RuntimeOptions(backend="tensorrt", engines=engines).precision_name == "fp8"
    with pytest.raises(InputError, match=r"^--precision int8: the unet engine in .* is fp8 \(build-engines --precision fp8\)"):
        RuntimeOptions(backend="tensorrt", engines=engines, precision="int8")
    with pytest.raises(InputError, match=r"^--precision int8 runs engines built with `mimic build-engines --precision int8`"):
        RuntimeOptions(backend="onnxruntime", precision="int8")
