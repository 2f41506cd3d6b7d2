"""Alerts: a Slack-compatible webhook message when a stage goes bad and when it recovers.

The supervisor calls `AlertSender.stage_changed(...)` on every state change; that call only
enqueues. A background task decides whether the change deserves an alert, applies the
per-(stage, kind) rate limit and posts `{"text": ...}` to `alerts.webhook_url` with a timeout and
a few retries. Nothing here raises into the caller, and the webhook URL (a secret) is never
logged: failures are described by status code or exception type only.

Kinds: `failed`, `parked`, `stalled` (the stage entered that state), `disk_full` (it retries
on a full disk), `out_of_files` (it waits for free file descriptors) and `recovered` (it is
running or idle again after one of those). An alert of one (stage, kind) sent less than
`alerts.min_interval_s` after the last one of that (stage, kind) is held, not dropped: each
stage holds only its latest alert, which goes out when the interval ends (or on close), unless
the last alert sent for that stage already says the same. So the last word about a stage is
always its latest state (failed -> recovered -> failed sends the final "failed"); alerts
replaced while held are counted, and the next one sent says how many were suppressed.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from dahell.config import Config
from dahell.log import get_logger, redact_text

BAD_STATES = frozenset({"failed", "parked", "stalled"})
# Reasons that are bad whatever the state: a stage retrying on a full disk or waiting for file
# descriptors (backoff, running).
BAD_REASONS = frozenset({"disk_full", "out_of_files"})
TROUBLE = {"disk_full": "out of disk space", "out_of_files": "out of file descriptors"}
GOOD_STATES = frozenset({"running", "idle"})
ICONS = {
    "failed": ":red_circle:",
    "parked": ":double_vertical_bar:",
    "stalled": ":warning:",
    "recovered": ":large_green_circle:",
    "disk_full": ":floppy_disk:",
    "out_of_files": ":file_cabinet:",
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
        self._held: dict[str, Alert] = {}  # stage -> its latest alert, waiting for its interval
        self._last_kind: dict[str, str] = {}  # stage -> kind of the last alert sent for it
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
        now = datetime.now(UTC)
        if new in BAD_STATES and old != new:
            self._down[stage] = (new, now)
            return Alert(stage, new, new, reason, now)
        if reason in BAD_REASONS and new != "stopped":
            if self._down.get(stage, ("",))[0] == reason:
                return None  # still the same trouble, retried
            self._down[stage] = (reason, now)
            return Alert(stage, reason, new, reason, now)
        if new in GOOD_STATES and stage in self._down:
            was, since = self._down.pop(stage)
            return Alert(stage, "recovered", new, was, now, down_since=since)
        return None

    async def _worker(self) -> None:
        while True:
            try:
                alert = await asyncio.wait_for(self._queue.get(), timeout=self._until_due())
            except TimeoutError:
                await self._guarded(self._flush, False)
                continue
            if alert is None:
                await self._guarded(self._flush, True)
                return
            await self._guarded(self._handle, alert)

    async def _guarded(self, step: Callable[[Any], Awaitable[None]], arg: Any) -> None:
        try:
            await step(arg)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._log.warning("alert_failed", error=type(exc).__name__)

    def _until_due(self) -> float | None:
        """Seconds until the first held alert may go out (None: nothing held)."""
        if not self._held:
            return None
        interval = self._get_config().alerts.min_interval_s
        now = time.monotonic()
        due = min(
            self._last_sent.get((a.stage, a.kind), 0.0) + interval for a in self._held.values()
        )
        return max(0.0, due - now)

    async def _handle(self, alert: Alert) -> None:
        config = self._get_config().alerts
        if not config.webhook_url:
            return
        key = (alert.stage, alert.kind)
        replaced = self._held.pop(alert.stage, None)
        if replaced is not None:
            self._count_suppressed(replaced)
        last = self._last_sent.get(key)
        if last is not None and time.monotonic() - last < config.min_interval_s:
            self._held[alert.stage] = alert  # the stage's latest word, sent when the interval ends
            return
        await self._send(config.webhook_url, alert)

    async def _flush(self, closing: bool) -> None:
        """Send the held alerts whose interval has passed (all of them when closing)."""
        config = self._get_config().alerts
        now = time.monotonic()
        for stage, alert in list(self._held.items()):
            last = self._last_sent.get((alert.stage, alert.kind), 0.0)
            if not closing and now - last < config.min_interval_s:
                continue
            del self._held[stage]
            if self._last_kind.get(stage) == alert.kind:
                self._count_suppressed(alert)  # the last alert sent still says this
            elif config.webhook_url:
                await self._send(config.webhook_url, alert)

    def _count_suppressed(self, alert: Alert) -> None:
        key = (alert.stage, alert.kind)
        self._suppressed[key] = self._suppressed.get(key, 0) + 1
        self._log.info(
            "alert_suppressed", stage=alert.stage, kind=alert.kind, suppressed=self._suppressed[key]
        )

    async def _send(self, url: str, alert: Alert) -> None:
        key = (alert.stage, alert.kind)
        self._last_sent[key] = time.monotonic()
        self._last_kind[alert.stage] = alert.kind
        suppressed = self._suppressed.pop(key, 0)
        await self._post(url, alert, message(alert, suppressed, self._host))

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
    elif alert.kind in TROUBLE:
        text = (
            f"{ICONS[alert.kind]} {where}: stage *{alert.stage}* is {TROUBLE[alert.kind]} "
            f"({alert.kind}), retrying (since {at})"
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
