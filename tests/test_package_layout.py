"""The layout the architecture promises (docs/ARCHITECTURE.md), read from the source with
`ast`: dependencies point one way (tui → storage → engine), the commands are the only
modules that nothing but the CLI imports, the study planner is torch-free, every package
ships, and no module grows past ~400 lines."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
LAYERS = {"engine": "diffbench.engine", "storage": "diffbench.storage", "tui": "diffbench.tui"}
MAX_LINES = 430


def modules() -> dict[str, Path]:
    """Every module of the three layers by dotted name."""
    found = {}
    for folder, package in LAYERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            found[".".join((package, *parts))] = path
    return found


def imports(name: str, path: Path) -> set[str]:
    """The absolute names ``name`` imports anywhere in its body (lazy imports included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            out |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return out


GRAPH = {name: imports(name, path) for name, path in modules().items()}


def importers(prefix: str) -> set[str]:
    return {name for name, used in GRAPH.items()
            if any(u == prefix or u.startswith(prefix + ".") for u in used)}


def under(prefix: str) -> set[str]:
    return {name for name in GRAPH if name == prefix or name.startswith(prefix + ".")}


@pytest.mark.parametrize("lower,upper", [
    ("diffbench.engine", "diffbench.storage"), ("diffbench.engine", "diffbench.tui"),
    ("diffbench.storage", "diffbench.tui")])
def test_dependencies_point_one_way(lower, upper):
    assert importers(upper) & under(lower) == set()


def test_storage_reads_only_the_torch_free_engine():
    used = {u for name in under("diffbench.storage") for u in GRAPH[name]
            if u.startswith("diffbench.engine.")}
    allowed = ("strict_json", "vocabulary", "metrics")
    assert {u.split(".")[2] for u in used} <= set(allowed)
    for module in allowed:
        assert not {u for u in GRAPH[f"diffbench.engine.{module}"]
                    if u.split(".")[0] == "torch"}, module


def test_only_the_cli_imports_the_commands():
    outside = importers("diffbench.tui.commands") - under("diffbench.tui.commands")
    assert outside == {"diffbench.tui.cli"}
    assert importers("diffbench.tui.cli") == set()  # worker children run it by name


def test_the_study_planner_and_the_run_settings_are_torch_free():
    """Directly (tests/test_cli_queue.py runs `queue add` and finds no torch loaded)."""
    torch_free = under("diffbench.tui.study") | {"diffbench.engine.vocabulary",
                                                 "diffbench.engine.config",
                                                 "diffbench.engine.run_config"}
    for name in torch_free:
        assert not {u for u in GRAPH[name] if u.split(".")[0] in ("torch", "numpy")}, name


def test_every_package_ships():
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {name for name, path in modules().items() if path.name == "__init__.py"}
    assert packages - set(table["packages"]) == set()


def test_no_module_is_long():
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
