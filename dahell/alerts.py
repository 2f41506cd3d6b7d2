"""Alerts: a Slack-compatible webhook message when a stage goes bad and when it recovers.

The supervisor calls `AlertSender.stage_changed(...)` on every state change; that call only
enqueues. A background task decides whether the change deserves an alert, applies the
per-(stage, kind) rate limit and posts `{"text": ...}` to `alerts.webhook_url` with a timeout and
a few retries. Nothing here raises into the caller, and the webhook URL (a secret) is never
logged: failures are described by status code or exception type only.

Kinds: `failed`, `parked`, `stalled` (the stage entered that state) and `recovered` (it is
running or idle again after one of those). Alerts of one (stage, kind) closer together than
`alerts.min_interval_s` are suppressed and counted; the next one sent says how many were.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from dahell.config import Config
from dahell.log import get_logger, redact_text

BAD_STATES = frozenset({"failed", "parked", "stalled"})
GOOD_STATES = frozenset({"running", "idle"})
ICONS = {
    "failed": ":red_circle:",
    "parked": ":double_vertical_bar:",
    "stalled": ":warning:",
    "recovered": ":large_green_circle:",
}
QUEUE_SIZE = 256
POST_TIMEOUT_S = 10.0
RETRY_DELAYS_S = (0.5, 1.0, 2.0)
CLOSE_GRACE_S = 3.0

SessionFactory = Callable[[], aiohttp.ClientSession]


@dataclass(frozen=True, slots=True)
class Alert:
    stage: str
    kind: str
    state: str
    reason: str
    at: datetime
    down_since: datetime | None = None  # recovered: when the bad state began


class AlertSender:
    """Turns stage state changes into rate-limited webhook posts, in the background."""

    def __init__(
        self,
        get_config: Callable[[], Config],
        session_factory: SessionFactory = aiohttp.ClientSession,
    ) -> None:
        self._get_config = get_config
        self._session_factory = session_factory
        self._queue: asyncio.Queue[Alert | None] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._down: dict[str, tuple[str, datetime]] = {}  # stage -> (bad state, since)
        self._last_sent: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}
        self._host = socket.gethostname()
        self._log = get_logger(component="alerts")

    async def start(self) -> None:
        if self._task is None:
            self._session = self._session_factory()
            self._task = asyncio.create_task(self._worker(), name="dahell-alerts")

    async def close(self) -> None:
        """Send what is queued (for a few seconds at most), then stop."""
        if self._task is not None:
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)
            done, _ = await asyncio.wait({self._task}, timeout=CLOSE_GRACE_S)
            if not done:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        if self._session is not None:
            with contextlib.suppress(Exception):
                await self._session.close()
            self._session = None

    def stage_changed(self, stage: str, old: str, new: str, reason: str) -> None:
        """Record a state change; enqueue an alert when it deserves one. Never blocks or raises."""
        try:
            alert = self._classify(stage, old, new, reason or "")
            if alert is not None:
                self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            self._log.warning("alert_suppressed", stage=stage, state=new, why="queue_full")
        except Exception as exc:  # an alert must never break the supervisor
            self._log.warning("alert_failed", stage=stage, state=new, error=type(exc).__name__)

    def _classify(self, stage: str, old: str, new: str, reason: str) -> Alert | None:
        if old == new:
            return None
        now = datetime.now(UTC)
        if new in BAD_STATES:
            self._down[stage] = (new, now)
            return Alert(stage, new, new, reason, now)
        if new in GOOD_STATES and stage in self._down:
            was, since = self._down.pop(stage)
            return Alert(stage, "recovered", new, was, now, down_since=since)
        return None

    async def _worker(self) -> None:
        while True:
            alert = await self._queue.get()
            if alert is None:
                return
            try:
                await self._handle(alert)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._log.warning(
                    "alert_failed", stage=alert.stage, kind=alert.kind, error=type(exc).__name__
                )

    async def _handle(self, alert: Alert) -> None:
        config = self._get_config().alerts
        if not config.webhook_url:
            return
        key = (alert.stage, alert.kind)
        now = time.monotonic()
        last = self._last_sent.get(key)
        if last is not None and now - last < config.min_interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            self._log.info(
                "alert_suppressed",
                stage=alert.stage,
                kind=alert.kind,
                suppressed=self._suppressed[key],
            )
            return
        self._last_sent[key] = now
        suppressed = self._suppressed.pop(key, 0)
        await self._post(config.webhook_url, alert, message(alert, suppressed, self._host))

    async def _post(self, url: str, alert: Alert, body: dict[str, Any]) -> None:
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(total=POST_TIMEOUT_S)
        error = ""
        for attempt in range(1, len(RETRY_DELAYS_S) + 2):
            try:
                async with self._session.post(url, json=body, timeout=timeout) as resp:
                    await resp.read()
                    if resp.status < 300:
                        self._log.info(
                            "alert_sent", stage=alert.stage, kind=alert.kind, attempts=attempt
                        )
                        return
                    error = f"http_{resp.status}"
                    if resp.status < 500 and resp.status != 429:
                        break  # the webhook refuses this message: retrying will not help
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                error = type(exc).__name__
            if attempt <= len(RETRY_DELAYS_S):
                await asyncio.sleep(RETRY_DELAYS_S[attempt - 1])
        self._log.warning(
            "alert_failed", stage=alert.stage, kind=alert.kind, attempts=attempt, error=error
        )


def message(alert: Alert, suppressed: int = 0, host: str = "") -> dict[str, Any]:
    """The Slack-compatible body for one alert."""
    where = f"dahell ({host})" if host else "dahell"
    at = alert.at.strftime("%H:%M UTC")
    reason = redact_text(alert.reason)
    if alert.kind == "recovered":
        since = alert.down_since or alert.at
        minutes = max(0, round((alert.at - since).total_seconds() / 60))
        text = (
            f"{ICONS['recovered']} {where}: stage *{alert.stage}* recovered: {alert.state} "
            f"again at {at} (was {reason} since {since.strftime('%H:%M UTC')}, {minutes} min)"
        )
    else:
        detail = f": {reason}" if reason else ""
        text = (
            f"{ICONS[alert.kind]} {where}: stage *{alert.stage}* is {alert.kind}{detail} "
            f"(since {at})"
        )
    if suppressed:
        plural = "s" if suppressed != 1 else ""
        text += f" ({suppressed} similar alert{plural} suppressed)"
    return {"text": text}
