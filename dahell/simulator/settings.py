"""How a simulator is set up, what can go wrong on purpose, and what it counted."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class Faults:
    """Misbehaviour switched on at run time (all off by default, except the firewall)."""

    token_lifetime_s: float | None = None  # overrides SimulatorConfig.token_lifetime_s
    is_success_false_every: int = 0  # every Nth catalog request: HTTP 200, isSuccess false
    rate_limit_every: int = 0  # every Nth catalog request: 429 with Retry-After
    retry_after_s: float = 1.0
    require_browser_headers: bool = True  # 403 without a browser User-Agent and Origin
    latency_s: float | None = None  # overrides SimulatorConfig.latency_s
    fail_login: bool = False  # every login answers "wrong password"
    clock_skew_s: float = 0.0  # the API's clock runs ahead: tokens expire early for the client


@dataclass
class SimulatorConfig:
    products: int = 500
    seed: int = 7
    latency_s: float = 0.0
    token_lifetime_s: float = 4 * 3600
    email: str = "demo@dahell.test"
    password: str = "s3cret-Pass"
    two_factor_email: str = "2fa@dahell.test"
    ui_page_size: int = 50  # what the JS app asks for per page
    faults: Faults = field(default_factory=Faults)
    churn: float = 0.0  # share of listings that vanish per pass (about as many new ones appear)
    pass_days: float = 1.0  # simulated days between two passes
    start_at: datetime | None = None  # simulated time of pass 0 (None: when the simulator starts)
    advance_each_pass: bool = False  # a request for the first page after the last one: next pass
    max_passes: int = 0  # with advance_each_pass: the last pass number it moves to (0: no limit)


@dataclass
class SimStats:
    logins: int = 0
    login_failures: int = 0
    two_factor_logins: int = 0
    page_requests: int = 0  # catalog requests that passed the firewall and the token check
    pages_served: int = 0
    rejected_401: int = 0
    rejected_403: int = 0
    rejected_429: int = 0
    success_false: int = 0
    preflights: int = 0
    images_served: int = 0
    images_broken: int = 0
    served: list[tuple[int, int]] = field(default_factory=list)  # (startData, pageSize) served
