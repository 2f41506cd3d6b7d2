"""Soak: `python tests/benchmarks/soak.py [--lines 1000000] [--products 25000]`.

Puts N journal lines (cycling over a catalog of `--products` products, stock moving now and
then, like the real files: 340k lines for 24k products) into a fresh data folder, serves one
product photo per product from a local image server, and runs the daemon
(`--stages loader,vectorizer --exit-when-idle`, the tiny model) until everything is loaded and
embedded. Samples the daemon's RSS every 2 s and prints the curve and the peak (target: flat,
under 1 GiB without the model), next to the baseline RSS of an idle daemon measured in the same
run.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from aiohttp import web
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.factories import legacy_line, simple_product  # noqa: E402

SPARK = " ▁▂▃▄▅▆▇█"


def write_journal(journal: Path, lines: int, products: int) -> None:
    journal.mkdir(parents=True)
    per_file = max(1, lines // 9)
    written, day = 0, 1
    while written < lines:
        path = journal / f"raw_products_202512{day:02d}.jsonl"
        with path.open("w", encoding="utf-8") as fh:
            for i in range(written, min(lines, written + per_file)):
                pid = 1 + i % products
                stock = 10 + (i // products) % 3 if pid % 4 == 0 else 10
                seconds = i // 50
                captured = (
                    f"2025-12-{day:02d}T{seconds // 3600 % 24:02d}:{seconds // 60 % 60:02d}:00"
                )
                fh.write(legacy_line(simple_product(pid, stock=stock), captured) + "\n")
        written += per_file
        day += 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def image_server(port: int) -> web.AppRunner:
    buf = io.BytesIO()
    Image.new("RGB", (320, 320), (200, 80, 40)).save(buf, "JPEG")
    body = buf.getvalue()

    async def photo(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/{tail:.*}", photo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def sample(proc: subprocess.Popen[bytes], every: float) -> list[tuple[float, float]]:
    ps = psutil.Process(proc.pid)
    started, curve = time.monotonic(), []
    while proc.poll() is None:
        try:
            curve.append((time.monotonic() - started, ps.memory_info().rss / 2**20))
        except psutil.Error:
            break
        time.sleep(every)
    return curve


def sparkline(values: list[float]) -> str:
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = max(1, len(values) // 80)
    return "".join(SPARK[int((v - low) / span * (len(SPARK) - 1))] for v in values[::step])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--products", type=int, default=25_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dahell-soak-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)
        write_journal(root / "data" / "journal", args.lines, args.products)
        port = free_port()
        loop = asyncio.new_event_loop()
        runner = loop.run_until_complete(image_server(port))
        env = {
            **os.environ,
            "DAHELL_PATHS__DATA_DIR": str(root / "data"),
            "DAHELL_DATABASE__DSN": "",
            "DAHELL_HTTP__ENABLED": "false",
            "DAHELL_LOG__LEVEL": "warning",
            "DAHELL_LOADER__IMAGE_BASE_URL": f"http://127.0.0.1:{port}/",
            "DAHELL_VECTORIZER__MODEL_DIR": str(REPO / "models" / "tiny-siglip"),
            "DAHELL_VECTORIZER__PROVIDERS": "CPUExecutionProvider",
            "DAHELL_VECTORIZER__ALLOWED_IMAGE_HOSTS": f"127.0.0.1:{port}",
        }
        subprocess.run([sys.executable, "-m", "dahell", "migrate"], env=env, check=True, cwd=REPO)
        started = time.monotonic()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dahell",
                "run",
                "--stages",
                "loader,vectorizer",
                "--exit-when-idle",
            ],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
        )
        # Serve images from a thread-free loop: run the loop while sampling in this thread.
        curve = loop.run_until_complete(asyncio.to_thread(sample, proc, 2.0))
        elapsed = time.monotonic() - started
        loop.run_until_complete(runner.cleanup())
        status = subprocess.run(
            [sys.executable, "-m", "dahell", "status", "--json"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        counts = json.loads(status.stdout)
    rss = [r for _, r in curve]
    print(
        f"lines {args.lines:,}, products {counts['products']:,}, embeddings "
        f"{counts['embeddings']}, exit code {proc.returncode}, {elapsed:.0f} s "
        f"({args.lines / elapsed:,.0f} lines/s overall)"
    )
    print(
        f"RSS MiB: start {rss[0]:.0f}, peak {max(rss):.0f}, end {rss[-1]:.0f}; "
        f"peak / first sample {max(rss) / rss[0]:.2f}x (target: flat, < 1024 MiB)"
    )
    print("curve:", sparkline(rss))
    for t, r in curve[:: max(1, len(curve) // 15)]:
        print(f"  t={t:7.0f}s  rss={r:7.0f} MiB")


if __name__ == "__main__":
    main()
