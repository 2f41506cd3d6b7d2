"""Typed configuration: `dahell.toml`, then `DAHELL_<SECTION>__<KEY>` environment overrides.

Order of precedence (last wins): the defaults below, the TOML file (from `--config`, else
`DAHELL_CONFIG`, else `./dahell.toml` when present), `DAHELL_<SECTION>__<KEY>`, and
`DAHELL_<SECTION>__<KEY>_FILE` (the value read from a file, for Docker secrets).

Values from the file must have the right TOML type; values from the environment are strings and
are converted to the key's type (lists as JSON arrays or comma-separated). Any unknown key or
wrong type raises `ConfigError` naming the key and where it came from.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from dahell.errors import ConfigError

ENV_PREFIX = "DAHELL_"
CONFIG_ENV = "DAHELL_CONFIG"
#: `DAHELL_` variables that are not configuration keys; any other one must name a key.
#: DAHELL_CONTAINERS_CONF: the container tests' podman configuration (tests/container), which
#: a shell that runs those tests exports and the daemons it starts inherit.
OTHER_ENV = frozenset({CONFIG_ENV, "DAHELL_CONTAINERS_CONF"})
DROPI_CDN = "https://d39ru7awumhhs2.cloudfront.net/"

#: Keys whose values are secrets: never logged, never shown in /status.
SECRET_KEYS = frozenset({"database.dsn", "scraper.password", "http.token", "alerts.webhook_url"})

#: Keys a running daemon applies on SIGHUP without restarting the stage that reads them.
LIVE_KEYS = frozenset(
    {
        "log.level",
        "loader.batch_size",
        "loader.batch_max_wait_s",
        "loader.stall_timeout_s",
        "loader.parse_processes",
        "scraper.request_interval_s",
        "scraper.pass_interval_s",
        "scraper.page_size",
        "scraper.restart_browser_every_pages",
        "scraper.request_timeout_s",
        "scraper.stall_timeout_s",
        "vectorizer.batch_size",
        "vectorizer.download_concurrency",
        "vectorizer.download_timeout_s",
        "vectorizer.poll_interval_s",
        "vectorizer.stall_timeout_s",
        "vectorizer.retry_backoff_s",
        "vectorizer.retry_backoff_max_s",
        "vectorizer.max_attempts",
        "vectorizer.dedup_images",
        "supervisor.max_restarts",
        "supervisor.restart_window_s",
        "supervisor.backoff_initial_s",
        "supervisor.backoff_max_s",
        "supervisor.shutdown_timeout_s",
        "supervisor.on_stage_failure",
        "supervisor.loop_lag_warn_ms",
        "journal.compress_after_days",
        "journal.delete_after_days",
        "alerts.min_interval_s",
        "http.allowed_hosts",
        "research.neighbours",
        "research.batch_size",
        "research.poll_interval_s",
        "research.language",
    }
)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class PathsConfig(Section):
    data_dir: str = "data"


class DatabaseConfig(Section):
    dsn: str = ""
    pool_max_size: int = Field(8, ge=2, le=100)
    connect_timeout_s: float = Field(10.0, gt=0)
    command_timeout_s: float = Field(300.0, gt=0)


class LogConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


class LoaderConfig(Section):
    batch_size: int = Field(5000, ge=1, le=200_000)
    batch_max_wait_s: float = Field(1.0, gt=0)
    image_base_url: str = DROPI_CDN
    max_line_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    reject_raw_max_bytes: int = Field(64 * 1024, ge=0)
    incomplete_line_grace_s: float = Field(300.0, ge=0)
    stall_timeout_s: float = Field(120.0, gt=0)
    parse_processes: int = Field(1, ge=0, le=64)


class JournalConfig(Section):
    compress_after_days: float = Field(2.0, ge=0)
    delete_after_days: float = Field(0.0, ge=0)
    fsync: bool = True


class QueuesConfig(Section):
    loader: int = Field(64, ge=1)
    vectorizer: int = Field(1024, ge=1)


class SupervisorConfig(Section):
    max_restarts: int = Field(5, ge=0)
    restart_window_s: float = Field(300.0, gt=0)
    backoff_initial_s: float = Field(1.0, ge=0)
    backoff_max_s: float = Field(60.0, ge=0)
    on_stage_failure: Literal["exit", "degrade"] = "exit"
    shutdown_timeout_s: float = Field(30.0, gt=0)
    loop_lag_warn_ms: float = Field(250.0, gt=0)


class HttpConfig(Section):
    enabled: bool = True
    listen: str = "127.0.0.1:9464"
    token: str = ""
    allowed_hosts: list[str] = Field(default_factory=list)
    header_timeout_s: float = Field(10.0, gt=0, le=3600)
    keepalive_timeout_s: float = Field(75.0, gt=0, le=86400)
    max_connections: int = Field(512, ge=2, le=100_000)


class ScraperConfig(Section):
    app_url: str = "https://app.dropi.co"
    api_url: str = "https://api.dropi.co"
    email: str = ""
    password: str = ""
    mode: Literal["api", "ui"] = "api"
    page_size: int = Field(100, ge=1, le=1000)
    request_interval_s: float = Field(0.5, ge=0)
    pass_interval_s: float = Field(3600.0, ge=0)
    restart_browser_every_pages: int = Field(500, ge=1)
    request_timeout_s: float = Field(60.0, gt=0)
    relogin_before_expiry_s: float = Field(600.0, ge=0)
    max_page_retries: int = Field(5, ge=0)
    headless: bool = True
    browser_executable: str = ""
    country: str = "COLOMBIA"
    stall_timeout_s: float = Field(300.0, gt=0)


class VectorizerConfig(Section):
    model_dir: str = "models/siglip-so400m-patch14-384"
    providers: list[str] = Field(
        default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    batch_size: int = Field(16, ge=1, le=1024)
    claim_batch_size: int = Field(64, ge=1, le=10_000)
    download_concurrency: int = Field(32, ge=1, le=1024)
    download_timeout_s: float = Field(20.0, gt=0)
    connect_timeout_s: float = Field(10.0, gt=0)
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(64_000_000, ge=1024)
    max_decoded_bytes: int = Field(280_000_000, ge=1_000_000)
    max_redirects: int = Field(3, ge=0, le=20)
    allowed_image_hosts: list[str] = Field(
        default_factory=lambda: ["d39ru7awumhhs2.cloudfront.net"]
    )
    preprocess_threads: int = Field(2, ge=1, le=64)
    lease_s: float = Field(300.0, gt=0)
    max_attempts: int = Field(5, ge=1)
    retry_backoff_s: float = Field(60.0, ge=0)
    retry_backoff_max_s: float = Field(21600.0, ge=0)
    dedup_images: bool = True
    poll_interval_s: float = Field(5.0, gt=0)
    stall_timeout_s: float = Field(300.0, gt=0)


class ResearchConfig(Section):
    # Cosine distance at or below which two photos are the same item (see README, Research).
    same_item_distance: float = Field(0.06, gt=0, le=2)
    neighbours: int = Field(32, ge=1, le=500)
    batch_size: int = Field(500, ge=1, le=100_000)
    poll_interval_s: float = Field(5.0, gt=0)
    language: Literal["es", "en"] = "es"


class AlertsConfig(Section):
    webhook_url: str = ""
    min_interval_s: float = Field(300.0, ge=0)


class Config(Section):
    paths: PathsConfig = PathsConfig()
    database: DatabaseConfig = DatabaseConfig()
    log: LogConfig = LogConfig()
    loader: LoaderConfig = LoaderConfig()
    journal: JournalConfig = JournalConfig()
    queues: QueuesConfig = QueuesConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    http: HttpConfig = HttpConfig()
    scraper: ScraperConfig = ScraperConfig()
    vectorizer: VectorizerConfig = VectorizerConfig()
    alerts: AlertsConfig = AlertsConfig()
    research: ResearchConfig = ResearchConfig()

    # The file this config came from (None: defaults and environment only).
    source: str | None = None

    @property
    def data_dir(self) -> Path:
        return Path(self.paths.data_dir).expanduser().resolve()

    @property
    def journal_dir(self) -> Path:
        return self.data_dir / "journal"

    def redacted(self) -> dict[str, Any]:
        """The config as a dict with every secret replaced by "***" (empty secrets stay empty)."""
        out = self.model_dump(exclude={"source"})
        for dotted in SECRET_KEYS:
            section, key = dotted.split(".")
            if out[section][key]:
                out[section][key] = "***"
        return out

    def secrets(self) -> list[str]:
        """The secret values in use, for the log redactor."""
        values = []
        for dotted in SECRET_KEYS:
            section, key = dotted.split(".")
            value = getattr(getattr(self, section), key)
            if value:
                values.append(value)
        return values


def resolve_path(explicit: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    """Which file to read: `--config`, else `DAHELL_CONFIG`, else `./dahell.toml` if it exists."""
    if explicit:
        return Path(explicit)
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    default = Path("dahell.toml")
    return default if default.is_file() else None


def load(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Read, merge and validate the configuration; raise `ConfigError` naming the bad key."""
    env = os.environ if env is None else env
    file = resolve_path(path, env)
    data: dict[str, Any] = _read_toml(file) if file else {}
    origins: dict[str, str] = {}
    for dotted, (value, origin) in _env_overrides(env, file).items():
        section, key = dotted.split(".")
        data.setdefault(section, {})[key] = value
        origins[dotted] = origin
    where = str(file) if file else "defaults"
    try:
        config = Config.model_validate({**data, "source": str(file) if file else None})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, where, origins)) from None
    return config


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {file}") from None
    except OSError as exc:
        raise ConfigError(f"config file {file} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None


def _env_overrides(env: Mapping[str, str], file: Path | None) -> dict[str, tuple[Any, str]]:
    """`DAHELL_<SECTION>__<KEY>[_FILE]` variables, converted to each key's type."""
    found: dict[str, tuple[Any, str]] = {}
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in OTHER_ENV:
            continue
        if "__" not in name:
            raise ConfigError(
                f"unknown configuration variable {name}: keys are set by "
                f"DAHELL_<SECTION>__<KEY> (two underscores), e.g. DAHELL_LOADER__BATCH_SIZE"
            )
        section, _, key = name[len(ENV_PREFIX) :].partition("__")
        section, key = section.lower(), key.lower()
        raw = env[name]
        known = _fields_of(section) or {}
        from_file = key.endswith("_file") and key[: -len("_file")] in known
        if from_file:
            key = key[: -len("_file")]
            raw = _read_secret_file(name, raw)
        fields = _fields_of(section)
        if fields is None or key not in fields:
            raise ConfigError(
                f"unknown configuration key {section}.{key} (from environment {name})"
            )
        dotted = f"{section}.{key}"
        if dotted in found and not from_file:
            continue  # the _FILE variant wins over the plain one
        found[dotted] = (_convert(fields[key], raw, name, dotted), f"environment {name}")
    return found


def _fields_of(section: str) -> dict[str, Any] | None:
    field = Config.model_fields.get(section)
    if field is None or field.annotation is None or not isinstance(field.annotation, type):
        return None
    if not issubclass(field.annotation, Section):
        return None
    return {k: v.annotation for k, v in field.annotation.model_fields.items()}


def _read_secret_file(name: str, path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from None


def _convert(annotation: Any, raw: str, name: str, dotted: str) -> Any:
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    try:
        if getattr(annotation, "__origin__", None) is list:
            text = raw.strip()
            if text.startswith("["):
                return adapter.validate_json(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return adapter.validate_strings(raw)
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"]
        shown = "***" if dotted in SECRET_KEYS else repr(raw)
        raise ConfigError(f"{dotted}: {msg} (got {shown}, from environment {name})") from None


def _describe(exc: ValidationError, where: str, origins: dict[str, str]) -> str:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        origin = origins.get(loc, where)
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown configuration key {loc} (in {origin})")
        else:
            got = err.get("input")
            shown = "***" if loc in SECRET_KEYS else repr(got)
            problems.append(f"{loc}: {err['msg']} (got {shown}, in {origin})")
    return "invalid configuration: " + "; ".join(problems)
