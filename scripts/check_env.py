"""CI's check of the environment that quickstart.sh/test.sh made from requirements.lock.

1. Every module of the dahell package imports (a missing dependency shows here, not in a
   user's first run). `__main__` modules are skipped: importing them runs them.
2. Every installed distribution is in requirements.lock at the locked version: nothing came
   from anywhere else (pip, setuptools and wheel belong to the venv itself).

Exit 0 when both hold; else 1, with one line per problem.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
import re
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_OWN = {"pip", "setuptools", "wheel", "dahell"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def import_errors() -> tuple[int, list[str]]:
    import dahell

    names = [
        m.name
        for m in pkgutil.walk_packages(dahell.__path__, "dahell.")
        if m.name.rsplit(".", 1)[-1] != "__main__"
    ]
    errors = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:
            errors.append(f"import {name}: {traceback.format_exc(limit=1).strip()}")
    return len(names), errors


def locked_versions(lock: Path) -> dict[str, str]:
    pins = {}
    for line in lock.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if match:
            pins[normalise(match.group(1))] = match.group(2)
    return pins


def lock_errors(lock: Path) -> list[str]:
    pins = locked_versions(lock)
    errors = []
    for dist in importlib.metadata.distributions():
        name = normalise(dist.metadata["Name"])
        if name in VENV_OWN:
            continue
        if name not in pins:
            errors.append(f"{name}=={dist.version} is installed but not in {lock.name}")
        elif pins[name] != dist.version:
            errors.append(f"{name}=={dist.version} is installed, {lock.name} has {pins[name]}")
    return errors


def main() -> int:
    count, errors = import_errors()
    errors += lock_errors(ROOT / "requirements.lock")
    for error in errors:
        sys.stderr.write(f"check_env: {error}\n")
    sys.stdout.write(f"check_env: {count} modules imported, {len(errors)} problems\n")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
