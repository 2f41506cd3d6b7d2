"""Configuration: file, environment overrides, *_FILE secrets, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from dahell import config
from dahell.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_the_shipped_dahell_toml_holds_exactly_the_defaults() -> None:
    loaded = config.load(REPO / "dahell.toml", env={})
    assert loaded.model_dump(exclude={"source"}) == config.Config().model_dump(exclude={"source"})


def test_environment_overrides_every_key_with_its_type(tmp_path: Path) -> None:
    env = {
        "DAHELL_PATHS__DATA_DIR": str(tmp_path),
        "DAHELL_DATABASE__DSN": "postgresql://u:p@h/db",
        "DAHELL_LOADER__BATCH_SIZE": "250",
        "DAHELL_SCRAPER__HEADLESS": "false",
        "DAHELL_VECTORIZER__ALLOWED_IMAGE_HOSTS": "a.example, b.example:8080",
        "DAHELL_VECTORIZER__PROVIDERS": '["CPUExecutionProvider"]',
    }
    cfg = config.load(None, env=env)
    assert cfg.data_dir == tmp_path.resolve()
    assert cfg.loader.batch_size == 250 and cfg.scraper.headless is False
    assert cfg.vectorizer.allowed_image_hosts == ["a.example", "b.example:8080"]
    assert cfg.vectorizer.providers == ["CPUExecutionProvider"]


def test_secrets_come_from_files_and_are_redacted(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    cfg = config.load(None, env={"DAHELL_SCRAPER__PASSWORD_FILE": str(secret)})
    assert cfg.scraper.password == "s3cret"
    assert cfg.redacted()["scraper"]["password"] == "***"
    assert "s3cret" in cfg.secrets()


def test_config_path_from_environment(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text("[loader]\nbatch_size = 10\n")
    assert config.load(None, env={"DAHELL_CONFIG": str(file)}).loader.batch_size == 10


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[loader]\nbach_size = 10\n", "loader.bach_size"),
        ("[loader]\nbatch_size = '10'\n", "loader.batch_size"),
        ("[nope]\nx = 1\n", "nope"),
        ("[scraper]\nmode = 'fast'\n", "scraper.mode"),
        ("[loader\n", "not valid TOML"),
    ],
)
def test_bad_files_name_the_key_and_the_file(tmp_path: Path, text: str, needle: str) -> None:
    file = tmp_path / "bad.toml"
    file.write_text(text)
    with pytest.raises(ConfigError) as err:
        config.load(file, env={})
    assert needle in str(err.value) and str(file) in str(err.value)


def test_bad_environment_values_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="DAHELL_LOADER__BATCH_SIZE"):
        config.load(None, env={"DAHELL_LOADER__BATCH_SIZE": "many"})
    with pytest.raises(ConfigError, match=r"loader\.nope"):
        config.load(None, env={"DAHELL_LOADER__NOPE": "1"})


def test_a_wrong_secret_is_not_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        config.load(None, env={"DAHELL_SCRAPER__PASSWORD": "x", "DAHELL_SCRAPER__MODE": "zz"})
    assert "scraper.mode" in str(err.value)
    file = tmp_path / "c.toml"
    file.write_text('[http]\ntoken = ["s3cr3t-token-value"]\n[database]\ndsn = 4242424242\n')
    with pytest.raises(ConfigError) as err:
        config.load(file, env={})
    message = str(err.value)
    assert "http.token" in message and "database.dsn" in message  # named, never shown
    assert "s3cr3t-token-value" not in message and "4242424242" not in message
    assert "***" in message


@pytest.mark.parametrize(
    "name",
    [
        "DAHELL_LOADER_BATCH_SIZE",  # one underscore: a typo that must not be ignored
        "DAHELL_LOADER",
        "DAHELL_NOPE__X",
        "DAHELL_LOADER__",
        "DAHELL_CONFIGFILE",
        "DAHELL_LOADER__BATCH_SIZE__X",
    ],
)
def test_an_environment_variable_that_maps_to_no_key_stops_start_up(name: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.load(None, env={name: "7"})
    assert name in str(err.value)


def test_the_legitimate_dahell_variables_are_accepted(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("pw\n")
    env = {
        "DAHELL_CONFIG": "",
        "DAHELL_CONTAINERS_CONF": "/etc/containers/dahell-tests.conf",
        "DAHELL_SCRAPER__PASSWORD_FILE": str(secret),
        "DAHELL_LOADER__BATCH_SIZE": "7",
        "NOT_DAHELL_ANYTHING": "x",
    }
    cfg = config.load(None, env=env)
    assert cfg.loader.batch_size == 7 and cfg.scraper.password == "pw"
