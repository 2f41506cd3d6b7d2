"""User-facing words and numbers in Spanish (default) or English; logs and JSON stay English.

Colombian conventions in Spanish: pesos as `$ 45.000` (a dot groups thousands, no decimals),
decimals with a comma (`33,3 %`). English: `$ 45,000`, `33.3%`. The web pages apply the same
rules in JavaScript (dahell/web); keep the two in step.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

__all__ = ["LANGUAGES", "Language", "format_cop", "format_number", "format_pct", "label"]

Language = Literal["es", "en"]
LANGUAGES: tuple[Language, ...] = ("es", "en")

_LABELS: dict[str, dict[Language, str]] = {
    "rank": {"es": "#", "en": "#"},
    "product_id": {"es": "Producto", "en": "Product"},
    "title": {"es": "Título", "en": "Title"},
    "supplier": {"es": "Proveedor", "en": "Supplier"},
    "sale_price": {"es": "Precio proveedor", "en": "Sale price"},
    "suggested_price": {"es": "Precio sugerido", "en": "Suggested"},
    "margin": {"es": "Margen", "en": "Margin"},
    "margin_pct": {"es": "Margen %", "en": "Margin %"},
    "stock": {"es": "Stock", "en": "Stock"},
    "units_per_day_7d": {"es": "Uds/día 7d", "en": "Units/day 7d"},
    "units_per_day_30d": {"es": "Uds/día 30d", "en": "Units/day 30d"},
    "days_observed": {"es": "Días obs.", "en": "Days obs."},
    "group_suppliers": {"es": "Proveedores", "en": "Suppliers"},
    "group_min_price": {"es": "Precio mín.", "en": "Lowest price"},
    "title_sales": {"es": "Más vendidos", "en": "Best sellers"},
    "title_margin": {"es": "Mayor margen", "en": "Highest margin"},
    "title_suppliers": {"es": "Más proveedores del mismo artículo", "en": "Most suppliers"},
    "title_new": {"es": "Nuevos", "en": "Newest"},
    "window": {"es": "ventanas hasta", "en": "windows ending"},
    "shown": {"es": "mostrando {n} de {total}", "en": "showing {n} of {total}"},
    "pending": {
        "es": "{n} productos esperan su embedding (aún sin grupo)",
        "en": "{n} products still wait for an embedding (no group yet)",
    },
    "empty": {"es": "No hay productos que mostrar.", "en": "No products to show."},
}


def label(key: str, lang: Language = "es", **values: object) -> str:
    """The user-facing text for `key` in `lang`, with `{name}` fields filled from `values`."""
    text = _LABELS[key][lang]
    return text.format(**values) if values else text


def _group(digits: str, sep: str) -> str:
    out = []
    while len(digits) > 3:
        out.append(digits[-3:])
        digits = digits[:-3]
    out.append(digits)
    return sep.join(reversed(out))


def format_number(
    value: float | int | Decimal | None, lang: Language = "es", decimals: int = 0
) -> str:
    """A number with the language's separators; "-" for None."""
    if value is None:
        return "-"
    quant = Decimal(1).scaleb(-decimals)
    number = Decimal(str(value)).quantize(quant, rounding=ROUND_HALF_UP)
    sign = "-" if number < 0 else ""
    whole, _, frac = f"{abs(number):f}".partition(".")
    thousands, point = (".", ",") if lang == "es" else (",", ".")
    text = _group(whole, thousands)
    return sign + text + (point + frac if frac else "")


def format_cop(value: float | int | Decimal | None, lang: Language = "es") -> str:
    """Colombian pesos: `$ 45.000` (es), `$ 45,000` (en); "-" for unknown (never `$ 0`)."""
    if value is None:
        return "-"
    text = format_number(value, lang)
    if text.startswith("-"):
        return "-$ " + text[1:]
    return "$ " + text


def format_pct(value: float | None, lang: Language = "es") -> str:
    """`33,3 %` (es), `33.3%` (en); "-" for unknown."""
    if value is None:
        return "-"
    text = format_number(value, lang, decimals=1)
    return f"{text} %" if lang == "es" else f"{text}%"
