"""`export_model`: the steps from a SigLIP checkpoint to `model.onnx` + `manifest.json`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dahell.errors import DahellError
from dahell.export.graph import (
    INPUT_NAME,
    INT8_SETTINGS,
    OUTPUT_NAME,
    PRECISIONS,
    Precision,
    _convert,
    _keep_pooler_output,
    _optimum_export,
)
from dahell.export.tower import _save_vision_tower, require_export_extra
from dahell.log import get_logger

MANIFEST_FORMAT = 1

log = get_logger(component="export")


def export_model(
    model: str,
    out: Path,
    precision: Precision,
    progress: bool,
    *,
    opset: int | None = None,
    exported_at: str | None = None,
    source_name: str | None = None,
    validate: bool = True,
) -> Path:
    """Export `model`'s vision tower to `out/model.onnx` + `out/manifest.json`; return `out`.

    `exported_at` fixes the manifest's timestamp (the tiny model's script uses it so that its
    output is byte-identical run after run); `source_name` replaces `model` as the manifest's
    `source_model` (for models built in a scratch folder); `validate` runs optimum's output
    check (torch vs ONNX Runtime on a sample input) on the fp32 graph.
    """
    if precision not in PRECISIONS:
        raise DahellError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    require_export_extra()
    out.mkdir(parents=True, exist_ok=True)
    with _Steps(progress) as steps, tempfile.TemporaryDirectory(prefix="dahell-export-") as tmp:
        scratch = Path(tmp)
        with steps.step("load_model", model=model):
            info = _save_vision_tower(model, scratch / "tower")
        with steps.step("export_onnx", opset=opset):
            fp32 = _optimum_export(scratch / "tower", scratch / "onnx", opset, validate)
        with steps.step("keep_pooler_output"):
            graph_opset = _keep_pooler_output(fp32)
        target = out / "model.onnx"
        with steps.step("convert", precision=precision):
            _convert(fp32, target, precision)
        with steps.step("write_manifest"):
            manifest = {
                "format": MANIFEST_FORMAT,
                "source_model": source_name or model,
                **info,
                "opset": graph_opset,
                "precision": precision,
                "input_name": INPUT_NAME,
                "output_name": OUTPUT_NAME,
                "graph_sha256": sha256_file(target),
                "exported_at": exported_at or datetime.now(UTC).isoformat(timespec="seconds"),
                "dahell_version": _dahell_version(),
            }
            if precision == "int8":
                manifest["quantization"] = INT8_SETTINGS
            text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
            (out / "manifest.json").write_text(text, encoding="utf-8")
            for stale in out.glob("model.*.optimized.onnx"):  # graphs optimised from an old export
                stale.unlink(missing_ok=True)
    log.info("export_done", out=str(out), precision=precision, dim=info["dim"])
    return out


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _dahell_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dahell")
    except PackageNotFoundError:
        return "unknown"


class _Steps:
    """One rich status line per step on a terminal (`progress`), an `export_step` event always."""

    def __init__(self, progress: bool) -> None:
        self.progress = progress
        self._console: Any = None

    def __enter__(self) -> _Steps:
        if self.progress:
            from rich.console import Console

            self._console = Console(stderr=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._console = None

    @contextlib.contextmanager
    def step(self, name: str, **fields: Any) -> Iterator[None]:
        log.info("export_step", step=name, **fields)
        if self._console is None:
            yield
            return
        started = datetime.now(UTC)
        with self._console.status(f"[bold]{name}[/] ..."):
            yield
        seconds = (datetime.now(UTC) - started).total_seconds()
        self._console.log(f"[green]done[/] {name} ({seconds:.1f} s)")
