"""The import graph of edgeformer/ against the layer table of docs/architecture.md (the one source
of the rule): no cycles, no import upward or sideways between stages, no forbidden third-party
package reached, every module placed. Function-local and TYPE_CHECKING imports count."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"


@dataclass
class Layer:
    name: str
    rank: int
    modules: list[str]
    never: list[str] = field(default_factory=list)


@dataclass
class Module:
    name: str
    path: Path
    imports: dict[str, int] = field(default_factory=dict)  # edgeformer module -> first line
    external: dict[str, int] = field(default_factory=dict)  # third-party top-level name -> first line


def read_layers(text: str) -> list[Layer]:
    """The rows of the markdown table whose header starts with ``| layer | rank |``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"\|\s*layer\s*\|\s*rank\s*\|", line))
    layers = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        name, rank, modules, never = (c.strip() for c in line.strip().strip("|").split("|"))
        layers.append(Layer(name, int(rank), re.findall(r"`([^`]+)`", modules), re.findall(r"`([^`]+)`", never)))
    return layers


def _module_names(root: Path, package: str) -> dict[str, Path]:
    names = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: dict[str, Path]) -> list[str]:
    """The dotted names an import statement loads: ``from a import b`` loads module ``a.b`` when
    there is one, else takes ``b`` from ``a`` (parent packages are not counted as edges)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        parts = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
        base = ".".join(parts + ([node.module] if node.module else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]


def read_modules(root: Path, package: str) -> dict[str, Module]:
    """Every module of ``package`` under ``root`` with the imports anywhere in its body."""
    known = _module_names(root, package)
    modules = {}
    for name, path in known.items():
        mod = Module(name, path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in _targets(node, name, path.name == "__init__.py", known):
                top = target.partition(".")[0]
                if top == package:
                    resolved = _resolve(target, known)
                    if resolved and resolved != name:
                        mod.imports.setdefault(resolved, node.lineno)
                elif top and not (isinstance(node, ast.ImportFrom) and node.level):
                    mod.external.setdefault(top, node.lineno)
        modules[name] = mod
    return modules


def layer_of(module: str, layers: list[Layer]) -> Layer | None:
    """The row naming ``module`` most specifically (an exact name beats ``package.*``)."""
    best: tuple[int, Layer] | None = None
    for layer in layers:
        for pattern in layer.modules:
            base, wild = (pattern[:-2], True) if pattern.endswith(".*") else (pattern, False)
            if module == base or (wild and module.startswith(base + ".")):
                score = 2 * len(base) + (0 if wild else 1)
                if best is None or score > best[0]:
                    best = (score, layer)
    return best[1] if best else None


def find_cycles(modules: dict[str, Module]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in modules[v].imports:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(modules):
        if v not in index:
            visit(v)
    return cycles


def layer_breaks(modules: dict[str, Module], layers: list[Layer]) -> list[str]:
    """Imports of a higher rank, or of another layer of the same rank; and modules no row places."""
    problems = []
    for mod in modules.values():
        mine = layer_of(mod.name, layers)
        if mine is None:
            problems.append(f"{mod.name} is in no layer: add it to the table in docs/architecture.md")
            continue
        for target, line in mod.imports.items():
            theirs = layer_of(target, layers)
            if theirs is None or theirs is mine:
                continue
            if theirs.rank > mine.rank or theirs.rank == mine.rank:
                problems.append(
                    f"{mod.path.name}:{line}: {mod.name} ({mine.name}, rank {mine.rank}) imports "
                    f"{target} ({theirs.name}, rank {theirs.rank})"
                )
    return problems


def forbidden_reach(modules: dict[str, Module], layers: list[Layer]) -> list[str]:
    """Third-party packages a layer must never reach, imported by its modules or by any edgeformer
    module they import (directly or not)."""
    problems = []
    for mod in modules.values():
        layer = layer_of(mod.name, layers)
        if layer is None or not layer.never:
            continue
        seen, todo = {mod.name: mod.name}, [mod.name]
        while todo:
            current = todo.pop()
            for target in modules[current].imports:
                if target not in seen:
                    seen[target] = current
                    todo.append(target)
        for reached in sorted(seen):
            for package in sorted(set(modules[reached].external) & set(layer.never)):
                via = "" if reached == mod.name else f" (through {reached})"
                problems.append(f"{mod.name} ({layer.name}) reaches {package}{via}")
    return problems


def check(root: Path, package: str, layers: list[Layer]) -> list[str]:
    modules = read_modules(root, package)
    cycles = [f"import cycle: {' <-> '.join(c)}" for c in find_cycles(modules)]
    return cycles + layer_breaks(modules, layers) + forbidden_reach(modules, layers)


@pytest.fixture(scope="module")
def layers() -> list[Layer]:
    return read_layers(DOC.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return read_modules(ROOT, "edgeformer")


def test_the_doc_table_states_the_rules(layers):
    by_name = {layer.name: layer for layer in layers}
    assert {"torch", "onnx", "onnx_ir", "onnxscript"} <= set(by_name["runtime"].never)
    assert by_name["runtime"].modules[0] == "edgeformer.runtime.*"
    stages = [by_name[s] for s in ("fuse", "quantize", "package", "verify")]
    assert len({s.rank for s in stages}) == 1, "the stages share a rank: none may import another"
    top = max(layer.rank for layer in layers)
    assert [layer.name for layer in layers if layer.rank == top] == ["cli"] and by_name["cli"].modules == [
        "edgeformer.cli.*"
    ]


def test_no_import_cycles(modules):
    assert find_cycles(modules) == []


def test_layer_order(modules, layers):
    assert layer_breaks(modules, layers) == []


def test_runtime_never_reaches_torch_or_onnx(modules, layers):
    assert forbidden_reach(modules, layers) == []
    assert any(m.startswith("edgeformer.runtime.") for m in modules)  # the check ran over the runtime


PLANTED_LAYERS = """
| layer | rank | modules | never reaches |
|---|---|---|---|
| base | 1 | `pkg`, `pkg.util` | `torch` |
| fuse | 2 | `pkg.fuse.*` | |
| verify | 2 | `pkg.verify` | |
| cli | 3 | `pkg.cli` | |
"""


def _plant(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_the_checker_catches_a_planted_cycle_and_layer_breaks(tmp_path):
    _plant(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/util.py": "def f():\n    from pkg import heavy  # a hidden function-local import\n",
            "pkg/heavy.py": "",
            "pkg/fuse/__init__.py": "",
            "pkg/fuse/a.py": "from pkg.fuse import b\nfrom pkg.verify import judge\n",
            "pkg/fuse/b.py": "def g():\n    from . import a\n",
            "pkg/verify.py": "import numpy\nfrom pkg.util import f\n\ndef judge():\n    from pkg.cli import main\n",
            "pkg/cli.py": "import pkg.fuse\nfrom pkg.util import f\n",
        },
    )
    layers = read_layers(PLANTED_LAYERS)
    (tmp_path / "pkg" / "util.py").write_text("import torch\n\ndef f():\n    from pkg import heavy\n", encoding="utf-8")
    problems = check(tmp_path, "pkg", layers)
    assert "import cycle: pkg.fuse.a <-> pkg.fuse.b" in problems  # the second edge is a relative, local import
    assert "a.py:2: pkg.fuse.a (fuse, rank 2) imports pkg.verify (verify, rank 2)" in problems  # stage to stage
    assert "verify.py:5: pkg.verify (verify, rank 2) imports pkg.cli (cli, rank 3)" in problems  # upward
    assert "pkg.heavy is in no layer: add it to the table in docs/architecture.md" in problems
    assert "pkg.util (base) reaches torch" in problems
    assert "pkg (base) reaches torch (through pkg.util)" not in problems  # pkg/__init__ imports nothing
    assert not any(p.startswith("cli.py") for p in problems), "the CLI may import every layer below it"
    assert len([p for p in problems if "import cycle" in p]) == 1


def test_the_checker_passes_a_clean_tree(tmp_path):
    _plant(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/util.py": "import numpy\n",
            "pkg/fuse/__init__.py": "from pkg.util import *\n",
            "pkg/verify.py": "from pkg import util\n",
            "pkg/cli.py": "from pkg.verify import x\nfrom pkg.fuse import y\n",
        },
    )
    assert check(tmp_path, "pkg", read_layers(PLANTED_LAYERS)) == []
