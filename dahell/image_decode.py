"""Image bytes to an 8-bit RGB picture of the model's input size, in bounded memory.

Blocking and thread-safe; no asyncio, no numpy floats. `decode_rgb` is the decoding half of
`dahell.embedder.preprocess`: it does what transformers' `SiglipImageProcessor` does before its
float work (`convert("RGB")`, then a PIL bicubic resize straight to S x S), and nothing it does
needs more memory than the decoded image itself plus a few megabytes.

Why: a 124 KB PNG can hold 8000 x 8000 16-bit pixels. The pixel cap let it through, and
converting it whole (16-bit to float64, then to RGB) took 1.6 GB. So, in order:

1. the format is sniffed from the magic bytes (`not_an_image`), the pixel count read from the
   header is checked against `max_pixels` (`too_many_pixels`), JPEGs are drafted (below);
2. the bytes the decode will hold are counted before any pixel is decoded, and checked against
   `max_bytes` (`decoded_too_large`): width x height x the bytes per pixel Pillow stores for the
   decoded mode (1 for L/P, 2 for 16-bit greyscale, 4 for RGB, RGBA, CMYK, LA and 32-bit modes),
   times the decoder's own copies (WebP decodes into a buffer of its own first), plus the RGB
   working size (`working_bytes`);
3. the image is converted to 8-bit RGB and shrunk **in strips of rows**: each strip is
   converted (Pillow's `convert("RGB")`, alpha dropped, not composited; 16-bit greyscale scaled
   by 1/257 with integer arithmetic where Pillow would clip it) and resized horizontally to S
   columns; the S-wide image is then resized vertically to S rows. Pillow's bicubic resize is
   this same two-pass resize (horizontal first, each pass rounded to 8 bits), so the result is
   identical, bit for bit, to converting the whole image and resizing it, without ever holding
   a full-size RGB copy. Images narrower than S (where Pillow's order differs) and RGB images
   (nothing to convert) are resized whole, and their working size counted as such;
4. the EXIF orientation is applied to the S x S result (the reference does not apply it at all;
   on a square output, rotating before or after resizing differs only in rounding).

JPEG draft mode (DCT-domain downscaling while decoding) is used only when the drafted image
stays at least `DRAFT_MIN_FACTOR` (8) times the model's input size in both dimensions: the
smallest factor that keeps the parity test's cosine >= 0.9999 (factor 4 gave 0.9994, 6 and 8
0.99996 on the tiny model; see models/README.md). At 384 px that drafts only photos of 6144 px
and more per side, the ones whose full decode costs most.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import numpy.typing as npt
from PIL import Image, JpegImagePlugin

__all__ = [
    "DRAFT_MIN_FACTOR",
    "MAX_DECODED_BYTES",
    "REJECT_REASONS",
    "ImageRejected",
    "decode_rgb",
    "sniff_image",
    "working_bytes",
]

#: JPEG draft mode only while the drafted image keeps >= this many times S pixels per side.
DRAFT_MIN_FACTOR = 8
#: What decoding one image may hold at once (`working_bytes`): with the decoders' small buffers
#: and the allocator's slack, one image stays under 300 MB. An 8000 x 8000 RGB or RGBA image,
#: the default pixel cap, fits; a 16-bit one fits at any size the pixel cap allows.
MAX_DECODED_BYTES = 280_000_000
#: Rows are converted and shrunk this many bytes (as RGB) at a time.
STRIP_BYTES = 2 * 1024 * 1024
#: What one strip costs at most: the crop, its RGB conversion, a 16-bit strip's integer copy.
STRIP_OVERHEAD = 5 * STRIP_BYTES
REJECT_REASONS = frozenset({"not_an_image", "decode_error", "too_many_pixels", "decoded_too_large"})
_PIL_FORMATS = {
    "jpeg": "JPEG",
    "png": "PNG",
    "webp": "WEBP",
    "gif": "GIF",
    "bmp": "BMP",
    "tiff": "TIFF",
}
#: Full-size copies a decoder holds besides the image (WebP: libwebp's canvas and its bytes).
_DECODER_COPIES = {"webp": 3}
_SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})  # "I": when > 255
_ONE_BYTE = frozenset({"1", "L", "P"})
_TWO_BYTES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
#: EXIF orientation -> the transpose that makes the picture upright (as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageRejected(Exception):
    """An image that cannot be embedded; `reason` is one of `REJECT_REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def sniff_image(data: bytes) -> str | None:
    """The image format by its magic bytes: jpeg, png, webp, gif, bmp, tiff, or None."""
    head = data[:16]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:2] == b"BM" and len(data) > 26:
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return None


def decode_rgb(
    data: bytes, size: int, max_pixels: int, max_bytes: int = MAX_DECODED_BYTES
) -> Image.Image:
    """Image bytes -> 8-bit RGB, size x size (see the module doc for the steps and caps).

    Raises `ImageRejected` with reason `not_an_image`, `too_many_pixels`, `decoded_too_large`
    or `decode_error`.
    """
    fmt = sniff_image(data)
    if fmt is None:
        raise ImageRejected("not_an_image", f"unknown magic bytes {data[:8].hex()}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[fmt]]) as img:
                _check_pixels(img, max_pixels)
                _maybe_draft(img, size)
                _check_bytes(img, fmt, size, max_bytes)
                return _upright(_shrink(img, size), img)
    except ImageRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageRejected("too_many_pixels", str(exc)) from None
    except Exception as exc:  # Pillow raises many types on corrupt input
        raise ImageRejected("decode_error", f"{fmt}: {type(exc).__name__}: {exc}") from None


def _check_pixels(img: Image.Image, max_pixels: int) -> None:
    width, height = img.size
    if width * height > max_pixels:
        raise ImageRejected("too_many_pixels", f"{width}x{height} > {max_pixels} pixels")
    if width < 1 or height < 1:
        raise ImageRejected("decode_error", f"empty image {width}x{height}")


def _maybe_draft(img: Image.Image, size: int) -> None:
    """Let libjpeg downscale by 2, 4 or 8 while keeping >= DRAFT_MIN_FACTOR x size per side."""
    if isinstance(img, JpegImagePlugin.JpegImageFile) and img.mode in ("RGB", "L"):
        # Pillow picks the largest scale that keeps both sides >= the requested size.
        target = size * DRAFT_MIN_FACTOR
        img.draft(img.mode, (target, target))


def _check_bytes(img: Image.Image, fmt: str, size: int, max_bytes: int) -> None:
    need = working_bytes(img.mode, img.size, size, fmt)
    if need > max_bytes:
        width, height = img.size
        detail = (
            f"{width}x{height} {img.mode} ({fmt}) needs {need / 1e6:.0f} MB to decode and "
            f"convert > {max_bytes / 1e6:.0f} MB"
        )
        raise ImageRejected("decoded_too_large", detail)


def working_bytes(mode: str, dims: tuple[int, int], size: int, fmt: str = "png") -> int:
    """Bytes `decode_rgb` holds at once for a decoded image of this mode and width x height."""
    width, height = dims
    decoded = width * height * _pixel_bytes(mode) * (1 + _DECODER_COPIES.get(fmt, 0))
    horizontal = size * height * 4  # the S-wide RGB image between the two resize passes
    if mode == "RGB":
        return decoded + horizontal
    if _whole(mode, width, size):
        eight_bit = width * height if mode in _SIXTEEN_BIT else 0
        return decoded + eight_bit + width * height * 4 + horizontal + STRIP_OVERHEAD
    return decoded + horizontal + STRIP_OVERHEAD


def _pixel_bytes(mode: str) -> int:
    """Bytes per pixel as Pillow stores the mode (3-band modes are padded to 4)."""
    if mode in _ONE_BYTE:
        return 1
    return 2 if mode in _TWO_BYTES else 4


def _whole(mode: str, width: int, size: int) -> bool:
    """Whether the image is converted and resized whole rather than in strips."""
    return mode == "RGB" or width < size


def _shrink(img: Image.Image, size: int) -> Image.Image:
    """Convert to 8-bit RGB and resize to size x size: whole, or strip by strip (module doc)."""
    scale = _needs_scaling(img)
    width, height = img.size
    if _whole(img.mode, width, size):
        return _eight_bit_rgb(img, scale).resize((size, size), Image.Resampling.BICUBIC)
    narrow = Image.new("RGB", (size, height))
    rows = max(1, STRIP_BYTES // (width * 4))
    for top in range(0, height, rows):
        strip = _eight_bit_rgb(img.crop((0, top, width, min(height, top + rows))), scale)
        narrow.paste(strip.resize((size, strip.height), Image.Resampling.BICUBIC), (0, top))
    return narrow.resize((size, size), Image.Resampling.BICUBIC)


def _needs_scaling(img: Image.Image) -> bool:
    """16-bit greyscale is scaled by 1/257; 32-bit "I" only when it holds values above 255."""
    if img.mode not in _SIXTEEN_BIT:
        return False
    if img.mode != "I":
        return True
    extrema = img.getextrema()
    return bool(extrema[1] > 255)  # type: ignore[operator]


def _eight_bit_rgb(img: Image.Image, scale: bool) -> Image.Image:
    """Pillow's own conversion, as the reference does (alpha dropped); 16-bit scaled to 8."""
    if img.mode == "RGB":
        return img
    if img.mode in _SIXTEEN_BIT:
        return _sixteen_to_grey(img, scale).convert("RGB")
    return img.convert("RGB")


def _sixteen_to_grey(img: Image.Image, scale: bool) -> Image.Image:
    """16-bit (or 32-bit) greyscale -> 8-bit "L", a block of rows at a time (no float copy)."""
    width, height = img.size
    out = np.empty((height, width), dtype=np.uint8)
    rows = max(1, STRIP_BYTES // (width * 8))
    for top in range(0, height, rows):
        block = np.asarray(img.crop((0, top, width, min(height, top + rows))))
        out[top : top + block.shape[0]] = _to_eight_bits(block, scale)
    return Image.fromarray(out)


def _to_eight_bits(wide: npt.NDArray[np.integer], scale: bool) -> npt.NDArray[np.uint8]:
    """round(v / 257) (never a tie: 257 is odd) in integers, clipped to 0..255."""
    values = wide.astype(np.int64)
    if scale:
        values += 128
        values //= 257
    np.clip(values, 0, 255, out=values)
    return values.astype(np.uint8)


def _upright(img: Image.Image, source: Image.Image) -> Image.Image:
    """Apply the source's EXIF orientation to the small result."""
    method = _UPRIGHT.get(source.getexif().get(0x0112, 1))
    return img if method is None else img.transpose(method)
