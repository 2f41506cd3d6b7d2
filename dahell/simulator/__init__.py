"""A local Dropi: login form, JS catalog app, JSON API and image CDN on three 127.0.0.1 origins.

    from dahell.simulator import Simulator, SimulatorConfig, Faults
    async with Simulator(SimulatorConfig(products=500)) as sim:
        sim.app_url, sim.api_url, sim.cdn_url, sim.catalog, sim.next_pass(), sim.stats

Used by the tests, the scraper benchmark and `dahell demo`. Never contacts the internet.
"""

from dahell.simulator.app import Simulator
from dahell.simulator.auth import make_jwt
from dahell.simulator.catalog import ImageSpec
from dahell.simulator.settings import Faults, SimStats, SimulatorConfig

__all__ = ["Faults", "ImageSpec", "SimStats", "Simulator", "SimulatorConfig", "make_jwt"]
