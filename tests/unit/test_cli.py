"""The command line: `--config` is accepted before or after the command, for every command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dahell import cli

REQUIRED = {"load": ["f.jsonl"], "similar": ["1"]}


def commands() -> list[str]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, cli.argparse._SubParsersAction))
    return sorted(sub.choices)


@pytest.mark.parametrize("command", commands())
def test_config_after_the_command_is_read(command: str) -> None:
    args = cli.build_parser().parse_args(
        [command, *REQUIRED.get(command, []), "--config", "a.toml"]
    )
    assert args.config == "a.toml"


@pytest.mark.parametrize("command", commands())
def test_config_before_the_command_is_kept(command: str) -> None:
    args = cli.build_parser().parse_args(
        ["--config", "b.toml", command, *REQUIRED.get(command, [])]
    )
    assert args.config == "b.toml"


def test_every_command_is_covered() -> None:
    assert {"run", "load", "status", "migrate", "similar", "demo"} <= set(commands())


@pytest.mark.parametrize("position", ["before", "after"])
def test_the_named_file_is_the_one_loaded(tmp_path: Path, position: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[loader]\nbatch_sizee = 3\n")
    argv = (
        ["--config", str(bad), "status"]
        if position == "before"
        else ["status", "--config", str(bad)]
    )
    done = subprocess.run(
        [sys.executable, "-m", "dahell", *argv], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "batch_sizee" in done.stderr
