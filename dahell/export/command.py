"""`python -m dahell export-model`: its options, the measured presets, and what it logs."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from dahell.export.graph import PRECISIONS, Precision
from dahell.export.pipeline import export_model
from dahell.log import get_logger

DEFAULT_MODEL = "google/siglip-so400m-patch14-384"
DEFAULT_OUT = Path("models/siglip-so400m-patch14-384")

log = get_logger(component="export")


@dataclass(frozen=True)
class Preset:
    """A model choice one flag away: `export-model --preset NAME`."""

    model: str
    precision: Precision
    out: Path
    note: str


#: Measured on a 2-core CPU with tests/benchmarks/bench_models.py (README, "Choosing a model for
#: a CPU"; images/s, hours for 25,000 products): so400m at 384 px 0.19 fp32 (37 h), 0.78 int8
#: (9 h); so400m at 224 px 0.80 fp32, 2.31 int8 (3 h); base at 224 px 5.4 fp32, 14.2 int8
#: (0.5 h). `cpu` is so400m-patch14-224 in int8: the large tower and its 1152 dimensions in
#: ~3 h; `cpu-384` keeps the production checkpoint itself (~9 h, no re-embed); `cpu-fast` is the
#: base tower (768 dimensions, weaker look-alikes) for the smallest machines.
PRESETS: dict[str, Preset] = {
    "cpu": Preset(
        "google/siglip-so400m-patch14-224",
        "int8",
        Path("models/siglip-so400m-patch14-224"),
        "so400m at 224 px, int8: the recommended CPU choice (~3 h for 25,000 products on "
        "2 cores; 1152 dimensions, another checkpoint than the 384 px one: `dahell reembed`)",
    ),
    "cpu-384": Preset(
        DEFAULT_MODEL,
        "int8",
        DEFAULT_OUT,
        "so400m at 384 px, int8: the production checkpoint itself (~9 h; no re-embed)",
    ),
    "cpu-fast": Preset(
        "google/siglip-base-patch16-224",
        "int8",
        Path("models/siglip-base-patch16-224"),
        "base at 224 px, int8: fastest (~0.5 h), 768 dimensions, weaker look-alikes "
        "(`dahell reembed`)",
    ),
    "gpu": Preset(DEFAULT_MODEL, "fp16", DEFAULT_OUT, "so400m at 384 px, fp16 for a GPU"),
}


def apply_preset(args: argparse.Namespace) -> argparse.Namespace:
    """Fill `--model`, `--precision` and `--out` from `--preset` where they were left default."""
    name = getattr(args, "preset", None)
    if not name:
        return args
    preset = PRESETS[name]
    if args.model == DEFAULT_MODEL:
        args.model = preset.model
    if args.precision == "fp32":
        args.precision = preset.precision
    if Path(args.out) == DEFAULT_OUT:
        args.out = preset.out
    return args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `export-model` subcommand's options."""
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="a local folder (SiglipVisionModel or SiglipModel) or a Hugging Face id already "
        f"in the local cache (default: {DEFAULT_MODEL}); nothing is downloaded",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32 (default, exact), fp16 (GPU: half the size, same speed or faster), "
        "int8 (CPU-only machines: dynamic quantisation, about 2x faster, small accuracy loss)",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="a measured choice (README, 'Choosing a model for a CPU'): "
        + "; ".join(f"{name}: {p.note}" for name, p in PRESETS.items())
        + ". --model, --precision and --out given explicitly win",
    )
    parser.add_argument(
        "--opset", type=int, default=None, help="ONNX opset (default: optimum's choice)"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="log events only, no progress line"
    )


def main(args: argparse.Namespace) -> int:
    """Run `export-model`; 0 on success (errors propagate as `DahellError`)."""
    import sys

    progress = not getattr(args, "no_progress", False) and sys.stderr.isatty()
    args = apply_preset(args)
    out = export_model(
        args.model, Path(args.out), args.precision, progress, opset=getattr(args, "opset", None)
    )
    log.info(
        "export_model_written",
        out=str(out),
        precision=args.precision,
        preset=getattr(args, "preset", None),
        next_step=f"set vectorizer.model_dir = {str(out)!r}; a model of another dimension "
        "than the stored embeddings needs `python -m dahell reembed`",
    )
    return 0
