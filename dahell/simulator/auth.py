"""The simulated API's tokens and users: HS256 JWTs (stdlib only), one user per e-mail.

The real API issues JWTs and answers 401 "Token is Expired" once `exp` has passed; the
simulator signs its own with a secret derived from the seed, so a forged token is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import orjson


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_jwt(claims: dict[str, Any], secret: bytes) -> str:
    header = _b64(orjson.dumps({"alg": "HS256", "typ": "JWT"}))
    payload = _b64(orjson.dumps(claims))
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def verify_jwt(token: str, secret: bytes) -> dict[str, Any] | None:
    """The claims of a well-signed token (expired or not), else None."""
    try:
        header, payload, signature = token.split(".")
        expected = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(signature)):
            return None
        claims = orjson.loads(_unb64(payload))
    except (ValueError, orjson.JSONDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def user_for(email: str) -> dict[str, Any]:
    """The API's user object for `email`; its id is stable (a hash of the address)."""
    uid = int(hashlib.sha256(email.encode()).hexdigest()[:6], 16)
    return {"id": uid, "email": email, "name": email.split("@")[0], "white_brand_id": 1}
