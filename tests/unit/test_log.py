"""The log redactor: secrets never leave the process in a log line."""

from __future__ import annotations

import io
import json

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
