"""Which Chromium to drive and how: Playwright's own build when installed, else the system's.

`playwright install` cannot download on every machine; Debian's `chromium` works through
`executable_path`. The flags keep it headless-friendly as root and stop it calling home.
The scraper's logged-in session that drives this browser is `dahell/stages/scraper/session.py`;
the simulator's tests and the page tests start the same Chromium through here.
"""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

from dahell.errors import StageParked

_PLAYWRIGHT_GLOBS = (
    "chromium-*/chrome-linux*/chrome",
    "chromium_headless_shell-*/chrome-linux*/headless_shell",
)


class BrowserNotFound(StageParked):
    """Neither Playwright's Chromium nor a system `chromium` is installed: a human must fix it."""

    def __init__(self, detail: str) -> None:
        super().__init__("browser_missing", detail)


def _playwright_browsers_dir() -> Path:
    explicit = os.environ.get("PLAYWRIGHT_BROWSERS_PATH", "")
    if explicit and explicit != "0":
        return Path(explicit)
    return Path.home() / ".cache" / "ms-playwright"


def _playwright_chromium() -> str | None:
    root = _playwright_browsers_dir()
    for pattern in _PLAYWRIGHT_GLOBS:
        found = sorted(glob.glob(str(root / pattern)), reverse=True)
        for candidate in found:
            if os.access(candidate, os.X_OK):
                return candidate
    return None


def find_chromium(explicit: str = "") -> str:
    """The Chromium executable: `explicit` if given, Playwright's own, else `chromium` on PATH."""
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise BrowserNotFound(f"browser_executable {explicit!r} is not an executable file")
        return explicit
    found = _playwright_chromium()
    if found:
        return found
    for name in ("chromium", "chromium-browser"):
        system = shutil.which(name)
        if system:
            return system
    raise BrowserNotFound(
        "no Chromium found: install one with `apt-get install -y chromium` "
        "(or `playwright install chromium` where downloads work)"
    )


def chromium_args() -> list[str]:
    """Flags for a headless Chromium that runs as root in a container and stays offline."""
    return [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
    ]
