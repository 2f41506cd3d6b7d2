"""SigLIP vision tower -> ONNX (`python -m dahell export-model`), plus the random test models.

The export needs the `[export]` extra (torch, transformers, optimum-onnx, onnx); nothing else in
dahell imports this package's heavy dependencies, so the daemon runs without them.

Steps: load the vision tower (a local folder holding a `SiglipVisionModel` or a full
`SiglipModel`, or a Hugging Face id already in the local cache: nothing is ever downloaded), save
it to a scratch folder, export it with optimum (`task="feature-extraction"`), keep only the
`pooler_output` output (what `get_image_features` returns), convert to fp16 or int8 when asked,
and write `model.onnx` + `manifest.json` into the output folder.

`build_random_vision_model` makes a random-weight tower from a fixed seed: the tiny one the tests
and the demo use (`models/make_tiny_siglip.py`), or one of so400m's exact shape for benchmarks.

Where each part lives: `pipeline` (`export_model`, the manifest, the steps), `tower` (the torch
side: the extra, random towers, loading a real one), `graph` (the ONNX side: optimum's export,
pruning to `pooler_output`, fp16/int8), `command` (`export-model`'s options and presets).
"""

from __future__ import annotations

from dahell.export.command import (
    DEFAULT_MODEL,
    DEFAULT_OUT,
    PRESETS,
    Preset,
    add_arguments,
    apply_preset,
    main,
)
from dahell.export.graph import INPUT_NAME, INT8_SETTINGS, OUTPUT_NAME, PRECISIONS, Precision
from dahell.export.graph import _convert as _convert  # the benchmarks quantise as export-model
from dahell.export.pipeline import MANIFEST_FORMAT, export_model, sha256_file
from dahell.export.tower import (
    EXTRA_MESSAGE,
    SO400M_SHAPE,
    TINY_SHAPE,
    VisionShape,
    build_random_vision_model,
    require_export_extra,
)

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_OUT",
    "EXTRA_MESSAGE",
    "INPUT_NAME",
    "INT8_SETTINGS",
    "MANIFEST_FORMAT",
    "OUTPUT_NAME",
    "PRECISIONS",
    "PRESETS",
    "SO400M_SHAPE",
    "TINY_SHAPE",
    "Precision",
    "Preset",
    "VisionShape",
    "add_arguments",
    "apply_preset",
    "build_random_vision_model",
    "export_model",
    "main",
    "require_export_extra",
    "sha256_file",
]
