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
- running out of file descriptors (EMFILE, ENFILE, or "spawn EMFILE" from the browser's
  driver, anywhere in the error's chain) is waited out the same way, as `out_of_files`: logged
  once (`file_limit_reached`), retried without limit, named by `/healthz` until the stage works
  again (`file_limit_recovered`);
- SIGTERM/SIGINT: stop intake, let the stages drain, exit 0 within `shutdown_timeout_s`; a
  second signal exits at once. SIGHUP: reload the file, apply live settings, restart only the
  stages whose other settings changed, keep the old config if the new one is invalid.

Where each part lives:
- `core`: `Supervisor`, which builds the stages' contexts and queues, runs and stops them;
- `policy`: what follows the end of a stage's task (restart, back off, park, fail, wait);
- `causes`: which errors are a cause outside the stage (a full disk, the file limit);
- `watchdog`: stalls, event-loop lag, history samples, `--exit-when-idle`, systemd pings;
- `reload`: signals and SIGHUP's configuration reload;
- `views`: health and the per-stage view that `/healthz`, `/status` and the metrics read;
- `runtime`: `StageRuntime` and the state the parts share.
"""

from dahell.supervisor.core import Supervisor
from dahell.supervisor.runtime import StageRuntime

__all__ = ["StageRuntime", "Supervisor"]
