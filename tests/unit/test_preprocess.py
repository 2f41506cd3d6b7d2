"""SigLIP preprocessing without a model: formats, rejections, output shape and range."""

from __future__ import annotations

import io
import zlib
from struct import pack

import numpy as np
import pytest
from PIL import Image

from dahell.embedder import ImageRejected, ModelManifest, preprocess, sniff_image

SIZE = 32
MANIFEST = ModelManifest(
    format=1,
    source_model="test",
    model_type="siglip_vision_model",
    dim=8,
    image_size=SIZE,
    resample="bicubic",
    rescale_factor=1 / 255,
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    opset=18,
    precision="fp32",
    input_name="pixel_values",
    output_name="pooler_output",
    graph_sha256="0" * 64,
    exported_at="2026-01-01T00:00:00+00:00",
    dahell_version="test",
)
MAX_PIXELS = 64_000_000


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def gradient(width: int = 64, height: int = 48) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    rgb = np.stack([x, y, 255 - x], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb)


def reference(img: Image.Image) -> np.ndarray:
    """The processor's recipe written out with Pillow and numpy."""
    arr = np.asarray(img.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BICUBIC))
    return ((arr.astype(np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1)


def check(pixels: np.ndarray) -> None:
    assert pixels.shape == (3, SIZE, SIZE)
    assert pixels.dtype == np.float32
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0


@pytest.mark.parametrize(
    ("fmt", "mode", "expect"),
    [
        ("JPEG", "RGB", "jpeg"),
        ("PNG", "RGBA", "png"),
        ("WEBP", "RGB", "webp"),
        ("BMP", "RGB", "bmp"),
        ("TIFF", "RGB", "tiff"),
        ("PNG", "L", "png"),
        ("PNG", "LA", "png"),
        ("PNG", "P", "png"),
        ("JPEG", "L", "jpeg"),
        ("JPEG", "CMYK", "jpeg"),
    ],
)
def test_common_formats_and_modes_preprocess(fmt: str, mode: str, expect: str) -> None:
    img = gradient().convert(mode)
    data = encode(img, fmt)
    assert sniff_image(data) == expect
    pixels = preprocess(data, MANIFEST, MAX_PIXELS)
    check(pixels)
    if fmt in ("PNG", "BMP", "TIFF"):  # lossless: exactly the reference recipe
        decoded = Image.open(io.BytesIO(data))
        np.testing.assert_allclose(pixels, reference(decoded), atol=1e-6)


def test_alpha_is_dropped_not_composited() -> None:
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red stored under fully transparent pixels
    pixels = preprocess(encode(Image.fromarray(rgba), "PNG"), MANIFEST, MAX_PIXELS)
    np.testing.assert_allclose(pixels[0], (200 / 255 - 0.5) / 0.5, atol=1e-6)
    np.testing.assert_allclose(pixels[1:], -1.0, atol=1e-6)


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (40, 40), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert sniff_image(data) == "gif"
    pixels = preprocess(data, MANIFEST, MAX_PIXELS)
    assert pixels[0].mean() > 0.9 and pixels[2].mean() < -0.9


def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    grey = np.full((40, 40), 32768, dtype=np.uint16)  # mid grey in 16 bits
    data = encode(Image.fromarray(grey), "PNG")
    pixels = preprocess(data, MANIFEST, MAX_PIXELS)
    check(pixels)
    np.testing.assert_allclose(pixels, (128 / 255 - 0.5) / 0.5, atol=1e-6)


def test_exif_rotated_jpeg_comes_out_upright() -> None:
    img = Image.new("RGB", (64, 32), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 32, 32))  # white left half as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display turns it 90 degrees clockwise
    data = encode(img, "JPEG", exif=exif.tobytes(), quality=95)
    pixels = preprocess(data, MANIFEST, MAX_PIXELS)
    # Upright it is 32x64 with the white half on top.
    assert pixels[:, : SIZE // 2 - 2].mean() > 0.9
    assert pixels[:, SIZE // 2 + 2 :].mean() < -0.9


def test_large_jpeg_in_draft_mode_stays_close_to_full_decode() -> None:
    img = gradient(800, 800)
    data = encode(img, "JPEG", quality=90)
    drafted = preprocess(data, MANIFEST, MAX_PIXELS)
    full = reference(Image.open(io.BytesIO(data)))
    assert np.abs(drafted - full).max() < 0.05


def test_tiny_and_very_wide_images() -> None:
    check(preprocess(encode(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG"), MANIFEST, MAX_PIXELS))
    check(preprocess(encode(gradient(2000, 5), "PNG"), MANIFEST, MAX_PIXELS))


def test_html_is_not_an_image() -> None:
    html = b"<!DOCTYPE html><html><body>Access denied</body></html>"
    assert sniff_image(html) is None
    with pytest.raises(ImageRejected) as info:
        preprocess(html, MANIFEST, MAX_PIXELS)
    assert info.value.reason == "not_an_image"


def test_empty_bytes_are_not_an_image() -> None:
    with pytest.raises(ImageRejected) as info:
        preprocess(b"", MANIFEST, MAX_PIXELS)
    assert info.value.reason == "not_an_image"


def test_truncated_jpeg_is_a_decode_error() -> None:
    data = encode(gradient(200, 200), "JPEG")
    with pytest.raises(ImageRejected) as info:
        preprocess(data[: len(data) // 2], MANIFEST, MAX_PIXELS)
    assert info.value.reason == "decode_error"


def test_garbage_after_magic_is_a_decode_error() -> None:
    with pytest.raises(ImageRejected) as info:
        preprocess(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, MANIFEST, MAX_PIXELS)
    assert info.value.reason == "decode_error"


def bomb_png(width: int, height: int) -> bytes:
    """A greyscale PNG of width x height zeros: a few kB on disk, gigapixels decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return pack(">I", len(body)) + kind + body + pack(">I", zlib.crc32(kind + body))

    row = b"\x00" * (width + 1)
    compressor = zlib.compressobj(9)
    payload = b"".join(compressor.compress(row) for _ in range(64)) + compressor.flush()
    header = pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", payload)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    data = bomb_png(100_000, 100_000)
    assert len(data) < 100_000
    with pytest.raises(ImageRejected) as info:
        preprocess(data, MANIFEST, MAX_PIXELS)
    assert info.value.reason == "too_many_pixels"


def test_max_pixels_is_the_configured_cap() -> None:
    data = encode(gradient(100, 100), "PNG")
    with pytest.raises(ImageRejected) as info:
        preprocess(data, MANIFEST, 9_999)
    assert info.value.reason == "too_many_pixels"
    check(preprocess(data, MANIFEST, 10_000))


def test_same_bytes_give_the_same_tensor() -> None:
    data = encode(gradient(), "JPEG")
    np.testing.assert_array_equal(
        preprocess(data, MANIFEST, MAX_PIXELS), preprocess(data, MANIFEST, MAX_PIXELS)
    )
