"""``make gpu-check`` on a machine without a GPU (this one): it says so and exits 0, also when the
package is not installed (it imports the checkout through a symlink); and its report parts."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


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


def test_makefile_target_uses_the_script():
    make = (ROOT / "Makefile").read_text()
    assert "gpu-check:" in make and "benchmarks/gpu_check.py" in make


def _load():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_report_from_junit_and_markdown(tmp_path):
    gc = _load()
    junit = tmp_path / "r.xml"
    junit.write_text("""<?xml version="1.0"?><testsuites><testsuite>
<testcase classname="tests.test_engine_gpu" name="test_a" time="1.5"/>
<testcase classname="tests.test_engine_gpu" name="test_b" time="0.1"><skipped message="no TensorRT flavour can run engines here"/></testcase>
<testcase classname="tests.test_gpu_path" name="test_c" time="2"><failure message="assert 1 == 2">trace</failure></testcase>
</testsuite></testsuites>""")
    tests = gc.parse_junit(junit)
    assert tests["counts"] == {"passed": 1, "failed": 1, "error": 0, "skipped": 1}
    assert tests["cases"][1]["detail"] == "no TensorRT flavour can run engines here"
    assert gc.parse_log("tests/test_x.py::test_y PASSED [ 50%]\ntests/test_x.py::test_z SKIPPED (why)")["counts"]["skipped"] == 1
    report = {"date": "d", "gpu": {"name": "NVIDIA H200", "compute_capability": "9.0", "memory_bytes": 141 << 30, "driver": "580"},
              "torch": "2.11", "cuda_runtime": "13.0", "python": "3.12", "mimic_import": "x", "seconds": 300.0,
              "packages": {"present": ["pytest"], "missing": {"tensorrt": "engines"}},
              "benchmark": {"matmul": {"n": 8192, "tflops_best": 700.0, "tflops": 690.0}, "parameters": 1.52e9,
                            "runs": [{"frames": 16, "seconds": 0.4, "tflop": 102.0, "achieved_tflops": 255.0, "fraction_of_matmul": 0.364,
                                      "peak_memory_gb": 9.1}, {"frames": 72, "error": "out of memory: ..."}]},
              "tests": {"ran": True, "seconds": 12.0, **tests}}
    md = gc.markdown(report)
    assert "| 16 | 0.400 | 102 | 255 | 36% | 9.1 |" in md and "| tensorrt | engines |" in md
    assert "1 passed, 1 failed, 0 errors, 1 skipped" in md and "out of memory" in md
