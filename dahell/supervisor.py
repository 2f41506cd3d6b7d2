"""The supervisor: runs the stages as tasks, watches them, restarts them, stops them cleanly.

Rules (DESIGN.md invariant 4):
- a crash restarts the stage after an exponential backoff with jitter; more than
  `supervisor.max_restarts` restarts within `supervisor.restart_window_s` marks it `failed`,
  and `supervisor.on_stage_failure` decides: `exit` (stop everything, exit 1) or `degrade`;
- a stage with work and no heartbeat for its `stall_timeout_s` is `stalled`: its stack is
  logged, it is cancelled and restarted (a restart like any other);
- a `StageParked` error parks the stage with its reason until SIGHUP brings new settings;
- losing the database is not a crash: the stage waits (backoff) and retries without limit;
  only that: `db.is_unavailable` decides, any other error (a permission error, a statement
  timeout, an I/O error) is a crash like any other and counts toward `max_restarts`;
- a full disk (ENOSPC, EDQUOT, PostgreSQL's 53100, or the embedded server unreachable while
  its data disk has less than EMBEDDED_DISK_LOW_BYTES free) is neither: the stage is retried
  with capped backoff without limit (freeing space resumes it), but `/healthz` answers 503
  naming the disk (`disk_full`) until the restarted stage has done a unit of work or run
  `DISK_FULL_CLEAR_S`;
- SIGTERM/SIGINT: stop intake, let the stages drain, exit 0 within `shutdown_timeout_s`; a
  second signal exits at once. SIGHUP: reload the file, apply live settings, restart only the
  stages whose other settings changed, keep the old config if the new one is invalid.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import re
import signal
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog

from dahell import config as config_mod
from dahell import db
from dahell import log as log_mod
from dahell.errors import ConfigError, StageParked
from dahell.metrics import Metrics
from dahell.stages.base import Context, Message, Stage, StageState
from dahell.systemd import Notifier

HISTORY_EVERY_S = 10.0
HISTORY_SAMPLES = 90
IDLE_SETTLE_S = 1.5
# A restarted stage that ran this long (or did a unit of work) after a full disk has room again.
DISK_FULL_CLEAR_S = 30.0
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
DISK_FULL_TEXT = re.compile(r"\bENOSPC\b|no space left on device", re.I)
# The embedded server on a data disk with less free than this (a WAL segment and some) is
# taken to be down for the full disk: it PANICs when it cannot write its WAL.
EMBEDDED_DISK_LOW_BYTES = 32 * 1024 * 1024
# Stage names whose settings live in the config section of the same name.
QUEUED_STAGES = ("loader", "vectorizer")


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
    disk_full: str | None = None  # what the last ENOSPC said, until the stage works again
    run_mark: tuple[int, float] = (0, 0.0)  # (units counted, monotonic time) at the last start

    @property
    def name(self) -> str:
        return self.stage.name


class Supervisor:
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

    def request_stop(self, exit_code: int = 0, reason: str = "") -> None:
        if self.stopping.is_set():
            return
        self.exit_code = exit_code
        self.log.info("shutdown_requested", reason=reason, exit_code=exit_code)
        self.notifier.stopping()
        self.stopping.set()
        self.done.set()

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
            self._set_state(rt, StageState.RUNNING, reason="disk_full" if rt.disk_full else None)
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

    def _settled(self, rt: StageRuntime) -> bool:
        """Done, or idle with nothing queued, or unable to run: produces no more work now."""
        if rt.done or rt.state in (StageState.PARKED, StageState.FAILED):
            return True
        queue = rt.ctx.inbox
        return rt.ctx.idle and not rt.ctx.busy_depth and (queue is None or queue.empty())

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
        if rt.disk_full is None:
            self.log.error("disk_full", stage=rt.name, error=detail)
        rt.disk_full = detail
        return await self._wait_outside(rt, "disk_full", detail)

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

    def _check_disk(self, rt: StageRuntime) -> None:
        """Clear a stage's `disk_full` once its restart did a unit of work or ran a while."""
        if rt.disk_full is None or rt.state != StageState.RUNNING:
            return
        units, started = rt.run_mark
        if self.units(rt) > units or time.monotonic() - started >= DISK_FULL_CLEAR_S:
            self.log.info("disk_space_recovered", stage=rt.name, was=rt.disk_full)
            rt.disk_full = None
            self._set_state(rt, StageState.RUNNING)

    async def _sleep_then(self, rt: StageRuntime, delay: float) -> str:
        rt.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(rt.wake.wait(), timeout=delay)
        return "stop" if self.stopping.is_set() else "restart"

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

    # --- watching --------------------------------------------------------------------------

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for rt in self.runtimes.values():
                self._check_stall(rt)
                self._check_disk(rt)

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

    # --- signals and reload ----------------------------------------------------------------

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals > 1:
            self.log.warning("shutdown_forced", signal=sig.name)
            os._exit(128 + sig.value)
        self.log.info("signal_received", signal=sig.name)
        self.request_stop(0, sig.name)

    def _on_reload_signal(self) -> None:
        self.log.info("signal_received", signal="SIGHUP")
        self.reload()

    def reload(self) -> bool:
        """Re-read the configuration; apply it if valid. Returns whether it was applied."""
        self.notifier.reloading()
        try:
            new = config_mod.load(self.config_path)
        except ConfigError as exc:
            self.log.error("config_reload_failed", error=str(exc), kept="previous configuration")
            self.notifier.ready()
            return False
        changed = _changed_keys(self.config, new)
        live = sorted(k for k in changed if k in config_mod.LIVE_KEYS)
        needs_restart = sorted({k.split(".")[0] for k in changed if k not in config_mod.LIVE_KEYS})
        old, self.config = self.config, new
        log_mod.set_secrets(new.secrets())
        if new.log.level != old.log.level:
            log_mod.set_level(new.log.level)
        restarted = [n for n in self.runtimes if n in needs_restart]
        process_level = [s for s in needs_restart if s not in self.runtimes]
        for name in restarted:
            self._restart_for_config(self.runtimes[name])
        self.log.info(
            "config_reloaded",
            changed=sorted(changed),
            applied_live=live,
            restarted_stages=restarted,
            needs_process_restart=process_level,
        )
        self.notifier.ready()
        return True

    def _restart_for_config(self, rt: StageRuntime) -> None:
        if rt.task is not None and not rt.task.done():
            rt.reconfigured = True
            rt.task.cancel()
        rt.wake.set()  # parked or backing off: try again now

    # --- views -----------------------------------------------------------------------------

    @staticmethod
    def outcome_counts(rt: StageRuntime) -> Counter[str]:
        out: Counter[str] = Counter()
        for (outcome, _reason), n in rt.ctx.counters.items():
            out[outcome] += n
        return out

    @classmethod
    def units(cls, rt: StageRuntime) -> int:
        return sum(cls.outcome_counts(rt).values())

    def healthy(self) -> tuple[bool, list[str]]:
        """Healthy unless a stage is failed, stalled or cannot write for a full disk."""
        reasons = [
            f"stage {rt.name} is {rt.state.value}" + (f": {rt.reason}" if rt.reason else "")
            for rt in self.runtimes.values()
            if rt.state in (StageState.FAILED, StageState.STALLED)
        ]
        reasons += [
            f"stage {rt.name} is out of disk space: disk_full: {rt.disk_full}"
            for rt in self.runtimes.values()
            if rt.disk_full and rt.state not in (StageState.FAILED, StageState.STALLED)
        ]
        return not reasons, reasons

    def alive(self) -> bool:
        """No stage failed or stalled: what the systemd watchdog pings for."""
        bad = (StageState.FAILED, StageState.STALLED)
        return not any(rt.state in bad for rt in self.runtimes.values())

    def stage_view(self, rt: StageRuntime) -> dict[str, Any]:
        counters: dict[str, int] = {}
        for (outcome, reason), n in sorted(rt.ctx.counters.items()):
            counters[outcome] = counters.get(outcome, 0) + n
            if reason:
                counters[f"{outcome}:{reason}"] = n
        queue = self.queues.get(rt.name)
        return {
            "state": rt.state.value,
            "since": rt.since.isoformat(),
            "restarts": rt.restarts,
            "last_error": rt.last_error,
            "reason": rt.reason,
            "queue_depth": queue.qsize() if queue is not None else None,
            "counters": counters,
            **rt.ctx.status_extra,
        }


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


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]


def free_bytes(path: os.PathLike[str] | str) -> int | None:
    """Bytes free to an unprivileged writer on `path`'s filesystem (None: cannot tell)."""
    try:
        stat = os.statvfs(path)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


def disk_full(exc: BaseException) -> str | None:
    """What a full disk said (the file and the error), if `exc` or what caused it was one."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, OSError) and seen.errno in DISK_FULL_ERRNOS:
            where = f": {seen.filename}" if seen.filename else ""
            return f"{seen.strerror or errno.errorcode[seen.errno]}{where}"
        if isinstance(seen, asyncpg.exceptions.DiskFullError):
            return f"PostgreSQL: {_first_line(seen)}"
        if DISK_FULL_TEXT.search(str(seen)):  # Playwright's Node side: text, no errno
            return _first_line(seen)
        seen = seen.__cause__ or seen.__context__
    return None


def _changed_keys(old: config_mod.Config, new: config_mod.Config) -> set[str]:
    a, b = old.model_dump(exclude={"source"}), new.model_dump(exclude={"source"})
    return {
        f"{section}.{key}"
        for section in a
        for key in a[section]
        if a[section][key] != b[section][key]
    }
