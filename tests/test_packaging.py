"""What `pip install bertkit[EXTRA]` installs is what bertkit's modules import.

Every module under src/bertkit is read (not imported): each third-party import, at module level or inside
a function, must name a distribution that pyproject.toml installs for that module: a core dependency,
or one of the extra that `EXTRA_OF` below says the module belongs to. A module also needs what the
bertkit modules it imports at module level need when they are imported. So a new import that no extra
installs, or a module moved out of its extra's reach, fails here and not on a user's machine.
Offline: import names are mapped to distributions through the installed packages' metadata.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml takes Python 3.11's tomllib")

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

# Module (or package: it and everything under it) -> the extra that installs what it imports.
# A module not listed needs the core dependencies only.
EXTRA_OF = {
    "bertkit.encode.server": "serve",  # FastAPI, pydantic, starlette, swagger-ui-bundle
    "bertkit.encode.http": "serve",  # its ASGI middleware (starlette, FastAPI)
    "bertkit.encode.schemas": "serve",  # pydantic: the server's requests and answers
    "bertkit.client": "serve",  # httpx: `bertkit serve`'s Python client, and `bertkit encode --server`
    "bertkit.cli.serve": "serve",  # uvicorn
    "bertkit.onnx_model": "onnx",  # onnxruntime runs exported graphs (--backend onnx)
    "bertkit.export": "onnx",  # the ONNX export and its int8 quantization
    "bertkit.cli.export": "onnx",
    "bertkit.train.board": "track",  # tensorboard, for --train.tensorboard
    "bertkit.search.ann": "search",  # faiss, for approximate search
    "bertkit.generation_metrics": "generate",  # sacrebleu, rouge-score: BLEU and ROUGE-L
}
# Parts of a package that need another distribution than the package's own (torch does not install
# tensorboard); an import of one of them needs that distribution.
NEEDS = {"torch.utils.tensorboard": "tensorboard"}


def _needs(module: str) -> str | None:
    """The NEEDS entry that `module` is, or is inside of."""
    return next((k for k in NEEDS if module == k or module.startswith(k + ".")), None)


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503: PyYAML, pyyaml and py_yaml are one name


def _requirement_name(requirement: str) -> str:
    return _normalize(re.match(r"[A-Za-z0-9._-]+", requirement.strip()).group())


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    """Core dependencies and each extra's distributions (an extra naming `bertkit[...]` takes theirs)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = {_requirement_name(r) for r in project["dependencies"]}
    raw = project.get("optional-dependencies", {})
    extras: dict[str, set[str]] = {}

    def resolve(extra: str) -> set[str]:
        if extra not in extras:
            extras[extra] = set()
            for r in raw[extra]:
                m = re.fullmatch(r"bertkit\[([^\]]+)\]", r.replace(" ", ""))
                extras[extra] |= (
                    set().union(*(resolve(e) for e in m.group(1).split(","))) if m else {_requirement_name(r)}
                )
        return extras[extra]

    for extra in raw:
        resolve(extra)
    return core, extras


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "bertkit").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(path: Path, name: str) -> tuple[list[tuple[str, int, bool]], set[str]]:
    """(third-party module, line, at module level) for every import in the file, and the bertkit
    modules it imports at module level."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    module_level = {id(node) for node in tree.body}
    third, internal = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
            names = modules
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: `from . import x` inside package `p` is `p.x`
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{module}" if module else base
            names = [module] + [f"{module}.{a.name}" for a in node.names]  # `from p import m` may be a module
            modules = [next((n for n in names if _needs(n)), module)]
        else:
            continue
        at_top = id(node) in module_level
        for module in modules:
            top = module.split(".")[0]
            if top not in ("bertkit", "__future__") and top not in sys.stdlib_module_names:
                third.append((module, node.lineno, at_top))
        if at_top:
            internal |= {n for n in names if n.split(".")[0] == "bertkit"}
    return third, internal


def _extra_of(module: str) -> str | None:
    for claimed, extra in EXTRA_OF.items():
        if module == claimed or module.startswith(claimed + "."):
            return extra
    return None


def test_every_third_party_import_is_installed_by_core_or_the_modules_extra():
    core, extras = _declared()
    modules = _modules()
    dists_of = importlib.metadata.packages_distributions()
    parsed = {name: _imports(path, name) for name, path in modules.items()}

    def loaded(module: str, seen: set[str]) -> list[tuple[str, str, int]]:
        """(import, file-module, line) that run when `module` is imported: its module-level imports
        and those of the bertkit modules it imports at module level."""
        if module in seen or module not in parsed:
            return []
        seen.add(module)
        third, internal = parsed[module]
        out = [(imported, module, line) for imported, line, at_top in third if at_top]
        for dep in sorted(internal):
            out += loaded(dep, seen)
        return out

    problems = []
    for module, (third, internal) in parsed.items():
        extra = _extra_of(module)
        allowed = core | (extras.get(extra, set()) if extra else set())
        needed = [(imported, module, line) for imported, line, _ in third]
        seen = {module}
        for dep in sorted(internal):
            needed += loaded(dep, seen)
        for imported, where, line in needed:
            top = imported.split(".")[0]
            part = _needs(imported)
            dists = {_normalize(NEEDS[part])} if part else {_normalize(d) for d in dists_of.get(top, [])}
            if not dists:
                problems.append(
                    f"{modules[where].relative_to(ROOT)}:{line}: `import {imported}`: no installed distribution "
                    f"provides it; install it (pip install -e '.[dev]') or add it to an extra in pyproject.toml"
                )
            elif not dists & allowed:
                installs = "the core dependencies" + (f" and the `{extra}` extra" if extra else "")
                via = "" if where == module else f" (imported by {module})"
                problems.append(
                    f"{modules[where].relative_to(ROOT)}:{line}: `import {imported}`{via} needs "
                    f"{' or '.join(sorted(dists))}, which {installs} do not install: add it to "
                    f"{'`' + extra + '`' if extra else 'the dependencies'} in pyproject.toml, or claim "
                    "the module for another extra in EXTRA_OF (tests/test_packaging.py)"
                )
    assert not problems, "\n".join(dict.fromkeys(problems))


def test_the_extra_table_names_real_modules_and_extras():
    _, extras = _declared()
    modules = _modules()
    for module, extra in EXTRA_OF.items():
        assert module in modules, f"EXTRA_OF names {module}, which is not under src/: update the table"
        assert extra in extras, f"EXTRA_OF gives {module} the extra `{extra}`, which pyproject.toml lacks"


def test_dev_installs_every_extra_the_modules_need():
    _, extras = _declared()
    for extra in set(EXTRA_OF.values()):
        assert extras[extra] <= extras["dev"], f"`dev` (make setup) misses `{extra}`: add it to bertkit[...]"


def test_the_checker_sees_function_level_and_relative_imports(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text(
        "import numpy as np\nfrom . import sibling\n\ndef f():\n    from torch.utils import tensorboard  # deferred\n"
    )
    third, internal = _imports(source, "bertkit.pkg.mod")
    assert third == [("numpy", 1, True), ("torch.utils.tensorboard", 5, False)]
    assert internal == {"bertkit.pkg", "bertkit.pkg.sibling"}
