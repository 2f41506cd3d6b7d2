"""Which SigLIP to run on a CPU: images/s and cold start per tower, size and precision, one run.

    python tests/benchmarks/bench_models.py [--images 8] [--batch 8] [--catalog 25000]
                                           [--only base-224]

For each tower (random weights of the real shapes, built with transformers'
`SiglipVisionConfig`; nothing is downloaded from a hub):

- so400m-384: google/siglip-so400m-patch14-384 (1152 dimensions, 729 patches);
- so400m-224: the same tower at 224 px (256 patches; what an so400m at 224 px costs);
- base-224:   google/siglip-base-patch16-224 (768 dimensions, 196 patches);

each exported by dahell's own `export_model` (fp32) and quantised as `export-model --precision
int8` does, it measures the model alone on preprocessed tensors (images/s, batch `--batch`,
after one warm-up image) and the cold start to the first embedding (`Embedder.load` + one image,
the saved optimised graph, i.e. every start after the first). It prints the table README's
"Choosing a model for a CPU" section quotes, with the hours a `--catalog`-product catalog takes
at each rate (the stage keeps the model ~97% busy on CPU, so the model's rate is the stage's).

Needs the [export] extra. Slow on 2 cores (so400m at 384 px runs well under 1 image/s): keep
`--images` small. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from dahell import export
from dahell.embedder import Embedder
from dahell.export import SO400M_SHAPE, VisionShape, build_random_vision_model, export_model

CPU = ["CPUExecutionProvider"]
#: google/siglip-base-patch16-224's vision tower: 86M parameters, 768 dimensions.
BASE_SHAPE = VisionShape(224, 16, 768, 12, 12, 3072)
SO400M_224 = VisionShape(224, 14, 1152, 27, 16, 4304)
TOWERS: dict[str, VisionShape] = {
    "so400m-384": SO400M_SHAPE,
    "so400m-224": SO400M_224,
    "base-224": BASE_SHAPE,
}
console = Console()


@dataclass
class Row:
    tower: str
    precision: str
    dim: int
    rate: float
    cold_s: float
    first_start_s: float
    size_mb: float


def throughput(embedder: Embedder, images: int, batch: int) -> float:
    size = embedder.manifest.image_size
    pixels = np.random.default_rng(0).uniform(-1, 1, (batch, 3, size, size)).astype(np.float32)
    embedder.embed(pixels[:1])  # warm-up
    started = time.perf_counter()
    done = 0
    while done < images:
        embedder.embed(pixels)
        done += batch
    return done / (time.perf_counter() - started)


def cold_start(model_dir: Path) -> float:
    started = time.perf_counter()
    embedder = Embedder.load(model_dir, CPU)
    size = embedder.manifest.image_size
    embedder.embed(np.zeros((1, 3, size, size), np.float32))
    return time.perf_counter() - started


def quantise(fp32_dir: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    export._convert(fp32_dir / "model.onnx", out / "model.onnx", "int8")  # as export-model does
    manifest = json.loads((fp32_dir / "manifest.json").read_text())
    manifest.update(precision="int8", graph_sha256=export.sha256_file(out / "model.onnx"))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


def measure(name: str, model_dir: Path, precision: str, images: int, batch: int) -> Row:
    first = cold_start(model_dir)  # optimises and saves the graph
    cold = cold_start(model_dir)
    embedder = Embedder.load(model_dir, CPU)
    rate = throughput(embedder, images, batch)
    dim = embedder.dim
    del embedder
    gc.collect()
    size = (model_dir / "model.onnx").stat().st_size / 1e6
    row = Row(name, precision, dim, rate, cold, first, size)
    console.log(f"{name} {precision}: {rate:.3g} img/s, cold {cold:.1f} s (first {first:.1f} s)")
    return row


def bench_tower(name: str, shape: VisionShape, work: Path, images: int, batch: int) -> list[Row]:
    tower = build_random_vision_model(work / f"{name}-tower", shape, seed=0)
    fp32 = export_model(str(tower), work / f"{name}-fp32", "fp32", False, validate=False)
    shutil.rmtree(tower)
    rows = [measure(name, fp32, "fp32", images, batch)]
    for saved in fp32.glob("*.optimized.onnx"):
        saved.unlink()  # free the disk before the int8 copy
    int8 = quantise(fp32, work / f"{name}-int8")
    shutil.rmtree(fp32)
    rows.append(measure(name, int8, "int8", images, batch))
    shutil.rmtree(int8)
    return rows


def table(rows: list[Row], catalog: int) -> Table:
    out = Table(title=f"SigLIP vision towers on this CPU (hours for {catalog:,} products)")
    for column in ("tower", "precision", "dim", "img/s", "hours", "cold start s", "MB"):
        out.add_column(column)
    for row in rows:
        hours = catalog / row.rate / 3600
        out.add_row(
            row.tower,
            row.precision,
            str(row.dim),
            f"{row.rate:.3g}",
            f"{hours:.1f}",
            f"{row.cold_s:.1f} (first {row.first_start_s:.1f})",
            f"{row.size_mb:.0f}",
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="images per so400m measurement")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--catalog", type=int, default=25_000)
    parser.add_argument("--only", action="append", choices=sorted(TOWERS), default=None)
    args = parser.parse_args()

    rows: list[Row] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp:
        for name in args.only or list(TOWERS):
            images = args.images if name.startswith("so400m") else 4 * args.images
            rows.extend(bench_tower(name, TOWERS[name], Path(tmp), images, args.batch))
    console.print(table(rows, args.catalog))
    base = next((r for r in rows if r.tower == "so400m-384" and r.precision == "fp32"), None)
    if base is not None:
        for row in rows:
            console.print(
                f"{row.tower} {row.precision}: {row.rate / base.rate:.2f}x so400m-384 fp32"
            )
    console.print(f"benchmark wall time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
