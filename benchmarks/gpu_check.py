"""The one device check: ``make gpu-check`` (or ``python3 benchmarks/gpu_check.py``).

On a machine with an NVIDIA GPU it

1. names what is there and what is missing (TensorRT, onnxruntime-gpu, diffusers, transformers,
   PyAV, pytest, polygraphy, cuda-python): the parts that need a missing package skip, saying so;
2. benchmarks the torch CUDA UNet (random full-size SVD-xt 1.1 + MimicMotion weights, fp16, SDPA)
   on one CFG pair at 576x1024 with 16 and 72 frames: seconds per call, achieved TFLOP/s (the FLOP
   model's count, ``benchmarks/flops.py``) against the fp16 matmul rate measured in the same run
   (``benchmarks/matmul_rate.py``), and peak memory;
3. runs every GPU test (``pytest -m gpu``: tests/test_engine_gpu.py, tests/test_gpu_*.py) with
   whatever time is left of the budget (8 minutes in all on one H100/H200);
4. writes one report, ``OUT/gpu_check.json`` and the same as ``OUT/gpu_check.md``.

Without a GPU it prints ``no GPU`` (and why) and exits 0.

It needs neither the venv nor a pip install: run from a copy of the repository (the folder is the
``mimic`` package under another name), it imports that copy through a temporary ``mimic`` symlink,
and hands the same path to the pytest it starts. ``--extra-path DIR`` adds a folder of unpacked
packages (e.g. ``pip install --target DIR diffusers huggingface_hub ...`` carried to a bare GPU
machine) to both. Exit status: 0 when nothing failed (skips are not failures), 1 otherwise.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if sys.path and sys.path[0] and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # run as a script: this folder's modules must not shadow top-level ones
BUDGET_S = 480  # the whole check, on one H100/H200
BENCH_FRAMES = (16, 72)
HEIGHT, WIDTH = 576, 1024
PACKAGES = {  # import name -> what it enables
    "tensorrt": "TensorRT 11 engines (GPU tests of the runner, CUDA graphs, validate, refit)",
    "tensorrt_rtx": "TensorRT-RTX engines (consumer GPUs only; not sm_90/sm_100)",
    "onnxruntime": "onnxruntime (CUDA provider: the onnxruntime-gpu wheel)",
    "diffusers": "the UNet/VAE modules (torch benchmark, tiny preset, torch CUDA tests)",
    "transformers": "the CLIP image encoder (tiny preset, torch CUDA tests)",
    "av": "PyAV (video files; the GPU tests use PNG folders instead)",
    "pytest": "running the GPU tests",
    "polygraphy": "mimic validate's comparison and the second-opinion TensorRT runner",
    "cuda": "cuda-python (the GPU probe falls back to torch without it)",
    "onnx": "ONNX export and graph rewriting",
}


# ----------------------------------------------------------------------------- importing `mimic`


def import_mimic(extra: list[str]) -> tuple[Path | None, list[str]]:
    """Make ``import mimic`` give this checkout; returns (shim folder or None, paths for PYTHONPATH)."""
    for p in reversed(extra):
        sys.path.insert(0, str(Path(p).resolve()))
    paths = [str(Path(p).resolve()) for p in extra]
    try:
        import mimic

        if Path(mimic.__file__).resolve().parent == ROOT:
            return None, paths
    except ImportError:
        pass
    for name in [m for m in sys.modules if m == "mimic" or m.startswith("mimic.")]:
        del sys.modules[name]  # a foreign (or blocked) `mimic`: this checkout's wins
    shim = Path(tempfile.mkdtemp(prefix="mimic-shim-"))
    (shim / "mimic").symlink_to(ROOT, target_is_directory=True)
    sys.path.insert(0, str(shim))
    importlib.invalidate_caches()
    import mimic  # noqa: F401  (now this checkout)

    return shim, [str(shim), *paths]


def package_report() -> dict:
    have, missing = {}, {}
    for name, what in PACKAGES.items():
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        (have if spec is not None else missing)[name] = what
    return {"present": sorted(have), "missing": missing}


# ------------------------------------------------------------------------------------ benchmark


def bench_unet(frames_list=BENCH_FRAMES, iters: int = 3) -> dict:
    """Torch CUDA UNet, one CFG pair (batch 2) per call, random full-size weights, fp16."""
    import torch

    from mimic.benchmarks.flops import REAL_UNET_CONFIG, ModelConfigs, unet_flops
    from mimic.benchmarks.matmul_rate import measure_matmul_rate
    from mimic.mimicmotion_ref.unet import PoseUNet

    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    rate = measure_matmul_rate(dev)
    t0 = time.perf_counter()
    with torch.device(dev):
        model = PoseUNet.from_config(dict(REAL_UNET_CONFIG))
    model = model.to(device=dev, dtype=torch.float16).eval()
    params = sum(p.numel() for p in model.parameters())
    out = {"matmul": rate.to_dict(), "parameters": params, "build_seconds": round(time.perf_counter() - t0, 1), "runs": []}
    h, w = HEIGHT // 8, WIDTH // 8
    configs = ModelConfigs.real()
    for frames in frames_list:
        row = {"frames": frames, "batch": 2, "height": HEIGHT, "width": WIDTH}
        try:
            gen = torch.Generator(device=dev).manual_seed(0)
            feeds = (
                torch.randn(2, frames, 8, h, w, device=dev, dtype=torch.float16, generator=gen),
                torch.full((2,), 0.5, device=dev),
                torch.randn(2, 1, REAL_UNET_CONFIG["cross_attention_dim"], device=dev, dtype=torch.float16, generator=gen),
                torch.tensor([[6.0, 127.0, 0.02]] * 2, device=dev, dtype=torch.float16),
            )
            pose = torch.randn(2 * frames, REAL_UNET_CONFIG["block_out_channels"][0], h, w, device=dev, dtype=torch.float16, generator=gen)
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            with torch.inference_mode():
                model(*feeds, pose_latents=pose)  # warm-up (cuDNN autotuning)
                torch.cuda.synchronize(dev)
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(iters):
                    res = model(*feeds, pose_latents=pose)
                end.record()
                end.synchronize()
            seconds = start.elapsed_time(end) / 1e3 / iters
            flops = unet_flops(configs, frames, HEIGHT, WIDTH, batch=2)
            achieved = flops / seconds / 1e12
            row.update(
                seconds=round(seconds, 4),
                tflop=round(flops / 1e12, 2),
                achieved_tflops=round(achieved, 1),
                fraction_of_matmul=round(achieved / rate.tflops_best, 3),
                peak_memory_gb=round(torch.cuda.max_memory_allocated(dev) / 1e9, 2),
                finite=bool(torch.isfinite(res).all()),
            )
            del res, feeds, pose
        except torch.cuda.OutOfMemoryError as err:
            row.update(error=f"out of memory: {str(err).splitlines()[0][:200]}")
        torch.cuda.empty_cache()
        out["runs"].append(row)
    del model
    torch.cuda.empty_cache()
    return out


# ---------------------------------------------------------------------------------------- tests


def gpu_test_files() -> list[str]:
    files = [ROOT / "tests" / "test_engine_gpu.py", *sorted((ROOT / "tests").glob("test_gpu_*.py"))]
    return [str(p.relative_to(ROOT)) for p in files if p.is_file()]


def run_gpu_tests(out: Path, pythonpath: list[str], timeout_s: float) -> dict:
    if importlib.util.find_spec("pytest") is None:
        return {"ran": False, "reason": "pytest is not installed"}
    if timeout_s < 30:
        return {"ran": False, "reason": f"no time left ({timeout_s:.0f} s of the budget)"}
    junit = out / "gpu_tests.xml"
    log_path = out / "gpu_tests.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*pythonpath, env.get("PYTHONPATH", "")]).strip(os.pathsep)
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-v", "-rs", "-p", "no:cacheprovider", f"--junitxml={junit}", *gpu_test_files()]
    t0 = time.perf_counter()
    timed_out = False
    with open(log_path, "w") as log:
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            timed_out, code = True, None
    result = {"ran": True, "command": " ".join(cmd[1:]), "exit_code": code, "timed_out": timed_out,
              "seconds": round(time.perf_counter() - t0, 1), "log": log_path.name}
    result.update(parse_junit(junit) if junit.is_file() and not timed_out else parse_log(log_path.read_text(errors="replace")))
    return result


def parse_junit(path: Path) -> dict:
    cases = []
    for tc in ET.parse(path).getroot().iter("testcase"):
        name = f"{tc.get('classname', '')}::{tc.get('name', '')}"
        status, detail = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = tc.find(tag)
            if el is not None:
                status = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                detail = (el.get("message") or el.text or "").strip().splitlines()[0][:300] if (el.get("message") or el.text) else ""
                break
        cases.append({"test": name, "status": status, "detail": detail, "seconds": float(tc.get("time", 0) or 0)})
    return _summarise(cases)


def parse_log(text: str) -> dict:
    """Per-test outcomes from ``pytest -v`` lines (when the run was cut short, no junit exists)."""
    cases = []
    for line in text.splitlines():
        for status in ("PASSED", "FAILED", "SKIPPED", "ERROR"):
            if f" {status}" in line and "::" in line:
                cases.append({"test": line.split(" ")[0], "status": status.lower(), "detail": "", "seconds": 0.0})
                break
    return _summarise(cases)


def _summarise(cases: list[dict]) -> dict:
    counts = {s: sum(1 for c in cases if c["status"] == s) for s in ("passed", "failed", "error", "skipped")}
    return {"counts": counts, "cases": cases}


# --------------------------------------------------------------------------------------- report


def markdown(report: dict) -> str:
    lines = ["# GPU check", ""]
    gpu = report.get("gpu") or {}
    lines += [f"- date: {report['date']}", f"- GPU: {gpu.get('name')} (sm_{str(gpu.get('compute_capability', '?')).replace('.', '')}, "
              f"{gpu.get('memory_bytes', 0) / 2**30:.0f} GiB), driver {gpu.get('driver')}",
              f"- torch {report['torch']} (CUDA {report['cuda_runtime']}), python {report['python']}",
              f"- mimic imported from {report['mimic_import']}",
              f"- total {report['seconds']:.0f} s (budget {BUDGET_S} s)", ""]
    pk = report["packages"]
    lines += ["## Packages", "", f"present: {', '.join(pk['present']) or 'none'}", ""]
    if pk["missing"]:
        lines += ["| missing | needed for |", "| --- | --- |", *[f"| {k} | {v} |" for k, v in pk["missing"].items()], ""]
    b = report.get("benchmark") or {}
    lines += ["## Torch CUDA UNet, one CFG pair at 1024x576 (random full-size weights, fp16)", ""]
    if b.get("skipped"):
        lines += [f"skipped: {b['skipped']}", ""]
    elif b.get("error"):
        lines += [f"error: {b['error']}", ""]
    else:
        m = b["matmul"]
        lines += [f"fp16 matmul rate (n={m['n']}): {m['tflops_best']:.0f} TFLOP/s best, {m['tflops']:.0f} median; "
                  f"UNet {b['parameters'] / 1e9:.2f} B parameters", "",
                  "| frames | s per call | TFLOP per call | achieved TFLOP/s | of matmul rate | peak memory GB |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in b["runs"]:
            if "error" in r:
                lines.append(f"| {r['frames']} | {r['error']} | | | | |")
            else:
                lines.append(f"| {r['frames']} | {r['seconds']:.3f} | {r['tflop']:.0f} | {r['achieved_tflops']:.0f} | "
                             f"{100 * r['fraction_of_matmul']:.0f}% | {r['peak_memory_gb']:.1f} |")
        lines.append("")
    t = report.get("tests") or {}
    lines += ["## GPU tests", ""]
    if not t.get("ran"):
        lines += [f"not run: {t.get('reason')}", ""]
    else:
        c = t["counts"]
        lines += [f"{c['passed']} passed, {c['failed']} failed, {c['error']} errors, {c['skipped']} skipped in {t['seconds']:.0f} s"
                  + (" (cut short by the time budget)" if t.get("timed_out") else ""), "",
                  "| test | result | detail |", "| --- | --- | --- |"]
        for case in t["cases"]:
            lines.append(f"| {case['test']} | {case['status']} | {case['detail'].replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu-check", help="folder for gpu_check.json / gpu_check.md (default: gpu-check)")
    ap.add_argument("--extra-path", action="append", default=[], help="folder of unpacked packages to import from (repeatable)")
    ap.add_argument("--budget-s", type=float, default=BUDGET_S, help="time for the whole check")
    ap.add_argument("--no-tests", action="store_true", help="benchmark only")
    ap.add_argument("--no-bench", action="store_true", help="tests only")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    shim, pythonpath = import_mimic(args.extra_path)
    where = f"{ROOT} (not installed: imported through {shim})" if shim else f"{ROOT} (installed)"
    print(f"mimic: {where}", flush=True)
    try:
        import torch
    except ImportError:
        print("no GPU (torch is not installed here)")
        return 0
    from mimic import fingerprint

    why = fingerprint.cuda_probe_error()
    if why is not None:
        print(f"no GPU ({why}); nothing to check")
        return 0
    import platform

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "gpu": fingerprint.gpu_fingerprint(0),
        "gpu_count": fingerprint.cuda_device_count(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "python": platform.python_version(),
        "mimic_import": where,
        "git_commit": fingerprint.git_commit(),
        "packages": package_report(),
    }
    print(f"GPU: {report['gpu']}", flush=True)
    missing = report["packages"]["missing"]
    for name, what in missing.items():
        print(f"  missing {name}: {what}", flush=True)
    if args.no_bench:
        report["benchmark"] = {"skipped": "--no-bench"}
    elif "diffusers" in missing:
        report["benchmark"] = {"skipped": "diffusers is not installed (the UNet module is diffusers'); pass --extra-path with it"}
    else:
        print("benchmark: torch CUDA UNet CFG pair at 1024x576 ...", flush=True)
        try:
            report["benchmark"] = bench_unet()
        except Exception as err:  # report it; the tests still run
            report["benchmark"] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"}
        print(f"  {json.dumps(report['benchmark'].get('runs', report['benchmark']))}", flush=True)
    if args.no_tests:
        report["tests"] = {"ran": False, "reason": "--no-tests"}
    else:
        left = args.budget_s - (time.perf_counter() - t0) - 15
        print(f"GPU tests (up to {left:.0f} s) ...", flush=True)
        report["tests"] = run_gpu_tests(out, pythonpath, left)
        print(f"  {report['tests'].get('counts', report['tests'].get('reason'))}", flush=True)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "gpu_check.md").write_text(markdown(report))
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'} ({report['seconds']:.0f} s)")
    t = report["tests"]
    failed = t.get("ran") and (t["counts"]["failed"] or t["counts"]["error"] or t.get("timed_out"))
    bench_failed = bool(report["benchmark"].get("error")) or any("error" in r or not r.get("finite", True) for r in report["benchmark"].get("runs", []))
    return 1 if failed or bench_failed else 0


if __name__ == "__main__":
    sys.exit(main())
