"""Make the tiny random-weight SigLIP vision tower that the tests and the demo use.

    python models/make_tiny_siglip.py [OUT]      (default: models/tiny-siglip next to this file)

It builds a `SiglipVisionModel` of `dahell.export.TINY_SHAPE` (32 px, patch 8, hidden 32,
2 layers, 2 heads, MLP 64) from seed 0, saves it with its image processor into a scratch folder
and exports it with `dahell.export.export_model` in fp32, opset 18. Deterministic: two runs
write byte-identical files (fixed seed, fixed `exported_at`), and
tests/integration/test_tiny_model.py checks that the committed graph's sha256 is what this
script produces. Needs the `[export]` extra. For the so400m-shaped random tower (benchmarks),
call `dahell.export.build_random_vision_model(folder, SO400M_SHAPE)` the same way.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from dahell.export import TINY_SHAPE, build_random_vision_model, export_model

SEED = 0
OPSET = 18
EXPORTED_AT = "2026-01-01T00:00:00+00:00"
SOURCE = f"random SiglipVisionModel, seed {SEED}, {TINY_SHAPE}"
DEFAULT_OUT = Path(__file__).resolve().parent / "tiny-siglip"


def make_tiny(out: Path, seed: int = SEED) -> Path:
    """Write model.onnx + manifest.json of the tiny tower into `out`; return `out`."""
    with tempfile.TemporaryDirectory(prefix="tiny-siglip-") as tmp:
        tower = build_random_vision_model(Path(tmp) / "tower", TINY_SHAPE, seed)
        return export_model(
            str(tower), out, "fp32", False, opset=OPSET, exported_at=EXPORTED_AT, source_name=SOURCE
        )


def main(argv: list[str]) -> int:
    make_tiny(Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
