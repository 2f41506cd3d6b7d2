"""The catalog endpoint as the app uses it: its request body, its answers, and journal lines.

Pure: no browser, no I/O. `PageResult.outcome` sorts every answer into the page outcomes the
stage acts on (`ok`, `auth`, `rate_limited`, or a failure reason for the counters).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from dahell.config import ScraperConfig

CATALOG_PATH = "/api/products/v4/index"
LOGIN_PATH = "/api/login"
SEARCH_PATH = "/dashboard/search"
MORE_TEXT = "Mostrar más productos"
_AUTH_MESSAGE = re.compile(
    r"token|unauthori[sz]ed|unauthenticated|no autorizado|sesi[oó]n|expired|expirad", re.I
)


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified (we only read `exp` and `iat`); {} if unreadable."""
    try:
        payload = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, orjson.JSONDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def catalog_body(config: ScraperConfig, start: int, size: int) -> dict[str, Any]:
    """The catalog request body as the web app sends it (FORMAT.md)."""
    return {
        "privated_product": False,
        "userVerified": False,
        "favorite": False,
        "with_collection": True,
        "get_stock": False,
        "no_count": True,
        "search_type": "simple",
        "country": config.country,
        "startData": start,
        "pageSize": size,
    }


@dataclass(frozen=True, slots=True)
class PageResult:
    """One answer of the catalog endpoint for the page at `start` (asked with `size`)."""

    start: int
    size: int
    status: int
    text: str
    retry_after: str | None = None

    def body(self) -> dict[str, Any] | None:
        try:
            body = orjson.loads(self.text)
        except orjson.JSONDecodeError:
            return None
        return body if isinstance(body, dict) else None

    def products(self) -> list[Any] | None:
        """The product list of a successful answer; None when it is not one."""
        body = self.body()
        if self.status != 200 or body is None or body.get("isSuccess") is False:
            return None
        objects = body.get("objects")
        if objects is None and isinstance(body.get("data"), dict):
            objects = body["data"].get("objects")
        return objects if isinstance(objects, list) else None

    def outcome(self) -> str:
        """`ok`, `auth`, `rate_limited`, or a failure reason for the counters."""
        if self.products() is not None:
            return "ok"
        if self.status in (401, 403):
            return "auth"
        if self.status == 429:
            return "rate_limited"
        body = self.body()
        message = str(body.get("message", "")) if body else ""
        if body is not None and _AUTH_MESSAGE.search(message):
            return "auth"
        if self.status == 0:
            return "network_error"
        if self.status != 200:
            return f"http_{self.status}"
        return "is_success_false" if body is not None else "not_json"

    def retry_after_s(self, default: float = 5.0) -> float:
        try:
            return max(0.0, float(self.retry_after)) if self.retry_after else default
        except ValueError:
            return default


def journal_lines(
    products: list[Any], captured_at: datetime, pass_id: str, start: int
) -> list[bytes]:
    stamp = captured_at.isoformat()
    return [
        orjson.dumps(
            {
                "id": p.get("id") if isinstance(p, dict) else None,
                "capture_timestamp": stamp,
                "pass_id": pass_id,
                "page_start": start,
                "raw_json": p,
            }
        )
        for p in products
    ]
