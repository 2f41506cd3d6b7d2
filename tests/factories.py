"""Product dicts shaped like the real Dropi samples, for tests and benchmarks."""

from __future__ import annotations

import json
import random
from typing import Any

CITIES = ["Bogotá", "Medellín", "Cali", "Barranquilla", "Bucaramanga"]
WORDS = ["Audífonos", "Camión", "Lámpara", "Reloj", "Organizador", "Cepillo", "Soporte", "Kit"]


def simple_product(
    pid: int, *, stock: int = 10, price: int = 50_000, **extra: Any
) -> dict[str, Any]:
    product: dict[str, Any] = {
        "id": pid,
        "sku": f"SKU{pid}",
        "name": f"{WORDS[pid % len(WORDS)]} modelo {pid}",
        "type": "SIMPLE",
        "user": {
            "id": 1000 + pid % 50,
            "name": f"Proveedor {pid % 50}",
            "plan": {"id": 4, "name": "SUPPLIER PREMIUM"},
            "store_name": f"Tienda {pid % 50}",
        },
        "gallery": [
            {"url": None, "main": True, "urlS3": f"colombia/products/{pid}/foto {pid}.jpg"}
        ],
        "categories": [{"name": "Tecnologia"}, {"name": "Hogar"}],
        "sale_price": price,
        "suggested_price": price + 30_000,
        "variations": [],
        "warehouse_product": [{"id": pid * 10, "stock": stock, "warehouse_id": 2444}],
    }
    product.update(extra)
    return product


def variable_product(
    pid: int, *, variations: int = 3, warehouses: tuple[int, ...] = (2444, 2555), stock: int = 5
) -> dict[str, Any]:
    product = simple_product(pid)
    product["type"] = "VARIABLE"
    product.pop("warehouse_product")
    product.pop("suggested_price")
    product["variations"] = [
        {
            "id": pid * 100 + v,
            "sku": f"SKU{pid}-{v}",
            "stock": stock * len(warehouses),
            "product_id": pid,
            "sale_price": 40_000 + v,
            "suggested_price": 70_000 + v,
            "attribute_values": [{"attribute_name": "Color", "value": f"color {v}", "id": v}],
            "warehouse_product_variation": [
                {
                    "id": pid * 1000 + v * 10 + i,
                    "stock": stock + v + i,
                    "warehouse_id": wid,
                    "warehouse": {
                        "id": wid,
                        "name": f"Bodega {wid}",
                        "city": {"id": i, "name": CITIES[i % len(CITIES)]},
                    },
                }
                for i, wid in enumerate(warehouses)
            ],
        }
        for v in range(variations)
    ]
    return product


def legacy_line(product: dict[str, Any], captured: str) -> str:
    """A line in the previous system's `raw_products_*.jsonl` format."""
    first = (product.get("warehouse_product") or [{}])[0]
    return json.dumps(
        {
            "id": product.get("id"),
            "sku": product.get("sku"),
            "name": product.get("name"),
            "type": product.get("type"),
            "sale_price": product.get("sale_price"),
            "suggested_price": product.get("suggested_price"),
            "supplier": product.get("user"),
            "warehouse_id": first.get("warehouse_id"),
            "stock": first.get("stock"),
            "image_url": None,
            "categories": [c["name"] for c in product.get("categories", [])],
            "capture_timestamp": captured,
            "raw_json": product,
        },
        ensure_ascii=False,
    )


def catalog_lines(n: int, *, repeat_share: float = 0.3, seed: int = 1) -> list[str]:
    """`n` legacy lines: new products, and repeats of earlier ones (some with new stock/price)."""
    rng = random.Random(seed)
    lines: list[str] = []
    seen: list[int] = []
    next_id = 100_000
    for i in range(n):
        second = i // 10
        captured = f"2025-12-23T{second // 3600 % 24:02d}:{second // 60 % 60:02d}:{second % 60:02d}"
        if seen and rng.random() < repeat_share:
            pid = rng.choice(seen)
            stock = 10 + (pid % 7) + (rng.random() < 0.2) * rng.randint(1, 5)
            price = 50_000 + (rng.random() < 0.05) * 1000
        else:
            pid, next_id = next_id, next_id + 1
            seen.append(pid)
            stock, price = 10 + pid % 7, 50_000
        if pid % 5 == 0:
            product = variable_product(pid, stock=stock)
        else:
            product = simple_product(pid, stock=stock, price=price)
        lines.append(legacy_line(product, captured))
    return lines
