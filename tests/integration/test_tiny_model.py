"""models/make_tiny_siglip.py still reproduces the committed tiny model, byte for byte."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dahell import export
from dahell.embedder import Embedder
from dahell.errors import DahellError
from dahell.export import sha256_file

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "models" / "tiny-siglip"
SCRIPT = REPO / "models" / "make_tiny_siglip.py"

needs_export_extra = pytest.mark.usefixtures("export_extra")


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


def test_missing_export_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export.tower, "_importable", lambda name: name != "torch")
    with pytest.raises(DahellError, match=r"\[export\] extra") as info:
        export.export_model("anything", Path("unused"), "fp32", False)
    assert "torch" in str(info.value)


def test_command_line_defaults() -> None:
    parser = argparse.ArgumentParser()
    export.add_arguments(parser)
    args = parser.parse_args([])
    assert args.precision == "fp32" and args.model == export.DEFAULT_MODEL
    args = parser.parse_args(["--model", "m", "--out", "o", "--precision", "int8"])
    assert (args.model, args.out, args.precision) == ("m", Path("o"), "int8")


@needs_export_extra
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_reduced_precision_exports_load_and_embed(precision: str, tmp_path: Path) -> None:
    tower = export.build_random_vision_model(tmp_path / "tower", export.TINY_SHAPE, 0)
    out = export.export_model(str(tower), tmp_path / precision, precision, False, validate=False)  # type: ignore[arg-type]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == precision
    assert manifest["graph_sha256"] == sha256_file(out / "model.onnx")
    if precision == "int8":
        assert manifest["quantization"]["reduce_range"] is True  # what the export did
    reduced = Embedder.load(out, ["CPUExecutionProvider"])
    full = Embedder.load(TINY, ["CPUExecutionProvider"])
    pixels = np.random.default_rng(0).uniform(-1, 1, (4, 3, 32, 32)).astype(np.float32)
    a, b = reduced.embed(pixels), full.embed(pixels)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-4)
    # int8 with the 7-bit range stays close even on this tiny random tower
    assert np.min(np.sum(a * b, axis=1)) > (0.999 if precision == "fp16" else 0.95)


@needs_export_extra
def test_export_takes_the_vision_tower_of_a_full_siglip_model(tmp_path: Path) -> None:
    import torch
    from transformers import SiglipConfig, SiglipModel

    shape = export.TINY_SHAPE
    config = SiglipConfig(
        text_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "intermediate_size": 64, "vocab_size": 100},
        vision_config={"image_size": shape.image_size, "patch_size": shape.patch_size,
                       "hidden_size": shape.hidden_size, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "intermediate_size": 64},
    )  # fmt: skip
    torch.manual_seed(1)
    full = SiglipModel(config)
    full.eval()
    full.save_pretrained(tmp_path / "full")
    out = export.export_model(str(tmp_path / "full"), tmp_path / "out", "fp32", False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["model_type"], manifest["dim"], manifest["image_size"]) == (
        "siglip_vision_model",
        32,
        32,
    )
    # No preprocessor_config.json in the folder: SigLIP's defaults.
    assert manifest["mean"] == [0.5, 0.5, 0.5] and manifest["std"] == [0.5, 0.5, 0.5]
    pixels = torch.zeros(2, 3, 32, 32)
    with torch.no_grad():
        expected = full.get_image_features(pixel_values=pixels).numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    got = Embedder.load(out, ["CPUExecutionProvider"]).embed(pixels.numpy())
    np.testing.assert_allclose(got, expected, atol=1e-4)
