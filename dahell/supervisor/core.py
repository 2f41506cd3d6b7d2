"""`Supervisor`: builds the stages' contexts and queues, runs each stage under its policy, stops.

On SIGTERM/SIGINT it stops intake, lets the stages drain and exits 0 within
`shutdown_timeout_s`; the rules for what follows a stage's end are in `policy`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog

from dahell import config as config_mod
from dahell.metrics import Metrics
from dahell.stages.base import Context, Message, Stage, StageState
from dahell.supervisor.policy import RestartPolicy
from dahell.supervisor.reload import SignalsAndReload
from dahell.supervisor.runtime import StageRuntime, utcnow
from dahell.supervisor.watchdog import Watchdog
from dahell.systemd import Notifier

HISTORY_SAMPLES = 90
# Stage names whose settings live in the config section of the same name.
QUEUED_STAGES = ("loader", "vectorizer")


class Supervisor(RestartPolicy, Watchdog, SignalsAndReload):
    """Runs the given stages, the watchdog and the signal handlers until stopped."""

    def __init__(
        self,
        config: config_mod.Config,
        stages: list[Stage],
        pool: asyncpg.Pool,
        *,
        config_path: str | None = None,
        exit_when_idle: bool = False,
        on_state_change: Callable[[str, str, str, str], None] | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.pool = pool
        self.exit_when_idle = exit_when_idle
        self.log = structlog.get_logger().bind(component="supervisor")
        self.stopping = asyncio.Event()
        self.done = asyncio.Event()
        self.exit_code = 0
        self.started_at = utcnow()
        self.loop_lag_s = 0.0
        self.metrics = Metrics(self)
        self.notifier = Notifier()
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY_SAMPLES)
        self.recent_errors: deque[dict[str, str]] = deque(maxlen=50)
        self.on_state_change = on_state_change
        self.queues = self._make_queues(stages)
        self.runtimes = {s.name: self._runtime(s) for s in stages}
        self._signals = 0
        self._tasks: list[asyncio.Task[Any]] = []

    # --- construction ----------------------------------------------------------------------

    def _make_queues(self, stages: list[Stage]) -> dict[str, asyncio.Queue[Message]]:
        names = {s.name for s in stages}
        sizes = {"loader": self.config.queues.loader, "vectorizer": self.config.queues.vectorizer}
        return {n: asyncio.Queue(maxsize=sizes[n]) for n in QUEUED_STAGES if n in names}

    def _runtime(self, stage: Stage) -> StageRuntime:
        ctx = Context(
            name=stage.name,
            config_getter=lambda: self.config,
            pool=self.pool,
            log=structlog.get_logger().bind(stage=stage.name),
            inbox=self.queues.get(stage.name),
            outboxes={k: q for k, q in self.queues.items() if k != stage.name},
            stopping=self.stopping,
            exit_when_idle=self.exit_when_idle,
            batch_observer=self.metrics.observe_batch,
        )
        return StageRuntime(stage, ctx)

    # --- running ---------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until stopped; return the process exit code."""
        self._install_signals()
        for rt in self.runtimes.values():
            self._tasks.append(
                asyncio.create_task(self._supervise(rt), name=f"supervise-{rt.name}")
            )
        self._tasks += [
            asyncio.create_task(self._watchdog(), name="watchdog"),
            asyncio.create_task(self._loop_lag(), name="loop-lag"),
            asyncio.create_task(self._sample_history(), name="history"),
        ]
        if self.exit_when_idle:
            self._tasks.append(asyncio.create_task(self._exit_when_idle(), name="idle"))
        if self.notifier.enabled:
            self._tasks.append(asyncio.create_task(self._systemd_watchdog(), name="sd-watchdog"))
        self.notifier.ready()
        self.log.info(
            "daemon_started", stages=list(self.runtimes), exit_when_idle=self.exit_when_idle
        )
        await self.done.wait()
        await self._shutdown()
        return self.exit_code

    async def _shutdown(self) -> None:
        timeout = self.config.supervisor.shutdown_timeout_s
        supervising = [t for t in self._tasks if t.get_name().startswith("supervise-")]
        for rt in self.runtimes.values():
            rt.wake.set()
        _, still = await asyncio.wait(supervising, timeout=timeout) if supervising else ((), ())
        if still:
            self.log.warning("shutdown_timeout", stages=[t.get_name() for t in still])
            for rt in self.runtimes.values():
                if rt.task is not None and not rt.task.done():
                    rt.task.cancel()
            await asyncio.wait(still, timeout=5)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for rt in self.runtimes.values():
            if rt.state not in (StageState.FAILED, StageState.PARKED):
                self._set_state(rt, StageState.STOPPED)
        self.log.info("daemon_stopped", exit_code=self.exit_code)

    async def _supervise(self, rt: StageRuntime) -> None:
        """Run one stage until shutdown, restarting it per the rules in the module docstring."""
        while not self.stopping.is_set():
            self._set_state(rt, StageState.RUNNING, reason=rt.outside_reason)
            rt.run_mark = (self.units(rt), time.monotonic())
            rt.ctx.heartbeat()
            rt.stalled = rt.reconfigured = False
            rt.task = asyncio.create_task(self._run_stage(rt), name=f"stage-{rt.name}")
            try:
                await asyncio.shield(rt.task)
            except asyncio.CancelledError:
                if self.stopping.is_set() or rt.task.cancelled() is False:
                    raise
            except Exception:  # the stage crashed: _after_run reads task.exception()
                pass
            outcome = await self._after_run(rt)
            if outcome == "stop":
                return

    async def _run_stage(self, rt: StageRuntime) -> None:
        with structlog.contextvars.bound_contextvars(stage=rt.name):
            await rt.stage.run(rt.ctx)
