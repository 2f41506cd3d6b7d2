"""SigLIP vision tower -> ONNX (`python -m dahell export-model`), plus the random test models.

The export needs the `[export]` extra (torch, transformers, optimum-onnx, onnx); nothing else in
dahell imports this module's heavy dependencies, so the daemon runs without them.

Steps: load the vision tower (a local folder holding a `SiglipVisionModel` or a full
`SiglipModel`, or a Hugging Face id already in the local cache: nothing is ever downloaded), save
it to a scratch folder, export it with optimum (`task="feature-extraction"`), keep only the
`pooler_output` output (what `get_image_features` returns), convert to fp16 or int8 when asked,
and write `model.onnx` + `manifest.json` into the output folder.

`build_random_vision_model` makes a random-weight tower from a fixed seed: the tiny one the tests
and the demo use (`models/make_tiny_siglip.py`), or one of so400m's exact shape for benchmarks.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from dahell.errors import DahellError
from dahell.log import get_logger

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8")
DEFAULT_MODEL = "google/siglip-so400m-patch14-384"
DEFAULT_OUT = Path("models/siglip-so400m-patch14-384")
MANIFEST_FORMAT = 1
INPUT_NAME = "pixel_values"
OUTPUT_NAME = "pooler_output"
EXTRA_MESSAGE = (
    "the export needs the [export] extra: pip install torch --index-url "
    "https://download.pytorch.org/whl/cpu && pip install 'dahell[export]'"
)
# SigLIP's processor defaults, used when the model has no preprocessor_config.json.
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)

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


@dataclass(frozen=True)
class VisionShape:
    """The shape of a SigLIP vision tower (the fields of `SiglipVisionConfig` we set)."""

    image_size: int
    patch_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int


#: The tiny tower committed under models/tiny-siglip (tests, demo): about 40k parameters.
TINY_SHAPE = VisionShape(32, 8, 32, 2, 2, 64)
#: google/siglip-so400m-patch14-384's vision tower: 428M parameters, 1152 dimensions.
SO400M_SHAPE = VisionShape(384, 14, 1152, 27, 16, 4304)


def require_export_extra() -> None:
    """Raise `DahellError` naming the `[export]` extra when its packages are missing."""
    missing = [
        name
        for name in ("torch", "transformers", "optimum.exporters.onnx", "onnx")
        if not _importable(name)
    ]
    if missing:
        raise DahellError(f"{EXTRA_MESSAGE} (missing: {', '.join(missing)})")


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def build_random_vision_model(folder: Path, shape: VisionShape, seed: int = 0) -> Path:
    """Save a random-weight `SiglipVisionModel` (fixed seed) and its image processor to `folder`."""
    require_export_extra()
    import torch
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    config = SiglipVisionConfig(  # type: ignore[no-untyped-call]
        image_size=shape.image_size,
        patch_size=shape.patch_size,
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        intermediate_size=shape.intermediate_size,
    )
    torch.manual_seed(seed)
    model = SiglipVisionModel(config)
    model.eval()  # type: ignore[no-untyped-call]
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor = SiglipImageProcessor(
        size={"height": shape.image_size, "width": shape.image_size}, do_convert_rgb=True
    )
    processor.save_pretrained(folder)
    return folder


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


def _save_vision_tower(model: str, folder: Path) -> dict[str, Any]:
    """Load the vision tower locally (never from the network), save it, describe it."""
    from transformers import SiglipVisionModel

    try:
        tower = SiglipVisionModel.from_pretrained(model, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise DahellError(
            f"cannot load a SigLIP vision model from {model!r} without the network: give a local "
            f"folder (save_pretrained output) or an id already in the Hugging Face cache ({exc})"
        ) from exc
    tower.eval()
    tower.save_pretrained(folder)
    config = tower.config
    info: dict[str, Any] = {
        "model_type": str(config.model_type),
        "dim": int(config.hidden_size),
        "image_size": int(config.image_size),
        "resample": "bicubic",
        "rescale_factor": 1 / 255,
        "mean": list(SIGLIP_MEAN),
        "std": list(SIGLIP_STD),
    }
    info.update(_processor_settings(model, int(config.image_size)))
    return info


def _processor_settings(model: str, default_size: int) -> dict[str, Any]:
    """Image size, resample, rescale and mean/std from the model's preprocessor_config.json."""
    from transformers import SiglipImageProcessor

    try:
        proc = SiglipImageProcessor.from_pretrained(model, local_files_only=True)
    except (OSError, ValueError):
        log.warning("export_no_processor_config", model=model, using="siglip defaults")
        return {}
    size = proc.size or {}
    height, width = size.get("height", default_size), size.get("width", default_size)
    if height != width:
        raise DahellError(f"{model}: non-square processor size {height}x{width} is not supported")
    if int(proc.resample) != 3:  # PIL.Image.Resampling.BICUBIC
        raise DahellError(f"{model}: processor resample {proc.resample} is not bicubic")
    return {
        "image_size": int(height),
        "rescale_factor": float(proc.rescale_factor),
        "mean": [float(v) for v in _three(proc.image_mean)],
        "std": [float(v) for v in _three(proc.image_std)],
    }


def _three(value: Any) -> list[float]:
    values = [value] * 3 if isinstance(value, int | float) else list(value)
    if len(values) != 3:
        raise DahellError(f"expected 3 channel values, got {values!r}")
    return [float(v) for v in values]


def _optimum_export(tower: Path, folder: Path, opset: int | None, validate: bool) -> Path:
    from optimum.exporters.onnx import main_export

    main_export(
        str(tower),
        output=folder,
        task="feature-extraction",
        opset=opset,
        local_files_only=True,
        do_validation=validate,
    )
    return folder / "model.onnx"


def _keep_pooler_output(path: Path) -> int:
    """Drop every graph output but `pooler_output`; return the graph's default-domain opset."""
    import onnx

    proto = onnx.load(str(path))
    names = [o.name for o in proto.graph.output]
    if OUTPUT_NAME not in names:
        raise DahellError(f"the exported graph has no {OUTPUT_NAME} output (outputs: {names})")
    keep = [o for o in proto.graph.output if o.name == OUTPUT_NAME]
    del proto.graph.output[:]
    proto.graph.output.extend(keep)
    _drop_dead_nodes(proto.graph)
    onnx.save(proto, str(path))
    return next((op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")), 0)


def _drop_dead_nodes(graph: Any) -> None:
    """Remove nodes whose outputs nothing uses any more (after dropping a graph output)."""
    needed = {o.name for o in graph.output}
    alive = []
    for node in reversed(list(graph.node)):
        if any(name in needed for name in node.output):
            alive.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(alive))
    used = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(used)


def _convert(fp32: Path, target: Path, precision: Precision) -> None:
    if precision == "fp32":
        shutil.copyfile(fp32, target)
    elif precision == "fp16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        half = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
        onnx.save(half, str(target))
    else:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(
            fp32,
            target,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(_INT8_OPS),
            reduce_range=True,
        )


#: Dynamic int8 quantisation, recorded in the manifest. MatMul/Gemm weights only, 7-bit range:
#: on CPUs without VNNI (AVX2 only) the u8s8 kernels saturate with the full 8-bit range, and the
#: so400m-shaped tower's cosine to fp32 fell to 0.93; with `reduce_range` it is 0.9994, at ~1.6x
#: fp32's images/s there. On a CPU with AVX-512 VNNI/AMX (the 2-core machine of 2026-12-02)
#: bench_models.py measured 4.1x (0.19 -> 0.78 images/s; 0.23 -> 0.95 in a busier run).
_INT8_OPS = ("MatMul", "Gemm")
INT8_SETTINGS: dict[str, object] = {
    "method": "onnxruntime.quantization.quantize_dynamic",
    "weight_type": "QInt8",
    "op_types_to_quantize": list(_INT8_OPS),
    "reduce_range": True,
}


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
