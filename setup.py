"""Build hook: the wheel ships the top-level sql/ migrations inside the package, as dahell/sql/.

The design keeps migrations in sql/ at the top of the repository; a wheel installs only the
package, so `build_py` copies them in. A checkout or an editable install reads sql/ directly
(see `dahell.db.SQL_DIR`). Everything else about the build is in pyproject.toml.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildPyWithMigrations(build_py):
    def run(self) -> None:
        super().run()
        migrations = sorted((HERE / "sql").glob("[0-9][0-9][0-9]_*.sql"))
        if not migrations:
            raise SystemExit(f"no migrations in {HERE / 'sql'}: refusing to build without them")
        target = Path(self.build_lib) / "dahell" / "sql"
        self.mkpath(str(target))
        for source in migrations:
            self.copy_file(str(source), str(target / source.name))


setup(cmdclass={"build_py": BuildPyWithMigrations})
