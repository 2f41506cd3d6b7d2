"""models/make_tiny_siglip.py still reproduces the committed tiny model, byte for byte."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dahell.export import sha256_file

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "models" / "tiny-siglip"
SCRIPT = REPO / "models" / "make_tiny_siglip.py"

needs_export_extra = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("torch", "transformers", "optimum")),
    reason="the [export] extra (torch, transformers, optimum-onnx) is not installed",
)


def test_committed_manifest_matches_the_committed_graph() -> None:
    manifest = json.loads((TINY / "manifest.json").read_text())
    assert manifest["graph_sha256"] == sha256_file(TINY / "model.onnx")
    assert (TINY / "model.onnx").stat().st_size < 300_000


@needs_export_extra
def test_script_reproduces_the_committed_model(tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    subprocess.run([sys.executable, str(SCRIPT), str(out)], check=True, capture_output=True)
    made = json.loads((out / "manifest.json").read_text())
    committed = json.loads((TINY / "manifest.json").read_text())
    assert made["graph_sha256"] == sha256_file(out / "model.onnx")
    assert made["graph_sha256"] == committed["graph_sha256"], (
        "models/make_tiny_siglip.py no longer reproduces models/tiny-siglip: rerun it and "
        "commit its output if the change is intended"
    )
    # Everything but the version of dahell that wrote it is reproduced too.
    made.pop("dahell_version")
    committed.pop("dahell_version")
    assert made == committed
