"""structlog set-up: one JSON object per line on stdout, secrets redacted on the way out.

Stage tasks bind their name with `structlog.contextvars.bound_contextvars(stage=...)`, so every
event a stage logs carries `stage`. The redactor replaces any known secret value (the password,
the DSN, the HTTP token) wherever it appears in an event, and masks fields whose names say
"secret" (password, token, authorization, ...) whatever their value.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

REDACTED = "***"
_SECRET_FIELD = re.compile(
    r"password|passwd|^pass$|secret|token|authorization|api_key|dsn|cookie|webhook", re.I
)
# user:password@ inside URLs and DSNs.
_URL_PASSWORD = re.compile(r"(?P<pre>[a-z][a-z0-9+.-]*://[^/@:\s]*:)[^@/\s]+(?=@)", re.I)
# "Bearer <jwt>" anywhere in free text.
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.I)

_secrets: list[str] = []


def set_secrets(values: Iterable[str]) -> None:
    """Replace the list of literal values the redactor hides (called on start and SIGHUP)."""
    global _secrets
    _secrets = sorted({v for v in values if v and len(v) >= 3}, key=len, reverse=True)


def add_secret(value: str) -> None:
    """Hide one more literal value (a token obtained at run time)."""
    if value and len(value) >= 3 and value not in _secrets:
        _secrets.append(value)
        _secrets.sort(key=len, reverse=True)


def redact_text(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _URL_PASSWORD.sub(lambda m: m.group("pre") + REDACTED, text)
    return _BEARER.sub(lambda m: m.group(1) + REDACTED, text)


def _redact_value(key: str, value: Any) -> Any:
    if isinstance(value, str):
        if value and _SECRET_FIELD.search(key) and not key.endswith(("_count", "_at", "_s")):
            return REDACTED
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(key, v) for v in value]
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask secret values and secret-named fields in every event."""
    for key in list(event_dict):
        event_dict[key] = _redact_value(key, event_dict[key])
    return event_dict


def configure(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Route structlog (and stdlib logging from libraries) to `stream`, one event a line.

    The daemon logs to stdout; one-shot commands log to stderr so their own output stays clean.
    """
    stream = stream or sys.stdout
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_secrets,
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_level_number(level)),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")


def set_level(level: str) -> None:
    """Change the level of a configured logger (SIGHUP)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(_level_number(level)))


def _level_number(level: str) -> int:
    return int(logging.getLevelName(level.upper()))


def get_logger(**bind: Any) -> Any:
    return structlog.get_logger().bind(**bind)
