"""Embedder benchmark: model throughput, cold start, int8 vs fp32, preprocessing per core.

    python tests/benchmarks/bench_embedder.py [--images 16] [--batch 8] [--skip-so400m]

(a) images/s of the model alone on preprocessed tensors, for the committed tiny model and for a
random-weight tower of so400m's exact shape exported (fp32) into a temporary folder;
(b) cold start to the first embedding: `Embedder.load` + first `embed` without and with the
saved optimised graph, against torch `SiglipVisionModel.from_pretrained` + first forward
(target: ORT <= torch); (c) int8 (dynamic quantisation) against fp32 on CPU (target >= 2x);
(d) decode + preprocess of ~800x800 product-photo JPEGs on one thread (target >= 100/s/core).
Needs the [export] extra. Takes several minutes on 2 cores; prints a table at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from rich.console import Console
from rich.table import Table

from dahell.embedder import Embedder, ModelManifest, load_manifest, preprocess
from dahell.export import SO400M_SHAPE, build_random_vision_model, export_model, sha256_file

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "models" / "tiny-siglip"
CPU = ["CPUExecutionProvider"]
console = Console()


@dataclass
class Row:
    name: str
    value: float
    unit: str
    note: str = ""


def product_photo(seed: int, size: int = 800) -> bytes:
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8))
    img = base.resize((size, size), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(20):
        x, y, s = (int(v) for v in rng.integers(0, size, 3))
        draw.ellipse(
            (x, y, x + s // 3, y + s // 3), fill=tuple(int(c) for c in rng.integers(0, 255, 3))
        )
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=88)
    return buf.getvalue()


def throughput(embedder: Embedder, images: int, batch: int) -> float:
    size = embedder.manifest.image_size
    rng = np.random.default_rng(0)
    pixels = rng.uniform(-1, 1, (batch, 3, size, size)).astype(np.float32)
    embedder.embed(pixels[:1])  # warm-up
    started = time.perf_counter()
    done = 0
    while done < images:
        embedder.embed(pixels)
        done += batch
    return done / (time.perf_counter() - started)


def ort_cold_start(model_dir: Path) -> float:
    started = time.perf_counter()
    embedder = Embedder.load(model_dir, CPU)
    size = embedder.manifest.image_size
    embedder.embed(np.zeros((1, 3, size, size), np.float32))
    return time.perf_counter() - started


def torch_cold_start(tower: Path) -> float:
    import torch
    from transformers import SiglipVisionModel

    started = time.perf_counter()
    model = SiglipVisionModel.from_pretrained(tower, local_files_only=True)
    model.eval()
    size = model.config.image_size
    with torch.no_grad():
        model(pixel_values=torch.zeros(1, 3, size, size))
    return time.perf_counter() - started


def preprocess_rate(manifest: ModelManifest, count: int) -> float:
    photos = [product_photo(i) for i in range(16)]
    preprocess(photos[0], manifest, 64_000_000)
    started = time.perf_counter()
    for i in range(count):
        preprocess(photos[i % len(photos)], manifest, 64_000_000)
    return count / (time.perf_counter() - started)


def quantise(fp32_dir: Path, out: Path) -> Path:
    from dahell import export

    out.mkdir(parents=True, exist_ok=True)
    export._convert(fp32_dir / "model.onnx", out / "model.onnx", "int8")  # as export-model does
    manifest = json.loads((fp32_dir / "manifest.json").read_text())
    manifest.update(precision="int8", graph_sha256=sha256_file(out / "model.onnx"))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


def so400m_rows(work: Path, images: int, batch: int) -> list[Row]:
    rows: list[Row] = []
    tower = build_random_vision_model(work / "tower", SO400M_SHAPE, seed=0)
    started = time.perf_counter()
    fp32 = export_model(str(tower), work / "fp32", "fp32", False, validate=False)
    rows.append(Row("so400m export (fp32, optimum)", time.perf_counter() - started, "s"))

    cold_ort = ort_cold_start(fp32)  # first start: optimises and saves the graph
    cold_saved = ort_cold_start(fp32)  # later start: loads the saved optimised graph
    cold_torch = torch_cold_start(tower)
    rows.append(Row("cold start ORT, first start", cold_ort, "s", "load + optimise + 1 image"))
    rows.append(Row("cold start ORT, saved graph", cold_saved, "s", "load + 1 image"))
    rows.append(Row("cold start torch from_pretrained", cold_torch, "s", "load + 1 image"))
    rows.append(Row("  ratio torch / ORT saved", cold_torch / cold_saved, "x", "target >= 1"))

    fp32_rate = throughput(Embedder.load(fp32, CPU), images, batch)
    rows.append(Row(f"so400m fp32 model alone, batch {batch}", fp32_rate, "img/s"))
    for saved in fp32.glob("*.optimized.onnx"):
        saved.unlink()  # free the disk before the int8 copy
    started = time.perf_counter()
    int8 = quantise(fp32, work / "int8")
    rows.append(Row("int8 quantisation", time.perf_counter() - started, "s"))
    int8_rate = throughput(Embedder.load(int8, CPU), images, batch)
    rows.append(Row(f"so400m int8 model alone, batch {batch}", int8_rate, "img/s"))
    rows.append(Row("  ratio int8 / fp32", int8_rate / fp32_rate, "x", "target >= 2"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16, help="images per so400m run")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--preprocess-images", type=int, default=200)
    parser.add_argument("--skip-so400m", action="store_true")
    args = parser.parse_args()

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-embedder-") as tmp:
        work = Path(tmp)
        tiny = work / "tiny"
        shutil.copytree(TINY, tiny)
        rows.append(Row("tiny cold start ORT, first start", ort_cold_start(tiny), "s"))
        rows.append(Row("tiny cold start ORT, saved graph", ort_cold_start(tiny), "s"))
        tiny_rate = throughput(Embedder.load(tiny, CPU), 4000, args.batch)
        rows.append(Row(f"tiny model alone, batch {args.batch}", tiny_rate, "img/s"))

        manifest_384 = load_manifest(TINY)
        manifest_384 = ModelManifest(**{**manifest_384.__dict__, "image_size": 384})
        rate = preprocess_rate(manifest_384, args.preprocess_images)
        rows.append(Row("decode + preprocess 800x800 JPEG -> 384", rate, "img/s/core", ">= 100"))
        rate_tiny = preprocess_rate(load_manifest(TINY), args.preprocess_images)
        rows.append(Row("decode + preprocess 800x800 JPEG -> 32", rate_tiny, "img/s/core"))

        if not args.skip_so400m:
            with console.status("so400m-shaped model: export, cold starts, fp32, int8 ..."):
                rows.extend(so400m_rows(work, args.images, args.batch))

    table = Table(title="dahell embedder benchmark (CPU)")
    for column in ("measure", "value", "unit", "note"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.name, f"{row.value:.3g}", row.unit, row.note)
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
