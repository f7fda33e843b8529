"""The shape of ``service/``: layers that only import downwards, no import cycle (lazy imports included),
transports that never reach into the model owners' internals, one tensor decoder, small classes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parent.parent / "service"
# The layers a request passes through, top down; a module may import only from layers below its own (and
# from its own package). The root package (version, server name) is the ground under everything.
LAYERS = {
    "service.__main__": 8,
    "service.cli": 7,
    "service.app": 6,
    "service.transports": 5,
    "service.protocol": 4,
    "service.codecs": 4,
    "service.inference": 3,
    "service.hosting": 2,
    "service.core": 1,
    "service": 0,
}
# What only the model owners and their status views may know of: the routes and servicers see the table.
OWNERS_INTERNALS = ("service.hosting.loader", "service.hosting.versions", "service.hosting.reconciler")
MAX_CLASS_LINES = 200
MAX_TOP_MODULES = 12


def _module_name(path: Path) -> str:
    parts = path.relative_to(SERVICE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(SERVICE.rglob("*.py"))}


def _imports(path: Path) -> set[str]:
    """Every ``service`` module a file imports, at module level or inside a function (a lazy import)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        found |= {name for name in names if name in MODULES}
    return found


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _layer(module: str) -> tuple[str, int]:
    package = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return package, LAYERS[package]


def test_no_import_cycles_lazy_imports_included():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


def test_no_lazy_imports_in_the_service():
    """Imports sit at the top of each module, where the layering can be read."""
    lazy = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        top = {id(node) for node in tree.body}
        lazy += [
            f"{name}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("service") and id(node) not in top
        ]
    assert not lazy, f"imports of service modules inside functions: {lazy}"


def test_imports_only_go_down_between_layers():
    upward = []
    for module, targets in GRAPH.items():
        package, rank = _layer(module)
        for target in targets:
            target_package, target_rank = _layer(target)
            if target_package != package and target_rank >= rank and target_package != "service":
                upward.append(f"{module} → {target}")
    assert not upward, "imports that go up or sideways: " + ", ".join(sorted(upward))


def test_transports_see_the_table_not_the_owners_internals():
    leaks = []
    for module, targets in GRAPH.items():
        if not module.startswith("service.transports"):
            continue
        leaks += [f"{module} → {t}" for t in targets if t.startswith(OWNERS_INTERNALS)]
        if "grpc" in module:
            leaks += [f"{module} → {t}" for t in targets if t.startswith("service.transports.rest_")]
    assert not leaks, f"routes or servicers importing model internals or REST routes: {leaks}"


def _string_constants(value: str) -> list[str]:
    return [
        f"{name}:{node.lineno}"
        for name, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value == value
    ]


@pytest.mark.parametrize("dtype", ["FP64", "float64", "double_val", "fp64_contents"])
def test_one_dtype_table(dtype: str):
    assert len(_string_constants(dtype)) == 1, f"{dtype!r} is named in several places: {_string_constants(dtype)}"


def test_one_rank_limit_and_one_pixel_range_check():
    texts = {name: path.read_text() for name, path in MODULES.items()}
    rank_limits = [name for name, text in texts.items() if "MAX_RANK =" in text]
    assert rank_limits == ["service.core.tensors"]
    range_checks = [
        f"{name}:{node.lineno}"
        for name, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Compare)
        and any(isinstance(c, ast.Constant) and c.value == 255 for c in node.comparators)
    ]
    assert len(range_checks) == 1, f"0–255 checked in several places: {range_checks}"


def test_classes_are_small_and_the_top_level_is_short():
    large = [
        f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for name, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES
    ]
    assert not large, f"classes over {MAX_CLASS_LINES} lines: {large}"
    top = [path.name for path in SERVICE.glob("*.py")]
    assert len(top) <= MAX_TOP_MODULES, top


def test_every_layer_says_what_it_is():
    for package in ("cli", "codecs", "core", "hosting", "inference", "protocol", "transports"):
        module = ast.parse((SERVICE / package / "__init__.py").read_text())
        docstring = ast.get_docstring(module)
        assert docstring and len(docstring.split()) >= 15, f"service/{package}/__init__.py needs a docstring"


def test_every_module_is_in_a_layer():
    unplaced = [name for name in MODULES if _layer(name)[0] == "service" and name != "service"]
    assert not unplaced, unplaced
