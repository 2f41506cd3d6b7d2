"""`python -m dahell run`: the database, the supervisor, the HTTP server and alerts, together."""

from __future__ import annotations

import asyncio
import contextlib
import resource

import structlog

from dahell import __version__, db
from dahell.alerts import AlertSender
from dahell.config import Config
from dahell.errors import DatabaseUnavailable, MigrationError
from dahell.stages.base import Stage
from dahell.supervisor import Supervisor

EXIT_DATABASE = 3


async def run_daemon(
    config: Config,
    stages: list[Stage],
    *,
    exit_when_idle: bool = False,
    config_path: str | None = None,
) -> int:
    """Run the given stages until a signal, a failure policy or idleness stops them."""
    log = structlog.get_logger().bind(component="daemon")
    log.info(
        "daemon_starting",
        version=__version__,
        stages=[s.name for s in stages],
        config_file=config.source,
        embedded_database=not config.database.dsn,
    )
    raise_file_limit(log)
    try:
        database = await db.connect(config)
    except DatabaseUnavailable as exc:
        event = "migration_failed" if isinstance(exc, MigrationError) else "database_unavailable"
        log.error(event, error=str(exc))
        return EXIT_DATABASE
    supervisor = Supervisor(
        config, stages, database.pool, config_path=config_path, exit_when_idle=exit_when_idle
    )
    alerts = AlertSender(lambda: supervisor.config)
    supervisor.on_state_change = alerts.stage_changed
    await alerts.start()
    server = None
    try:
        if config.http.enabled:
            from dahell.http import StatusServer

            server = StatusServer(supervisor)
            try:
                listen = await server.start()
                log.info("http_listening", listen=listen)
                _warn_if_exposed(log, config)
            except OSError as exc:
                log.error("http_unavailable", listen=config.http.listen, error=str(exc))
                server = None
        code = await supervisor.run()
    finally:
        if server is not None:
            await server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(alerts.close(), timeout=5)
        await database.close()
    log.info("daemon_exited", exit_code=code)
    return code


#: Where the hard limit is "unlimited", the soft one is raised to this (Linux's default nr_open).
FILE_LIMIT_CAP = 1_048_576


def raise_file_limit(log: structlog.typing.FilteringBoundLogger) -> None:
    """Raise the open-file soft limit to the hard one: sockets, the browser and the database.

    A soft limit of 1,024 (many distributions' default) is reached by a few hundred HTTP clients
    plus Chromium's files; the hard limit is what the administrator allows. Logged either way.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = FILE_LIMIT_CAP if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        log.info("file_limit_not_raised", reason="already_at_hard_limit", soft=soft, hard=hard)
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        reason = "setrlimit_refused"
        log.warning("file_limit_not_raised", reason=reason, soft=soft, hard=hard, error=str(exc))
        return
    log.info("file_limit_raised", before=soft, after=target, hard=hard)


EXPOSED_RISK = (
    "the status server answers anyone who can reach this address without a token: /status, "
    "/metrics, the search and research pages show the catalog and the config (secrets masked); "
    "set http.token (DAHELL_HTTP__TOKEN_FILE) or listen on 127.0.0.1"
)


def _warn_if_exposed(log: structlog.typing.FilteringBoundLogger, config: Config) -> None:
    """Warn once at start-up when the status server is reachable off this host without a token.

    The container listens on 0.0.0.0 on purpose (so `-p 9464:9464` works); the warning makes the
    open door visible instead of silently closing it.
    """
    from dahell.http import is_loopback, split_host

    host = split_host(config.http.listen)[0]
    if not config.http.token and not is_loopback(host):
        log.warning("http_exposed_without_token", listen=config.http.listen, risk=EXPOSED_RISK)
