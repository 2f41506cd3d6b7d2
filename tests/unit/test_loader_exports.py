"""The packages split from single modules keep every name their callers import."""

from __future__ import annotations

import importlib

import pytest
import structlog

PUBLIC = {
    "dahell.stages.loader": {
        "LOADED",
        "PARALLEL_PARSE_MIN_BYTES",
        "SUMMARY_COUNTS",
        "FileReport",
        "LoadStats",
        "Loader",
        "LoaderStage",
        "SourceBusy",
        "apply_retention",
        "open_source",
        "relax_gc",
    },
    "dahell.dropi": {
        "CONTENT_ERRORS",
        "Outcome",
        "ProductRecord",
        "Rejection",
        "Seen",
        "StockLevel",
        "Supplier",
        "Variation",
        "Warehouse",
        "decode_line",
        "image_url",
        "parse_document",
        "parse_line",
        "parse_line_known",
    },
    "dahell.catalog_store": {"OUTCOMES", "STAGING", "BatchOutcome", "Unit", "apply_batch"},
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_a_split_package_exports_what_its_callers_import(module: str) -> None:
    package = importlib.import_module(module)
    assert PUBLIC[module] <= set(package.__all__)
    for name in package.__all__:
        assert hasattr(package, name), name


def test_names_patched_on_the_loader_package_are_read_from_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dahell.stages import loader as loader_mod

    monkeypatch.setattr(loader_mod, "PARALLEL_PARSE_MIN_BYTES", 0)
    loader = loader_mod.Loader(None, lambda: _Config(), structlog.get_logger())  # type: ignore[arg-type]
    monkeypatch.setattr(loader_mod.files, "ParsePool", _FakePool)
    assert isinstance(loader._parse_pool_for(1), _FakePool)


class _FakePool:
    broken = False

    def __init__(self, processes: int) -> None:
        self.processes = processes


class _Config:
    class loader:
        parse_processes = 1
