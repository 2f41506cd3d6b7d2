"""Peak memory of preprocessing one image, per format, mode and bit depth, against the old code.

    python tests/benchmarks/bench_image_memory.py [--side 8000] [--size 384] [--baseline REV]

Each image is preprocessed in a fresh child process, once by this tree's `preprocess` and once
by `dahell/embedder.py` as it was at `--baseline` (`git show`, default: the commit before issue
17's fix). The figure is how far the child's RSS high-water mark (VmHWM, reset through
/proc/self/clear_refs just before the call) rises above its RSS before that one call, made after
a warm-up on a small image of the same kind: it counts Pillow's, libjpeg's and libwebp's C
allocations, which tracemalloc would not see (Linux only). MB are
10**6 bytes. Images are `--side` x `--side` (8000: the default `max_image_pixels`, 64 M pixels);
a kind the new code refuses at that size (`decoded_too_large`) gets a second row at the largest
side it accepts, found by stepping down 5 % at a time. `counted` is what the new decoded-byte
cap counts for the image (`dahell.image_decode.working_bytes`). Goal: <= 300 MB for any image
the new code accepts. Takes a few minutes on 2 cores (the old code needs ~2 GB for some cases).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from rich.console import Console
from rich.table import Table

from dahell.image_decode import DRAFT_MIN_FACTOR, MAX_DECODED_BYTES, working_bytes

REPO = Path(__file__).resolve().parents[2]
BASELINE = "6aaf719"
MAX_PIXELS = 64_000_000
GOAL_MB = 300
console = Console(width=150)

CHILD = r"""
import importlib.util, json, sys
from pathlib import Path

def status_kb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)

module_file, warm, image, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if module_file == "-":
    import dahell.embedder as mod
else:
    spec = importlib.util.spec_from_file_location("baseline_embedder", module_file)
    mod = sys.modules["baseline_embedder"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
manifest = mod.ModelManifest(
    format=1, source_model="bench", model_type="siglip_vision_model", dim=8, image_size=size,
    resample="bicubic", rescale_factor=1 / 255, mean=(0.5,) * 3, std=(0.5,) * 3, opset=18,
    precision="fp32", input_name="pixel_values", output_name="pooler_output",
    graph_sha256="0" * 64, exported_at="", dahell_version="bench",
)
mod.preprocess(Path(warm).read_bytes(), manifest, MAX_PIXELS)
data = Path(image).read_bytes()
Path("/proc/self/clear_refs").write_text("5")  # the high-water mark starts again from here
before = status_kb("VmRSS")
try:
    out = mod.preprocess(data, manifest, MAX_PIXELS)
    outcome = f"ok {out.dtype}"
except mod.ImageRejected as exc:
    outcome = exc.reason
after = status_kb("VmHWM")
print(json.dumps({"peak_mb": (after - before) * 1024 / 1e6, "outcome": outcome}))
""".replace("MAX_PIXELS", str(MAX_PIXELS))


def png(side: int, colour_type: int, depth: int) -> bytes:
    """A PNG of zeros (a palette of one colour for type 3): kilobytes on disk, any size decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    samples = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour_type]
    row = b"\x00" * (1 + side * samples * depth // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, depth, colour_type, 0, 0, 0)
    palette = chunk(b"PLTE", b"\x10\x20\x30") if colour_type == 3 else b""
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + palette + chunk(b"IDAT", idat)


def pillow(fmt: str, mode: str, **options: object) -> Callable[[int], bytes]:
    def make(side: int) -> bytes:
        buf = io.BytesIO()
        Image.new(mode, (side, side)).save(buf, fmt, **options)
        return buf.getvalue()

    return make


CASES: dict[str, Callable[[int], bytes]] = {
    "png grey 8-bit": lambda s: png(s, 0, 8),
    "png grey 16-bit": lambda s: png(s, 0, 16),
    "png grey+alpha 8-bit": lambda s: png(s, 4, 8),
    "png palette 8-bit": lambda s: png(s, 3, 8),
    "png RGB 8-bit": lambda s: png(s, 2, 8),
    "png RGB 16-bit": lambda s: png(s, 2, 16),
    "png RGBA 8-bit": lambda s: png(s, 6, 8),
    "png RGBA 16-bit": lambda s: png(s, 6, 16),
    "jpeg grey": pillow("JPEG", "L"),
    "jpeg RGB": pillow("JPEG", "RGB"),
    "jpeg CMYK": pillow("JPEG", "CMYK"),
    "tiff CMYK": pillow("TIFF", "CMYK", compression="tiff_adobe_deflate"),
    "tiff grey 16-bit": pillow("TIFF", "I;16", compression="tiff_adobe_deflate"),
    "gif palette": pillow("GIF", "P"),
    "webp RGB": pillow("WEBP", "RGB", quality=50, method=0),
    "webp RGBA": pillow("WEBP", "RGBA", quality=50, method=0),
}


@dataclass
class Result:
    case: str
    side: int
    counted_mb: float
    old_mb: float
    old_outcome: str
    new_mb: float
    new_outcome: str


def measure(module_file: str, warm: Path, image: Path, size: int) -> tuple[float, str]:
    """(peak MB, outcome) of one preprocess call in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-c", CHILD, module_file, str(warm), str(image), str(size)]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        return float("nan"), f"exit {done.returncode}: {done.stderr.strip()[-120:]}"
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    return float(answer["peak_mb"]), str(answer["outcome"])


def counted(path: Path, fmt_name: str, size: int) -> float:
    with Image.open(path) as img:
        if img.format == "JPEG" and img.mode in ("RGB", "L"):
            img.draft(img.mode, (size * DRAFT_MIN_FACTOR, size * DRAFT_MIN_FACTOR))
        return working_bytes(img.mode, img.size, size, fmt_name) / 1e6


def run_case(name: str, make: Callable[[int], bytes], args: argparse.Namespace) -> list[Result]:
    """The case at --side; if the new code refuses it there, also at the largest side it takes."""
    folder = Path(args.tmp)
    warm, image = folder / "warm", folder / "image"
    warm.write_bytes(make(64))
    results, side = [], args.side
    while True:
        image.write_bytes(make(side))
        new = measure("-", warm, image, args.size)
        if side == args.side or new[1] != "decoded_too_large" or side < 256:
            old = measure(args.old_module, warm, image, args.size)
            counted_mb = counted(image, name.split()[0], args.size)
            results.append(Result(name, side, counted_mb, *old, *new))
        if new[1] != "decoded_too_large" or side < 256:
            return results
        side = int(side * 0.95)


def report(results: list[Result]) -> None:
    table = Table(title=f"peak RSS rise per image (MB), cap {MAX_DECODED_BYTES / 1e6:.0f} MB")
    for column in (
        "image",
        "side",
        "counted",
        "old",
        "old outcome",
        "new",
        "new outcome",
        "old/new",
    ):
        table.add_column(
            column, justify="left" if "outcome" in column or column == "image" else "right"
        )
    for r in results:
        accepted = r.new_outcome.startswith("ok") and r.new_mb > 0
        ratio = f"{r.old_mb / r.new_mb:.1f}x" if accepted else "-"
        table.add_row(
            r.case,
            str(r.side),
            f"{r.counted_mb:.0f}",
            f"{r.old_mb:.0f}",
            r.old_outcome,
            f"{r.new_mb:.0f}",
            r.new_outcome,
            ratio,
        )
    console.print(table)
    accepted = [r.new_mb for r in results if r.new_outcome.startswith("ok")]
    worst = max(accepted, default=0.0)
    verdict = "met" if worst <= GOAL_MB else "NOT met"
    console.print(f"worst accepted image: {worst:.0f} MB (goal <= {GOAL_MB} MB: {verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=8000)
    parser.add_argument("--size", type=int, default=384, help="the model's input size S")
    parser.add_argument("--baseline", default=BASELINE, help="git revision of the old code")
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "baseline_embedder.py"
        source = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{args.baseline}:dahell/embedder.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        old.write_text(source, encoding="utf-8")
        args.tmp, args.old_module = tmp, str(old)
        results = []
        for name, make in CASES.items():
            if args.only in name:
                results.extend(run_case(name, make, args))
        report(results)


if __name__ == "__main__":
    main()
