"""The package's layers, read from its source: every import (at module level,
under ``TYPE_CHECKING`` or inside a function) points down or sideways, never up;
no two modules import each other, however indirectly; and no module uses
another module's private (``_x``) names.

The source read is the installed package's, so the test checks what ships.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import fairqueue

PACKAGE = Path(fairqueue.__file__).resolve().parent

# Bottom first. A module may import from its own layer and the layers below it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("errors", "kinds", "records", "retry", "limits", "validate", "dispatcher",
              "settings", "cron", "conservation", "plot", "handlers", "retention", "tracing", "logs")),
    ("declarations", ("jobs", "processor")),
    ("storage", ("storage",)),
    ("observation", ("observe", "alerts")),
    ("enqueue", ("control", "enqueue", "tenants")),
    ("runtime", ("runtime", "testing")),
    ("app", ("app",)),
    ("surfaces", ("cli", "dashboard", "demo", "__main__", "__init__")),
]

# The native module is the package's private core: every layer may use it.
NATIVE = "_core"
# Public names that merely start with an underscore: named tuples' methods, os._exit.
PUBLIC_UNDERSCORED = {"_replace", "_asdict", "_fields", "_make", "_field_defaults", "_exit"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    top = module.split(".")[0]
    for index, (_, members) in enumerate(LAYERS):
        if top in members:
            return index
    raise AssertionError(f"module fairqueue.{module} has no layer: add it to LAYERS in {__file__}")


def package_of(module: str) -> str:
    """The package a module's relative imports start from."""
    is_package = MODULES[module].name == "__init__.py"
    return module if is_package else module.rpartition(".")[0]


def imports(module: str) -> Iterator[tuple[str, list[str], int]]:
    """(imported fairqueue module, names taken from it, line) for every import in ``module``."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("fairqueue."):
                    yield alias.name.removeprefix("fairqueue."), [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_of(module).split(".") if package_of(module) else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module == "fairqueue" or (node.module or "").startswith("fairqueue."):
                target = (node.module or "").removeprefix("fairqueue").removeprefix(".")
            else:
                continue
            names = [a.name for a in node.names]
            submodules = [f"{target}.{n}" if target else n for n in names]
            taken_modules = [s for s in submodules if s in MODULES or s == NATIVE]
            if taken_modules:  # ``from fairqueue import jobs``: imports of modules
                for s in taken_modules:
                    yield s, [], node.lineno
                names = [n for n, s in zip(names, submodules) if s not in taken_modules]
                if not names:
                    continue
            yield target or "__init__", names, node.lineno


def edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for target, _, _ in imports(module):
            if target != NATIVE and target != module:
                assert target in MODULES, f"fairqueue.{module} imports fairqueue.{target}, which does not exist"
                graph[module].add(target)
    return graph


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        layer_of(module)


def test_no_import_points_up_a_layer() -> None:
    upward = [
        f"fairqueue.{module} ({LAYERS[layer_of(module)][0]}) imports fairqueue.{target} "
        f"({LAYERS[layer_of(target)][0]}) at line {line}"
        for module in MODULES
        for target, _, line in imports(module)
        if target != NATIVE and layer_of(target) > layer_of(module)
    ]
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_no_import_circle() -> None:
    graph = edges()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                circle = stack[stack.index(target):] + [target]
                pytest.fail("import circle: " + " -> ".join(f"fairqueue.{m}" for m in circle))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def defined_private_names(tree: ast.AST) -> set[str]:
    """Every ``_name`` a module defines: functions, classes, globals, attributes it assigns."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    for node in ast.walk(tree):  # __slots__ = ("_a", "_b")
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets):
            names.update(e.value for e in ast.walk(node.value) if isinstance(e, ast.Constant) and isinstance(e.value, str))
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_private_name_crosses_a_module_border() -> None:
    found = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for target, names, line in imports(module):
            found += [f"fairqueue.{module}:{line} imports {n} from fairqueue.{target}" for n in names if is_private(n)]
        own = defined_private_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and is_private(node.attr) and node.attr not in own | PUBLIC_UNDERSCORED:
                found.append(f"fairqueue.{module}:{node.lineno} uses .{node.attr}, defined in another module")
    assert not found, "private names used across modules:\n" + "\n".join(found)


def test_the_checks_see_what_they_are_meant_to(tmp_path: Path) -> None:
    # The import reader must see imports under TYPE_CHECKING and inside functions.
    sample = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fairqueue.app import FairQueue\n" \
             "def f():\n    from fairqueue import jobs\n    return jobs._x\n"  # fmt: skip
    tree = ast.parse(sample)
    found = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert found == {"typing", "fairqueue.app", "fairqueue"}
    assert "_x" not in defined_private_names(tree)
