"""The seams, checked on the source: no import cycle, inference and serving never reach the training
package, and an import inside a function says why it is deferred."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
# The training drivers: the only modules besides train/ itself that may import bertkit.train.
TRAINING = {"bertkit.finetune", "bertkit.pretrain", "bertkit.distill"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "bertkit").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imported(node: ast.AST, modules: dict[str, Path]) -> set[str]:
    names = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return {n for n in names if n in modules}


def _graph() -> dict[str, set[str]]:
    """Module -> the bertkit modules it imports when it is imported (module level, not in functions)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        deps = set()
        for node in tree.body:
            if isinstance(node, ast.If):  # `if TYPE_CHECKING:` blocks do not run
                continue
            deps |= _imported(node, modules)
        graph[name] = deps - {name}
    return graph


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node, path):
        state[node] = 1
        for dep in sorted(graph[node]):
            # a package's __init__ importing its own submodules is not a cycle of ours to report
            if state.get(dep) == 1 and not node.startswith(dep + "."):
                cycles.append(path[path.index(dep) :] + [dep] if dep in path else path + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_only_the_training_drivers_import_the_training_package():
    offenders = {
        m: sorted(d for d in deps if d.startswith("bertkit.train"))
        for m, deps in _graph().items()
        if not m.startswith("bertkit.train") and m not in TRAINING
    }
    assert not {m: d for m, d in offenders.items() if d}


def test_inference_and_serving_do_not_depend_on_training_export_or_the_cli():
    graph = _graph()

    def reach(module, seen=None):
        seen = set() if seen is None else seen
        for dep in graph[module]:
            if dep not in seen:
                seen.add(dep)
                reach(dep, seen)
        return seen

    for module in ("bertkit.inference", "bertkit.encode.server", "bertkit.encode.encoder"):
        bad = sorted(
            d
            for d in reach(module)
            if d.startswith(("bertkit.train", "bertkit.finetune", "bertkit.pretrain", "bertkit.export", "bertkit.cli"))
        )
        assert not bad, (module, bad)


def test_imports_inside_functions_say_why():
    """Deferred imports are for heavy optional dependencies only, each with a comment saying so."""
    undocumented = []
    for name, path in _modules().items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if not isinstance(inner, (ast.Import, ast.ImportFrom)):
                        continue
                    said = "#" in lines[inner.lineno - 1] or lines[inner.lineno - 2].strip().startswith("#")
                    if not said:
                        undocumented.append(f"{name}:{inner.lineno}: {lines[inner.lineno - 1].strip()}")
    assert not undocumented, "\n".join(undocumented)
