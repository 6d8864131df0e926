"""Imports point one way: no module of less/ or analysis/ imports one of a higher layer, not even
inside a function or under ``TYPE_CHECKING`` (every ``import`` in the file counts).

Layers, lowest first (a module belongs to the longest prefix listed; a module no prefix covers
fails the test, so a new module is placed on purpose):

0. base: the cache, errors, paths, processes, faults, registries, seeding;
1. library: data, gradients, selection, evaluation, models, training, tracking, results, the
   config resolvers and help, analysis;
2. stages: the graph, its stages and the config checks;
3. runner: the walk and what reads its outcome (ranks, plan, report, lineage, explain);
4. entry points: the command lines and the Python API.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

LAYERS = {
    0: ["less", "less.cache", "less.errors", "less.paths", "less.distributed", "less.faults", "less.registry",
        "less.identity", "less.seeding", "less.stats"],
    1: ["less.data", "less.gradients", "less.selection", "less.evaluation", "less.models", "less.training",
        "less.tracking", "less.results", "less.small_model", "less.sp_tokenizer", "less.checkpoints",
        "less.claims", "less.rekey", "less.help", "less.resolvers", "analysis"],
    2: ["less.graph", "less.stages", "less.validate"],
    3: ["less.runner", "less.ranks", "less.plan", "less.report", "less.lineage", "less.explain"],
    4: ["less.cli", "less.api", "less.cache_cli", "less.small_model.__main__", "analysis.__main__"],
}
PREFIXES = {p: layer for layer, ps in LAYERS.items() for p in ps}


def layer(module: str) -> int | None:
    """The layer of the longest listed prefix of ``module`` (None: not listed); ``less`` itself is
    the package's ``__init__``, not a prefix."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in PREFIXES and (prefix != "less" or module == "less"):
            return PREFIXES[prefix]
    return None


def modules() -> dict[str, Path]:
    out = {}
    for pkg in ("less", "analysis"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported(module: str, path: Path, known: set[str]) -> set[str]:
    """Every module of ours that ``path`` imports, anywhere in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for a in node.names:  # ``from less import runner`` imports the module less.runner
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return {m for m in found if m.split(".")[0] in ("less", "analysis")}


def test_every_module_has_a_layer():
    assert [m for m in modules() if layer(m) is None] == []


def test_no_module_imports_a_higher_layer():
    mods = modules()
    upward = [f"{m} (layer {layer(m)}) imports {i} (layer {layer(i)})"
              for m, path in mods.items() for i in sorted(imported(m, path, set(mods)))
              if layer(i) is not None and layer(m) is not None and layer(i) > layer(m)]
    assert upward == []


def test_the_table_sees_an_upward_import(tmp_path):
    """The check itself: a function-local import of the runner in a stage counts."""
    path = tmp_path / "x.py"
    path.write_text("def f():\n    from less.runner import Runner\n")
    assert imported("less.stages.x", path, set(modules())) == {"less.runner"}
    assert layer("less.runner") > layer("less.stages.x")
