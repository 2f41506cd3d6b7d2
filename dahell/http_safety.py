"""What every response of the status server carries, and what an unexpected error becomes.

- `SecurityHeaders`: `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY` and
  `Referrer-Policy: no-referrer` on every response; a Content-Security-Policy on the pages. The
  pages load only their own scripts and styles; product photos come from the Dropi CDN (any
  https image; a plain-http `loader.image_base_url` is added, for the demo); the favicon is a
  `data:` URL; the charts set colours through `style` attributes (`style-src-attr`). Nothing
  may frame them.
- `ErrorMiddleware`: a handler's unexpected exception is a 500 `{"error": "internal_error"}`,
  logged once as `http_request_failed` with its traceback (aiohttp would log it again as
  "Error handling request"); a database that cannot be reached is a 503
  `database_unavailable`, a throttled warning (`http_database_unavailable`), not a traceback.
  Client mistakes never get here: `dahell.http_params` answers them with a 400 first.
- `ServerLog`: aiohttp's own server logger, but a malformed request (a line too long, a bad
  header, a NUL in the path: aiohttp answers 400 itself) is a client's mistake: a throttled
  warning `http_bad_request` counted by kind, not an ERROR with a traceback per request.
- `public_reasons`: /healthz's reasons as stage names, states and codes only. The supervisor's
  texts carry exception messages and paths; these codes are derived from their shape
  (`stage <name> is <state>[: <detail>]`, `stage <name> is out of <what>: <code>: <detail>`),
  since the supervisor exposes no code of its own for a failed stage.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from dahell import db
from dahell.http_guard import ThrottledEvent
from dahell.http_params import json_response

__all__ = [
    "CSP",
    "ErrorMiddleware",
    "SecurityHeaders",
    "ServerLog",
    "content_security_policy",
    "public_reasons",
]

#: The policy of the pages; `{images}` gains the configured image origin when it is plain http
#: (the demo's and the tests' local simulator).
CSP = "; ".join(
    [
        "default-src 'self'",
        "img-src 'self' https: data:{images}",
        "style-src 'self'",
        "style-src-attr 'unsafe-inline'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
_REASON = re.compile(
    r"stage (?P<stage>\S+) is (?P<what>failed|stalled|out of [a-z ]+)(?:: (?P<rest>.*))?", re.S
)
_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_WORD = re.compile(r"(?<!^)(?=[A-Z])")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SecurityHeaders:
    """`on_response_prepare`: the headers every answer carries (errors and 404s included)."""

    def __init__(self, image_base_url: Callable[[], str]) -> None:
        self._image_base_url = image_base_url

    async def __call__(self, request: web.Request, response: web.StreamResponse) -> None:
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        if response.content_type == "text/html":
            policy = content_security_policy(self._image_base_url())
            response.headers.setdefault("Content-Security-Policy", policy)


def content_security_policy(image_base_url: str) -> str:
    """The pages' policy: https images anywhere (the Dropi CDN), plus a plain-http image origin."""
    url = URL(image_base_url)
    local = url.scheme == "http" and url.host
    return CSP.format(images=f" {url.origin()}" if local else "")


class ErrorMiddleware:
    """The outermost handler of the unexpected: a JSON answer and one named log line."""

    def __init__(self) -> None:
        self._log = structlog.get_logger().bind(component="http")
        self.db_unavailable = ThrottledEvent("http_database_unavailable")

    @web.middleware
    async def handle(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise  # an answer aiohttp renders (404, 405, ...)
        except Exception as exc:
            if db.is_unavailable(exc):
                self.db_unavailable.add(path=request.path[:200], error=type(exc).__name__)
                return json_response({"error": "database_unavailable"}, 503)
            self._log.error(
                "http_request_failed",
                method=request.method,
                path=request.path[:200],
                error=type(exc).__name__,
                exc_info=exc,
            )
            return json_response({"error": "internal_error"}, 500)


class ServerLog(logging.Logger):
    """The logger given to aiohttp's request handlers (see the module doc)."""

    def __init__(self) -> None:
        super().__init__("aiohttp.server")
        self.parent = logging.getLogger("aiohttp")  # the handlers and levels of the real one
        self.bad_requests = ThrottledEvent("http_bad_request")

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kw: Any) -> None:
        if isinstance(exc_info, HttpProcessingError) and 400 <= exc_info.code < 500:
            self.bad_requests.add(_WORD.sub("_", type(exc_info).__name__).lower())
            return
        super().exception(msg, *args, exc_info=exc_info, **kw)


def public_reasons(reasons: list[str]) -> list[str]:
    """Each reason as `stage <name> is <state>: <code>`, without the detail text."""
    return [_public(reason) for reason in reasons]


def _public(reason: str) -> str:
    match = _REASON.fullmatch(reason)
    if match is None:
        return "unhealthy"
    what, rest = match["what"], match["rest"] or ""
    if what.startswith("out of "):  # "out of disk space: disk_full: <the file>"
        first = rest.split(":", 1)[0]
        code = first if _CODE.fullmatch(first) else "out_of_resources"
    elif what == "stalled":
        code = rest if _CODE.fullmatch(rest) else "no_progress"
    else:  # failed: more restarts than supervisor.max_restarts within its window
        code = "too_many_restarts"
    return f"stage {match['stage']} is {what}: {code}"
