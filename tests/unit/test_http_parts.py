"""The HTTP server's pure parts: throttled events, /healthz codes, the CSP, the file limit."""

from __future__ import annotations

import asyncio
import resource
from datetime import UTC, datetime

import pytest
import structlog

from dahell import daemon
from dahell.http_guard import ThrottledEvent
from dahell.http_params import Param, identifier, integer, number, text, timestamp
from dahell.http_safety import content_security_policy, public_reasons


async def test_a_flood_of_one_event_is_logged_as_counts_not_lines() -> None:
    with structlog.testing.capture_logs() as events:
        throttled = ThrottledEvent("http_header_timeout", interval_s=0.05)
        for _ in range(10_000):
            throttled.add(timeout_s=1.0)
        await asyncio.sleep(0.2)  # the interval ends: the rest is logged as one count
        throttled.close()
    lines = [e for e in events if e["event"] == "http_header_timeout"]
    assert len(lines) == 2
    assert [e["count"] for e in lines] == [1, 9_999]
    assert lines[-1]["total"] == 10_000 and lines[-1]["log_level"] == "warning"


async def test_each_kind_is_counted_apart() -> None:
    with structlog.testing.capture_logs() as events:
        throttled = ThrottledEvent("http_connection_limit_reached", interval_s=60)
        throttled.add("evicted", max_connections=2)
        throttled.add("evicted", max_connections=2)
        throttled.add("refused", max_connections=2)
        throttled.close()
    assert [(e.get("evicted"), e.get("refused")) for e in events] == [(1, None), (1, 1)]


@pytest.mark.parametrize(
    ("text_", "public"),
    [
        (
            "stage loader is failed: OSError: [Errno 5] /data/x",
            "stage loader is failed: too_many_restarts",
        ),
        ("stage loader is stalled: no_progress", "stage loader is stalled: no_progress"),
        ("stage loader is stalled: /a/path", "stage loader is stalled: no_progress"),
        (
            "stage v is out of disk space: disk_full: /data/j",
            "stage v is out of disk space: disk_full",
        ),
        (
            "stage loader is out of file descriptors: out_of_files: [Errno 24] /data/x",
            "stage loader is out of file descriptors: out_of_files",
        ),
        ("stage l is out of luck: /a/b", "stage l is out of luck: out_of_resources"),
        ("something new: /etc/secret", "unhealthy"),
    ],
)
def test_healthz_reasons_keep_names_and_codes_only(text_: str, public: str) -> None:
    assert public_reasons([text_]) == [public]


def test_the_policy_admits_a_plain_http_image_origin_only() -> None:
    cdn = content_security_policy("https://d39ru7awumhhs2.cloudfront.net/")
    assert "img-src 'self' https: data:;" in cdn and "frame-ancestors 'none'" in cdn
    local = content_security_policy("http://127.0.0.1:8123/images/")
    assert "img-src 'self' https: data: http://127.0.0.1:8123;" in local


@pytest.mark.parametrize(
    ("param", "raw", "value"),
    [
        (identifier(), "9223372036854775807", 2**63 - 1),
        (integer(0, 2**63 - 1), "0", 0),
        (number(-10, 10), "-2.5e0", -2.5),
        (text(5), "añb", "añb"),
        (timestamp(), "2026-11-30T18:00-05:00", datetime(2026, 11, 30, 23, tzinfo=UTC)),
    ],
)
def test_good_values_parse(param: Param, raw: str, value: object) -> None:
    assert param.parse(raw) == value


def test_the_file_limit_is_raised_to_the_hard_one(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    monkeypatch.setattr(resource, "setrlimit", lambda _, limits: calls.append(limits))
    with structlog.testing.capture_logs() as events:
        daemon.raise_file_limit(structlog.get_logger())
    assert calls == [(4096, 4096)]
    assert events == [
        {
            "event": "file_limit_raised",
            "before": 1024,
            "after": 4096,
            "hard": 4096,
            "log_level": "info",
        }
    ]


def test_a_refused_raise_is_logged_with_why(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> None:
        raise ValueError("not allowed to raise maximum limit")

    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    monkeypatch.setattr(resource, "setrlimit", refuse)
    with structlog.testing.capture_logs() as events:
        daemon.raise_file_limit(structlog.get_logger())
    (event,) = events
    assert event["event"] == "file_limit_not_raised" and event["reason"] == "setrlimit_refused"
    assert "not allowed" in event["error"] and event["log_level"] == "warning"
