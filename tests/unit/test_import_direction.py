"""Imports flow one way (DESIGN.md, "A layout that keeps the imports flowing one way").

The supervisor builds the metrics and runs the stages; neither may import it back, and stages
never import each other: each reads the other side through `stages/base.py` or
`stage_view.py`. The checks read the source with `ast`, so an import under `TYPE_CHECKING` or
inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "dahell"
SHARED_STAGE_MODULES = frozenset({"base"})


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module `path` imports, by absolute dotted name (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def sources(under: str = "") -> list[Path]:
    root = PACKAGE / under if under else PACKAGE
    return [root] if root.suffix == ".py" else sorted(root.rglob("*.py"))


def imports_of(under: str) -> set[str]:
    return set().union(*(imported(p) for p in sources(under)))


def reaches(names: set[str], module: str) -> bool:
    return any(n == module or n.startswith(module + ".") for n in names)


def stage_of(module: str) -> str | None:
    """`dahell.stages.loader.chunks` -> `loader`; None outside the stages."""
    parts = module.split(".")
    if parts[:2] != ["dahell", "stages"] or len(parts) < 3:
        return None
    return parts[2]


def test_the_metrics_never_import_the_supervisor() -> None:
    assert not reaches(imports_of("metrics.py"), "dahell.supervisor")
    assert not reaches(imports_of("stage_view.py"), "dahell.supervisor")


def test_importing_the_metrics_loads_no_supervisor() -> None:
    code = "import sys, dahell.metrics; print('dahell.supervisor' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("under", ["stages/base.py", "stage_view.py", "metrics.py"])
def test_the_shared_interfaces_import_no_stage(under: str) -> None:
    stages = {n for n in imports_of(under) if stage_of(n) not in (None, *SHARED_STAGE_MODULES)}
    assert not stages


def test_the_supervisor_imports_no_stage() -> None:
    names = imports_of("supervisor.py") if (PACKAGE / "supervisor.py").exists() else set()
    if (PACKAGE / "supervisor").is_dir():
        names |= imports_of("supervisor")
    assert names, "no supervisor source found"
    assert {n for n in names if stage_of(n) not in (None, *SHARED_STAGE_MODULES)} == set()


def test_stages_never_import_each_other() -> None:
    crossing = []
    for path in sources("stages"):
        own = stage_of(module_name(path))
        if own in SHARED_STAGE_MODULES or own is None:
            continue
        for name in imported(path):
            other = stage_of(name)
            if other is not None and other not in (own, *SHARED_STAGE_MODULES):
                crossing.append(f"{module_name(path)} imports {name}")
    assert not crossing
