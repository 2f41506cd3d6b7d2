"""The log redactor: secrets never leave the process in a log line."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

import structlog

from dahell import log


def render(**event: object) -> dict[str, object]:
    stream = io.StringIO()
    log.configure("debug", "json", stream=stream)
    structlog.get_logger().info("something_happened", **event)
    return json.loads(stream.getvalue().splitlines()[-1])  # type: ignore[no-any-return]


def test_known_secret_values_are_masked_wherever_they_appear() -> None:
    log.set_secrets(["hunter2-password", "tok-123456"])
    out = render(detail="login with hunter2-password failed", nested={"a": ["x tok-123456 y"]})
    assert "hunter2-password" not in json.dumps(out)
    assert "tok-123456" not in json.dumps(out)
    assert out["detail"] == "login with *** failed"


def test_secret_named_fields_urls_and_bearer_tokens_are_masked() -> None:
    log.set_secrets([])
    out = render(
        password="p4ss",
        authorization="Bearer abc.def.ghi",
        dsn="postgresql://u:pw@h/db",
        note="postgresql://user:s3cr3t@db.example:5432/x and Bearer eyJhbGciOi.x.y",
        pass_id="2025-12-23T01",
        token_expires_in_s=30,
    )
    text = json.dumps(out)
    assert "p4ss" not in text and "abc.def.ghi" not in text and "s3cr3t" not in text
    assert "eyJhbGciOi" not in text and ":pw@" not in text
    assert out["pass_id"] == "2025-12-23T01"  # not a secret, despite its name
    assert out["token_expires_in_s"] == 30


def test_runtime_tokens_can_be_added() -> None:
    log.set_secrets([])
    log.add_secret("jwt-obtained-at-run-time")
    assert "jwt-obtained" not in json.dumps(render(event_detail="jwt-obtained-at-run-time"))


def test_standard_library_records_are_json_and_redacted() -> None:
    stream = io.StringIO()
    log.configure("info", "json", stream=stream)
    log.set_secrets(["hunter2-password"])
    try:
        raise RuntimeError("callback failed with hunter2-password")
    except RuntimeError:
        logging.getLogger("asyncio").error(
            "Exception in callback %s", "Bearer abc.def.ghi", exc_info=True
        )
    logging.getLogger("aiohttp.access").warning("GET /x with hunter2-password")
    logging.getLogger("asyncpg").info("below the library level: not shown")
    lines = stream.getvalue().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert len(records) == 2
    first, second = records
    assert first["logger"] == "asyncio" and first["level"] == "error"
    assert first["event"] == "Exception in callback Bearer ***"
    assert "RuntimeError" in first["exception"] and "timestamp" in first
    assert second["logger"] == "aiohttp.access" and second["level"] == "warning"
    assert "hunter2-password" not in stream.getvalue()
    assert "abc.def.ghi" not in stream.getvalue()


def test_configuring_twice_logs_each_library_record_once() -> None:
    stream = io.StringIO()
    log.configure("info", "json", stream=io.StringIO())
    log.configure("info", "json", stream=stream)
    logging.getLogger("playwright").warning("once")
    assert len(stream.getvalue().splitlines()) == 1


def test_a_reload_keeps_the_live_runtime_token() -> None:
    log.set_secrets(["old-password"])
    log.add_secret("live-dropi-jwt-token")
    log.set_secrets(["new-password"])  # SIGHUP: the new config's secrets
    out = json.dumps(render(detail="live-dropi-jwt-token new-password"))
    assert "live-dropi-jwt-token" not in out and "new-password" not in out


def test_runtime_tokens_stay_bounded_and_the_newest_is_kept() -> None:
    log.set_secrets([])
    for i in range(1000):
        log.add_secret(f"jwt-number-{i:04d}")
    assert len(log.known_secrets()) <= log.MAX_RUNTIME_SECRETS
    out = json.dumps(render(detail="jwt-number-0999"))
    assert "jwt-number-0999" not in out


SCRIPT = """
import asyncio, sys, threading, warnings
from dahell import log
log.configure("info", "json")
log.set_secrets(["sekrit-value-42"])
threading.Thread(target=lambda: 1 / 0, name="worker-1").start()
warnings.warn("deprecated sekrit-value-42")
async def main():
    asyncio.get_running_loop().call_soon(lambda: {}["sekrit-value-42"])
    await asyncio.sleep(0.05)
asyncio.run(main())
raise SystemError("uncaught sekrit-value-42")
"""


def test_every_line_a_process_writes_is_one_redacted_json_object() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    lines = (done.stdout + done.stderr).splitlines()
    events = [json.loads(line) for line in lines]  # fails on any plain-text line
    assert {e["event"] for e in events} >= {"thread_crashed", "uncaught_exception"}
    assert any(e.get("logger") == "asyncio" for e in events)
    assert any(e.get("logger") == "py.warnings" for e in events)
    assert "sekrit-value-42" not in done.stdout + done.stderr


def test_a_new_level_applies_to_library_records_too() -> None:
    stream = io.StringIO()
    log.configure("info", "json", stream=stream)
    log.set_level("error")  # SIGHUP
    try:
        logging.getLogger("aiohttp.client").warning("not shown at error")
        structlog.get_logger().warning("neither is this")
        logging.getLogger("aiohttp.client").error("shown")
    finally:
        log.set_level("debug")  # other tests capture warnings
    assert [json.loads(x)["event"] for x in stream.getvalue().splitlines()] == ["shown"]
