"""No product module grows past 400 lines: a file that big has seams to split along (issue 18)."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "dahell"
MAX_LINES = 400


def test_no_module_of_the_package_is_over_400_lines() -> None:
    sizes = {
        str(path.relative_to(PACKAGE.parent)): len(path.read_text(encoding="utf-8").splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    assert len(sizes) > 50  # the package was found
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
