"""A deterministic Dropi catalog: products shaped exactly like the real API's list objects.

Everything comes from one seed: the same seed gives the same products, ids, suppliers,
warehouses and images. About 10% of the products reuse the photo of another product under
another supplier: the same kind of item (its noun and qualifier, its categories, a price near
the original's) under another name, the look-alikes users hunt for. A third of those copies are
byte-identical files; the others are resized, re-encoded copies.

Between passes the catalog moves as a real one does: see `dynamics.move_pass`.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from typing import Any

from dahell.simulator.vocabulary import (
    ATTRIBUTES,
    CATEGORIES,
    CITIES,
    EXTRAS,
    FIRST_NAMES,
    NOUNS,
    PLAN,
    PLAN_NAMES,
    PREFIXES,
    QUALIFIERS,
    STORES,
)

Product = dict[str, Any]

COUNTRY_PREFIX = "colombia/products"

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
    plan = dict(PLAN, name=rng.choice(PLAN_NAMES))
    return {
        "id": 10_000 + index * 37 + rng.randrange(30),
        "name": rng.choice(FIRST_NAMES),
        "plan": plan,
        "store_name": rng.choice([*STORES, None]),
        "category_id": None,
        "white_brand": {"id": 1, "name": "Dropi", "product_increment_another_white_brands": None},
        "category_user": None,
        "subscription_plan_id": plan["id"],
    }


def _warehouse(rng: random.Random, index: int, suppliers: list[dict[str, Any]]) -> dict[str, Any]:
    city_id, city = rng.choice(CITIES)
    owner = rng.choice(suppliers)
    return {
        "id": 2_000 + index * 113 + rng.randrange(100),
        "city": {"id": city_id, "name": city, "zip_code": None},
        "name": f"{owner['name'].upper()} {city.title()}",
    }


def _new_kind(rng: random.Random) -> tuple[str, str]:
    return rng.choice(NOUNS), rng.choice(QUALIFIERS)


def _name(rng: random.Random, kind: ItemKind, copy_of: Product | None) -> str:
    """A listing title for `kind`; a look-alike's title differs from its source's."""
    name = f"{kind.noun} {kind.qualifier}{rng.choice(EXTRAS)}"
    if copy_of is not None:
        name = f"{rng.choice(PREFIXES)}{name}"
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
        else [{"name": c} for c in rng.sample(CATEGORIES, rng.randint(1, 3))]
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
    attr_ids = {name: ids.next() for name, _ in ATTRIBUTES}
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
            for name, options in ATTRIBUTES
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
