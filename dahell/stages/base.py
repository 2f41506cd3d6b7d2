"""The stage interface, shared by every stage and the supervisor; imports no stage.

A stage is an object with a `name` and `async def run(self, ctx: Context) -> None`. The
supervisor runs it as a task, restarts it when it crashes or stalls, and cancels it on shutdown.
The stage:

- reads `ctx.config` every time it needs a value (SIGHUP may have replaced it);
- calls `ctx.heartbeat()` whenever it makes progress and at least every few seconds while it
  waits (`ctx.wait_for_work()` does that for it);
- wraps each unit of work in `async with ctx.working():` so the watchdog knows it has work;
- counts every unit's outcome with `ctx.count(outcome, reason)`;
- raises `StageParked` (or a subclass) when it needs a human, and returns when
  `ctx.stopping` is set and its intake is drained.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import asyncpg

    from dahell.config import Config


class StageState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    IDLE = "idle"
    STALLED = "stalled"
    BACKOFF = "backoff"
    PARKED = "parked"
    FAILED = "failed"
    STOPPED = "stopped"


# --- queue messages ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JournalBatch:
    """Lines the scraper appended (and fsynced) to a journal file: [start, end) in bytes.

    `lines` is the fast path; the loader may also re-read the range from `path`.
    """

    path: Path
    start: int
    end: int
    lines: tuple[bytes, ...]
    captured_at: datetime
    pass_id: str = ""


@dataclass(frozen=True, slots=True)
class EmbedNudge:
    """Some products became pending; the vectorizer should look for work now."""

    count: int


Message = JournalBatch | EmbedNudge


# --- the stage contract --------------------------------------------------------------------


class Stage(Protocol):
    name: str

    async def run(self, ctx: Context) -> None: ...


StageFactory = Callable[[], Stage]


@dataclass
class Context:
    """What the supervisor gives a running stage."""

    name: str
    config_getter: Callable[[], Config]
    pool: asyncpg.Pool
    log: Any
    inbox: asyncio.Queue[Message] | None
    outboxes: dict[str, asyncio.Queue[Message]]
    stopping: asyncio.Event
    counters: Counter[tuple[str, str]] = field(default_factory=Counter)
    last_beat: float = field(default_factory=time.monotonic)
    busy_depth: int = 0
    status_extra: dict[str, Any] = field(default_factory=dict)
    exit_when_idle: bool = False
    idle: bool = False
    batch_observer: Callable[[str, float], None] | None = None

    @property
    def config(self) -> Config:
        return self.config_getter()

    def heartbeat(self) -> None:
        self.last_beat = time.monotonic()

    def count(self, outcome: str, reason: str = "", n: int = 1) -> None:
        """Record `n` units of work ending in `outcome` (with `reason` for failures)."""
        if n:
            self.counters[(outcome, reason)] += n

    @property
    def has_work(self) -> bool:
        return self.busy_depth > 0 or (self.inbox is not None and not self.inbox.empty())

    @asynccontextmanager
    async def working(self) -> AsyncIterator[None]:
        """Mark a unit of work in progress (the watchdog only stalls a stage that has work)."""
        self.busy_depth += 1
        self.idle = False
        self.heartbeat()
        try:
            yield
        finally:
            self.busy_depth -= 1
            self.heartbeat()

    async def send(self, stage: str, message: Message) -> bool:
        """Put a message on another stage's queue, waiting while it is full (backpressure).

        Returns False when that stage does not run in this process (the database or the journal
        carries the work instead) or when shutdown began while waiting.
        """
        queue = self.outboxes.get(stage)
        if queue is None:
            return False
        while True:
            try:
                await asyncio.wait_for(queue.put(message), timeout=1.0)
                return True
            except TimeoutError:
                self.heartbeat()
                if self.stopping.is_set():
                    return False

    def nudge(self, stage: str, message: Message) -> None:
        """Put a message on another stage's queue if there is room; drop it otherwise."""
        queue = self.outboxes.get(stage)
        if queue is not None and not queue.full():
            queue.put_nowait(message)

    async def receive(self, timeout: float) -> Message | None:
        """The next message from the inbox, or None after `timeout` seconds; keeps heartbeating."""
        if self.inbox is None:
            await self.sleep(timeout)
            return None
        deadline = time.monotonic() + timeout
        while True:
            self.heartbeat()
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                return await asyncio.wait_for(self.inbox.get(), timeout=min(left, 2.0))
            except TimeoutError:
                continue

    async def sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`, heartbeating; return True early if shutdown began."""
        deadline = time.monotonic() + seconds
        while True:
            self.heartbeat()
            left = deadline - time.monotonic()
            if left <= 0:
                return self.stopping.is_set()
            try:
                await asyncio.wait_for(self.stopping.wait(), timeout=min(left, 2.0))
                return True
            except TimeoutError:
                continue

    def observe_batch(self, seconds: float) -> None:
        """Report how long one batch took (the supervisor turns it into a histogram)."""
        if self.batch_observer is not None:
            self.batch_observer(self.name, seconds)

    def set_idle(self, idle: bool) -> None:
        """Tell the supervisor whether this stage has nothing left to do (`--exit-when-idle`)."""
        self.idle = idle
