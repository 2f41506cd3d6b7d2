"""`python -m dahell top`: the research ranking on a terminal (rich table), as JSON or as CSV.

`--json` prints one array of item objects (the research API's item contract); `--csv` a header
row then one row per item (lists joined by `|`, the stock trend by spaces). The table is in
Spanish unless `--lang en` or `research.language = "en"`. Bad values exit 2 with a message.
"""

from __future__ import annotations

import argparse
import csv
import sys
from datetime import datetime
from typing import Any

import orjson
from rich.table import Table

from dahell import db
from dahell.config import Config
from dahell.console import make_console
from dahell.i18n import LANGUAGES, Language, format_cop, format_number, format_pct, label
from dahell.research.queries import (
    MAX_LIMIT,
    SORTS,
    InvalidParameter,
    ResearchFilters,
    ResearchPage,
    parse_time,
    research_rows,
)

__all__ = ["add_arguments", "main", "render_csv", "render_table"]

EXIT_USAGE = 2
CSV_LISTS = ("categories", "cities")


def _at(text: str) -> datetime:
    try:
        return parse_time(text)
    except InvalidParameter as exc:
        raise argparse.ArgumentTypeError(exc.detail) from None


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_LIMIT}")
    return value


def _percent(text: str) -> float:
    try:
        value = float(text.rstrip("%").replace(",", "."))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or abs(value) == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--by", choices=SORTS, default="sales", help="sort key (default sales)")
    parser.add_argument("--category", help="only this category (case-insensitive)")
    parser.add_argument("--city", help="only products with stock in a warehouse of this city")
    parser.add_argument(
        "--min-margin", type=_percent, metavar="P", help="only margins of at least P percent"
    )
    parser.add_argument("--limit", type=_limit, default=20, help="rows (default 20, max 500)")
    parser.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--at", type=_at, metavar="TIME", help="end the sales windows here (ISO 8601)"
    )
    parser.add_argument("--lang", choices=LANGUAGES, help="table language (default: config)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON array of objects")
    out.add_argument("--csv", action="store_true", help="print CSV with a header row")


async def main(config: Config, args: argparse.Namespace) -> int:
    try:
        filters = ResearchFilters(
            by=args.by,
            category=args.category,
            city=args.city,
            min_margin=args.min_margin,
            limit=args.limit,
            offset=args.offset,
            at=args.at,
        )
    except InvalidParameter as exc:
        sys.stderr.write(f"dahell: {exc}\n")
        return EXIT_USAGE
    async with db.database(config) as database:
        page = await research_rows(database.pool, filters)
    if args.json:
        sys.stdout.write(orjson.dumps(page.items).decode() + "\n")
    elif args.csv:
        render_csv(page.items, sys.stdout)
    else:
        lang: Language = args.lang or config.research.language
        make_console().print(render_table(page, lang))
        make_console(stderr=True).print(_footer(page, lang))
    return 0


def render_csv(items: list[dict[str, Any]], stream: Any) -> None:
    """Items as CSV with a header row (the item keys in contract order)."""
    writer = csv.writer(stream, lineterminator="\n")
    keys = list(items[0]) if items else _CSV_KEYS
    writer.writerow(keys)
    for item in items:
        writer.writerow([_cell(k, item.get(k)) for k in keys])


_CSV_KEYS = [
    "product_id", "title", "supplier_id", "supplier_name", "image_url", "categories", "cities",
    "sale_price", "suggested_price", "margin", "margin_pct", "stock", "units_7d", "units_30d",
    "units_per_day_7d", "units_per_day_30d", "days_observed", "first_seen_at", "group_id",
    "group_suppliers", "group_min_price", "group_max_price", "group_units_per_day_30d",
    "stock_trend",
]  # fmt: skip


def _cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ("|" if key in CSV_LISTS else " ").join(str(v) for v in value)
    return str(value)


def render_table(page: ResearchPage, lang: Language) -> Table:
    """The page as a rich table, money in pesos with the language's separators."""
    table = Table(title=label(f"title_{page.filters.by}", lang), title_justify="left")
    right = {"rank", "product_id", "sale_price", "suggested_price", "margin", "margin_pct"}
    right |= {"stock", "units_per_day_7d", "units_per_day_30d", "days_observed"}
    right |= {"group_suppliers", "group_min_price"}
    for key in _TABLE_KEYS:
        table.add_column(label(key, lang), justify="right" if key in right else "left")
    for rank, item in enumerate(page.items, page.filters.offset + 1):
        table.add_row(str(rank), *_row(item, lang))
    if not page.items:
        table.caption = label("empty", lang)
    return table


_TABLE_KEYS = (
    "rank", "product_id", "title", "supplier", "sale_price", "suggested_price", "margin",
    "margin_pct", "stock", "units_per_day_7d", "units_per_day_30d", "days_observed",
    "group_suppliers", "group_min_price",
)  # fmt: skip


def _row(item: dict[str, Any], lang: Language) -> list[str]:
    return [
        str(item["product_id"]),
        (item["title"] or "")[:48],
        (item["supplier_name"] or str(item["supplier_id"] or "-"))[:24],
        format_cop(item["sale_price"], lang),
        format_cop(item["suggested_price"], lang),
        format_cop(item["margin"], lang),
        format_pct(item["margin_pct"], lang),
        format_number(item["stock"], lang),
        format_number(item["units_per_day_7d"], lang, 2),
        format_number(item["units_per_day_30d"], lang, 2),
        format_number(item["days_observed"], lang, 1),
        str(item["group_suppliers"]),
        format_cop(item["group_min_price"], lang),
    ]


def _footer(page: ResearchPage, lang: Language) -> str:
    at = page.at.isoformat(timespec="minutes") if page.at else "-"
    parts = [
        f"{label('window', lang)} {at}",
        label("shown", lang, n=len(page.items), total=page.total),
    ]
    if page.pending_embeddings:
        parts.append(label("pending", lang, n=page.pending_embeddings))
    return "; ".join(parts)
