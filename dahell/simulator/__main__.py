"""`python -m dahell.simulator --products N [--port P]`: run the simulator until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

import structlog

from dahell import log as dahell_log
from dahell.simulator import Faults, Simulator, SimulatorConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dahell.simulator", description=__doc__)
    parser.add_argument("--products", type=int, default=500, help="catalog size")
    parser.add_argument("--port", type=int, default=0, help="app port (API +1, CDN +2); 0: any")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per API request")
    parser.add_argument("--token-lifetime", type=float, default=4 * 3600.0)
    parser.add_argument("--rate-limit-every", type=int, default=0)
    parser.add_argument("--no-firewall", action="store_true", help="accept non-browser requests")
    parser.add_argument(
        "--churn", type=float, default=0.0, help="share of listings replaced per pass (e.g. 0.01)"
    )
    parser.add_argument(
        "--advance-each-pass",
        action="store_true",
        help="move the catalog a simulated day whenever a client starts a new pass",
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    faults = Faults(
        rate_limit_every=args.rate_limit_every, require_browser_headers=not args.no_firewall
    )
    config = SimulatorConfig(
        products=args.products,
        seed=args.seed,
        latency_s=args.latency,
        token_lifetime_s=args.token_lifetime,
        faults=faults,
        churn=args.churn,
        advance_each_pass=args.advance_each_pass,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with Simulator(config, port=args.port) as sim:
        structlog.get_logger("dahell.simulator").info(
            "simulator_started",
            app_url=sim.app_url,
            login_url=sim.app_url + "/login",
            api_url=sim.api_url,
            cdn_url=sim.cdn_url,
            products=len(sim.catalog),
            email=config.email,
            demo_login=f"{config.email} / {config.password}",
            two_factor_email=config.two_factor_email,
        )
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    dahell_log.configure("info", "console")
    asyncio.run(serve(parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
