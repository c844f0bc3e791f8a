"""The package's import graph: no cycles (lazy and TYPE_CHECKING imports included), imports
that point down the layers, and a command line that starts without TensorFlow."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cpm_nb"
# Subpackages from the bottom up: a module imports its own subpackage and those below it.
LAYERS = ("core", "io", "model", "data", "evaluation", "training", "presets", "inference",
          "caffe", "course", "cli", "bench")


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(path: Path, known) -> set[str]:
    """Every cpm_nb module ``path`` imports anywhere (inside functions and TYPE_CHECKING
    blocks too), resolved to the longest known module name."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    out = set()
    for name in found:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name:
            out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    edges = {}
    for name, path in known.items():
        # a module's own package __init__ (its parents) is not an edge: Python runs it first
        edges[name] = {t for t in imports_of(path, known)
                       if t != name and not name.startswith(t + ".")}
    return edges


def cycles(edges) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


# Upward imports still to remove, in areas being reworked elsewhere (delete when they are gone).
KNOWN_UPWARD: set[tuple[str, str]] = set()


def upward_imports(edges) -> set[tuple[str, str]]:
    """(importer, imported) pairs where a module imports a higher layer."""
    rank = {layer: i for i, layer in enumerate(LAYERS)}

    def layer(module):
        parts = module.split(".")
        return rank.get(parts[1]) if len(parts) > 1 else None

    return {(a, b) for a, targets in edges.items() for b in targets
            if layer(a) is not None and layer(b) is not None and layer(b) > layer(a)}


def test_the_checker_finds_an_upward_import():
    assert upward_imports({"cpm_nb.model.x": {"cpm_nb.course.y", "cpm_nb.core.z"}}) == {
        ("cpm_nb.model.x", "cpm_nb.course.y")}


def test_imports_point_down_the_layers():
    found = upward_imports(graph()) - KNOWN_UPWARD
    assert not found, "upward imports:\n" + "\n".join(f"{a} -> {b}" for a, b in sorted(found))


def test_every_subpackage_is_a_layer():
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert folders == set(LAYERS)


def test_help_imports_no_tensorflow_or_keras():
    code = ("import sys\nfrom cpm_nb.cli import app\napp.build_parser(app.COMMANDS)\n"
            "print(sorted(m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]", done.stderr
