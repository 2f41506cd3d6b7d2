"""Watching the running stages and the process: stalls, loop lag, history, idleness.

A stage with work and no heartbeat for its `stall_timeout_s` is `stalled`: its stack is logged,
it is cancelled and restarted (a restart like any other). The same tick clears what a stage
ran short of (`causes.SHORTAGES`: a full disk, the file limit) once its restart did a unit of
work or ran that shortage's `clear_after_s`.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from typing import Any

from dahell.stages.base import StageState
from dahell.supervisor.causes import SHORTAGES
from dahell.supervisor.runtime import StageRuntime, utcnow
from dahell.supervisor.views import StatusViews

HISTORY_EVERY_S = 10.0
IDLE_SETTLE_S = 1.5


class Watchdog(StatusViews):
    """The supervisor's background loops: what no stage reports about itself."""

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for rt in self.runtimes.values():
                self._check_stall(rt)
                self._check_shortages(rt)

    def _check_stall(self, rt: StageRuntime) -> None:
        if rt.state != StageState.RUNNING or rt.task is None or rt.task.done() or rt.stalled:
            return
        timeout = float(getattr(getattr(self.config, rt.name, None), "stall_timeout_s", 300.0))
        silent = time.monotonic() - rt.ctx.last_beat
        if not rt.ctx.has_work or silent <= timeout:
            return
        rt.stalled = True
        stack = task_stack(rt.task)
        self._set_state(rt, StageState.STALLED, reason="no_progress")
        self.log.error(
            "stage_stalled",
            stage=rt.name,
            silent_s=round(silent, 1),
            stall_timeout_s=timeout,
            stack=stack,
        )
        rt.task.cancel()

    def _check_shortages(self, rt: StageRuntime) -> None:
        """Clear what a stage ran short of once its restart did a unit of work or ran a while."""
        for shortage in SHORTAGES:
            was = rt.shortages.get(shortage.reason)
            if was is None or not self._worked_since_start(rt, shortage.clear_after_s):
                continue
            self.log.info(shortage.recovered_event, stage=rt.name, was=was)
            del rt.shortages[shortage.reason]
            self._set_state(rt, StageState.RUNNING, reason=rt.outside_reason)

    def _worked_since_start(self, rt: StageRuntime, after_s: float) -> bool:
        """Running, and since its last start it did a unit of work or ran `after_s`."""
        if rt.state != StageState.RUNNING:
            return False
        units, started = rt.run_mark
        return self.units(rt) > units or time.monotonic() - started >= after_s

    async def _loop_lag(self) -> None:
        interval = 0.25
        while True:
            start = time.monotonic()
            await asyncio.sleep(interval)
            lag = max(0.0, time.monotonic() - start - interval)
            self.loop_lag_s = lag
            self.metrics.loop_lag(lag)
            if lag * 1000 >= self.config.supervisor.loop_lag_warn_ms:
                self.log.warning("event_loop_blocked", lag_ms=round(lag * 1000, 1))

    async def _sample_history(self) -> None:
        while True:
            self.history.append(
                {
                    "t": utcnow().isoformat(),
                    "stages": {
                        name: dict(self.outcome_counts(rt)) for name, rt in self.runtimes.items()
                    },
                }
            )
            await asyncio.sleep(HISTORY_EVERY_S)

    async def _exit_when_idle(self) -> None:
        idle_since: float | None = None
        while True:
            await asyncio.sleep(0.25)
            if self._all_idle():
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= IDLE_SETTLE_S:
                    failed = [
                        r.name for r in self.runtimes.values() if r.state == StageState.FAILED
                    ]
                    self.request_stop(1 if failed else 0, "idle")
                    return
            else:
                idle_since = None

    def _all_idle(self) -> bool:
        if any(not q.empty() for q in self.queues.values()):
            return False
        return all(self._settled(rt) for rt in self.runtimes.values())

    async def _systemd_watchdog(self) -> None:
        while True:
            await asyncio.sleep(self.notifier.watchdog_interval_s)
            if self.alive():  # a full disk is unhealthy, but a restart would not free space
                self.notifier.watchdog()


def task_stack(task: asyncio.Task[Any]) -> str:
    """Where a task is suspended, through every coroutine it awaits (innermost last).

    `Task.print_stack()` shows only the task's outermost coroutine (here `_run_stage`), never
    the stage code that hangs; follow `cr_await` down the chain instead.
    """
    frames: list[Any] = []
    awaited: Any = task.get_coro()
    while awaited is not None and len(frames) < 100:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        frame = frame or getattr(awaited, "ag_frame", None)
        if frame is None:
            break
        frames.append((frame, frame.f_lineno))
        awaited = (
            getattr(awaited, "cr_await", None)
            or getattr(awaited, "gi_yieldfrom", None)
            or getattr(awaited, "ag_await", None)
        )
    lines = traceback.StackSummary.extract(frames).format()
    return f"Stack for task {task.get_name()} (most recent call last):\n" + "".join(lines)
