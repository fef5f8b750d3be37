"""The import rules of docs/architecture.md: data flows one way, and no module reaches back.

Each folder is a layer and may import only its own layer and those below it; inside engine/, each stage only the
stages before it. Imports under ``TYPE_CHECKING`` count too: a type is a dependency a reader has to follow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "addm_integration"

# Lowest first. The entry points (extract, run_baseline, ledger, importer) sit above everything.
LAYERS = ["ledger", "base", "store", "provider", "schedule", "engine", "addm", "app", "entry"]
BASE = {"errors", "failpoints"}
ENGINE_STAGES = [
    "pipeline",
    "progress",
    "pacing",
    "decisions",
    "plan",
    "prices",
    "send",
    "submit",
    "advance",
    "ondemand",
]
# What a layer must not import although it sits above it: the ADDM pipelines know requests and outcomes, never the
# service that carries them.
FORBIDDEN = {"addm": ("addm_integration.provider.openai_api",)}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "ledger":
        return "ledger"
    if len(parts) <= 2:
        return "base" if parts[-1] in BASE else "entry"
    return parts[1]


def imports(path: Path, module: str) -> set[str]:
    """Every module of ours that ``path`` imports, by absolute name."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                base = ".".join([*module.split(".")[: -node.level], node.module])
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # ``from pkg import module``
    ours = {m for m in found if m.split(".")[0] in ("ledger", PACKAGE)}
    return {m for m in ours if (ROOT / (m.replace(".", "/") + ".py")).exists()} - {module}


def modules() -> list[tuple[str, Path]]:
    found = []
    for top in ("ledger", PACKAGE):
        for path in sorted((ROOT / top).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found.append((name.removesuffix(".__init__"), path))
    return found


def violations() -> list[str]:
    bad = []
    for module, path in modules():
        mine = layer_of(module)
        for dep in sorted(imports(path, module)):
            theirs = layer_of(dep)
            if LAYERS.index(theirs) > LAYERS.index(mine):
                bad.append(f"{module} imports {dep}: {mine}/ may not import {theirs}/")
            elif mine == theirs == "engine" and ENGINE_STAGES.index(dep.split(".")[2]) >= ENGINE_STAGES.index(
                module.split(".")[2]
            ):
                bad.append(f"{module} imports {dep}: a later stage of the engine")
            elif dep.startswith(FORBIDDEN.get(mine, ("-",))):
                bad.append(f"{module} imports {dep}: {mine}/ never imports it")
    return bad


def test_every_module_imports_only_its_layer_and_those_below() -> None:
    assert violations() == []


def test_every_module_has_a_layer_and_every_engine_module_a_stage() -> None:
    for module, _ in modules():
        assert layer_of(module) in LAYERS, module
        if layer_of(module) == "engine" and module.count(".") == 2:
            assert module.split(".")[2] in ENGINE_STAGES, f"{module}: give it a stage in ENGINE_STAGES"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from addm_integration.app import cli\n", "addm_integration.engine.plan imports addm_integration.app.cli"),
        ("from addm_integration.engine.advance import advance\n", "a later stage of the engine"),
    ],
)
def test_a_reach_back_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, expected: str) -> None:
    """The rule can fail: a plan module that imported the app, or a later stage, would be reported."""
    real = imports
    planted = tmp_path / "plan.py"
    planted.write_text(source)

    def with_plant(path: Path, module: str) -> set[str]:
        return real(planted, module) if module == "addm_integration.engine.plan" else real(path, module)

    monkeypatch.setattr(f"{__name__}.imports", with_plant)
    assert any(expected in line for line in violations())
