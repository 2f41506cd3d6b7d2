"""What the scraper keeps under `<data_dir>/scraper`, each file written atomically.

The pass position (`progress.json`) is saved after every page so that a crash resumes at the
page where it stopped; the login (`storage_state.json`, mode 0600) outlives restarts.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson


@dataclass
class Progress:
    """Where the current pass stands; saved after every page."""

    pass_id: str = ""
    next_start: int = 0
    pages: int = 0
    products: int = 0
    errors: int = 0
    started_at: float = 0.0  # wall clock
    finished_at: float = 0.0  # wall clock; 0 while the pass runs

    @classmethod
    def new_pass(cls) -> Progress:
        now = datetime.now(UTC)
        return cls(pass_id=now.strftime("%Y%m%dT%H%M%S.%fZ"), started_at=now.timestamp())


def _write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


class ScraperFiles:
    """progress.json, storage_state.json (0600), this pass's ids and the previous pass's ids."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.progress = folder / "progress.json"
        self.storage_state = folder / "storage_state.json"
        self.current_ids = folder / "current_pass_ids.txt"
        self.previous_ids = folder / "previous_pass_ids.json"

    def load_progress(self) -> Progress | None:
        try:
            return Progress(**orjson.loads(self.progress.read_bytes()))
        except (OSError, orjson.JSONDecodeError, TypeError):
            return None

    def save_progress(self, progress: Progress) -> None:
        _write_atomic(self.progress, orjson.dumps(asdict(progress)), 0o644)

    def save_storage_state(self, state: dict[str, Any]) -> None:
        _write_atomic(self.storage_state, orjson.dumps(state), 0o600)

    def append_ids(self, ids: list[int]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.current_ids, "a", encoding="ascii") as fh:
            fh.write("".join(f"{i}\n" for i in ids))

    def load_ids(self, previous: bool) -> set[int]:
        try:
            if previous:
                return set(orjson.loads(self.previous_ids.read_bytes()))
            text = self.current_ids.read_text(encoding="ascii")
        except (OSError, orjson.JSONDecodeError, TypeError):
            return set()
        return {int(line) for line in text.split() if line.isdigit()}

    def finish_ids(self, ids: set[int]) -> None:
        _write_atomic(self.previous_ids, orjson.dumps(sorted(ids)), 0o644)
        self.current_ids.unlink(missing_ok=True)
