"""What follows the end of a stage's task: restart, back off, park, fail, or wait outside.

The rules are in the package docstring (`dahell.supervisor`); `causes` says which errors are
a cause outside the stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import time

from dahell import db
from dahell.errors import StageParked
from dahell.stages.base import StageState
from dahell.supervisor.causes import (
    EMBEDDED_DISK_LOW_BYTES,
    disk_full,
    free_bytes,
    out_of_files,
)
from dahell.supervisor.runtime import StageRuntime
from dahell.supervisor.views import StatusViews


class RestartPolicy(StatusViews):
    """Invariant 4: crashes restart with backoff up to a limit; outside causes are waited out."""

    async def _after_run(self, rt: StageRuntime) -> str:
        """Decide what follows the end of a stage's task: 'stop' or 'restart'."""
        task = rt.task
        assert task is not None
        if task.cancelled():
            if self.stopping.is_set():
                return "stop"
            if rt.reconfigured:
                self.log.info("stage_restarted", stage=rt.name, reason="config_changed")
                return "restart"
            return await self._crashed(rt, "stalled", "no progress within stall_timeout_s")
        exc = task.exception()
        if exc is None:
            if self.stopping.is_set():
                rt.done = True
                self._set_state(rt, StageState.STOPPED)
                return "stop"
            if self.exit_when_idle:
                return await self._idle_until_more_work(rt)
            return await self._crashed(rt, "returned", "the stage returned unexpectedly")
        files = out_of_files(exc)
        if files is not None:  # first: whatever else the error looks like, this is its cause
            return await self._wait_for_files(rt, files)
        if isinstance(exc, StageParked):
            return await self._park(rt, exc)
        if db.is_unavailable(exc):
            low = self._embedded_disk_low()
            if low is not None:
                return await self._wait_for_disk(rt, low)
            return await self._wait_for_dependency(rt, exc)
        full = disk_full(exc)
        if full is not None:
            return await self._wait_for_disk(rt, full)
        detail = f"{type(exc).__name__}: {exc}"
        self.log.error("stage_crashed", stage=rt.name, error=detail, exc_info=exc)
        return await self._crashed(rt, "crashed", detail)

    async def _idle_until_more_work(self, rt: StageRuntime) -> str:
        """`--exit-when-idle`: a stage that ran out of work returned.

        A source (no inbox: the scraper after its pass) is done. A stage fed by others is done
        only when they are; until then it is run again as soon as a message arrives for it.
        """
        rt.ctx.idle = True
        self._set_state(rt, StageState.IDLE)
        while rt.ctx.inbox is not None and not self.stopping.is_set():
            feeders = [o for o in self.runtimes.values() if o is not rt and not self._settled(o)]
            if not feeders and rt.ctx.inbox.empty():
                break
            if not rt.ctx.inbox.empty():
                return "restart"
            rt.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(rt.wake.wait(), timeout=0.5)
        rt.done = True
        return "stop"

    async def _crashed(self, rt: StageRuntime, kind: str, detail: str) -> str:
        rt.last_error = detail
        self._record_error(rt.name, kind, detail)
        now = time.monotonic()
        window = self.config.supervisor.restart_window_s
        rt.restart_times.append(now)
        while rt.restart_times and now - rt.restart_times[0] > window:
            rt.restart_times.popleft()
        if len(rt.restart_times) > self.config.supervisor.max_restarts:
            return self._fail(rt)
        delay = self._backoff(len(rt.restart_times))
        rt.restarts += 1
        self._set_state(rt, StageState.BACKOFF, reason=kind)
        self.log.warning(
            "stage_restarted",
            stage=rt.name,
            reason=kind,
            error=detail,
            restarts=rt.restarts,
            backoff_s=round(delay, 2),
        )
        return await self._sleep_then(rt, delay)

    def _backoff(self, attempt: int) -> float:
        sup = self.config.supervisor
        base = min(sup.backoff_max_s, sup.backoff_initial_s * 2.0 ** max(0, attempt - 1))
        return base * random.uniform(0.5, 1.0)

    def _fail(self, rt: StageRuntime) -> str:
        sup = self.config.supervisor
        self._set_state(rt, StageState.FAILED, reason=rt.last_error)
        self.log.error(
            "stage_failed",
            stage=rt.name,
            restarts=rt.restarts,
            error=rt.last_error,
            max_restarts=sup.max_restarts,
            window_s=sup.restart_window_s,
            policy=sup.on_stage_failure,
        )
        if sup.on_stage_failure == "exit":
            self.request_stop(1, f"stage {rt.name} failed")
        return "stop"

    async def _park(self, rt: StageRuntime, exc: StageParked) -> str:
        rt.last_error = str(exc)
        self._set_state(rt, StageState.PARKED, reason=exc.reason)
        self._record_error(rt.name, exc.reason, exc.detail)
        self.log.error("stage_parked", stage=rt.name, reason=exc.reason, detail=exc.detail)
        rt.wake.clear()
        await rt.wake.wait()  # SIGHUP with changed settings, or shutdown
        if self.stopping.is_set():
            return "stop"
        self.log.info("stage_unparked", stage=rt.name)
        return "restart"

    async def _wait_for_dependency(self, rt: StageRuntime, exc: BaseException) -> str:
        return await self._wait_outside(rt, "database_unavailable", f"{type(exc).__name__}: {exc}")

    async def _wait_for_disk(self, rt: StageRuntime, detail: str) -> str:
        """A full disk: unhealthy and named, retried with capped backoff, never `failed`."""
        if "disk_full" not in rt.shortages:
            self.log.error("disk_full", stage=rt.name, error=detail)
        rt.shortages["disk_full"] = detail
        return await self._wait_outside(rt, "disk_full", detail)

    async def _wait_for_files(self, rt: StageRuntime, detail: str) -> str:
        """Out of file descriptors: unhealthy and named, retried with capped backoff, not failed.

        Nothing here may need a descriptor: the event is logged to the already open stream and
        the limits come from `getrlimit`, not from listing `/proc/self/fd`.
        """
        if "out_of_files" not in rt.shortages:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            self.log.error(
                "file_limit_reached", stage=rt.name, error=detail, soft_limit=soft, hard_limit=hard
            )
        rt.shortages["out_of_files"] = detail
        return await self._wait_outside(rt, "out_of_files", detail)

    async def _wait_outside(self, rt: StageRuntime, reason: str, detail: str) -> str:
        """A cause outside the stage: BACKOFF under `reason`, retried with capped backoff.

        Unlike a crash it never counts toward `failed`: the stage is fine, what it needs is not.
        """
        rt.last_error = detail
        rt.restarts += 1
        delay = self._backoff(min(rt.restarts, 6))
        self._set_state(rt, StageState.BACKOFF, reason=reason)
        self._record_error(rt.name, reason, detail)
        self.log.warning(
            "stage_restarted",
            stage=rt.name,
            reason=reason,
            error=detail,
            restarts=rt.restarts,
            backoff_s=round(delay, 2),
        )
        return await self._sleep_then(rt, delay)

    def _embedded_disk_low(self) -> str | None:
        """Why the embedded server is unreachable, when its data disk is (nearly) full."""
        if self.config.database.dsn:
            return None  # an external server's disk is not ours to see
        free = free_bytes(self.config.data_dir)
        if free is None or free >= EMBEDDED_DISK_LOW_BYTES:
            return None
        return f"PostgreSQL unreachable with {free} bytes free: {self.config.data_dir}"

    async def _sleep_then(self, rt: StageRuntime, delay: float) -> str:
        rt.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(rt.wake.wait(), timeout=delay)
        return "stop" if self.stopping.is_set() else "restart"
