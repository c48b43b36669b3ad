"""The lab's modules import each other in one direction only, and only by public names.

Read from the source with ``ast`` (nothing is imported), so a function-level import, the
usual way to hide a cycle, counts as much as one at the top of a module.
"""

import ast
from pathlib import Path

import pytest

import optimlab.lab

LAB = Path(optimlab.lab.__file__).parent
PACKAGE = "optimlab.lab"


def _module_name(path: Path) -> str:
    parts = path.relative_to(LAB).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGE, *parts))


MODULES = {_module_name(p): p for p in sorted(LAB.rglob("*.py"))}


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module name of ``from <node.module> import ...`` inside ``module``."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    # In a package's __init__ the package itself is level 1; in a module, its parent is.
    base = base if _is_package(module) else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _lab_imports(module: str) -> list[tuple[str, str | None, int]]:
    """``(imported module, imported name or None, line)`` for every import of a lab module."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names if a.name in MODULES]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            if source not in MODULES:
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in MODULES:  # from optimlab.lab import plots
                    found.append((submodule, None, node.lineno))
                else:
                    found.append((source, alias.name, node.lineno))
    return found


def _exports() -> dict[str, str]:
    """``optimlab.lab``'s lazy public names: importing one imports the module behind it."""
    tree = ast.parse(MODULES[PACKAGE].read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "_EXPORTS":
            return ast.literal_eval(node.value)
    raise AssertionError("optimlab.lab has no _EXPORTS")


def _graph() -> dict[str, set[str]]:
    exports = _exports()
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for module in MODULES:
        for target, name, _ in _lab_imports(module):
            if target == PACKAGE and name in exports:
                target = exports[name]  # from optimlab.lab import compare
            if target != module:
                graph[module].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def test_the_checker_sees_a_cycle_and_a_private_import():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    node = ast.parse("from ..files import _x").body[0]
    assert _resolve("optimlab.lab.problems.base", node) == "optimlab.lab.files"


def test_no_import_cycle_inside_the_lab():
    assert _cycles(_graph()) == []


def _private_uses(module: str) -> list[str]:
    """Private names of other lab modules that ``module`` imports or reads as attributes."""
    problems = []
    imports = _lab_imports(module)
    for target, name, line in imports:
        if target != module and name is not None and name.startswith("_"):
            problems.append(f"{module}:{line} imports {target}.{name}")
    # `from optimlab.lab import files` then `files._x`: an attribute of a lab module alias.
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                full = alias.name
                if isinstance(node, ast.ImportFrom):
                    full = f"{_resolve(module, node)}.{alias.name}"
                if full in MODULES and full != module:
                    aliases[alias.asname or alias.name.split(".")[-1]] = full
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            problems.append(f"{module}:{node.lineno} reads {aliases[node.value.id]}.{node.attr}")
    return problems


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_crosses_a_module_boundary(module):
    assert _private_uses(module) == []


def test_argparse_internals_are_not_used():
    for module, path in MODULES.items():
        text = path.read_text(encoding="utf-8")
        for private in ("._subparsers", "._actions", "._group_actions"):
            assert private not in text, f"{module} uses argparse's {private}"


def test_default_out_is_defined_once():
    owners = []
    for module, path in MODULES.items():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            targets = node.targets if isinstance(node, ast.Assign) else []
            if isinstance(node, ast.AnnAssign):
                targets = [node.target]
            if any(isinstance(t, ast.Name) and t.id == "DEFAULT_OUT" for t in targets):
                owners.append(module)
    assert owners == ["optimlab.lab.commands"]


def test_every_public_name_resolves():
    for name in optimlab.lab.__all__:
        assert getattr(optimlab.lab, name) is not None
