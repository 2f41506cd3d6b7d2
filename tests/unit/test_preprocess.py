"""SigLIP preprocessing without a model: formats, rejections, output shape and range."""

from __future__ import annotations

import io
import zlib
from struct import pack

import numpy as np
import pytest
from PIL import Image

from dahell import image_decode
from dahell.embedder import ImageRejected, ModelManifest, preprocess, sniff_image
from dahell.image_decode import working_bytes
from dahell.reasons import EMBED_FAILURE_REASONS

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


# --- decoded bytes, strips, 16 bits (issue 17) ------------------------------------------------


def noisy(width: int, height: int, seed: int = 0) -> np.ndarray:
    """RGBA pixels with detail at every scale, so that any rounding difference would show."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 4), dtype=np.uint8)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "CMYK", "1"])
def test_strips_give_exactly_the_whole_image_conversion(mode: str) -> None:
    rgba = Image.fromarray(noisy(1500, 1100), "RGBA")
    img = rgba.convert("RGB").convert("P") if mode == "P" else rgba.convert(mode)
    rows = image_decode.STRIP_BYTES // (img.width * 4)
    assert img.height > 2 * rows  # several strips, the last one short
    got = image_decode.decode_rgb(
        encode(img, "PNG" if mode != "CMYK" else "TIFF"), SIZE, MAX_PIXELS
    )
    expected = img.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def test_sixteen_bit_rounds_to_its_eight_bit_twin_in_strips() -> None:
    eight = noisy(1300, 900)[..., 0]
    low_byte = np.random.default_rng(1).integers(-128, 129, eight.shape)
    sixteen = np.clip(eight.astype(np.int64) * 257 + low_byte, 0, 65535).astype(np.uint16)
    got = image_decode.decode_rgb(encode(Image.fromarray(sixteen), "PNG"), SIZE, MAX_PIXELS)
    twin = Image.fromarray(eight).convert("RGB").resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(twin))


def test_the_decoded_byte_count_follows_the_mode() -> None:
    dims = (4000, 3000)
    grey, sixteen, rgba = (working_bytes(m, dims, SIZE) for m in ("L", "I;16", "RGBA"))
    pixels = dims[0] * dims[1]
    assert sixteen - grey == pixels  # 2 bytes a pixel against 1
    assert rgba - grey == 3 * pixels  # Pillow holds RGBA (and RGB, CMYK, LA) in 4
    assert working_bytes("RGB", dims, SIZE) == 4 * pixels + SIZE * dims[1] * 4
    assert working_bytes("RGB", dims, SIZE, "webp") > 3 * working_bytes("RGB", dims, SIZE) // 2
    # Narrower than S: converted whole, so the RGB copy is counted too.
    assert working_bytes("L", (SIZE - 1, 10_000), SIZE) > 5 * (SIZE - 1) * 10_000


def test_the_decoded_byte_cap_refuses_what_the_pixel_cap_lets_through() -> None:
    dims = (1200, 1000)
    sixteen = encode(Image.fromarray(np.zeros(dims[::-1], dtype=np.uint16)), "PNG")
    eight = encode(Image.new("L", dims), "PNG")
    cap = working_bytes("L", dims, SIZE)
    check(preprocess(eight, MANIFEST, MAX_PIXELS, cap))
    with pytest.raises(ImageRejected) as info:
        preprocess(sixteen, MANIFEST, MAX_PIXELS, cap)
    assert info.value.reason == "decoded_too_large"
    assert "1200x1000 I;16" in info.value.detail
    assert "decoded_too_large" in EMBED_FAILURE_REASONS


def test_the_default_caps_take_the_largest_allowed_image_of_every_kind() -> None:
    side = 8000  # the default max_image_pixels, 64 M
    for mode in ("L", "P", "I;16", "LA", "RGB", "RGBA", "CMYK"):
        assert working_bytes(mode, (side, side), 384) <= image_decode.MAX_DECODED_BYTES, mode
