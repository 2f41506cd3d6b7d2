"""dahell's preprocessing + ONNX graph against transformers' SigLIP processor + torch model.

The reference is `SiglipImageProcessor` + `SiglipVisionModel` (`pooler_output`, what
`get_image_features` returns, then L2-normalised), rebuilt from the same seed as the committed
tiny model; ours is `preprocess` + `Embedder` on models/tiny-siglip. fp32: cosine >= 0.9999 on
every image. No network: the torch model is built locally from its seed.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from dahell.embedder import Embedder, preprocess

pytestmark = pytest.mark.usefixtures("export_extra")

TINY = Path(__file__).resolve().parents[2] / "models" / "tiny-siglip"
SEED = 0
BOUND = 0.9999


def photo(width: int, height: int, seed: int) -> Image.Image:
    """A product-photo-like picture: smooth background, shapes, text, sensor noise."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (5, 5, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        side = int(rng.integers(max(1, width // 12), max(2, width // 3)))
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        draw.ellipse((x, y, x + side, y + side), fill=colour)
        draw.text((int(rng.integers(0, width)), int(rng.integers(0, height))), "SKU 42", fill=0)
    noisy = np.asarray(img).astype(np.int16) + rng.integers(-8, 8, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def encode(img: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def with_alpha(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    alpha = np.zeros(img.size[::-1], dtype=np.uint8)
    alpha[:, : img.size[0] // 2] = 255
    alpha[: img.size[1] // 3] = 90
    rgba.putalpha(Image.fromarray(alpha))
    return rgba


def palette_with_transparency(img: Image.Image) -> bytes:
    pal = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return encode(pal, "PNG", transparency=0)


def animated(img: Image.Image) -> bytes:
    frames = [img, img.rotate(90), img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40)


CASES: dict[str, Callable[[], bytes]] = {
    "jpeg_800": lambda: encode(photo(800, 800, 1), "JPEG", quality=90),
    "jpeg_1600x1200_drafted": lambda: encode(photo(1600, 1200, 2), "JPEG", quality=92),
    "jpeg_3000x2000_drafted": lambda: encode(photo(3000, 2000, 3), "JPEG", quality=85),
    "jpeg_low_quality": lambda: encode(photo(64, 64, 4), "JPEG", quality=30),
    "jpeg_greyscale_large": lambda: encode(photo(1200, 900, 5).convert("L"), "JPEG"),
    "jpeg_cmyk": lambda: encode(photo(300, 300, 6).convert("CMYK"), "JPEG"),
    "jpeg_1x1": lambda: encode(photo(1, 1, 7), "JPEG"),
    "jpeg_very_tall": lambda: encode(photo(7, 1500, 8), "JPEG"),
    "png_rgb": lambda: encode(photo(300, 200, 9), "PNG"),
    "png_rgba": lambda: encode(with_alpha(photo(256, 256, 10)), "PNG"),
    "png_la": lambda: encode(with_alpha(photo(120, 90, 11)).convert("LA"), "PNG"),
    "png_greyscale": lambda: encode(photo(200, 300, 12).convert("L"), "PNG"),
    "png_palette": lambda: encode(photo(150, 150, 13).convert("P"), "PNG"),
    "png_palette_transparent": lambda: palette_with_transparency(photo(150, 100, 14)),
    "png_1x1": lambda: encode(photo(1, 1, 15), "PNG"),
    "png_2x3": lambda: encode(photo(2, 3, 16), "PNG"),
    "png_exact_input_size": lambda: encode(photo(32, 32, 17), "PNG"),
    "png_very_wide": lambda: encode(photo(2000, 10, 18), "PNG"),
    "gif_animated": lambda: animated(photo(100, 100, 19)),
    "gif_single": lambda: encode(photo(90, 60, 20), "GIF"),
    "webp_lossy": lambda: encode(photo(400, 300, 21), "WEBP", quality=80),
    "webp_rgba": lambda: encode(with_alpha(photo(200, 200, 22)), "WEBP", lossless=True),
    "bmp": lambda: encode(photo(100, 80, 23), "BMP"),
    "tiff": lambda: encode(photo(128, 96, 24), "TIFF"),
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    from transformers import SiglipImageProcessor, SiglipVisionModel

    from dahell.export import TINY_SHAPE, build_random_vision_model

    folder = build_random_vision_model(tmp_path_factory.mktemp("tower"), TINY_SHAPE, SEED)
    model = SiglipVisionModel.from_pretrained(folder, local_files_only=True)
    model.eval()
    processor = SiglipImageProcessor.from_pretrained(folder, local_files_only=True)
    return processor, model


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder.load(TINY, ["CPUExecutionProvider"])


def reference_vector(processor: Any, model: Any, data: bytes) -> np.ndarray:
    import torch

    image = Image.open(io.BytesIO(data))
    # channels_last: tiny images (1x1, 2x3) are otherwise ambiguous to the processor.
    inputs = processor(images=image, return_tensors="pt", input_data_format="channels_last")
    with torch.no_grad():
        pooled = model(**inputs).pooler_output[0].numpy().astype(np.float64)
    return pooled / np.linalg.norm(pooled)


def test_there_are_at_least_twenty_cases() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_transformers(name: str, reference: tuple[Any, Any], embedder: Embedder) -> None:
    processor, model = reference
    data = CASES[name]()
    ours = embedder.embed(preprocess(data, embedder.manifest, 64_000_000)[None])[0]
    theirs = reference_vector(processor, model, data)
    cosine = float(ours.astype(np.float64) @ theirs)
    assert cosine >= BOUND, f"{name}: cosine {cosine:.6f} < {BOUND}"


def test_cases_are_not_all_alike(reference: tuple[Any, Any]) -> None:
    """The bound means something only if different images give clearly different vectors."""
    processor, model = reference
    vectors = np.stack([reference_vector(processor, model, CASES[n]()) for n in sorted(CASES)])
    similarity = vectors @ vectors.T
    off_diagonal = similarity[np.triu_indices(len(vectors), 1)]
    assert np.median(off_diagonal) < 0.99
