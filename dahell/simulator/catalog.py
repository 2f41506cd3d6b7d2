"""A deterministic Dropi catalog: products shaped exactly like the real API's list objects.

Everything comes from one seed: the same seed gives the same products, ids, suppliers,
warehouses and images. About 10% of the products reuse the photo of another product under
another supplier: the same kind of item (its noun and qualifier, its categories, a price near
the original's) under another name, the look-alikes users hunt for. A third of those copies are
byte-identical files; the others are resized, re-encoded copies.

Between passes the catalog moves as a real one does (`move_pass`, deterministic from the seed
and the pass number): every product has its own demand (most sell nothing on a given day, a few
sell dozens), stock falls by Poisson-distributed sales, low stock is restocked now and then,
prices move on a few products, and with `churn` some listings vanish while new ones (held in a
reserve built with the catalog, so their photos exist on the CDN) appear at the front.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson

Product = dict[str, Any]

COUNTRY_PREFIX = "colombia/products"

NOUNS = [
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


@dataclass(frozen=True, slots=True)
class ItemKind:
    """What a product is, whatever its listing calls it: look-alikes share one."""

    noun: str
    qualifier: str


@dataclass
class Catalog:
    products: list[Product]
    images: dict[str, ImageSpec]  # gallery path (urlS3) -> spec
    lookalikes: dict[int, int]  # product id -> the product id whose photo it reuses
    kinds: dict[int, ItemKind] = field(default_factory=dict)  # product id -> its item kind
    reserve: list[Product] = field(default_factory=list)  # listings that appear later (churn)


def build_catalog(count: int, seed: int) -> Catalog:
    """`count` products in the real list format (plus a reserve), the same for the same seed."""
    rng = random.Random(f"catalog:{seed}")
    suppliers = [_supplier(rng, i) for i in range(max(3, count // 8 + 2))]
    warehouses = [_warehouse(rng, i, suppliers) for i in range(max(2, count // 40 + 3))]
    spare = max(4, count // 5)
    ids = rng.sample(range(100_000, 100_000 + max((count + spare) * 20, 1000)), count + spare)
    ids_counter = _IdCounter(rng.randrange(1_000_000, 2_000_000))
    catalog = Catalog([], {}, {})
    for index, pid in enumerate(ids):
        supplier = rng.choice(suppliers)
        source = _pick_lookalike_source(rng, catalog.products, supplier)
        kind = catalog.kinds[source["id"]] if source else ItemKind(*_new_kind(rng))
        product = _product(rng, pid, supplier, warehouses, ids_counter, kind, source)
        spec = _image_spec(rng, pid, index, source, catalog.images)
        if source is not None:
            catalog.lookalikes[pid] = source["id"]
        path = _image_path(rng, pid, spec.kind)
        product["gallery"] = _gallery(rng, pid, path)
        catalog.images[path] = spec
        catalog.kinds[pid] = kind
        (catalog.products if index < count else catalog.reserve).append(product)
    return catalog


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


def _new_kind(rng: random.Random) -> tuple[str, str]:
    return rng.choice(NOUNS), rng.choice(_QUALIFIERS)


_PREFIXES = ["", "", "", "Nuevo ", "Kit ", "Original ", "Set "]


def _name(rng: random.Random, kind: ItemKind, copy_of: Product | None) -> str:
    """A listing title for `kind`; a look-alike's title differs from its source's."""
    name = f"{kind.noun} {kind.qualifier}{rng.choice(_EXTRAS)}"
    if copy_of is not None:
        name = f"{rng.choice(_PREFIXES)}{name}"
        if name.casefold() == " ".join(str(copy_of["name"]).split()).casefold():
            name += rng.choice([" x2", " Pro", " Plus", " 2.0"])
    if rng.random() < 0.15:
        name = name.replace(" ", "  ", 1)
    if rng.random() < 0.2:
        name = name.upper() if rng.random() < 0.5 else name.lower()
    return name


def _price(rng: random.Random, copy_of: Product | None = None) -> int:
    if copy_of is None:
        return rng.randrange(8, 300) * 1000
    # Another supplier of the same item asks about the same: within 15% of the source.
    return max(1000, round(int(copy_of["sale_price"]) * rng.uniform(0.85, 1.15) / 500) * 500)


def _product(
    rng: random.Random,
    pid: int,
    supplier: dict[str, Any],
    warehouses: list[dict[str, Any]],
    ids: _IdCounter,
    kind: ItemKind,
    copy_of: Product | None,
) -> Product:
    sale = _price(rng, copy_of)
    categories = (
        copy.deepcopy(copy_of["categories"])
        if copy_of is not None
        else [{"name": c} for c in rng.sample(_CATEGORIES, rng.randint(1, 3))]
    )
    base: Product = {
        "id": pid,
        "sku": rng.choice([str(rng.randrange(100, 999_999)), f"REF-{pid % 9973}", None, "100"]),
        "name": _name(rng, kind, copy_of),
        "type": "SIMPLE",
        "user": supplier,  # shared: never mutated in place
        "gallery": [],
        "categories": categories,
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
        if rng.random() < 1 / 3:  # the very same file, uploaded again by another supplier
            return ImageSpec(original.photo_seed, original.kind)
        # A resized, re-encoded copy keeps its colours (a grey copy of a colour photo is not
        # what a second supplier uploads).
        if (kind == "grey") != (original.kind == "grey"):
            kind = "grey" if original.kind == "grey" else "jpeg"
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


@dataclass(frozen=True, slots=True)
class Demand:
    """How one product sells and is restocked: fixed per product, derived from the seed."""

    units_per_day: float  # mean units sold per day, over all its stock rows
    restock_below: int  # its stock rows at or under this...
    restock_chance: float  # ...are restocked, with this chance per pass...
    restock_units: int  # ...by this many units
    price_chance: float  # chance per pass that its price moves


@lru_cache(maxsize=1 << 17)
def demand(seed: int, product_id: int) -> Demand:
    """The product's demand: most sell nothing on a given day, a few sell dozens."""
    rng = random.Random(f"demand:{seed}:{product_id}")
    tier = rng.random()
    if tier < 0.82:
        rate = rng.uniform(0.0, 0.04)
    elif tier < 0.95:
        rate = rng.uniform(0.2, 1.5)
    else:
        rate = rng.uniform(3.0, 25.0)
    return Demand(
        units_per_day=rate,
        restock_below=rng.choice([0, 0, 2, 5, 10]),
        restock_chance=rng.choice([0.0, 0.0, 0.05, 0.1, 0.25]),
        restock_units=rng.choice([20, 50, 100, 200, 500]),
        price_chance=rng.choice([0.0, 0.0, 0.01, 0.02, 0.05]),
    )


def move_pass(
    products: list[Product],
    seed: int,
    pass_no: int,
    *,
    days: float = 1.0,
    churn: float = 0.0,
    reserve: list[Product] | None = None,
) -> list[Product]:
    """The catalog of pass `pass_no`, `days` after the previous pass.

    Each product sells by its own demand (Poisson, capped by its stock), some low stock is
    restocked, a few prices move; with `churn`, that share of the listings vanishes and about as
    many listings from `reserve` (not yet in `products`) appear at the front.
    """
    rng = random.Random(f"pass:{seed}:{pass_no}")
    out: list[Product] = []
    for product in products:
        if churn and rng.random() < churn:
            continue  # the supplier took the listing down
        out.append(_moved(rng, product, demand(seed, int(product["id"])), days))
    if churn and reserve:
        out[:0] = _arrivals(rng, products, reserve, round(churn * len(products)))
    return out


def _arrivals(
    rng: random.Random, products: list[Product], reserve: list[Product], wanted: int
) -> list[Product]:
    present = {p["id"] for p in products}
    waiting = [p for p in reserve if p["id"] not in present]
    return waiting[: max(0, wanted + rng.choice([-1, 0, 0, 1]))]


def _moved(rng: random.Random, product: Product, need: Demand, days: float) -> Product:
    """`product` after `days` of sales, restocks and price moves (a copy when it changed)."""
    rows = _stock_rows(product)
    per_row = need.units_per_day * days / max(1, len(rows))
    restock = rng.random() < need.restock_chance
    new_stock = [_next_stock(rng, int(row["stock"]), per_row, need, restock) for row in rows]
    price = _next_price(rng, product, need)
    if new_stock == [row["stock"] for row in rows] and price is None:
        return product
    moved: Product = orjson.loads(orjson.dumps(product))  # a deep copy, ten times faster
    for row, stock in zip(_stock_rows(moved), new_stock, strict=True):
        row["stock"] = stock
    for variation in moved.get("variations") or []:
        variation["stock"] = sum(r["stock"] for r in variation["warehouse_product_variation"])
    if price is not None:
        _set_price(moved, *price)
    return moved


def _next_stock(
    rng: random.Random, stock: int, mean_sold: float, need: Demand, restock: bool
) -> int:
    stock -= min(stock, _poisson(rng, mean_sold))
    if restock and stock <= need.restock_below:
        stock += need.restock_units
    return stock


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth for small means, a rounded normal for large ones)."""
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _next_price(rng: random.Random, product: Product, need: Demand) -> tuple[int, int] | None:
    """(new sale price, change of the suggested price) when the price moves this pass."""
    if rng.random() >= need.price_chance:
        return None
    sale = int(product["sale_price"])
    new = max(1000, round(sale * rng.choice([0.9, 0.95, 0.97, 1.03, 1.05, 1.1]) / 500) * 500)
    if new == sale:
        new = sale + 500
    return new, (new - sale if rng.random() < 0.5 else 0)


def _set_price(product: Product, sale: int, suggested_delta: int) -> None:
    product["sale_price"] = sale
    if "suggested_price" in product:
        product["suggested_price"] = int(product["suggested_price"]) + suggested_delta
    for variation in product.get("variations") or []:
        variation["sale_price"] = sale
        if variation.get("suggested_price") is not None:
            variation["suggested_price"] = int(variation["suggested_price"]) + suggested_delta


def _stock_rows(product: Product) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = list(product.get("warehouse_product") or [])
    for variation in product.get("variations") or []:
        rows.extend(variation["warehouse_product_variation"])
    return rows
