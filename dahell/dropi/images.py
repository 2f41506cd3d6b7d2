"""The main image's full URL, from a product's gallery (percent-encoded, `/` kept)."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any
from urllib.parse import quote

# ---------------------------------------------------------------------------------------------
# Image URL
# ---------------------------------------------------------------------------------------------

#: Characters kept as they are when a full URL is quoted: the reserved set and "%".
_URL_SAFE = ":/?#[]@!$&'()*+,;=%~"


#: A path made only of these needs no quoting (most real paths): skips quote()'s cost.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_.\-~/]*")


@lru_cache(maxsize=32_768)
def _join_image(path: str, base: str) -> str:
    """Cached: a product's repeats (a dozen per product in real files) give the same path, and
    quoting one costs several µs."""
    if path.startswith(("http://", "https://")):
        return quote(path, safe=_URL_SAFE, errors="replace")
    path = path.lstrip("/")
    if not _PLAIN_PATH.fullmatch(path):
        path = quote(path, safe="/", errors="replace")
    return base.rstrip("/") + "/" + path


def _gallery_path(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return None
    for key in ("urlS3", "url"):
        path = entry.get(key)
        if isinstance(path, str) and path.strip():
            return path.strip()
    return None


def image_url(product: dict[str, Any], base: str) -> str | None:
    """The product's cover image: base + gallery path (urlS3, else url), `main` entry first."""
    gallery = product.get("gallery")
    if not isinstance(gallery, list):
        return None
    first: str | None = None
    for entry in gallery:
        path = _gallery_path(entry)
        if path is None:
            continue
        if entry.get("main") is True:
            return _join_image(path, base)
        if first is None:
            first = path
    return None if first is None else _join_image(first, base)
