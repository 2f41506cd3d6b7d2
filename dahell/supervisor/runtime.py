"""One stage as the supervisor sees it, and the state every part of the supervisor shares.

The supervisor's parts (`policy`, `watchdog`, `reload`, `views`) are mixins over
`SupervisorBase`, so that each lives in a module of its own and all read one set of fields,
which `core.Supervisor` sets up.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dahell.stages.base import Context, Message, Stage, StageState
from dahell.supervisor.causes import SHORTAGES

if TYPE_CHECKING:
    import asyncpg

    from dahell import config as config_mod
    from dahell.metrics import Metrics
    from dahell.systemd import Notifier


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class StageRuntime:
    """One stage as the supervisor sees it; every state change records when it happened."""

    stage: Stage
    ctx: Context
    state: StageState = StageState.STARTING
    since: datetime = field(default_factory=utcnow)
    restarts: int = 0
    restart_times: deque[float] = field(default_factory=deque)
    last_error: str | None = None
    reason: str | None = None
    task: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    stalled: bool = False
    reconfigured: bool = False
    done: bool = False
    # What ran out (a `causes.SHORTAGES` reason) -> what its last error said, until the stage
    # works again.
    shortages: dict[str, str] = field(default_factory=dict)
    run_mark: tuple[int, float] = (0, 0.0)  # (units counted, monotonic time) at the last start

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def disk_full(self) -> str | None:
        """What the last ENOSPC said, while the stage waits for space (read by the metrics)."""
        return self.shortages.get("disk_full")

    @property
    def outside_reason(self) -> str | None:
        """The cause outside the stage it still answers for: its state's reason while running."""
        return next((s.reason for s in SHORTAGES if s.reason in self.shortages), None)


class SupervisorBase:
    """The fields the supervisor's parts share, and the state changes they all make."""

    config: config_mod.Config
    config_path: str | None
    pool: asyncpg.Pool
    exit_when_idle: bool
    log: Any
    stopping: asyncio.Event
    done: asyncio.Event
    exit_code: int
    started_at: datetime
    loop_lag_s: float
    metrics: Metrics
    notifier: Notifier
    history: deque[dict[str, Any]]
    recent_errors: deque[dict[str, str]]
    on_state_change: Callable[[str, str, str, str], None] | None
    queues: dict[str, asyncio.Queue[Message]]
    runtimes: dict[str, StageRuntime]

    def request_stop(self, exit_code: int = 0, reason: str = "") -> None:
        if self.stopping.is_set():
            return
        self.exit_code = exit_code
        self.log.info("shutdown_requested", reason=reason, exit_code=exit_code)
        self.notifier.stopping()
        self.stopping.set()
        self.done.set()

    def _set_state(self, rt: StageRuntime, state: StageState, reason: str | None = None) -> None:
        if rt.state == state and rt.reason == reason:
            return
        old = rt.state
        rt.state, rt.since, rt.reason = state, utcnow(), reason
        self.log.info(
            "stage_state", stage=rt.name, state=state.value, previous=old.value, reason=reason
        )
        if self.on_state_change is not None:
            self.on_state_change(rt.name, old.value, state.value, reason or "")

    def _record_error(self, stage: str, reason: str, detail: str) -> None:
        self.recent_errors.appendleft(
            {"at": utcnow().isoformat(), "stage": stage, "reason": reason, "detail": detail[:500]}
        )
