"""The command line's conventions (README "CLI conventions"): every subcommand's help renders flags
as flags and lists its choices, usage lines name arguments plainly, typos suggest the right name,
`--version` works, sizes are WIDTHxHEIGHT, options are checked before any work, hints are commands
that work when pasted, third-party noise stays out of the output and errors start on their own line.

All in-process (typer's CliRunner, the real `mimic.cli` app): fast."""
from __future__ import annotations

import io
import json
import logging
import re
import shlex

import pytest
import typer
from typer.testing import CliRunner

from mimic import cli
from mimic.commands import conventions
from mimic.errors import EngineError, InputError

WIDE = {"COLUMNS": "250", "TERMINAL_WIDTH": "250", "NO_COLOR": "1"}  # one row per option, no wrapping
RUNNER = CliRunner()


def _walk(command, path=()):
    """Every registered command below ``command`` (found through click, not listed by hand)."""
    yield path, command
    if isinstance(command, typer.core.TyperGroup) or hasattr(command, "list_commands"):
        ctx = command.make_context("mimic", [], resilient_parsing=True)
        for name in command.list_commands(ctx):
            yield from _walk(command.get_command(ctx, name), (*path, name))


def _commands():
    from mimic.commands.cli_help import adopt

    return list(_walk(adopt(typer.main.get_command(cli.app))))


COMMANDS = _commands()
# Options that take one of a few names, and where the names come from (the single sources of truth).
CHOICES = {
    "--backend": conventions.BACKENDS,
    "--preset": conventions.PRESETS,
    "--target": conventions.targets(),
    "--stage": conventions.ENGINE_STAGES,
    "--precision": ("fp16", "fp32", "fp8", "int8"),
    "--progress": ("auto", "none"),
}


def _help(path) -> str:
    result = RUNNER.invoke(cli.app, [*path, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    return result.output


def _row(text: str, flag: str) -> str:
    """The help table row of ``flag`` (its line in the wide rendering)."""
    rows = [line for line in text.splitlines() if re.match(rf"^│\s*(\*\s+)?{re.escape(flag)}(\s|,)", line)]
    assert rows, f"{flag} not in the help"
    return rows[0]


def test_the_walk_finds_every_command_and_subcommand():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"", "run", "pose", "bench", "bench report", "farm", "farm openjd-template", "build-engines"} <= names
    assert len(names) >= 12


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) or "mimic" for p, _ in COMMANDS])
def test_help_shows_flags_as_flags_and_lists_choices(path, command):
    text = _help(path)
    assert "<bool>" not in text  # flags (--help included) take no value
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage and "}" not in usage, usage  # VIDEO, not {video}
    ctx = command.make_context("mimic", [], resilient_parsing=True)
    params = [p for p in command.get_params(ctx) if not getattr(p, "hidden", False)]
    for param in params:
        if isinstance(param, typer.core.TyperArgument):
            assert param.name.upper() in usage
            continue
        flag = next((o for o in param.opts if o.startswith("--")), param.opts[0])
        row = _row(text, flag)
        if param.is_flag:
            assert not re.search(rf"{re.escape(flag)}\s+(-\w\s+)?<", row), row  # no type label after a flag
        if flag in CHOICES:
            shown = [c for c in CHOICES[flag] if re.search(rf"(?<![\w-]){re.escape(c)}(?![\w-])", row)]
            assert len(shown) >= min(2, len(CHOICES[flag])), f"{' '.join(path)} {flag}: choices not listed: {row}"
        if flag == "--device":
            assert "cpu" in row and "cuda" in row


NOT_IN_HELP = ("<int range>", "<str>", "<float range>", "<list[", "x>=", "x<=", "…")


def _rendered(path, columns: int) -> str:
    import typer.rich_utils

    env = {"COLUMNS": str(columns), "TERMINAL_WIDTH": str(columns), "NO_COLOR": "1"}
    width = typer.rich_utils.MAX_WIDTH  # read from TERMINAL_WIDTH once, when typer's help was first imported
    typer.rich_utils.MAX_WIDTH = columns
    try:
        result = RUNNER.invoke(cli.app, [*path, "--help"], env=env)
    finally:
        typer.rich_utils.MAX_WIDTH = width
    assert result.exit_code == 0, result.output
    return result.output


def _squeezed(text: str) -> str:
    return "".join(text.split())


def _cells(text: str, rows: dict[str, str]) -> dict[str, str]:
    """``rows``: row name (an option's flag, an argument's NAME, a subcommand) -> its help text.
    The text of each row's last column (help) over all its lines, found from where that help text
    starts on the row's first line; whitespace removed (a word folded over two lines reads whole)."""
    lines = [line.rstrip().removesuffix("│") for line in text.splitlines()]
    starts = {}
    for name in rows:
        hits = [i for i, line in enumerate(lines) if re.match(rf"^│ {{1,8}}(\* +)?{re.escape(name)}(\s|,|$)", line)]  # in the first column
        assert hits, f"{name!r} has no row that starts with it (its name cut or folded?)\n{text}"
        starts[name] = hits[0]
    ends = sorted({*starts.values(), *(i for i, line in enumerate(lines) if line.startswith(("╰", "╭")))})
    cells = {}
    for name, expected in rows.items():
        first, wanted = lines[starts[name]], " ".join(expected.split())
        xs = [x for x in range(1, len(first)) if first[x - 1] == " " and first[x] != " "
              and (wanted.startswith(rest := " ".join(first[x:].split())) or rest.startswith(wanted))]
        assert xs, f"{name}: its help does not start on its row: {first!r}"
        end = next(i for i in ends if i > starts[name])
        cells[name] = _squeezed("".join(line[xs[0]:] for line in lines[starts[name]:end]))
    return cells


@pytest.mark.parametrize("columns", [80, 250])
def test_help_shows_no_raw_types_and_cuts_nothing(columns):
    """Every command's help, at 80 columns (the default without a terminal) and wide: no typer type
    labels (`<int range>`, `<str>`, `<list[int]>`), no click range suffixes (`[x>=1]`: ranges read
    `[range: ...]`), no `…`, and every option's, argument's and subcommand's help text shown whole."""
    for path, command in _commands():  # a fresh tree: help texts as written
        text = _rendered(path, columns)
        for bad in NOT_IN_HELP:
            assert bad not in text, f"mimic {' '.join(path)} --help ({columns} columns) shows {bad!r}:\n{text}"
        ctx = command.make_context("mimic", [], resilient_parsing=True)
        rows = {}
        for param in command.get_params(ctx):
            if getattr(param, "hidden", False) or not param.help:
                continue
            if isinstance(param, typer.core.TyperArgument):
                rows[param.metavar] = param.help
                assert param.nargs == 1 or param.metavar.endswith("..."), param.metavar  # FILES...
            else:
                rows[next((o for o in param.opts if o.startswith("--")), param.opts[0])] = param.help
        if hasattr(command, "list_commands"):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                rows[name] = " ".join(sub.help.split("\n\n")[0].split())
        cells = _cells(text, rows)
        for name, expected in rows.items():
            assert _squeezed(expected) in cells[name], f"mimic {' '.join(path)} {name} ({columns} columns): help cut:\n{text}"


def test_value_labels_say_what_to_type():
    demo = _help(["demo"])
    assert re.search(r"--backend\s+torch\|onnxruntime\s", _row(demo, "--backend"))
    assert re.search(r"--preset\s+toy\|tiny\s", _row(demo, "--preset"))
    frames = _row(demo, "--frames")
    assert re.search(r"--frames\s+<int>\s", frames) and "[range: >= 1]" in frames
    assert re.search(r"--address\s+auto\|HOST:PORT\s", _row(_help(["farm"]), "--address"))
    window = _row(_help(["bench"]), "--window")
    assert re.search(r"--window\s+<int>\s", window) and "repeat" in window and "[range: >= 2]" in window
    report = _help(["bench", "report"])
    assert "Usage: mimic bench report [OPTIONS] FILES..." in report
    assert re.search(r"FILES\.\.\.\s+<path>\s", _row(report, "FILES..."))
    assert re.search(r"--args\s+'OPTIONS'\s", _row(_help(["farm", "openjd-template"]), "--args"))


def test_settings_show_range_and_the_chosen_preset_default():
    text = _help(["run"])
    steps = _row(text, "--steps")
    assert "[range: 1..1000]" in steps and "25 with --weights" in steps and "with --preset tiny" in steps
    tiny = _row(_help(["run", "--preset", "tiny"]), "--steps")
    from mimic.model.presets import default_generation

    assert f"[default with --preset tiny: {default_generation('tiny').steps}]" in tiny
    assert "released" not in _row(text, "--steps")


@pytest.mark.parametrize("argv, suggestion", [
    (["bild-engines"], "build-engines"),
    (["bench", "reprt", "x"], "report"),
    (["farm", "openjd-templat"], "openjd-template"),
    (["run", "--preest", "tiny"], "--preset"),
    (["build-engines", "--workspace-gi", "4"], "--workspace-gib"),
])
def test_typos_suggest_the_right_name(argv, suggestion):
    result = RUNNER.invoke(cli.app, argv, env=WIDE)
    assert result.exit_code == 2
    assert suggestion in result.output


def test_every_subcommand_typo_is_corrected():
    for path, command in COMMANDS:
        if not path or len(path[-1]) < 4:
            continue
        typo = path[-1][:1] + path[-1][2:]  # second letter dropped
        result = RUNNER.invoke(cli.app, [*path[:-1], typo], env=WIDE)
        assert f"Did you mean '{path[-1]}'" in result.output, (path, result.output)


def test_version_is_the_installed_distributions():
    import importlib.metadata as md

    result = RUNNER.invoke(cli.app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"mimic {md.version('mimic-engine')}"


def test_demo_choices_are_real_presets_and_backends():
    assert set(conventions.DEMO_PRESETS) <= set(conventions.PRESETS) and conventions.DEMO_PRESETS[0] == "toy"  # the default first
    assert set(conventions.DEMO_BACKENDS) == set(conventions.BACKENDS) - {"tensorrt"}


def test_choices_are_the_real_tuples():
    from mimic.model.presets import PRESETS, PRESET_NAMES
    from mimic.runtime import api
    from mimic.runtime.backend_ort import OnnxRuntimeBackend
    from mimic.runtime.backend_torch import TorchBackend

    assert conventions.PRESETS == PRESET_NAMES == tuple(PRESETS)
    assert api.BACKENDS == conventions.BACKENDS and {TorchBackend.name, OnnxRuntimeBackend.name} < set(conventions.BACKENDS)


# ------------------------------------------------------------------------------ sizes, devices
def test_sizes_are_width_by_height():
    from mimic.engine.build import shape_hw

    assert conventions.parse_size("1024x576", "--size") == (576, 1024)  # (height, width): landscape
    assert shape_hw("landscape-576") == (576, 1024) and shape_hw("576x1024") == (1024, 576)
    with pytest.raises(InputError, match=r"--size: shape 100x64 \(WIDTHxHEIGHT\): width and height must be positive multiples of 64"):
        conventions.parse_size("100x64", "--size")
    with pytest.raises(InputError, match="WIDTHxHEIGHT"):
        conventions.parse_size("wide", "--scaling-size")


@pytest.mark.parametrize("value, ok", [("cpu", True), ("cuda", True), ("cuda:1", True), ("gpu", False), ("cuda:x", False), ("cpu,cpu", False)])
def test_device_convention(value, ok):
    if ok:
        assert conventions.check_device(value) == value
    else:
        with pytest.raises(InputError, match="use cpu or cuda"):
            conventions.check_device(value)


def test_pose_rejects_a_bad_device_before_reading_anything(tmp_path):
    code, out = _main(["pose", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "p.npz"), "--device", "gpu"])
    assert code == InputError.exit_code and out == "error: --device: unknown device 'gpu'; use cpu or cuda[:N]"


# ---------------------------------------------------------------------- options checked first
def _main(argv) -> tuple[int, str]:
    """Through the real entry point; (exit code, last line of stderr)."""
    import contextlib

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            cli.main(argv)
            code = 0
        except SystemExit as exit_:
            code = exit_.code
    lines = err.getvalue().strip().splitlines()
    return code, lines[-1] if lines else ""


def test_export_checks_the_opset_before_loading_weights(tmp_path, monkeypatch):
    import mimic.export.exporter as export_weight_set

    monkeypatch.setattr(export_weight_set, "resolve_layout", lambda *a, **k: pytest.fail("weights loaded before the opset was checked"))
    code, line = _main(["export", "--preset", "tiny", "--out", str(tmp_path / "o"), "--opset", "17"])
    assert code == InputError.exit_code and line.startswith("error: --opset 17 is not supported") and "18, 19, 20" in line
    assert not (tmp_path / "o").exists()


def test_build_engines_checks_compute_capabilities_before_the_export(tmp_path, monkeypatch):
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed")
    import mimic.engine.build as engine_command

    monkeypatch.setattr(engine_command, "export_onnx", lambda *a, **k: pytest.fail("exported before the options were checked"))
    out = tmp_path / "e"
    code, line = _main(["build-engines", "--preset", "tiny", "--target", "tensorrt-rtx", "--out", str(out), "--compute-capability", "9.0"])
    assert code == EngineError.exit_code and "cannot target compute capability 9.0" in line and "8.6" in line
    code, line = _main(["build-engines", "--preset", "tiny", "--out", str(out), "--compute-capability", "8.6"])
    assert code == InputError.exit_code and "--compute-capability is a --target tensorrt-rtx option" in line
    assert not out.exists()


def test_workspace_option_is_named_in_gib_and_keeps_its_old_name(monkeypatch):
    import mimic.engine.build as engine_command

    seen = []
    monkeypatch.setattr(engine_command, "build_engine_set", lambda out, **kw: seen.append(kw["workspace_gb"]))
    for flag in ("--workspace-gib", "--workspace-gb"):
        assert RUNNER.invoke(cli.app, ["build-engines", "--preset", "tiny", "--out", "x", flag, "4"]).exit_code == 0
    assert seen == [4.0, 4.0]
    assert "--workspace-gb" not in _help(["build-engines"])


# ---------------------------------------------------------------------------------- hints
def _backticked(message: str) -> str:
    commands = re.findall(r"`([^`]+)`", message)
    assert commands, message
    return commands[0]


def test_rebuild_hint_carries_the_build_options_and_parses(tmp_path, monkeypatch):
    """A plan made by `build-engines --preset tiny --target tensorrt-rtx ...` goes bad: the error's
    command, pasted into mimic, runs build-engines with those same options."""
    from mimic.engine.build import rebuild_args
    from mimic.engine.gpu import RuntimeInfo, TrtInfo
    from mimic.engine.store import REBUILD_FIELD, EngineStore
    import mimic.engine.build as engine_command

    store = EngineStore(tmp_path / "engines")
    args = rebuild_args(preset="tiny", weights=None, svd=None, checkpoint=None, det_model=None, pose_model=None, shapes=None, window=16,
                        target="tensorrt-rtx", optimization_level=2, workspace_gb=4.0, timing_cache=None, use_timing_cache=True,
                        refittable=False, compute_capabilities=("8.6",))
    key_inputs = {"tensorrt": {"flavour": "tensorrt-rtx", "version": "1.7"}, "gpu": {"name": "any", "compute_capability": ["8.6"]}}
    store.publish("pose_net", b"plan bytes", "key", key_inputs, extra={REBUILD_FIELD: args})
    store.plan_path("pose_net").write_bytes(b"plan")  # truncated
    with pytest.raises(EngineError) as err:
        store.verify("pose_net", RuntimeInfo(TrtInfo("tensorrt-rtx", "tensorrt_rtx", "1.7"), None), require_gpu=False)
    command = _backticked(str(err.value))
    assert command.startswith(f"mimic build-engines --out {store.root} ")

    seen = {}
    monkeypatch.setattr(engine_command, "build_engine_set", lambda out, **kw: seen.update(kw, out=out))
    result = RUNNER.invoke(cli.app, shlex.split(command)[1:])  # pasted (without the program name)
    assert result.exit_code == 0, result.output
    assert (seen["out"], seen["preset"], seen["target"], seen["window"], seen["optimization_level"], seen["workspace_gb"],
            seen["compute_capabilities"]) == (store.root, "tiny", "tensorrt-rtx", 16, 2, 4.0, ("8.6",))


@pytest.mark.parametrize("gpu_cc, target, sms", [("8.9", "tensorrt-rtx", ("8.9",)), ("9.0", "tensorrt", ())])
def test_foreign_gpu_hint_targets_this_gpu(tmp_path, monkeypatch, gpu_cc, target, sms):
    """An RTX plan built for other SMs: the pasted hint builds for this GPU (TensorRT-RTX for a
    consumer GPU, full TensorRT for a data-centre one, which TensorRT-RTX does not target)."""
    from mimic.engine.gpu import GpuInfo, RuntimeInfo, TrtInfo
    from mimic.engine.store import REBUILD_FIELD, EngineStore
    import mimic.engine.build as engine_command

    store = EngineStore(tmp_path / "engines")
    args = ["--preset", "tiny", "--window", "16", "--target", "tensorrt-rtx", "--compute-capability", "8.6"]
    key_inputs = {"tensorrt": {"flavour": "tensorrt-rtx", "version": "1.7"}, "gpu": {"name": "any", "compute_capability": ["8.6"]}}
    store.publish("unet", b"plan", "key", key_inputs, extra={REBUILD_FIELD: args})
    with pytest.raises(EngineError, match="not among the plan's targets") as err:
        store.verify("unet", RuntimeInfo(TrtInfo("tensorrt-rtx", "tensorrt_rtx", "1.7"), GpuInfo(0, "GPU", gpu_cc, 1 << 34)))
    seen = {}
    monkeypatch.setattr(engine_command, "build_engine_set", lambda out, **kw: seen.update(kw))
    assert RUNNER.invoke(cli.app, shlex.split(_backticked(str(err.value)))[1:]).exit_code == 0
    assert (seen["preset"], seen["target"], seen["compute_capabilities"]) == ("tiny", target, sms)


def test_gated_repo_hint_names_a_command_that_exists(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    from mimic.errors import WeightsError
    from mimic.model.weights import fetch_svd

    def gated(*a, **k):
        raise GatedRepoError.__new__(GatedRepoError)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", gated)
    with pytest.raises(WeightsError) as err:
        fetch_svd("stabilityai/stable-video-diffusion-img2vid-xt-1-1")
    command = _backticked(str(err.value))
    assert command == "hf auth login"
    import subprocess
    import sys
    from pathlib import Path

    hf = Path(sys.executable).with_name("hf")  # the console script of the installed huggingface_hub
    if not hf.is_file():
        pytest.skip("no hf console script beside this interpreter")
    proc = subprocess.run([str(hf), *shlex.split(command)[1:], "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "login" in proc.stdout.lower(), proc.stderr


@pytest.mark.parametrize("threads, advised", [(None, True), (4, True), (1, False)])
def test_busy_machine_note_advises_threads_1_only_when_not_given(threads, advised):
    from mimic.benchmarks.stage_bench import busy_machine_note

    note = busy_machine_note(3.0, 2, threads)
    assert "CPU timings will be noisy" in note and ("--threads 1 is steadier" in note) == advised
    assert busy_machine_note(0.5, 2, None) is None


# ------------------------------------------------------------------------- clean output
def test_third_party_float32_warning_goes_to_debug(capsys):
    from mimic.logs import setup_cli_logging

    noise = "There are modules in PoseUNet that should be kept in float32: []. Casting directly with `to()` ..."
    theirs = io.StringIO()
    library = logging.getLogger("diffusers")  # what diffusers sets up: its own stderr handler, no propagation
    handler = logging.StreamHandler(theirs)
    library.addHandler(handler)
    try:
        setup_cli_logging()
        source = logging.getLogger("diffusers.models.modeling_utils")
        source.warning(noise)
        source.warning("something the user must see")
        assert theirs.getvalue() == "something the user must see\n"
        setup_cli_logging(verbose=True)
        source.warning(noise)
        assert "mimic.third_party" not in theirs.getvalue() and "should be kept in float32" in capsys.readouterr().out
    finally:
        library.removeHandler(handler)
        setup_cli_logging()


def test_warnings_go_to_stderr_and_info_to_stdout(capsys):
    """`mimic ... > out.txt` keeps warnings on the terminal; a command whose stdout is data
    (`mimic pose`'s JSON) sends its INFO lines to stderr too, until the next command starts."""
    from mimic.logs import info_to_stderr, setup_cli_logging

    log = logging.getLogger("mimic.test_cli_conventions")
    try:
        setup_cli_logging()
        log.info("loaded in 1.0 s")
        log.warning("resolution 100 is not a multiple of 64; using 128")
        out, err = capsys.readouterr()
        assert out == "loaded in 1.0 s\n" and err == "warning: resolution 100 is not a multiple of 64; using 128\n"
        info_to_stderr()
        log.info("loaded in 1.0 s")
        log.warning("odd")
        out, err = capsys.readouterr()
        assert out == "" and err == "loaded in 1.0 s\nwarning: odd\n"
        setup_cli_logging()  # what every `mimic` command starts with
        log.info("back")
        assert capsys.readouterr().out == "back\n"
    finally:
        setup_cli_logging()


def test_every_line_on_either_stream_ends_an_open_progress_line(capsys):
    """A bar (stderr) left open: an INFO line (stdout), a warning (stderr) and, with
    info_to_stderr(), an INFO line on stderr each start on a line of their own."""
    import sys

    from mimic.logs import info_to_stderr, progress_line_open, setup_cli_logging

    log = logging.getLogger("mimic.test_cli_conventions")
    try:
        setup_cli_logging()
        for step, emit in enumerate((lambda: log.info("info"), lambda: log.warning("w"), lambda: (info_to_stderr(), log.info("info2")))):
            sys.stderr.write(f"denoising {step}/10")
            progress_line_open(sys.stderr, True)
            emit()
        out, err = capsys.readouterr()
        assert out == "info\n" and err == "denoising 0/10\ndenoising 1/10\nwarning: w\ndenoising 2/10\ninfo2\n"
    finally:
        setup_cli_logging()


def test_an_error_starts_on_its_own_line_after_a_progress_bar(monkeypatch, capsys):
    """The real entry point: a job fails with NaN while its progress bar is drawn."""
    from mimic.errors import NumericsError
    from mimic.runtime.progress import ProgressHooks

    app = typer.Typer()

    @app.command()
    def boom() -> None:
        hooks = ProgressHooks("[1/1] out.mp4", tty=True)
        hooks.on_progress(3, 10)
        raise NumericsError("NaN in the latents after step 3")

    monkeypatch.setattr(cli, "app", app)
    with pytest.raises(SystemExit) as exit_:
        cli.main([])
    err = capsys.readouterr().err
    assert exit_.value.code == NumericsError.exit_code
    assert "\nerror: NaN in the latents after step 3\n" in err and "/10 [" in err  # the bar, then the error on a line of its own


def test_run_report_lists_the_printed_rounding_warning(tmp_path):
    from mimic.runtime.report import add_run_warnings, write_report
    from mimic.runtime.jobs import Job
    from mimic.runtime.report import JobReport
    from mimic.model.config import GenerationConfig
    from mimic.model.config import round_resolution

    resolution, warning = round_resolution(100)
    facts = {"backend": "onnxruntime"}
    add_run_warnings(facts, [warning])
    job = Job(reference=tmp_path / "a.png", driving=tmp_path / "d.mp4", out=tmp_path / "o.mp4")
    path = write_report(job, JobReport(job, warnings=["padded"]), GenerationConfig(resolution=resolution), facts)
    assert json.loads(path.read_text())["warnings"] == ["resolution 100 is not a multiple of 64; using 128", "padded"]


def test_onnxruntime_sessions_are_created_when_the_backend_loads(tmp_path):
    """Loading creates every session, so no job's phase timings hold session creation."""
    import onnx
    from onnx import TensorProto, helper

    from mimic.runtime.backend_ort import OnnxRuntimeBackend

    graphs = {}
    for name in ("a", "b"):
        node = helper.make_node("Relu", ["x"], ["y"])
        g = helper.make_graph([node], name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
        graphs[name] = tmp_path / f"{name}.onnx"
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), graphs[name])
    backend = OnnxRuntimeBackend(graphs)
    assert set(backend._sessions) == {"a", "b"}
    assert OnnxRuntimeBackend(graphs, preload=False)._sessions == {}
