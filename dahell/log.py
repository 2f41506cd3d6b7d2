"""structlog set-up: one JSON object per line on stdout, secrets redacted on the way out.

Stage tasks bind their name with `structlog.contextvars.bound_contextvars(stage=...)`, so every
event a stage logs carries `stage`. The redactor replaces any known secret value (the password,
the DSN, the HTTP token) wherever it appears in an event, and masks fields whose names say
"secret" (password, token, authorization, ...) whatever their value.

Records of the standard `logging` module (asyncio, aiohttp, asyncpg, Playwright, warnings) go
through the same redactor and renderer (`structlog.stdlib.ProcessorFormatter`), to the same
stream: every line is one JSON object, with `logger` naming the library. Uncaught exceptions in
the main thread or other threads are logged the same way instead of printed.

Two lists of secret values: the configuration's (`set_secrets`, replaced on SIGHUP) and those
obtained at run time (`add_secret`: the Dropi token), which a reload keeps. The run-time list
holds the newest `MAX_RUNTIME_SECRETS` values, so a daemon that logs in for months stays bounded.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections import deque
from collections.abc import Iterable, MutableMapping
from types import TracebackType
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

MAX_RUNTIME_SECRETS = 8
# Libraries log at this level or above (and at the configured level when that is higher).
LIBRARY_LEVEL = logging.WARNING

_configured: list[str] = []
_runtime: deque[str] = deque(maxlen=MAX_RUNTIME_SECRETS)
_secrets: list[str] = []  # both lists, longest first: what the redactor replaces
_handler: logging.Handler | None = None


def set_secrets(values: Iterable[str]) -> None:
    """Replace the configuration's secret values (start-up, SIGHUP); run-time tokens stay."""
    global _configured
    _configured = [v for v in values if v and len(v) >= 3]
    _refresh()


def add_secret(value: str) -> None:
    """Hide one more literal value obtained at run time (a token); the oldest beyond the cap go."""
    if value and len(value) >= 3 and value not in _runtime:
        _runtime.append(value)
        _refresh()


def known_secrets() -> list[str]:
    """Every value the redactor hides now."""
    return list(_secrets)


def _refresh() -> None:
    global _secrets
    _secrets = sorted({*_configured, *_runtime}, key=len, reverse=True)


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
    _route_stdlib(stream, renderer, max(LIBRARY_LEVEL, _level_number(level)))


def _route_stdlib(stream: TextIO, renderer: Any, level: int) -> None:
    """Send the standard `logging` module's records through the redactor and the renderer."""
    global _handler
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            structlog.stdlib.ExtraAdder(),
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(level)
    _handler = handler
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_exception


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    logging.getLogger("dahell").critical("uncaught_exception", exc_info=(kind, exc, tb))


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    thread = args.thread.name if args.thread is not None else "?"
    logging.getLogger("dahell").error(
        "thread_crashed",
        extra={"thread_name": thread},
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def set_level(level: str) -> None:
    """Change the level of a configured logger (SIGHUP)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(_level_number(level)))
    logging.getLogger().setLevel(max(LIBRARY_LEVEL, _level_number(level)))


def _level_number(level: str) -> int:
    return int(logging.getLevelName(level.upper()))


def get_logger(**bind: Any) -> Any:
    return structlog.get_logger().bind(**bind)
