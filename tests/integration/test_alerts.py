"""Alerts against a real local webhook: what is sent, what is suppressed, what a bad one does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
import structlog.testing
from aiohttp import web

from dahell import alerts as alerts_mod
from dahell.alerts import AlertSender
from dahell.config import Config


async def until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)


@dataclass
class Webhook:
    """A local Slack stand-in that records every post; `mode` makes it misbehave."""

    url: str = ""
    posts: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    mode: str = "ok"  # ok | error | hang

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "error":
            return web.Response(status=500, text="boom")
        self.posts.append(await request.json())
        return web.Response(text="ok")

    async def wait_for(self, n: int, timeout: float = 30.0) -> list[str]:
        await until(lambda: len(self.posts) >= n, timeout)
        return [p["text"] for p in self.posts]


@pytest.fixture
async def webhook() -> AsyncIterator[Webhook]:
    hook = Webhook()
    app = web.Application()
    app.router.add_post("/hook/{secret}", hook.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    hook.url = f"http://127.0.0.1:{port}/hook/T0SECRETXYZ"
    yield hook
    await runner.cleanup()


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alerts_mod, "RETRY_DELAYS_S", (0.01, 0.01))
    monkeypatch.setattr(alerts_mod, "POST_TIMEOUT_S", 0.3)
    monkeypatch.setattr(alerts_mod, "CLOSE_GRACE_S", 0.5)


@pytest.fixture
async def sender(
    webhook: Webhook, make_config: Callable[..., Config], fast_retries: None
) -> AsyncIterator[AlertSender]:
    config = make_config(ALERTS__WEBHOOK_URL=webhook.url, ALERTS__MIN_INTERVAL_S="60")
    s = AlertSender(lambda: config)
    await s.start()
    yield s
    await s.close()


async def test_failed_parked_and_stalled_stages_are_announced(
    sender: AlertSender, webhook: Webhook
) -> None:
    sender.stage_changed("scraper", "running", "parked", "wrong_credentials")
    sender.stage_changed("loader", "running", "stalled", "no_heartbeat")
    sender.stage_changed("vectorizer", "backoff", "failed", "too_many_restarts")
    texts = await webhook.wait_for(3)
    assert len(texts) == 3
    assert texts[0].startswith(":double_vertical_bar: dahell")
    assert "stage *scraper* is parked: wrong_credentials (since " in texts[0]
    assert texts[0].endswith(" UTC)")
    assert "stage *loader* is stalled: no_heartbeat" in texts[1]
    assert texts[2].startswith(":red_circle:")
    assert "stage *vectorizer* is failed: too_many_restarts" in texts[2]


async def test_a_stage_back_to_running_is_announced_as_recovered(
    sender: AlertSender, webhook: Webhook
) -> None:
    sender.stage_changed("loader", "running", "stalled", "no_heartbeat")
    sender.stage_changed("loader", "stalled", "backoff", "")
    sender.stage_changed("loader", "backoff", "starting", "")
    sender.stage_changed("loader", "starting", "running", "")
    texts = await webhook.wait_for(2)
    assert len(texts) == 2
    assert texts[1].startswith(":large_green_circle:")
    assert "stage *loader* recovered: running again" in texts[1]
    assert "was stalled since" in texts[1]


async def test_ordinary_changes_send_nothing(sender: AlertSender, webhook: Webhook) -> None:
    for old, new in [("starting", "running"), ("running", "idle"), ("idle", "stopped")]:
        sender.stage_changed("loader", old, new, "")
    sender.stage_changed("scraper", "running", "failed", "crash")  # a marker to wait for
    texts = await webhook.wait_for(1)
    assert len(texts) == 1 and "*scraper*" in texts[0]


async def test_repeats_within_min_interval_are_suppressed_then_counted(
    webhook: Webhook, make_config: Callable[..., Config], fast_retries: None
) -> None:
    # The interval outlasts the first two posts even on a slow machine: the repeats come in it.
    config = make_config(ALERTS__WEBHOOK_URL=webhook.url, ALERTS__MIN_INTERVAL_S="1")
    sender = AlertSender(lambda: config)
    await sender.start()
    try:
        for _ in range(3):
            sender.stage_changed("loader", "running", "stalled", "no_heartbeat")
            sender.stage_changed("loader", "stalled", "running", "")
        texts = await webhook.wait_for(2)
        await asyncio.sleep(0.2)
        assert len(webhook.posts) == 2  # one stalled, one recovered; four suppressed
        await asyncio.sleep(1)
        sender.stage_changed("loader", "running", "stalled", "no_heartbeat")
        texts = await webhook.wait_for(3)
        assert texts[2].endswith("(2 similar alerts suppressed)")
    finally:
        await sender.close()


@pytest.mark.parametrize("mode", ["error", "hang"])
async def test_a_broken_webhook_never_reaches_the_caller(
    mode: str,
    sender: AlertSender,
    webhook: Webhook,
) -> None:
    webhook.mode = mode
    with structlog.testing.capture_logs() as logs:
        started = time.monotonic()
        for i in range(20):
            sender.stage_changed(f"stage{i}", "running", "failed", "crash")
        # Enqueue only, never waits on the network: one post alone takes POST_TIMEOUT_S (0.3 s)
        # three times over against a hanging webhook, twenty of them 18 s.
        assert time.monotonic() - started < 2
        await until(lambda: webhook.attempts >= 3)
        assert webhook.attempts >= 3  # first try and two retries for the first alert
        closing = time.monotonic()
        await sender.close()  # bounded, even with a webhook that never answers
    assert time.monotonic() - closing < 3  # CLOSE_GRACE_S (0.5 s) and a slow machine's margin
    failed = [e for e in logs if e["event"] == "alert_failed"]
    assert failed and failed[0]["error"] in {"http_500", "TimeoutError", "ServerTimeoutError"}
    assert "T0SECRETXYZ" not in repr(logs)


async def test_no_webhook_configured_sends_nothing(
    webhook: Webhook, make_config: Callable[..., Config], fast_retries: None
) -> None:
    config = make_config()
    sender = AlertSender(lambda: config)
    await sender.start()
    with structlog.testing.capture_logs() as logs:
        sender.stage_changed("scraper", "running", "parked", "no_credentials")
        sender.stage_changed("scraper", "parked", "running", "")
        await asyncio.sleep(0.3)
        await sender.close()
    assert webhook.attempts == 0
    # Not even an attempt: no post was tried (and failed) or sent anywhere.
    assert [e for e in logs if e["event"] in {"alert_failed", "alert_sent"}] == []


async def test_the_last_state_always_goes_out(
    webhook: Webhook, make_config: Callable[..., Config], fast_retries: None
) -> None:
    config = make_config(ALERTS__WEBHOOK_URL=webhook.url, ALERTS__MIN_INTERVAL_S="0.5")
    sender = AlertSender(lambda: config)
    await sender.start()
    try:
        sender.stage_changed("loader", "running", "failed", "crash one")
        sender.stage_changed("loader", "failed", "running", "")
        sender.stage_changed("loader", "running", "failed", "crash two")
        texts = await webhook.wait_for(2)
        assert "is failed: crash one" in texts[0] and "recovered" in texts[1]
        texts = await webhook.wait_for(3)  # held until min_interval_s has passed, then sent
        assert len(texts) == 3
        assert "stage *loader* is failed: crash two" in texts[2]
    finally:
        await sender.close()


async def test_a_held_alert_is_sent_on_close(
    webhook: Webhook, make_config: Callable[..., Config], fast_retries: None
) -> None:
    config = make_config(ALERTS__WEBHOOK_URL=webhook.url, ALERTS__MIN_INTERVAL_S="60")
    sender = AlertSender(lambda: config)
    await sender.start()
    sender.stage_changed("loader", "running", "failed", "crash one")
    sender.stage_changed("loader", "failed", "running", "")
    sender.stage_changed("loader", "running", "failed", "crash two")
    await webhook.wait_for(2)
    await sender.close()
    assert len(webhook.posts) == 3 and "crash two" in webhook.posts[2]["text"]


async def test_a_held_alert_the_stage_already_left_is_not_sent(
    webhook: Webhook, make_config: Callable[..., Config], fast_retries: None
) -> None:
    # The interval outlasts the first two posts even on a slow machine: the rest are held.
    config = make_config(ALERTS__WEBHOOK_URL=webhook.url, ALERTS__MIN_INTERVAL_S="1")
    sender = AlertSender(lambda: config)
    await sender.start()
    try:
        with structlog.testing.capture_logs() as logs:
            sender.stage_changed("loader", "running", "failed", "crash one")
            sender.stage_changed("loader", "failed", "running", "")
            sender.stage_changed("loader", "running", "failed", "crash two")
            sender.stage_changed("loader", "failed", "running", "")
            await webhook.wait_for(2)
            # the held "recovered" was looked at when its interval ended, and dropped
            await until(
                lambda: any(
                    e["event"] == "alert_suppressed" and e["kind"] == "recovered" for e in logs
                )
            )
        assert len(webhook.posts) == 2  # "recovered" was the last word and is still true
    finally:
        await sender.close()


async def test_a_full_disk_is_announced_once_and_its_recovery_too(
    sender: AlertSender, webhook: Webhook
) -> None:
    # What the supervisor reports while a stage retries on a full disk, then after space returns.
    sender.stage_changed("scraper", "running", "backoff", "disk_full")
    sender.stage_changed("scraper", "backoff", "running", "disk_full")
    sender.stage_changed("scraper", "running", "backoff", "disk_full")
    sender.stage_changed("scraper", "backoff", "running", "disk_full")
    sender.stage_changed("scraper", "running", "running", "")
    texts = await webhook.wait_for(2)
    await asyncio.sleep(0.2)
    assert len(webhook.posts) == 2
    assert "stage *scraper* is out of disk space (disk_full)" in texts[0]
    assert "stage *scraper* recovered: running again" in texts[1]
    assert "was disk_full since" in texts[1]


async def test_running_out_of_file_descriptors_is_announced_once_and_its_recovery_too(
    sender: AlertSender, webhook: Webhook
) -> None:
    # What the supervisor reports while a stage waits out EMFILE, then after descriptors return.
    for _ in range(3):
        sender.stage_changed("scraper", "running", "backoff", "out_of_files")
        sender.stage_changed("scraper", "backoff", "running", "out_of_files")
    sender.stage_changed("scraper", "running", "running", "")
    texts = await webhook.wait_for(2)
    await asyncio.sleep(0.2)
    assert len(webhook.posts) == 2
    assert "stage *scraper* is out of file descriptors (out_of_files)" in texts[0]
    assert "was out_of_files since" in texts[1]
