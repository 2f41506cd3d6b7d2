"""`python -m dahell demo --no-wait` as a user runs it: simulated days, research answers, exit 0.

The demo scrapes a few quick passes of the simulator (each a simulated day), loads, embeds and
groups them, and must end with the best sellers (pesos as `$ 45.000`, units per day over more
than one observed day), one item's offers with the cheapest marked, and the research page URL.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import re
import sys
from pathlib import Path

import orjson
import pytest

from dahell.simulator.vocabulary import NOUNS
from tests.e2e.conftest import free_port, stop_postmaster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
DAYS = 5


def nouns(title: str) -> set[str]:
    """The simulator's item nouns in a title (what the item is, whatever the listing says)."""
    words = set(title.casefold().split())
    return {noun for noun in NOUNS if noun.casefold() in words}


def number(text: str) -> float:
    """An es-CO number as the table prints it (`1.234,5`)."""
    return float(text.replace(".", "").replace(",", "."))


async def test_demo_ends_with_best_sellers_and_one_items_offers(embedded_data_dir: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAHELL_")}
    env.update(
        DAHELL_PATHS__DATA_DIR=str(embedded_data_dir),
        DAHELL_HTTP__LISTEN=f"127.0.0.1:{port}",
        DAHELL_LOG__LEVEL="error",
        COLUMNS="200",
        PYTHONPATH=str(REPO),
    )
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "dahell",
            "demo",
            "--no-wait",
            "--products",
            "120",
            "--days",
            str(DAYS),
            cwd=embedded_data_dir.parent,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 240)
    finally:
        stop_postmaster(embedded_data_dir / "demo")
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-4000:]
    assert f"day {DAYS}/{DAYS}" in text and "Done:" in text, text[-4000:]

    # The look-alike example pairs the same kind of item (issue 13: not a plancha with a gorra).
    example = text[text.index("Look-alikes of ") :]
    picked = example.split(":", 1)[1].split(" — ", 1)[0]
    first = next(line for line in example.splitlines() if re.match(r"^│ 1 │", line))
    assert nouns(picked) and nouns(picked) == nouns(first.split("│")[4]), (picked, first)

    best = text[text.index("Más vendidos") :]
    rows = [line for line in best.splitlines() if re.match(r"^│\s+\d+ │", line)]
    assert len(rows) >= 5, best[:3000]
    assert re.search(r"\$ \d{1,3}\.\d{3}", rows[0])  # pesos the Colombian way
    table = [[c.strip() for c in row.split("│")] for row in rows]
    assert number(table[0][11]) > 0  # Uds/día 30d of the best seller
    assert max(number(cells[12]) for cells in table) >= DAYS - 1  # days observed

    offers = text[text.index("Un artículo,") :]
    assert "más barato" in offers and "proveedores" in offers
    assert f"http://127.0.0.1:{port}/research" in text
    assert "Demo time:" in text

    # One quick pass per simulated day, each in that day's journal file, and no extra pass.
    journal = sorted((embedded_data_dir / "demo" / "journal").glob("raw_products_*.jsonl*"))
    assert len(journal) == DAYS
    passes = {
        orjson.loads(line)["pass_id"]
        for path in journal
        for line in (gzip.decompress if path.suffix == ".gz" else bytes)(
            path.read_bytes()
        ).splitlines()
        if line
    }
    assert len(passes) == DAYS
