"""The package layout stays as the restructuring left it: one home per concern, small modules, no import cycles,
and a GRPO core that loads none of the toy."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("samplers", "training", "nodes")
MAX_LINES = 400


def modules():
    """{dotted module name: path} of every module in the pack's packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imported_modules(name: str, path: Path, known) -> set:
    """The pack modules ``name`` imports anywhere (at its top level or inside a function), resolved to module
    names. A relative import above the top-level packages (``from .. import samplers``, inside ComfyUI only) is
    left out: its absolute twin beside it counts."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    depth = len(package.split("."))
    targets = set()
    for stmt in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(stmt, ast.Import):
            targets.update(alias.name for alias in stmt.names if alias.name in known)
        elif isinstance(stmt, ast.ImportFrom):
            if stmt.level > depth:
                continue
            base = package.split(".")[:depth - (stmt.level - 1)] if stmt.level else []
            module = ".".join(base + ([stmt.module] if stmt.module else []))
            for alias in stmt.names:
                if f"{module}.{alias.name}" in known:
                    targets.add(f"{module}.{alias.name}")
                elif module in known:
                    targets.add(module)
    targets.discard(name)
    return targets


def import_graph():
    """{module: the pack modules it imports}. A package's own import by its submodules (Python's
    parent-first loading) is no edge: only what a module names itself."""
    known = modules()
    return {name: imported_modules(name, path, known) for name, path in known.items()}


def find_cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycles_among_the_packs_modules():
    graph = import_graph()
    assert "training.objective" in graph["training.trainer"]  # the graph sees relative imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_is_over_about_400_lines(name):
    lines = len(modules()[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines: split it along a seam"


def test_the_grpo_core_imports_no_toy_module():
    code = ("import sys, training, samplers, training.trainer, training.rewards, training.methods.nft; "
            "print(sorted(m for m in sys.modules if m.startswith('training.toy')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    # a toy name still resolves, and then the toy loads
    code = "import sys; from training.rewards import DigitReward; print('training.toy.classifier' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
