"""Limits on the status server's connections: a header-read timeout and a cap on open connections.

aiohttp has no header-read timeout: its `RequestHandler` closes a connection whose request head
is still arriving only when `keepalive_timeout` runs out (3,630 s by default), however slowly the
bytes come. Three hundred such half-sent requests once held the daemon's file descriptors until
the scraper could not start its browser. So the server's protocol factory is wrapped: each
connection is a `GuardedConnection` that forwards every call to aiohttp's handler and knows its
phase:

- `head`: connected, or the first bytes of a next request arrived, and no complete request head
  yet. A connection in this phase longer than `http.header_timeout_s` is closed (nginx's
  `client_header_timeout`), event `http_header_timeout`.
- `busy`: a request is being handled (the `track_requests` middleware sees it start and end).
- `idle`: between requests on a kept-alive connection; aiohttp's `keepalive_timeout`
  (`http.keepalive_timeout_s`) closes it.

At most `http.max_connections` connections are open. A newcomer over the cap closes the oldest
connection still in `head` (the slow clients; a health check sends its head at once), else the
oldest `idle` one; only when every connection is busy is the newcomer answered 503 and closed.
Event `http_connection_limit_reached`, with counts. Both events are logged at most once per
`LOG_INTERVAL_S` with the count since the last line, so a flood cannot flood the log.

Page queries (look-alikes, search, research) hold one of `PAGE_QUERY_SLOTS` while they run:
the database pool is the stages' first. `QuerySlots`: a request waits at most `SLOT_WAIT_S`
for one, then hears 503 `busy` with `Retry-After`, so heavy queries cannot pile up without end.
"""

from __future__ import annotations

import asyncio
import enum
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import web

__all__ = [
    "PAGE_QUERY_SLOTS",
    "SLOT_WAIT_S",
    "ConnectionGuard",
    "GuardedConnection",
    "QuerySlots",
    "ThrottledEvent",
]

#: Page queries (look-alikes, product search, research) run at most this many at a time.
PAGE_QUERY_SLOTS = 2
#: A page query waits this long for a slot, then is told to come back (503 `busy`).
SLOT_WAIT_S = 20.0
SLOT_RETRY_AFTER_S = 5
#: Each throttled event is logged at most once per this many seconds, with its count.
LOG_INTERVAL_S = 10.0
#: What a newcomer hears when every open connection is busy with a request.
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: application/json\r\n"
    b"X-Content-Type-Options: nosniff\r\nRetry-After: 1\r\nContent-Length: 33\r\n\r\n"
    b'{"error":"too_many_connections"}\n'
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class QuerySlots(asyncio.Semaphore):
    """The page-query slots; entering waits at most `wait_s`, then raises a 503 `busy`."""

    def __init__(self, value: int = PAGE_QUERY_SLOTS, wait_s: float = SLOT_WAIT_S) -> None:
        super().__init__(value)
        self.wait_s = wait_s

    async def __aenter__(self) -> None:
        try:
            async with asyncio.timeout(self.wait_s):
                await self.acquire()
        except TimeoutError:
            detail = f"every page-query slot stayed busy for {self.wait_s:g} s: try again"
            raise web.HTTPServiceUnavailable(
                text=orjson.dumps({"error": "busy", "detail": detail}).decode(),
                content_type="application/json",
                headers={"Retry-After": str(SLOT_RETRY_AFTER_S)},
            ) from None


class Phase(enum.Enum):
    HEAD = "head"
    BUSY = "busy"
    IDLE = "idle"


class ThrottledEvent:
    """A warning logged at most once per interval: the first at once, the rest as one count."""

    def __init__(self, event: str, interval_s: float = LOG_INTERVAL_S) -> None:
        self.event = event
        self.interval_s = interval_s
        self.total = 0
        self._counts: dict[str, int] = {}
        self._fields: dict[str, Any] = {}
        self._flush: asyncio.TimerHandle | None = None
        self._log = structlog.get_logger().bind(component="http")

    def add(self, kind: str = "count", **fields: Any) -> None:
        """Count one occurrence (under `kind`); log now, or when the interval ends."""
        self.total += 1
        self._counts[kind] = self._counts.get(kind, 0) + 1
        self._fields = fields
        if self._flush is None:
            self.flush()
            loop = asyncio.get_running_loop()
            self._flush = loop.call_later(self.interval_s, self._end_interval)

    def flush(self) -> None:
        if self._counts:
            self._log.warning(self.event, **self._counts, total=self.total, **self._fields)
            self._counts = {}

    def _end_interval(self) -> None:
        self._flush = None
        if self._counts:  # more came during the interval: log them and start a new one
            self.flush()
            self._flush = asyncio.get_running_loop().call_later(self.interval_s, self._end_interval)

    def close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self.flush()


class ConnectionGuard:
    """The protocol factory given to `loop.create_server`, around aiohttp's own."""

    def __init__(
        self,
        factory: Callable[[], web.RequestHandler],
        *,
        header_timeout_s: float,
        max_connections: int,
    ) -> None:
        self._factory = factory
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self._open: OrderedDict[GuardedConnection, None] = OrderedDict()
        self._heads: OrderedDict[GuardedConnection, None] = OrderedDict()  # oldest first
        self._idle: OrderedDict[GuardedConnection, None] = OrderedDict()
        self._by_handler: dict[web.RequestHandler, GuardedConnection] = {}
        self.limit_reached = ThrottledEvent("http_connection_limit_reached")
        self.header_timeouts = ThrottledEvent("http_header_timeout")

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def snapshot(self) -> dict[str, Any]:
        """For /status: open connections by phase, and the counts since start."""
        phases = {phase.value: 0 for phase in Phase}
        for connection in self._open:
            phases[connection.phase.value] += 1
        return {
            "connections": phases,
            "max_connections": self.max_connections,
            "header_timeouts": self.header_timeouts.total,
            "limit_reached": self.limit_reached.total,
        }

    def __call__(self) -> asyncio.Protocol:
        cap = self.max_connections
        while len(self._open) >= cap:
            victim = _oldest(self._heads) or _oldest(self._idle)
            if victim is None:
                self.limit_reached.add("refused", max_connections=cap)
                return _Refused()
            self.limit_reached.add("evicted", max_connections=cap)
            victim.close()
        connection = GuardedConnection(self, self._factory())
        self._open[connection] = None
        self._by_handler[connection.inner] = connection
        self._enter(connection, Phase.HEAD)
        return connection

    @web.middleware
    async def track_requests(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Marks the connection busy while a request (its head complete) is handled."""
        connection = self._by_handler.get(request.protocol)
        if connection is not None:
            self._enter(connection, Phase.BUSY)
        try:
            return await handler(request)
        finally:
            if connection is not None and connection in self._open:
                self._enter(connection, Phase.IDLE)

    def close(self) -> None:
        """Stop the timers and log what is still counted (the server is closing)."""
        for connection in list(self._open):
            connection.cancel_timer()
        self.limit_reached.close()
        self.header_timeouts.close()

    def _enter(self, connection: GuardedConnection, phase: Phase) -> None:
        connection.phase = phase
        connection.cancel_timer()
        self._heads.pop(connection, None)
        self._idle.pop(connection, None)
        if phase is Phase.HEAD:
            self._heads[connection] = None
            connection.arm_timer(self.header_timeout_s)
        elif phase is Phase.IDLE:
            self._idle[connection] = None

    def head_started(self, connection: GuardedConnection) -> None:
        if connection.phase is Phase.IDLE:
            self._enter(connection, Phase.HEAD)

    def header_timeout(self, connection: GuardedConnection) -> None:
        if connection.phase is Phase.HEAD:
            self.header_timeouts.add(timeout_s=self.header_timeout_s)
            connection.close()

    def forget(self, connection: GuardedConnection) -> None:
        connection.cancel_timer()
        self._open.pop(connection, None)
        self._heads.pop(connection, None)
        self._idle.pop(connection, None)
        self._by_handler.pop(connection.inner, None)


def _oldest(connections: OrderedDict[GuardedConnection, None]) -> GuardedConnection | None:
    return next(iter(connections), None)


class GuardedConnection(asyncio.Protocol):
    """One connection: aiohttp's handler, its phase and its header timer."""

    def __init__(self, guard: ConnectionGuard, inner: web.RequestHandler) -> None:
        self.guard = guard
        self.inner = inner
        self.phase = Phase.HEAD
        self.closing = False
        self.started = False
        self._timer: asyncio.TimerHandle | None = None

    def arm_timer(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(seconds, self.guard.header_timeout, self)

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        """Close now (evicted, timed out): uncounted at once, the socket freed on the next tick."""
        self.closing = True
        self.guard.forget(self)
        self.inner.force_close()

    # --- asyncio.Protocol, forwarded --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.closing:  # evicted between the accept and now: aiohttp never sees it
            transport.close()
            return
        self.started = True
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.started:
            if data:
                self.guard.head_started(self)
            self.inner.data_received(data)

    def eof_received(self) -> None:
        if self.started:
            self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.forget(self)
        if self.started:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.started:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.started:
            self.inner.resume_writing()


class _Refused(asyncio.Protocol):
    """A connection over the cap while every other is busy: 503, then closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(REFUSAL)
        transport.close()
