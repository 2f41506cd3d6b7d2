"""Commands piped to a file or a CI log print wide tables whole, not folded to 80 columns."""

from __future__ import annotations

import pytest

from dahell.console import PIPED_WIDTH, make_console


def test_a_piped_console_gets_room_for_wide_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    console = make_console()
    assert not console.is_terminal  # pytest captures stdout
    assert console.width == PIPED_WIDTH


def test_columns_still_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    assert make_console().width == 100
