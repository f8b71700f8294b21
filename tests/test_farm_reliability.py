"""Reliability rows of `mimic farm`: workers sized from the machine (row 1), each job's memory
admitted before any worker renders it (row 2), SIGTERM/Ctrl-C answered by our handlers at any
moment, never Ray's (rows 5, 6), an --address where no Ray cluster answers is one line within
seconds (row 8), CPU workers pinned to the submitting process's thread counts (row 11).

The checks that need no Ray process run first and fast (``Cluster.open`` is made to fail: they
prove nothing started); the ones that start a farm in a subprocess are marked slow."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from _runtime_helpers import SMALL_ARGS, make_inputs, run_cli
from mimic.errors import ExitCode, InputError, Interrupted

pytest.importorskip("ray")

FARM = ["farm", "--preset", "tiny", "--device", "cpu", "--progress", "none"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"))


@pytest.fixture()
def no_ray_process(monkeypatch):
    """Starting or joining a Ray cluster fails the test: what it checks happens before."""
    from mimic.farm.cluster import Cluster

    def refuse(self):
        raise AssertionError("a Ray cluster was started or joined")

    monkeypatch.setattr(Cluster, "open", refuse)


@pytest.fixture()
def torch_threads():
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _jobs_file(tmp_path: Path, jobs: list[dict]) -> Path:
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps(jobs))
    return path


def _job(inputs, out: Path, **settings) -> dict:
    ref, video = inputs
    return {"ref": str(ref), "driving": str(video), "out": str(out), **settings}


# -- row 1: workers sized from the machine -------------------------------------------------------------

def test_more_cpu_workers_than_cores_is_one_line_before_any_ray_process(tiny_cache, inputs, tmp_path, no_ray_process, capsys):
    jobs = _jobs_file(tmp_path, [_job(inputs, tmp_path / "a"), _job(inputs, tmp_path / "b")])
    code, out, err = run_cli([*FARM, "--jobs", str(jobs), "--workers", "999", *SMALL_ARGS], capsys)
    assert code == ExitCode.BAD_INPUT, (out, err)
    assert err.startswith(f"error: --workers 999: this machine holds at most {os.cpu_count()} CPU worker(s) ({os.cpu_count()} cores; ")
    assert len(err.strip().splitlines()) == 1 and "starting" not in out
    assert not (tmp_path / "jobs.farm-report.json").exists()


def test_more_cpu_workers_than_the_memory_holds_is_refused(tiny_cache, tiny_layout, inputs, tmp_path, no_ray_process, monkeypatch, capsys):
    """8 cores but memory for one worker and a half: --workers 2 is refused, naming the memory."""
    import mimic.runtime.memory as memory
    from mimic.model.presets import default_generation
    from mimic.model.weights import fetch_svd

    config = default_generation("tiny").with_overrides(steps=2, window=6, overlap=2, resolution=128, sample_stride=1)
    per_worker = memory.estimate_job_memory(tiny_layout, fetch_svd(tiny_layout.svd), config, "onnxruntime", True).peak_bytes
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(memory, "available_host_bytes", lambda: int(1.5 * per_worker))
    jobs = _jobs_file(tmp_path, [_job(inputs, tmp_path / "a"), _job(inputs, tmp_path / "b")])
    code, out, err = run_cli([*FARM, "--jobs", str(jobs), "--workers", "2", *SMALL_ARGS], capsys)
    assert code == ExitCode.BAD_INPUT, (out, err)
    assert err.startswith("error: --workers 2: this machine holds at most 1 CPU worker(s) (8 cores; ") and "per worker" in err


def test_the_sizing_rule():
    from mimic.farm.sizing import HostBudget, check_cluster_cpus, check_gpu_workers

    gb = 1 << 30
    assert HostBudget(cores=4, available=10 * gb, per_worker=3 * gb).max_workers == 3  # memory decides
    assert HostBudget(cores=2, available=10 * gb, per_worker=3 * gb).max_workers == 2  # cores decide
    assert HostBudget(cores=2, available=1 * gb, per_worker=3 * gb).max_workers == 1  # one, refused per job if it does not fit
    HostBudget(cores=2, available=10 * gb, per_worker=gb).check(2)
    with pytest.raises(InputError, match=r"^--workers 3: this machine holds at most 2 CPU worker\(s\)"):
        HostBudget(cores=2, available=10 * gb, per_worker=gb).check(3)
    with pytest.raises(InputError, match=r"^--workers 3: the cluster has 4 GPU\(s\), room for at most 2 worker\(s\) of 2"):
        check_gpu_workers(3, 4, 2, "the cluster")
    with pytest.raises(InputError, match=r"^--workers 5: the cluster has 4 CPU\(s\)"):
        check_cluster_cpus(5, 4, "the cluster")
    check_gpu_workers(None, 4, 1, "x") or check_cluster_cpus(None, 1, "x")  # the default is never refused


# -- row 2: each job's memory admitted before any worker -----------------------------------------------

def test_a_job_too_big_for_memory_fails_alone_before_any_worker_starts(tiny_cache, inputs, tmp_path, no_ray_process, capsys):
    """Every job refused (one by the memory preflight, one by its missing input): no cluster at all."""
    ref, video = inputs
    jobs = _jobs_file(tmp_path, [_job(inputs, tmp_path / "big", resolution=4096),
                                 {"ref": str(tmp_path / "missing.png"), "driving": str(video), "out": str(tmp_path / "b")}])
    code, out, err = run_cli([*FARM, "--jobs", str(jobs), "--workers", "2", *SMALL_ARGS], capsys)
    assert code == ExitCode.FAILED, (out, err)
    big, missing = json.loads((tmp_path / "jobs.farm-report.json").read_text())["results"]
    assert (big["outcome"], big["attempts"], big["exit_code"]) == ("failed", 0, 2)
    assert big["error"].startswith("this job needs ~") and "GB of host memory" in big["error"] and "--resolution 4096" in big["error"]
    assert (missing["outcome"], missing["attempts"], missing["exit_code"]) == ("failed", 0, 2)
    assert "error: job 1 (" in err and "needs ~" in err


# -- rows 5, 6: our signal handlers decide -------------------------------------------------------------

def test_an_interrupt_wrapped_by_ray_is_found():
    from mimic.farm.signals import as_interrupt

    term = Interrupted("SIGTERM", ExitCode.TERMINATED)
    wrapped = SystemError("<cyfunction CoreWorker.wait at 0x0> returned a result with an exception set")
    wrapped.__cause__ = term
    assert as_interrupt(wrapped) is term
    ray_exit = as_interrupt(SystemExit(signal.SIGTERM))  # Ray's own SIGTERM handler: sys.exit(15)
    assert isinstance(ray_exit, Interrupted) and ray_exit.exit_code == 143 and ray_exit.signal_name == "SIGTERM"
    assert as_interrupt(ValueError("no")) is None and as_interrupt(SystemExit(1)) is None


def test_a_signal_during_clean_up_is_answered_after_it():
    """``held``: SIGTERM inside is not raised there; after, it is delivered to the handler before
    (unless an interrupt is already unwinding: the first one decides)."""
    from mimic.farm.signals import held

    def interrupt(signum, frame):
        raise Interrupted(signal.Signals(signum).name, ExitCode.TERMINATED)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        finished = []
        with pytest.raises(Interrupted):
            with held():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
                finished.append(True)  # the clean-up ran to its end
        assert finished and signal.getsignal(signal.SIGTERM) is interrupt
        with pytest.raises(KeyError):  # already unwinding: the held signal is dropped
            try:
                raise KeyError("first")
            finally:
                with held():
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(0.05)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _farm_process(tmp_path: Path, inputs, steps: int = 200, jobs: int = 2, workers: int = 2) -> subprocess.Popen:
    """`mimic farm` in a subprocess with its own local cluster, rendering long enough to be interrupted."""
    args = list(SMALL_ARGS)
    args[args.index("--steps") + 1] = str(steps)
    jobs_file = _jobs_file(tmp_path, [_job(inputs, tmp_path / f"out{i}") for i in range(jobs)])
    cmd = [sys.executable, "-m", "mimic.cli", *FARM, "--jobs", str(jobs_file), "--workers", str(workers), *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for_line(proc: subprocess.Popen, text: str, timeout: float = 180) -> list[str]:
    """stdout lines up to the first containing ``text`` (the farm's info lines are on stdout)."""
    lines, found = [], threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if text in line:
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    assert found.wait(timeout), f"no {text!r} line: {lines}, {proc.poll()}"
    return lines


def _ended(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        code = proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return code, proc.stderr.read()


def _one_interrupted_line(err: str, name: str) -> None:
    """The interrupt is one line, the last; no traceback, no Ray stack dump or abort. (Lines the
    workers logged while loading may come before it.)"""
    lines = err.strip().splitlines()
    assert [line for line in lines if "interrupted" in line] == [lines[-1]], err
    assert lines[-1] == f"interrupted ({name}): temporary files removed, earlier outputs left as they were", err
    for sign in ("Traceback", "Aborted", "SIGTERM received", "SystemError", "internal error"):
        assert sign not in err, err


@pytest.mark.slow
def test_sigterm_while_rendering_exits_143_with_one_line(tiny_cache, inputs, tmp_path):  # row 5
    proc = _farm_process(tmp_path, inputs)
    try:
        _wait_for_line(proc, "worker(s) ready")
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("*.checkpoint/checkpoint.json")):  # denoising
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGTERM)  # the farm process only, as a scheduler or `kill` sends it
    finally:
        code, err = _ended(proc)
    assert code == ExitCode.TERMINATED, err
    _one_interrupted_line(err, "SIGTERM")
    report = json.loads((tmp_path / "jobs.farm-report.json").read_text())
    assert report["cancelled"] == 2 and report["done"] == 0
    assert list(tmp_path.glob("*.checkpoint/checkpoint.json"))  # the next run resumes from these
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files


@pytest.mark.slow
@pytest.mark.parametrize("sig, code, name", [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")])
def test_an_interrupt_while_the_workers_start_is_one_line(tiny_cache, inputs, tmp_path, sig, code, name):  # row 6
    proc = _farm_process(tmp_path, inputs)
    try:
        _wait_for_line(proc, "farm: starting")  # the actors are loading: the farm waits in ray.wait
        os.kill(proc.pid, sig)
    finally:
        got, err = _ended(proc)
    assert got == code, err
    _one_interrupted_line(err, name)
    report = json.loads((tmp_path / "jobs.farm-report.json").read_text())
    assert report["cancelled"] == 2


# -- row 8: an --address where no Ray cluster answers ----------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_address_nothing_listens_on_is_one_line_within_seconds(tiny_cache, inputs, tmp_path, capsys):
    port = _free_port()
    jobs = _jobs_file(tmp_path, [_job(inputs, tmp_path / "a")])
    t0 = time.monotonic()
    code, out, err = run_cli([*FARM, "--jobs", str(jobs), "--address", f"127.0.0.1:{port}", *SMALL_ARGS], capsys)
    assert code == ExitCode.BAD_INPUT and time.monotonic() - t0 < 15, err
    assert err.strip() == (f"error: --address 127.0.0.1:{port}: no Ray cluster answers there (Connection refused); "
                           "start one with `ray start --head` or drop --address")
    assert not (tmp_path / "jobs.farm-report.json").exists()


def test_an_address_where_another_grpc_server_listens_is_refused_by_rays_own_check():
    """A gRPC server without Ray's services answers the HTTP/2 probe; Ray's quick check (the GCS's
    cluster id) tells it apart at once."""
    grpc = pytest.importorskip("grpc")
    import concurrent.futures as cf

    from mimic.farm.cluster import probe

    server = grpc.server(cf.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(InputError, match=rf"^--address 127.0.0.1:{port}: no Ray cluster answers there \("):
            probe(f"127.0.0.1:{port}")
        assert time.monotonic() - t0 < 10
    finally:
        server.stop(0)


def test_address_forms_that_cannot_work_are_one_line(monkeypatch):
    import mimic.farm.cluster as cluster

    monkeypatch.setattr(cluster, "_auto_address", lambda: None)
    with pytest.raises(InputError, match=r"^--address auto: no Ray cluster found on this machine"):
        cluster.probe("auto")
    with pytest.raises(InputError, match=r"^--address headnode: give HOST:PORT"):
        cluster.probe("headnode")


def test_an_address_with_a_plain_tcp_server_is_one_line_without_rays_log(tiny_cache, inputs, tmp_path):
    """Something that is not Ray listens there (an HTTP server): before, ray.init retried for
    minutes, printing its gcs_client.cc log. A subprocess: the check has a deadline."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def answer():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")

    threading.Thread(target=answer, daemon=True).start()
    jobs = _jobs_file(tmp_path, [_job(inputs, tmp_path / "a")])
    cmd = [sys.executable, "-m", "mimic.cli", *FARM, "--jobs", str(jobs), "--address", f"127.0.0.1:{port}", *SMALL_ARGS]
    try:
        t0 = time.monotonic()
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    finally:
        listener.close()
    assert done.returncode == ExitCode.BAD_INPUT and time.monotonic() - t0 < 30, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: --address 127.0.0.1:{port}: no Ray cluster answers there (something else listens on port {port}); "
        "give the head's GCS port (`ray start --head --port`, 6379 by default)"]


# -- row 11: CPU workers use the submitting process's thread counts ---------------------------------

def test_a_cpu_worker_gets_the_submitting_process_thread_counts_whatever_its_actor_env(tiny_layout, monkeypatch, torch_threads):
    """The submitting process runs torch with 3 threads; the worker's process starts as Ray starts
    an actor (OMP_NUM_THREADS=1, torch at 1 thread). Loaded, it renders with torch at 3 and hands
    its onnxruntime sessions the count `mimic run` would use (onnxruntime's default, explicitly)."""
    import torch

    from mimic.farm.farm import make_spec, ort_default_threads
    from mimic.farm.worker import FarmWorker
    from mimic.runtime import backend_ort
    from mimic.runtime.api import RuntimeOptions

    torch.set_num_threads(3)
    spec = make_spec(preset="tiny", layout=tiny_layout, options=RuntimeOptions())
    assert (spec.torch_threads, spec.ort_threads) == (3, ort_default_threads())

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the actor's process
    torch.set_num_threads(1)
    seen = []
    real = backend_ort.OnnxRuntimeBackend.__init__

    def spy(self, graphs, device="cpu", threads=None, *args, **kwargs):
        seen.append(threads)
        real(self, graphs, device, threads, *args, **kwargs)

    monkeypatch.setattr(backend_ort.OnnxRuntimeBackend, "__init__", spy)
    facts = FarmWorker(spec, "w0").ready()
    assert seen == [ort_default_threads()]
    in_a_job_thread = []
    job_thread = threading.Thread(target=lambda: in_a_job_thread.append(torch.get_num_threads()))  # as the executor's are
    job_thread.start()
    job_thread.join()
    assert torch.get_num_threads() == 3 and in_a_job_thread == [3]
    assert (facts.torch_threads, facts.onnxruntime_threads) == (3, ort_default_threads())


def test_the_submitting_thread_counts_follow_mimic_run(torch_threads):
    import torch

    from mimic.farm.farm import ort_default_threads, submitting_threads
    from mimic.runtime.api import RuntimeOptions

    torch.set_num_threads(2)
    assert submitting_threads(RuntimeOptions()) == (2, ort_default_threads())
    assert submitting_threads(RuntimeOptions(threads=5)) == (5, 5)  # --threads: both, as MimicMotion sets them
    assert submitting_threads(RuntimeOptions(device="cpu,cpu")) == (2, max(1, (os.cpu_count() or 1) // 2))  # cores shared
    assert submitting_threads(RuntimeOptions(device="cuda", backend="torch")) == (None, None)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_onnxruntime_default_thread_count_is_the_one_pinned():
    """Pinning ``ort_default_threads()`` explicitly gives a session the thread pool onnxruntime's
    own default gives it on this machine (so a pinned worker equals `mimic run`)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from mimic.farm.farm import ort_default_threads

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph).SerializeToString()

    def pool_threads(threads: int) -> int:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        before = len(os.listdir("/proc/self/task"))
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        started = len(os.listdir("/proc/self/task")) - before
        del session
        return started

    assert pool_threads(0) == pool_threads(ort_default_threads())


# -- rows 1, 2 together, on a local cluster of the farm's own --------------------------------------

@pytest.mark.slow
def test_a_too_big_job_fails_at_once_while_the_other_renders_on_as_many_workers_as_jobs(tiny_cache, inputs, tmp_path):
    jobs = _jobs_file(tmp_path, [_job(inputs, tmp_path / "a"), _job(inputs, tmp_path / "big", resolution=4096)])
    cmd = [sys.executable, "-m", "mimic.cli", *FARM, "--jobs", str(jobs), "--workers", "2", *SMALL_ARGS]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == ExitCode.FAILED, done.stderr
    assert "farm: 2 worker(s) for 1 job(s): starting 1" in done.stdout
    report = json.loads((tmp_path / "jobs.farm-report.json").read_text())
    a, big = report["results"]
    assert a["outcome"] == "done" and len(report["workers"]) == 1
    assert (big["outcome"], big["attempts"], big["exit_code"]) == ("failed", 0, 2) and "needs ~" in big["error"]
