"""The package's import graph: layers run one way (bottom to top), no cycles, no production module
imports a test helper, and stage/tensor names are spelled only in ``mimic.spec``."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Bottom to top. A module may import its own package and anything in a lower layer, nothing higher.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("mimic", "mimic.errors", "mimic.files", "mimic.logs", "mimic.spec", "mimic.fingerprint", "mimic.ort_session"),
    ("mimic.model",),
    ("mimic.mimicmotion_ref",),  # the reference pipeline: tests and benchmarks compare against it
    ("mimic.media",),
    ("mimic.pose",),
    ("mimic.toy",),
    ("mimic.export",),
    ("mimic.engine",),
    ("mimic.runtime",),
    ("mimic.farm",),
    ("mimic.comfyui",),  # the ComfyUI node pack, over the Python API
    ("mimic.benchmarks",),
    ("mimic.commands",),
    ("mimic.cli",),
)
LAYER_OF = {unit: i for i, units in enumerate(LAYERS) for unit in units}
SPEC_NAMES_PACKAGES = ("runtime", "engine", "export", "benchmarks", "pose", "media", "commands", "farm")


def production_modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in ("tests", ".venv", "build") or rel.parts[0].startswith(".") or rel.parts[0].endswith(".egg-info"):
            continue
        name = ".".join(("mimic", *rel.with_suffix("").parts))
        mods[name.removesuffix(".__init__")] = path
    return mods


def unit_of(module: str) -> str:
    """The layer unit of a module: its top-level package (``mimic.runtime``) or top-level module."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def imports_of(path: Path, module: str, known: dict[str, Path]) -> set[str]:
    """Every ``mimic`` module imported anywhere in the file (module level or inside functions)."""
    out = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            if name == "mimic" or name.startswith("mimic."):
                while name not in known and "." in name:
                    name = name.rsplit(".", 1)[0]
                out.add(name)
    return out - {module}


def import_graph() -> dict[str, set[str]]:
    mods = production_modules()
    return {m: imports_of(p, m, mods) for m, p in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state and (found := visit(w)):
                return found
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for a, targets in graph.items():
        for b in targets:
            ua, ub = unit_of(a), unit_of(b)
            if ua == ub:
                continue
            if ua not in LAYER_OF or ub not in LAYER_OF:
                bad.append(f"{a} -> {b} (unit {ua if ua not in LAYER_OF else ub} is in no layer)")
            elif LAYER_OF[ub] > LAYER_OF[ua]:
                bad.append(f"{a} -> {b}")
    return sorted(bad)


def test_import_graph_has_no_cycle():
    assert find_cycle(import_graph()) is None


def test_imports_only_go_down_the_layers():
    assert upward_imports(import_graph()) == []


def test_the_checks_can_fail():
    """The walker sees a planted upward import and a planted cycle (so the two tests above can fail)."""
    graph = import_graph()
    graph["mimic.spec"] = graph["mimic.spec"] | {"mimic.runtime.pipeline"}
    assert "mimic.spec -> mimic.runtime.pipeline" in upward_imports(graph)
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert "mimic.runtime.pipeline" in graph["mimic.runtime.executor"]  # function-level imports are seen too


def test_no_production_module_imports_test_helpers():
    for module, path in production_modules().items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.startswith(("tests", "_runtime_helpers", "_export_fixtures", "conftest")) for n in names), module


def _spec_names() -> set[str]:
    from mimic.spec import ALL_STAGES, StageName, TensorName

    names = {v for k, v in vars(StageName).items() if not k.startswith("_")}
    names |= {v for k, v in vars(TensorName).items() if not k.startswith("_")}
    assert names >= set(ALL_STAGES)
    # Words too common to police as literals (JSON keys, PyAV/ONNX vocabulary): checked by their spec use.
    return names - {"image", "images", "input", "output", "frames", "latents", "sample", "timestep"}


@pytest.mark.parametrize("package", SPEC_NAMES_PACKAGES)
def test_stage_and_tensor_names_are_spelled_only_in_the_spec(package):
    names = _spec_names()
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert found == []
