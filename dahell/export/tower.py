"""The torch side: the `[export]` extra, random towers of a fixed shape, a real tower loaded.

Every heavy import (torch, transformers) happens inside a function, after
`require_export_extra` has said which package is missing.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dahell.errors import DahellError
from dahell.log import get_logger

EXTRA_MESSAGE = (
    "the export needs the [export] extra: pip install torch --index-url "
    "https://download.pytorch.org/whl/cpu && pip install 'dahell[export]'"
)
# SigLIP's processor defaults, used when the model has no preprocessor_config.json.
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)

log = get_logger(component="export")


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
