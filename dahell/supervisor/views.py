"""What the supervisor shows of its stages: health, the per-stage view, outcome counts.

`/healthz`, `/status`, the metrics, the CLI and `--exit-when-idle` all read these, so they all
agree.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from dahell.stages.base import StageState
from dahell.supervisor.causes import SHORTAGES
from dahell.supervisor.runtime import StageRuntime, SupervisorBase


class StatusViews(SupervisorBase):
    """Read-only answers about the stages; what `stage_view.SupervisorView` promises."""

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
        """Healthy unless a stage is failed, stalled, or waits on a full disk or the file limit."""
        reasons = [
            f"stage {rt.name} is {rt.state.value}" + (f": {rt.reason}" if rt.reason else "")
            for rt in self.runtimes.values()
            if rt.state in (StageState.FAILED, StageState.STALLED)
        ]
        reasons += [
            f"stage {rt.name} is out of {shortage.what}: {shortage.reason}: {detail}"
            for rt in self.runtimes.values()
            if rt.state not in (StageState.FAILED, StageState.STALLED)
            for shortage in SHORTAGES
            if (detail := rt.shortages.get(shortage.reason))
        ]
        return not reasons, reasons

    def alive(self) -> bool:
        """No stage failed or stalled: what the systemd watchdog pings for.

        A stage waiting on a full disk or the file limit is unhealthy, but alive: a restart of
        the process would not free space, and the stage resumes by itself once files are free.
        """
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

    def _settled(self, rt: StageRuntime) -> bool:
        """Done, or idle with nothing queued, or unable to run: produces no more work now."""
        if rt.done or rt.state in (StageState.PARKED, StageState.FAILED):
            return True
        queue = rt.ctx.inbox
        return rt.ctx.idle and not rt.ctx.busy_depth and (queue is None or queue.empty())
