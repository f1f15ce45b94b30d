"""The layout's rules, checked on the import graph of mpiml (docs/architecture.md).

Every import counts, at module level or inside a function: no cycle among modules or among
packages, mpi4py only in ``comm/``, each package importing only the layers below it (so
``models/`` imports no other mpiml package), nothing importing ``cli/`` but the ``python -m``
entry points, no private name imported from another package, no module over 500 lines.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "mpiml"
MAX_LINES = 500
#: The packages (and top-level modules) each layer may import; "mpiml" is the package itself
#: (``__version__``).
ALLOWED = {
    "comm": set(),
    "models": {"kernels"},
    "kernels": set(),
    "optim": set(),
    "config": {"comm", "models"},
    "files": {"models"},
    "data": {"comm", "config", "files", "models"},
    "run": {"comm", "config", "files", "data"},
    "fit": {"comm", "config", "files", "data", "models", "optim", "run"},
    "estimators": {"comm", "config", "files", "data", "models", "fit", "run"},
    "cli": {"comm", "config", "files", "data", "models", "fit", "run", "estimators"},
}
#: ``python -m`` entry points: two lines that call the command line.
ENTRY_POINTS = {"mpiml.__main__", "mpiml.train", "mpiml.predict", "mpiml.plot",
                "mpiml.data.__main__", "mpiml.config.__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in ROOT.rglob("*.py")}


def imports_of(name: str, path: Path, known: dict) -> list[tuple[str, list[str]]]:
    """(imported module, names imported from it) for every import statement of a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [alias.name for alias in node.names]
            submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in known]
            plain = [n for n in names if f"{base}.{n}" not in known]
            if plain or not submodules:
                found.append((base, plain))
            found += [(sub, []) for sub in submodules]
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    edges = {}
    for name, path in known.items():
        edges[name] = {target for target, _ in imports_of(name, path, known)
                       if target in known and target != name}
    return edges


def layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "mpiml"


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the directed graph as a list of nodes, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_module_imports_itself_around_a_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle)


def test_no_cycle_between_packages():
    packages: dict[str, set[str]] = {}
    for source, targets in graph().items():
        if source in ENTRY_POINTS:
            continue
        packages.setdefault(layer(source), set()).update(
            layer(t) for t in targets if layer(t) != layer(source))
    cycle = find_cycle(packages)
    assert cycle is None, " -> ".join(cycle)


def test_each_layer_imports_only_the_layers_below_it():
    wrong = []
    for source, targets in graph().items():
        if source in ENTRY_POINTS or layer(source) == "mpiml":
            continue
        allowed = ALLOWED[layer(source)] | {layer(source), "mpiml"}
        wrong += [f"{source} imports {t}" for t in sorted(targets) if layer(t) not in allowed]
    assert not wrong, "\n".join(wrong)


def test_only_the_entry_points_import_the_command_lines():
    wrong = [f"{source} imports {t}" for source, targets in graph().items()
             for t in targets if layer(t) == "cli" and layer(source) != "cli"
             and source not in ENTRY_POINTS]
    assert not wrong, "\n".join(wrong)


def test_mpi4py_is_imported_in_the_comm_layer_only():
    known = modules()
    wrong = [name for name, path in known.items()
             if layer(name) != "comm"
             and any(target.split(".")[0] == "mpi4py"
                     for target, _ in imports_of(name, path, known))]
    assert not wrong, wrong


def test_no_private_name_crosses_a_package():
    known = modules()
    wrong = []
    for name, path in known.items():
        for target, names in imports_of(name, path, known):
            if target.startswith("mpiml") and layer(target) != layer(name):
                wrong += [f"{name}: from {target} import {n}" for n in names
                          if n.startswith("_") and n != "__version__"]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", sorted(modules()))
def test_module_is_short_and_says_what_it_is_for(name):
    path = modules()[name]
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_LINES, f"{path}: {len(text.splitlines())} lines"
    assert ast.get_docstring(ast.parse(text)), f"{path} has no module docstring"
