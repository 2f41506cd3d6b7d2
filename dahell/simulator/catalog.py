"""A deterministic Dropi catalog: products shaped exactly like the real API's list objects.

Everything comes from one seed: the same seed gives the same products, ids, suppliers,
warehouses and images. `move_pass` changes stock on about 10% of the products and prices on
about 2%, deterministically from the seed and the pass number. About 10% of the products reuse
the photo of another product under another supplier (the look-alikes users hunt for).
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import Any

Product = dict[str, Any]

COUNTRY_PREFIX = "colombia/products"

_NOUNS = [
    "Audífonos",
    "Parlante",
    "Linterna",
    "Reloj",
    "Cámara",
    "Lámpara",
    "Mochila",
    "Buzo",
    "Chaqueta",
    "Organizador",
    "Cargador",
    "Soporte",
    "Termo",
    "Botella",
    "Masajeador",
    "Cepillo",
    "Secador",
    "Plancha",
    "Báscula",
    "Humidificador",
    "Proyector",
    "Teclado",
    "Mouse",
    "Bolso",
    "Gorra",
    "Camiseta",
    "Sandalias",
    "Tenis",
    "Almohada",
    "Cobija",
]
_QUALIFIERS = [
    "inalámbrico",
    "LED",
    "recargable",
    "portátil",
    "para moto",
    "de cuello alto",
    "reflectivo",
    "antideslizante",
    "ergonómico",
    "térmico",
    "magnético",
    "plegable",
    "con Bluetooth",
    "niño",
    "niña",
    "unisex",
    "económico",
    "premium",
    "3 en 1",
    "táctil",
]
_EXTRAS = ["", "", "", "", " 🔥", " ✨", " ¡Oferta!", " x2", " Pro", " Mini", " (Nuevo)"]
_CATEGORIES = [
    "Tecnologia",
    "Vehículos",
    "Hogar",
    "Moda",
    "Deportes",
    "Bienestar",
    "Camping",
    "Natural Home",
    "Otro",
    "Mascotas",
    "Belleza",
    "Juguetes",
    "Cocina",
    "tecnologia",
]
_FIRST_NAMES = [
    "Walter",
    "Sebastián",
    "María José",
    "Andrés",
    "Lucía",
    "Óscar",
    "Camila",
    "Jhon",
    "Natalia",
    "Peña",
    "Vietech",
    "Ana",
    "Julián",
    "Valentina",
    "Sofía",
    "Germán",
]
_STORES = [
    "WG TECNOLOGIA",
    "SEBCOL DISTRIBUCIONES",
    "Importadora Andina",
    "La Bodega Ñ",
    "Distribuciones Oriente",
    "Tienda Fácil",
    "MegaStock",
    "Comercializadora Éxito Total",
]
_CITIES = [
    (56, "BUCARAMANGA"),
    (1, "BOGOTÁ"),
    (2, "MEDELLÍN"),
    (3, "CALI"),
    (4, "BARRANQUILLA"),
    (5, "CÚCUTA"),
    (6, "PEREIRA"),
    (7, "IBAGUÉ"),
]
_ATTRIBUTES = [
    ("TALLA", ["S", "M", "L", "XL", "S - DAMA", "M - DAMA"]),
    ("COLOR", ["AZUL REY", "ROJO", "NEGRO", "BLANCO", "VERDE MENTA", "ROSADO"]),
]
_PLAN = {
    "id": 4,
    "name": "SUPPLIER PREMIUM",
    "type": "SUPPLIER",
    "active": True,
    "created_at": None,
    "deleted_at": None,
    "updated_at": "2022-07-05T18:12:09",
    "description": "El proveedor gestiona su logística pero genera la guía con el sistema de "
    "dropi, y no se le cobra comision",
    "white_brand_id": 1,
    "use_fullfillment": False,
    "supplier_commission": None,
    "wb_comission_amount": None,
    "wb_pay_comission_to": None,
    "auto_manage_delivery": True,
    "commission_product_supplier": 0,
    "dropi_percent_product_drops": 5,
    "dropi_percent_product_supplier": 0,
    "dropi_shipping_increment_amount": 1000,
    "profit_percentage_orders_influencers": 0,
    "ignore_dropi_percent_product_supplier": False,
    "dropi_product_supplier_increment_fixed": False,
}
_PLAN_NAMES = ["SUPPLIER PREMIUM", "SUPPLIER", "SUPPLIER PLUS"]

#: Image kinds: (file extension, Pillow mode, encoder format).
IMAGE_KINDS = {
    "jpeg": ("jpg", "RGB", "JPEG"),
    "png_alpha": ("png", "RGBA", "PNG"),
    "webp": ("webp", "RGB", "WEBP"),
    "grey": ("jpg", "L", "JPEG"),
    "palette": ("png", "P", "PNG"),
}
BROKEN_KINDS = ("missing", "truncated", "html")


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """How the CDN renders one gallery file: which photo, which encoding, how it is broken."""

    photo_seed: int
    kind: str
    variant: int = 0  # 0: the original; 1+: slightly resized / re-encoded copy
    broken: str = ""  # "", or one of BROKEN_KINDS


@dataclass
class Catalog:
    products: list[Product]
    images: dict[str, ImageSpec]  # gallery path (urlS3) -> spec
    lookalikes: dict[int, int]  # product id -> the product id whose photo it reuses


def build_catalog(count: int, seed: int) -> Catalog:
    """`count` products in the real list format, the same for the same seed."""
    rng = random.Random(f"catalog:{seed}")
    suppliers = [_supplier(rng, i) for i in range(max(3, count // 8 + 2))]
    warehouses = [_warehouse(rng, i, suppliers) for i in range(max(2, count // 40 + 3))]
    ids = rng.sample(range(100_000, 100_000 + max(count * 20, 1000)), count)
    ids_counter = _IdCounter(rng.randrange(1_000_000, 2_000_000))
    products: list[Product] = []
    images: dict[str, ImageSpec] = {}
    lookalikes: dict[int, int] = {}
    for index, pid in enumerate(ids):
        supplier = rng.choice(suppliers)
        product = _product(rng, pid, supplier, warehouses, ids_counter)
        source = _pick_lookalike_source(rng, products, supplier)
        spec = _image_spec(rng, pid, index, source, images)
        if source is not None:
            lookalikes[pid] = source["id"]
        path = _image_path(rng, pid, spec.kind)
        product["gallery"] = _gallery(rng, pid, path)
        images[path] = spec
        products.append(product)
    return Catalog(products, images, lookalikes)


class _IdCounter:
    def __init__(self, start: int) -> None:
        self.value = start

    def next(self) -> int:
        self.value += 1
        return self.value


def _supplier(rng: random.Random, index: int) -> dict[str, Any]:
    plan = dict(_PLAN, name=rng.choice(_PLAN_NAMES))
    return {
        "id": 10_000 + index * 37 + rng.randrange(30),
        "name": rng.choice(_FIRST_NAMES),
        "plan": plan,
        "store_name": rng.choice([*_STORES, None]),
        "category_id": None,
        "white_brand": {"id": 1, "name": "Dropi", "product_increment_another_white_brands": None},
        "category_user": None,
        "subscription_plan_id": plan["id"],
    }


def _warehouse(rng: random.Random, index: int, suppliers: list[dict[str, Any]]) -> dict[str, Any]:
    city_id, city = rng.choice(_CITIES)
    owner = rng.choice(suppliers)
    return {
        "id": 2_000 + index * 113 + rng.randrange(100),
        "city": {"id": city_id, "name": city, "zip_code": None},
        "name": f"{owner['name'].upper()} {city.title()}",
    }


def _name(rng: random.Random) -> str:
    name = f"{rng.choice(_NOUNS)} {rng.choice(_QUALIFIERS)}{rng.choice(_EXTRAS)}"
    if rng.random() < 0.15:
        name = name.replace(" ", "  ", 1)
    if rng.random() < 0.2:
        name = name.upper() if rng.random() < 0.5 else name.lower()
    return name


def _price(rng: random.Random) -> int:
    return rng.randrange(8, 300) * 1000


def _product(
    rng: random.Random,
    pid: int,
    supplier: dict[str, Any],
    warehouses: list[dict[str, Any]],
    ids: _IdCounter,
) -> Product:
    sale = _price(rng)
    base: Product = {
        "id": pid,
        "sku": rng.choice([str(rng.randrange(100, 999_999)), f"REF-{pid % 9973}", None, "100"]),
        "name": _name(rng),
        "type": "SIMPLE",
        "user": supplier,  # shared: never mutated in place
        "gallery": [],
        "categories": [{"name": c} for c in rng.sample(_CATEGORIES, rng.randint(1, 3))],
        "sale_price": sale,
    }
    if rng.random() < 0.2:
        base["type"] = "VARIABLE"
        base["variations"] = _variations(rng, pid, sale, warehouses, ids)
        return base
    base.update(
        {
            "variations": [],
            "external_id": None,
            "import_list": None,
            "suggested_price": sale + rng.randrange(5, 120) * 1000,
            "privated_product": False,
            "warehouse_product": _warehouse_product(rng, warehouses, ids),
            "private_product_inventories": [],
            "dropi_percent_product_supplier": None,
        }
    )
    if rng.random() < 0.05:
        del base["suggested_price"]
    return base


def _warehouse_product(
    rng: random.Random, warehouses: list[dict[str, Any]], ids: _IdCounter
) -> list[dict[str, Any]]:
    chosen = rng.sample(warehouses, min(len(warehouses), rng.choice([1, 1, 1, 2, 3])))
    return [{"id": ids.next(), "stock": _stock(rng), "warehouse_id": w["id"]} for w in chosen]


def _stock(rng: random.Random) -> int:
    return rng.choice([0, 5, 10, 20, 50, 100, 200, rng.randrange(1, 1000)])


def _variations(
    rng: random.Random,
    pid: int,
    sale: int,
    warehouses: list[dict[str, Any]],
    ids: _IdCounter,
) -> list[dict[str, Any]]:
    attr_ids = {name: ids.next() for name, _ in _ATTRIBUTES}
    suggested = sale + rng.randrange(10, 90) * 1000
    out = []
    for n in range(rng.randint(2, 6)):
        values = [
            {
                "id": ids.next(),
                "value": rng.choice(options),
                "attribute_id": attr_ids[name],
                "attribute_name": name,
            }
            for name, options in _ATTRIBUTES
        ]
        stocks = [_variation_stock(rng, w, ids) for w in rng.sample(warehouses, 1)]
        out.append(
            {
                "id": ids.next(),
                "sku": f"-{n}",
                "stock": sum(s["stock"] for s in stocks),
                "product_id": pid,
                "sale_price": sale,
                "suggested_price": suggested,
                "attribute_values": values,
                "warehouse_product_variation": stocks,
            }
        )
    return out


def _variation_stock(
    rng: random.Random, warehouse: dict[str, Any], ids: _IdCounter
) -> dict[str, Any]:
    return {
        "id": ids.next(),
        "stock": _stock(rng),
        "warehouse": warehouse,
        "warehouse_id": warehouse["id"],
    }


def _pick_lookalike_source(
    rng: random.Random, products: list[Product], supplier: dict[str, Any]
) -> Product | None:
    if not products or rng.random() >= 0.1:
        return None
    for _ in range(5):
        candidate = rng.choice(products)
        if candidate["user"]["id"] != supplier["id"]:
            return candidate
    return None


def _image_spec(
    rng: random.Random,
    pid: int,
    index: int,
    source: Product | None,
    images: dict[str, ImageSpec],
) -> ImageSpec:
    kind = rng.choices(list(IMAGE_KINDS), weights=[60, 12, 14, 7, 7])[0]
    if source is not None:
        original = images[_main_path(source)]
        return ImageSpec(original.photo_seed, kind, variant=rng.randint(1, 3))
    broken = rng.choice(BROKEN_KINDS) if rng.random() < 0.03 else ""
    return ImageSpec(photo_seed=pid * 7919 + index, kind=kind, broken=broken)


def _main_path(product: Product) -> str:
    return str(product["gallery"][0]["urlS3"])


def _image_path(rng: random.Random, pid: int, kind: str) -> str:
    ext = IMAGE_KINDS[kind][0]
    stem = rng.choice(["IMG-2024", "foto", "imagen producto", "befunky_2025", "WA00"])
    return f"{COUNTRY_PREFIX}/{pid}/{1_700_000_000 + pid}{stem}{rng.randrange(100)}.{ext}"


def _gallery(rng: random.Random, pid: int, path: str) -> list[dict[str, Any]]:
    legacy = f"uploads/images/products/{pid}/{pid}.jpg" if rng.random() < 0.2 else None
    return [{"url": legacy, "main": True, "urlS3": path}]


def move_pass(products: list[Product], seed: int, pass_no: int) -> list[Product]:
    """The catalog of pass `pass_no`: stock moves on ~10% of products, prices on ~2%."""
    rng = random.Random(f"pass:{seed}:{pass_no}")
    out = list(products)
    for i in range(len(out)):
        stock_moves = rng.random() < 0.10
        price_moves = rng.random() < 0.02
        if stock_moves or price_moves:
            out[i] = _moved(rng, out[i], stock_moves, price_moves)
    return out


def _moved(rng: random.Random, product: Product, stock: bool, price: bool) -> Product:
    moved = copy.deepcopy(product)
    if stock:
        for row in _stock_rows(moved):
            row["stock"] = max(0, row["stock"] - rng.randrange(1, 20) + rng.choice([0, 0, 30]))
        for variation in moved.get("variations") or []:
            variation["stock"] = sum(r["stock"] for r in variation["warehouse_product_variation"])
    if price:
        delta = rng.choice([-2000, -1000, 1000, 2000, 5000])
        moved["sale_price"] = max(1000, moved["sale_price"] + delta)
        for variation in moved.get("variations") or []:
            variation["sale_price"] = moved["sale_price"]
    return moved


def _stock_rows(product: Product) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = list(product.get("warehouse_product") or [])
    for variation in product.get("variations") or []:
        rows.extend(variation["warehouse_product_variation"])
    return rows
