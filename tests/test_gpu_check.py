"""The device check (``make gpu-check``) on a machine without a GPU (this one): it says so and exits 0,
also when the package is not installed; its plan and the GPU tests' collection hold on a simulated GPU
image (av, diffusers, ray, polygraphy and tensorrt unimportable); a run killed mid-way keeps the steps
that finished; and its report parts."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
BARE_IMAGE_LACKS = ("av", "diffusers", "ray", "polygraphy", "tensorrt", "tensorrt_rtx")


def _bare_image_env(tmp_path: Path) -> dict:
    """An environment whose Python cannot import what the GPU image lacks (``sys.modules[m] = None``
    in a ``sitecustomize`` that every subprocess inherits through PYTHONPATH)."""
    blk = tmp_path / "blocked"
    blk.mkdir()
    (blk / "sitecustomize.py").write_text("import sys\nfor _m in %r:\n    sys.modules[_m] = None\n" % (BARE_IMAGE_LACKS,))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(blk), env.get("PYTHONPATH", "")]).strip(os.pathsep)
    return env


def test_no_gpu_prints_so_and_exits_0(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "no GPU" in proc.stdout
    assert not (tmp_path / "out").exists()  # nothing to report


def test_runs_without_an_installed_package(tmp_path):
    """As on a bare GPU machine: `import mimic` fails, the script imports this checkout anyway."""
    code = ("import sys, runpy; sys.modules['mimic'] = None; "  # an environment where `import mimic` fails
            f"sys.argv = ['gpu_check.py', '--out', {str(tmp_path)!r}]; runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "not installed: imported through" in proc.stdout and "no GPU" in proc.stdout


def test_plan_and_collection_on_the_bare_gpu_image(tmp_path):
    """Without av/diffusers/ray/polygraphy/tensorrt (and no carried wheels): every GPU test file
    collects, with no collection error, and every step is planned (those needing diffusers skip)."""
    env = _bare_image_env(tmp_path)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--plan", "--out", str(tmp_path / "out"), "--wheels", str(tmp_path / "none")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    steps = {s["step"]: s for s in plan["steps"]}
    assert list(steps) == ["facts", "streams", "sdpa", "unet16", "gpu_tests", "unet72", "fp8", "vae_decode", "determinism", "end_to_end"]
    assert steps["facts"]["runs"] and steps["sdpa"]["runs"] and steps["streams"]["runs"]
    assert steps["unet16"]["skips"] == "needs diffusers" and steps["fp8"]["skips"] == "needs diffusers"
    assert sum(s["expect_s"] for s in plan["steps"]) <= 9 * 60  # the README's promise: 9 minutes on one H100
    collected = {c["file"]: c for c in plan["collected"]}
    assert set(collected) >= {"tests/test_gpu_parallel.py", "tests/test_gpu_path.py", "tests/test_engine_gpu.py", "tests/test_gpu_streams.py",
                              "tests/test_fp8.py"}
    for row in collected.values():
        assert row["collected"] > 0 and not row["errors"] and row["exit_code"] == 0, row


def test_killed_mid_way_keeps_the_finished_steps(tmp_path):
    """SIGKILL to the whole check while its fifth step runs: the four finished steps are in
    steps.jsonl, whole, and the report can be rebuilt from the lines alone."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--rehearse", "--out", str(out), "--wheels", str(tmp_path / "none")],
                            cwd=ROOT, env=_bare_image_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    steps, started = out / "steps.jsonl", out / "logs" / "gpu_tests.log"  # the fifth step has begun
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not started.exists():
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    lines = [json.loads(line) for line in steps.read_text().splitlines()]
    assert [r["step"] for r in lines] == ["facts", "streams", "sdpa", "unet16"]
    facts = lines[0]
    assert facts["step"] == "facts" and facts["figures"]["packages"]["diffusers"] is not None
    assert facts["figures"]["mimic_imports"]["mimic.runtime.api"] == "ok"  # imports without av on the image
    assert facts["figures"]["mimic_imports"]["mimic.model.unet"].startswith("ModuleNotFoundError")
    assert not (out / "gpu_check.md").exists()
    rebuilt = subprocess.run([sys.executable, str(SCRIPT), "--report", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert rebuilt.returncode == 0 and "| facts |" in (out / "gpu_check.md").read_text()


def test_makefile_targets():
    make = (ROOT / "Makefile").read_text()
    assert "gpu-check:" in make and "benchmarks/gpu_check.py" in make and "gpu-wheels:" in make


def _load():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_report_parts(tmp_path):
    gc = _load()
    junit = tmp_path / "r.xml"
    junit.write_text("""<?xml version="1.0"?><testsuites><testsuite>
<testcase classname="tests.test_gpu_streams" name="test_a" time="1.5"><properties><property name="syncs_per_window" value="0.0"/></properties></testcase>
<testcase classname="tests.test_engine_gpu" name="test_b" time="0.1"><skipped message="no TensorRT flavour can run engines here"/></testcase>
<testcase classname="tests.test_gpu_path" name="test_c" time="2"><failure message="assert 1 == 2">trace</failure></testcase>
</testsuite></testsuites>""")
    tests = gc.parse_junit(junit)
    assert tests["counts"] == {"passed": 1, "failed": 1, "error": 0, "skipped": 1}
    assert tests["cases"][1]["detail"] == "no TensorRT flavour can run engines here"
    assert tests["cases"][0]["properties"] == {"syncs_per_window": "0.0"}
    unet = {"matmul": {"n": 8192, "tflops_best": 700.0, "tflops": 690.0}, "frames": 16, "seconds": 0.4, "tflop": 102.0,
            "achieved_tflops": 255.0, "fraction_of_matmul": 0.364, "peak_memory_gb": 9.1, "first_call_seconds": 3.2}
    fp8_row = {"frames": 72, "ms_fp16": 1500.04, "ms_fp8": 1250.0, "speedup": 1.2, "max_abs_diff": 0.0625, "max_abs_fp16": 4.5,
               "rel_diff": 0.0123, "first_call_seconds_fp16": 9.0, "first_call_seconds_fp8": 2.0}
    records = [{"step": "facts", "status": "ok", "seconds": 3, "expect_s": 8, "figures": {"gpu": "H100"}},
               {"step": "unet16", "status": "ok", "seconds": 40, "expect_s": 45, "figures": unet},
               {"step": "unet72", "status": "failed", "seconds": 9, "expect_s": 45, "error": "out of memory: ...", "figures": {}},
               {"step": "fp8", "status": "ok", "seconds": 44, "expect_s": 50,
                "figures": {"conversion": {"converted": 352}, "frames72": fp8_row, "frames72_calibrated": {**fp8_row, "speedup": 1.25}}}]
    md = gc.markdown(records, {"date": "d"})
    assert "| 16 | 0.400 | 102 | 255 | 36% | 9.1 | 3.2 |" in md and "error: out of memory" in md
    assert "| 72 | 1500.0 | 1250.0 | 1.20x | 0.0625 (4.5) | 1.23% |" in md and "| 72 (calibrated scales) | 1500.0 | 1250.0 | 1.25x |" in md
    skipped = {"step": "fp8", "status": "skipped", "seconds": 2, "error": "no FP8 here: NVIDIA A100 has compute capability 8.0", "figures": {}}
    md = gc.markdown([records[0], skipped], {})
    assert "fp16 vs FP8" not in md and "error: no FP8 here: NVIDIA A100 has compute capability 8.0" in md
    assert gc.measured(records) and not gc.measured(records[:1])  # facts alone are no measurement: exit 2
    assert not gc.measured([{"step": "unet16", "status": "skipped", "figures": {}}])
    path = tmp_path / "s.jsonl"
    gc.append_line(path, records[0])
    path.write_text(path.read_text() + '{"step": "cut')  # a line cut by a kill
    assert gc.read_lines(path) == [records[0]]


def _emulated_scaled_mm(a, b, scale_a, scale_b, bias=None, scale_result=None, out_dtype=None, use_fast_accum=False):
    y = (a.float() * scale_a) @ (b.float() * scale_b)
    return (y if bias is None else y + bias.float()).to(out_dtype or a.dtype)


def test_measuring_steps_run_on_a_fake_device(monkeypatch, tmp_path):
    """The GPU steps' own code (no GPU here, and a lease is too short to debug it): ``torch.cuda``'s
    timing and memory calls answered on the CPU, the tiny preset's UNet/VAE in place of the full-size
    ones, small shapes. Every figure a step promises is recorded."""
    import importlib.util

    import pytest
    import torch

    if importlib.util.find_spec("diffusers") is None:
        pytest.skip("needs diffusers")
    gc = _load()
    from mimic.benchmarks import flops
    from mimic.model import tiny

    class Event:
        def __init__(self, **_):
            self.t = 0.0

        def record(self):
            self.t = time.perf_counter()

        def synchronize(self):
            pass

        def elapsed_time(self, other):
            return max(other.t - self.t, 1e-6) * 1e3

    for name, value in {"Event": Event, "synchronize": lambda *a: None, "reset_peak_memory_stats": lambda *a: None,
                        "max_memory_allocated": lambda *a: 1 << 30, "max_memory_reserved": lambda *a: 2 << 30,
                        "memory_allocated": lambda *a: 0, "empty_cache": lambda: None}.items():
        monkeypatch.setattr(torch.cuda, name, value)
    monkeypatch.setattr(gc, "_cuda", lambda: (torch, torch.device("cpu")))
    monkeypatch.setattr(gc, "HEIGHT", 64)
    monkeypatch.setattr(gc, "WIDTH", 128)
    monkeypatch.setattr(gc, "SDPA_SHAPES", {"spatial": (4, 2, 32, 16), "temporal": (8, 2, 6, 16)})
    monkeypatch.setattr(flops, "REAL_UNET_CONFIG", dict(tiny.UNET_CONFIG))
    monkeypatch.setattr(flops, "REAL_VAE_CONFIG", dict(tiny.VAE_CONFIG))
    rec = gc.Recorder(tmp_path / "sdpa.json")
    gc.step_sdpa(rec)
    assert {"seconds", "peak_extra_gb", "tflops", "kernels", "forced_seconds"} <= set(rec.figures["spatial"])
    rec = gc.Recorder(tmp_path / "unet.json")
    gc.step_unet(rec, 2)
    assert {"matmul", "parameters", "first_call_seconds", "seconds", "achieved_tflops", "fraction_of_matmul", "peak_memory_gb",
            "peak_reserved_gb", "preflight_unet_estimate_gb", "finite", "attention_kernels"} <= set(rec.figures)
    assert json.loads((tmp_path / "unet.json").read_text())["finite"] is True  # written as it goes
    from mimic.runtime import fp8

    rec = gc.Recorder(tmp_path / "fp8.json")
    with pytest.raises(gc.Skip, match="^no FP8 here: this is the CPU$"):  # below CC 8.9 (here: no GPU): a recorded skip
        gc.step_fp8(rec, frames=(2,))
    monkeypatch.setattr(fp8, "fp8_support", lambda device: None)
    monkeypatch.setattr(torch, "_scaled_mm", _emulated_scaled_mm)  # the CPU's own kernel is a slow reference
    gc.step_fp8(rec, frames=(2,))
    assert rec.figures["conversion"]["converted"] == 88 and rec.figures["weights_mb"]["fp8"] < rec.figures["weights_mb"]["fp16"]
    row = json.loads((tmp_path / "fp8.json").read_text())["frames2"]  # written as it goes
    assert {"ms_fp16", "ms_fp8", "speedup", "max_abs_diff", "rel_diff", "finite", "first_call_seconds_fp8", "peak_memory_gb"} <= set(row)
    assert 0 < row["rel_diff"] < 0.1 and row["finite"] == {"fp16": True, "fp8": True}
    calibrated = rec.figures["frames2_calibrated"]
    assert calibrated["frames"] == 2 and abs(calibrated["rel_diff"] - row["rel_diff"]) < 1e-3  # calibrated on that very input
    rec = gc.Recorder(tmp_path / "vae.json")
    gc.step_vae_decode(rec)
    assert {"seconds", "seconds_per_frame", "peak_extra_gb", "preflight_vae_estimate_gb", "nan_inf"} <= set(rec.figures)
    flags = [(torch.backends.cudnn, f) for f in ("benchmark", "deterministic", "allow_tf32")] + [(torch.backends.cuda.matmul, "allow_tf32")]
    saved = [getattr(obj, f) for obj, f in flags]
    try:
        hashes = gc._unet_hashes(device="cpu")
    finally:  # _unet_hashes sets them process-wide
        for (obj, f), value in zip(flags, saved):
            setattr(obj, f, value)
    assert set(hashes) == {"autotuned", "deterministic"} and hashes["autotuned"] == hashes["deterministic"]  # the CPU: same bits
