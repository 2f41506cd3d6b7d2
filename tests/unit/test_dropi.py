"""The record model: decode, parse, validate and normalise Dropi lines (no I/O but the samples)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from dahell import dropi
from dahell.dropi import (
    Outcome,
    ProductRecord,
    Rejection,
    StockLevel,
    Supplier,
    Warehouse,
    decode_line,
    image_url,
    parse_document,
    parse_line,
)
from dahell.reasons import is_known_reject
from tests.factories import simple_product

# Copies of the real samples in shared/dropi, committed so the tests run in any clone.
SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "dropi"
API_SAMPLE = SAMPLES / "sample-api-response.json"
LEGACY_SAMPLE = SAMPLES / "sample-legacy-raw_products_20251223.jsonl"
BASE = "https://d39ru7awumhhs2.cloudfront.net/"
MAX = 1_000_000


def parse(data: bytes | dict[str, Any] | list[Any], max_line_bytes: int = MAX) -> list[Outcome]:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return parse_line(raw, image_base_url=BASE, max_line_bytes=max_line_bytes)


def one(data: bytes | dict[str, Any] | list[Any]) -> Outcome:
    outcomes = parse(data)
    assert len(outcomes) == 1
    return outcomes[0]


def record(data: bytes | dict[str, Any]) -> ProductRecord:
    outcome = one(data)
    assert isinstance(outcome, ProductRecord), outcome
    return outcome


def rejected(data: bytes | dict[str, Any] | list[Any], reason: str) -> Rejection:
    outcome = one(data)
    assert isinstance(outcome, Rejection), outcome
    assert outcome.reason == reason, outcome
    assert is_known_reject(outcome.reason)
    return outcome


def product(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 1548988,
        "sku": "854581",
        "name": "exploradora led",
        "type": "SIMPLE",
        "sale_price": 95000,
        "suggested_price": 125000,
        "user": {"id": 14078, "name": "Walter", "store_name": "WG", "plan": {"name": "PREMIUM"}},
        "gallery": [{"url": None, "main": True, "urlS3": "colombia/products/1/a.jpg"}],
        "categories": [{"name": "Tecnologia"}],
        "warehouse_product": [{"id": 1, "stock": 50, "warehouse_id": 2444}],
    }
    base.update(fields)
    return base


def variation(vid: int, rows: list[tuple[int, Any]], **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": vid,
        "sku": f"-{vid}",
        "stock": sum(q for _, q in rows if isinstance(q, int)),
        "sale_price": 75000,
        "suggested_price": 130000,
        "attribute_values": [{"id": 9, "value": "S", "attribute_id": 3, "attribute_name": "TALLA"}],
        "warehouse_product_variation": [
            {"id": 1, "stock": q, "warehouse_id": w, "warehouse": {"id": w, "name": f"W{w}"}}
            for w, q in rows
        ],
    }
    base.update(fields)
    return base


# --- the real samples ------------------------------------------------------------------------


def test_api_sample_document_normalises_every_product() -> None:
    outcomes = parse_document(API_SAMPLE.read_bytes(), image_base_url=BASE)
    assert outcomes is not None
    assert all(isinstance(o, ProductRecord) for o in outcomes)
    records = [o for o in outcomes if isinstance(o, ProductRecord)]
    assert [r.product_id for r in records] == [1548988, 171278, 1241792, 2017375]
    first = records[0]
    assert first.sku == "854581"
    assert first.title == "exploradora led  moto camion unida"  # double space kept
    assert first.product_type == "SIMPLE"
    assert first.description is None
    assert first.sale_price == Decimal(95000)
    assert first.suggested_price == Decimal(125000)
    assert first.supplier == Supplier(14078, "Walter", "WG TECNOLOGIA", "SUPPLIER PREMIUM")
    assert first.categories == ("Tecnologia", "Vehículos")
    assert first.stock == (StockLevel(0, 2444, 50),)
    assert first.warehouses == (Warehouse(2444, None, None),)
    assert first.image_url == (
        "https://d39ru7awumhhs2.cloudfront.net/colombia/products/1548988/"
        "1732898046IMG-20241028-WA0054.jpg"
    )
    assert records[1].supplier is not None and records[1].supplier.store_name is None
    assert records[1].image_url == (
        "https://d39ru7awumhhs2.cloudfront.net/colombia/products/171278/"
        "17023055591702305559BOVaJFTfw39jFyJBITxp9G9zpUAKvqRIxniHfTTL.jpg"
    )  # urlS3 preferred over url
    assert all(r.captured_at is None for r in records)


def test_api_sample_variable_product_stock_per_variation_and_warehouse() -> None:
    outcomes = parse_document(API_SAMPLE.read_bytes(), image_base_url=BASE)
    assert outcomes is not None
    variable = outcomes[3]
    assert isinstance(variable, ProductRecord)
    assert variable.product_type == "VARIABLE"
    assert variable.sku is None
    assert variable.suggested_price is None
    assert len(variable.variations) == 39
    ids = [v.variation_id for v in variable.variations]
    assert ids == list(range(1880100, 1880139))
    first = variable.variations[0]
    assert first.sku == "-0"
    assert first.sale_price == Decimal(75000)
    assert first.suggested_price == Decimal(130000)
    assert json.loads(first.attributes) == [
        {"attribute_name": "TALLA", "value": "S - DAMA"},
        {"attribute_name": "COLOR", "value": "AZUL REY"},
    ]
    assert variable.variations[20].sale_price == Decimal(82000)
    assert len(variable.stock) == 40
    assert variable.stock[0] == StockLevel(0, 15520, 39 * 50)
    assert variable.stock[1:] == tuple(StockLevel(v, 15520, 50) for v in ids)
    assert variable.warehouses == (Warehouse(15520, "MALLERLYS QUINTERO LEÓN", "BUCARAMANGA"),)
    assert variable.image_url == (
        "https://d39ru7awumhhs2.cloudfront.net/colombia/products/2017375/"
        "1765055312befunky_2025-10-4_21-2-48.jpg"
    )


def test_api_sample_as_one_line_gives_one_outcome_per_product() -> None:
    line = orjson.dumps(orjson.loads(API_SAMPLE.read_bytes()))
    outcomes = parse(line)
    assert [o.product_id for o in outcomes if isinstance(o, ProductRecord)] == [
        1548988,
        171278,
        1241792,
        2017375,
    ]


def test_legacy_sample_lines_normalise_from_raw_json() -> None:
    lines = LEGACY_SAMPLE.read_bytes().splitlines()
    assert len(lines) == 3
    records = [record(line) for line in lines]
    assert [r.product_id for r in records] == [1548988, 171278, 1241792]
    stamp = datetime(2025, 12, 23, 1, 12, 40, 118512, tzinfo=UTC)
    assert all(r.captured_at == stamp for r in records)
    first = records[0]
    raw = orjson.loads(lines[0])["raw_json"]
    assert orjson.loads(first.raw_json) == raw
    assert first.content_hash == hashlib.blake2b(first.raw_json.encode(), digest_size=16).digest()
    assert first.description is None  # raw_json has none; the flattened "" is not used
    assert first.stock == (StockLevel(0, 2444, 50),)
    assert first.supplier == Supplier(14078, "Walter", "WG TECNOLOGIA", "SUPPLIER PREMIUM")
    assert first.image_url == orjson.loads(lines[0])["image_url"]
    assert records[2].categories[:2] == ("Vehículos", "Otro")


def test_legacy_sample_file_is_not_one_document() -> None:
    assert parse_document(LEGACY_SAMPLE.read_bytes(), image_base_url=BASE) is None


def test_same_product_from_api_and_legacy_line_agree() -> None:
    api = parse_document(API_SAMPLE.read_bytes(), image_base_url=BASE)
    assert api is not None
    legacy = record(LEGACY_SAMPLE.read_bytes().splitlines()[0])
    assert isinstance(api[0], ProductRecord)
    assert (api[0].product_id, api[0].stock, api[0].supplier, api[0].image_url) == (
        legacy.product_id,
        legacy.stock,
        legacy.supplier,
        legacy.image_url,
    )


# --- shapes ----------------------------------------------------------------------------------


def test_raw_json_wins_over_flattened_fields() -> None:
    line = {
        "id": 1,
        "name": "flattened",
        "sale_price": 1,
        "supplier": {"id": 99, "name": "old"},
        "warehouse_id": 7,
        "stock": 3,
        "image_url": "https://elsewhere.example/x.jpg",
        "categories": ["Old"],
        "raw_json": product(id=5, name="truth"),
    }
    rec = record(line)
    assert rec.product_id == 5
    assert rec.title == "truth"
    assert rec.sale_price == Decimal(95000)
    assert rec.supplier is not None and rec.supplier.supplier_id == 14078
    assert rec.stock == (StockLevel(0, 2444, 50),)
    assert rec.categories == ("Tecnologia",)
    assert rec.image_url == BASE + "colombia/products/1/a.jpg"
    assert orjson.loads(rec.raw_json) == product(id=5, name="truth")


def test_flattened_legacy_line_without_raw_json() -> None:
    line = {
        "id": "77",
        "name": "flat",
        "sale_price": "1000",
        "supplier": {"id": 99, "name": "S", "store_name": None, "plan": {"name": "P"}},
        "warehouse_id": 7,
        "stock": "3",
        "image_url": "colombia/products/77/a b.jpg",
        "categories": ["A", "B", "A", "", 5],
        "capture_timestamp": "2025-12-23T01:12:40+02:00",
    }
    rec = record(line)
    assert rec.product_id == 77
    assert rec.supplier == Supplier(99, "S", None, "P")
    assert rec.stock == (StockLevel(0, 7, 3),)
    assert rec.warehouses == (Warehouse(7, None, None),)
    assert rec.image_url == BASE + "colombia/products/77/a%20b.jpg"
    assert rec.categories == ("A", "B")
    assert rec.captured_at == datetime(2025, 12, 22, 23, 12, 40, tzinfo=UTC)
    assert "capture_timestamp" not in orjson.loads(rec.raw_json)


def test_captured_at_key_and_absent_timestamp() -> None:
    assert record(product(captured_at="2025-01-02T03:04:05Z")).captured_at == datetime(
        2025, 1, 2, 3, 4, 5, tzinfo=UTC
    )
    assert record(product()).captured_at is None


def test_data_objects_response_and_top_level_array() -> None:
    nested = {"isSuccess": True, "data": {"objects": [product(id=1), product(id=2), 7]}}
    outcomes = parse(nested)
    assert [type(o).__name__ for o in outcomes] == ["ProductRecord", "ProductRecord", "Rejection"]
    assert isinstance(outcomes[2], Rejection) and outcomes[2].reason == "not_an_object"
    array = parse([product(id=3), {"name": "no id"}])
    assert isinstance(array[0], ProductRecord) and array[0].product_id == 3
    assert isinstance(array[1], Rejection) and array[1].reason == "missing_id"


def test_one_bad_product_in_a_response_costs_only_itself() -> None:
    outcomes = parse({"objects": [product(id=1), product(id=2, sale_price="x"), product(id=3)]})
    assert [getattr(o, "product_id", getattr(o, "reason", None)) for o in outcomes] == [
        1,
        "invalid_field:sale_price",
        3,
    ]


# --- reject reasons --------------------------------------------------------------------------


def test_blank_line() -> None:
    rejected(b"", "blank_line")
    rejected(b"  \t\r", "blank_line")


def test_line_too_long() -> None:
    outcomes = parse(b"{" + b" " * 100 + b"}", max_line_bytes=50)
    assert outcomes == [Rejection("line_too_long", "102 bytes > 50")]


@pytest.mark.parametrize("line", [b"{", b'{"id": 1', b"not json", b'{"id": 1} trailing'])
def test_invalid_json(line: bytes) -> None:
    assert rejected(line, "invalid_json").detail


@pytest.mark.parametrize("line", [b"5", b'"text"', b"null", b"true"])
def test_not_an_object(line: bytes) -> None:
    rejected(line, "not_an_object")


def test_api_error_carries_its_message() -> None:
    outcome = rejected({"isSuccess": False, "message": "Token is Expired"}, "api_error")
    assert outcome.detail == "Token is Expired"


@pytest.mark.parametrize(
    "body", [{"isSuccess": True, "objects": []}, {"data": {"objects": []}}, [], {"isSuccess": True}]
)
def test_empty_response(body: dict[str, Any] | list[Any]) -> None:
    rejected(body, "empty_response")


def test_objects_not_a_list() -> None:
    rejected({"isSuccess": True, "objects": {"user": {}}}, "invalid_field:objects")


@pytest.mark.parametrize("value", [None, "absent"])
def test_missing_id(value: Any) -> None:
    data = product(id=value)
    if value == "absent":
        del data["id"]
    rejected(data, "missing_id")


@pytest.mark.parametrize("value", [0, -1, 2**63, True, 1.5, 12.0, "12a", "", [1], {"a": 1}, "-3"])
def test_invalid_id(value: Any) -> None:
    rejected(product(id=value), "invalid_id")


@pytest.mark.parametrize("value", [7, "7", " 7 ", 2**63 - 1])
def test_valid_ids(value: Any) -> None:
    assert record(product(id=value)).product_id == int(value)


@pytest.mark.parametrize("name", ["sale_price", "suggested_price"])
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", -1, "-0.5", "abc", True, 10**13])
def test_invalid_prices(name: str, value: Any) -> None:
    rejected(product(**{name: value}), f"invalid_field:{name}")


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_literals_from_python_writers_name_the_field(literal: bytes) -> None:
    rejected(b'{"id": 1, "sale_price": ' + literal + b"}", "invalid_field:sale_price")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("95000", Decimal(95000)), (" 12.50 ", Decimal("12.50")), (1.5, Decimal("1.5")), (None, None)],
)
def test_prices_accept_numbers_and_numeric_strings(value: Any, expected: Decimal | None) -> None:
    assert record(product(sale_price=value)).sale_price == expected


@pytest.mark.parametrize("value", [-1, 1.5, "NaN", "inf", "1.5", "x", True, 2**62 + 1, [3]])
def test_invalid_product_stock(value: Any) -> None:
    rows = [{"id": 1, "stock": value, "warehouse_id": 2444}]
    rejected(product(warehouse_product=rows), "invalid_field:warehouse_product.stock")


@pytest.mark.parametrize("value", [12, 12.0, "12", " 12 "])
def test_stock_accepts_integral_values(value: Any) -> None:
    rows = [{"id": 1, "stock": value, "warehouse_id": "2444"}]
    assert record(product(warehouse_product=rows)).stock == (StockLevel(0, 2444, 12),)


def test_invalid_flattened_stock_and_warehouse() -> None:
    rejected({"id": 1, "warehouse_id": 7, "stock": -2}, "invalid_field:stock")
    rejected({"id": 1, "warehouse_id": "x", "stock": 2}, "invalid_field:warehouse_id")


def test_invalid_variation_stock_names_its_path() -> None:
    bad = variation(11, [(5, 3.5)])
    rejected(
        product(type="VARIABLE", variations=[bad]),
        "invalid_field:variations.warehouse_product_variation.stock",
    )
    rejected(
        product(type="VARIABLE", variations=[variation(11, [], stock=-1)]),
        "invalid_field:variations.stock",
    )


def test_invalid_warehouse_ids() -> None:
    rejected(
        product(warehouse_product=[{"id": 1, "stock": 5}]),
        "invalid_field:warehouse_product.warehouse_id",
    )
    rejected(
        product(
            type="VARIABLE",
            variations=[variation(11, [("w", 1)])],  # type: ignore[list-item]
        ),
        "invalid_field:variations.warehouse_product_variation.warehouse_id",
    )


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"name": {"a": 1}}, "invalid_field:name"),
        ({"sku": [1]}, "invalid_field:sku"),
        ({"description": ["x"]}, "invalid_field:description"),
        ({"type": {}}, "invalid_field:type"),
        ({"user": "Walter"}, "invalid_field:user"),
        ({"user": {"id": "abc"}}, "invalid_field:user.id"),
        ({"gallery": "a.jpg"}, "invalid_field:gallery"),
        ({"variations": {}}, "invalid_field:variations"),
        ({"variations": [5]}, "invalid_field:variations"),
        ({"variations": [{"id": None}]}, "invalid_field:variations.id"),
        ({"variations": [{"id": 3, "sale_price": -1}]}, "invalid_field:variations.sale_price"),
        ({"warehouse_product": 5}, "invalid_field:warehouse_product"),
        ({"warehouse_product": [5]}, "invalid_field:warehouse_product"),
        ({"categories": "Moda"}, "invalid_field:categories"),
        ({"capture_timestamp": "yesterday"}, "invalid_field:capture_timestamp"),
        ({"capture_timestamp": 12}, "invalid_field:capture_timestamp"),
        ({"raw_json": [1]}, "invalid_field:raw_json"),
        ({"raw_json": "{not json"}, "invalid_field:raw_json"),
    ],
)
def test_invalid_fields(fields: dict[str, Any], reason: str) -> None:
    rejected(product(**fields), reason)


def test_field_conversions() -> None:
    rec = record(product(sku=854581, description="d", user={"name": "no id"}))
    assert rec.sku == "854581"
    assert rec.description == "d"
    assert rec.supplier is None
    assert record(product(user=None, gallery=None)).supplier is None


def test_raw_json_given_as_text_is_parsed() -> None:
    rec = record({"raw_json": json.dumps(product(id=9)), "capture_timestamp": "2025-01-01"})
    assert rec.product_id == 9
    assert rec.captured_at == datetime(2025, 1, 1, tzinfo=UTC)


# --- stock and warehouses --------------------------------------------------------------------


def test_variable_product_sums_per_warehouse_and_ignores_product_level_rows() -> None:
    variations = [
        variation(11, [(5, 3), (6, 4)]),
        variation(12, [(5, 10)]),
        variation(13, [], stock=99),  # stock but no per-warehouse rows: no StockLevel
    ]
    rec = record(
        product(
            type="VARIABLE",
            variations=variations,
            warehouse_product=[{"id": 1, "stock": 1000, "warehouse_id": 5}],
        )
    )
    assert rec.stock == (
        StockLevel(0, 5, 13),
        StockLevel(0, 6, 4),
        StockLevel(11, 5, 3),
        StockLevel(11, 6, 4),
        StockLevel(12, 5, 10),
    )
    assert [v.variation_id for v in rec.variations] == [11, 12, 13]
    assert rec.warehouses == (Warehouse(5, "W5", None), Warehouse(6, "W6", None))


def test_duplicate_stock_rows_keep_the_last() -> None:
    rows = [{"stock": 1, "warehouse_id": 5}, {"stock": 2, "warehouse_id": 5}]
    assert record(product(warehouse_product=rows)).stock == (StockLevel(0, 5, 2),)


def test_variable_without_variation_rows_uses_product_rows() -> None:
    rec = record(product(type="VARIABLE", variations=[]))
    assert rec.stock == (StockLevel(0, 2444, 50),)


def test_warehouse_keeps_the_most_informative_entry() -> None:
    rows = [
        {"stock": 1, "warehouse_id": 5, "warehouse": {"id": 5, "name": "N", "city": None}},
        {"stock": 2, "warehouse_id": 5, "warehouse": {"id": 5, "city": {"name": "CALI"}}},
    ]
    rec = record(product(type="VARIABLE", variations=[variation(11, [])], warehouse_product=rows))
    assert rec.warehouses == (Warehouse(5, "N", "CALI"),)


# --- text repair -----------------------------------------------------------------------------


def test_decode_line_latin1_and_mixed() -> None:
    assert decode_line(b"Cami\xf3n") == "Camión"
    assert decode_line("Camión ".encode() + b"cami\xf3n \x80") == "Camión camión €"
    assert decode_line(b"\x81") == "\x81"  # undefined in cp1252: read as latin-1


def test_latin1_line_is_decoded() -> None:
    rec = record(b'{"id": 1, "name": "Cami\xf3n", "user": {"id": 2, "name": "Se\xf1or"}}')
    assert rec.title == "Camión"
    assert rec.supplier is not None and rec.supplier.name == "Señor"


def test_line_mixing_utf8_and_cp1252_keeps_both() -> None:
    line = '{"id": 1, "name": "Camión", "description": "'.encode() + b'cami\xf3n"}'
    rec = record(line)
    assert rec.title == "Camión"
    assert rec.description == "camión"


def test_nul_is_removed_everywhere() -> None:
    rec = record(product(name="a\u0000b", sku="\u0000", extra={"k\u0000": "v\u0000"}))
    assert rec.title == "ab"
    assert rec.sku == ""
    assert "\\u0000" not in rec.raw_json and "\x00" not in rec.raw_json
    assert orjson.loads(rec.raw_json)["extra"] == {"k": "v"}


def test_lone_surrogates_are_replaced() -> None:
    line = b'{"id": 1, "name": "a\\ud800b", "x": ["\\uDFFF"], "ok": "\\ud83d\\ude00"}'
    rec = record(line)
    assert rec.title == "a\ufffdb"
    raw = orjson.loads(rec.raw_json)
    assert raw["x"] == ["\ufffd"]
    assert raw["ok"] == "😀"
    rec.raw_json.encode("utf-8")  # strict


def test_mojibake_repaired_in_text_fields_not_in_raw_json() -> None:
    rec = record(
        product(
            name="CamiÃ³n",
            description="Â¡Oferta!",
            categories=[{"name": "VehÃ­culos"}],
            user={"id": 1, "name": "JosÃ©", "store_name": "peÃ±a"},
        )
    )
    assert rec.title == "Camión"
    assert rec.description == "¡Oferta!"
    assert rec.categories == ("Vehículos",)
    assert rec.supplier == Supplier(1, "José", "peña", None)
    assert orjson.loads(rec.raw_json)["name"] == "CamiÃ³n"


def test_mojibake_in_ascii_escaped_json_is_repaired() -> None:
    line = json.dumps(product(name="CamiÃ³n")).encode()  # ensure_ascii: \u00c3\u00b3
    assert b"\\u00c3" in line
    assert record(line).title == "Camión"


def test_genuine_text_is_not_touched() -> None:
    assert record(product(name='Señal "5G" — 100%')).title == 'Señal "5G" — 100%'


def test_bom_and_carriage_return_are_tolerated() -> None:
    assert record(b"\xef\xbb\xbf" + json.dumps(product()).encode() + b"\r").product_id == 1548988


# --- image URL -------------------------------------------------------------------------------


def test_image_url_prefers_main_then_first_usable() -> None:
    gallery = [
        {"url": None, "urlS3": None, "main": False},
        {"url": "u/first.jpg", "urlS3": None, "main": False},
        {"url": "u/main.jpg", "urlS3": "s3/main.jpg", "main": True},
    ]
    assert image_url({"gallery": gallery}, "https://cdn/") == "https://cdn/s3/main.jpg"
    assert image_url({"gallery": gallery[:2]}, "https://cdn") == "https://cdn/u/first.jpg"
    assert image_url({"gallery": gallery[:1]}, "https://cdn/") is None
    assert image_url({"gallery": None}, "https://cdn/") is None
    assert image_url({}, "https://cdn/") is None


def test_image_url_quotes_the_path_and_keeps_full_urls() -> None:
    gallery = [{"urlS3": "co/products/1/foto niño #1.jpg", "main": True}]
    assert image_url({"gallery": gallery}, "https://cdn/") == (
        "https://cdn/co/products/1/foto%20ni%C3%B1o%20%231.jpg"
    )
    full = [{"url": "https://other.example/a b.jpg?x=1", "main": True}]
    assert image_url({"gallery": full}, "https://cdn/") == "https://other.example/a%20b.jpg?x=1"
    lead = [{"urlS3": "/co/a.jpg"}]
    assert image_url({"gallery": lead}, "https://cdn/") == "https://cdn/co/a.jpg"


def test_content_hash_follows_raw_json() -> None:
    a, b = record(product()), record(product(sale_price=1))
    assert a.content_hash != b.content_hash
    assert len(a.content_hash) == 16
    assert record(product()).content_hash == a.content_hash


def test_internal_error_is_a_rejection_not_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any) -> Any:
        raise KeyError("boom")

    monkeypatch.setattr(dropi, "_normalise", broken)
    rejected(product(), "internal_error")


def test_deep_nesting_is_rejected_not_raised() -> None:
    outcome = one(b'{"id": 1, "x": ' + b"[" * 5000 + b"]" * 5000 + b"}")
    assert isinstance(outcome, Rejection) and outcome.reason == "invalid_json"
    assert isinstance(one(b'{"id": 1, "x": ' + b"[" * 300 + b"]" * 300 + b"}"), Rejection)


def test_latin1_document_is_parsed_whole() -> None:
    doc = b'{"isSuccess": true,\n "objects": [{"id": 1, "name": "Cami\xf3n"}]}'
    outcomes = parse_document(doc, image_base_url=BASE)
    assert outcomes is not None and isinstance(outcomes[0], ProductRecord)
    assert outcomes[0].title == "Camión"
    assert parse_document(b"", image_base_url=BASE) is None
    assert parse_document(b'{"id": 1}\n{"id": 2}\n', image_base_url=BASE) is None


def test_parse_line_known_answers_an_unchanged_repeat_with_seen() -> None:
    from tests.factories import legacy_line, simple_product

    hashes: dict[int, bytes] = {}

    def known(line: str) -> list[Any]:
        return dropi.parse_line_known(
            line.encode(),
            image_base_url="https://cdn.test/",
            max_line_bytes=10**6,
            last_hashes=hashes,
        )

    first = known(legacy_line(simple_product(5), "2025-12-23T01:00:00"))
    assert isinstance(first[0], dropi.ProductRecord) and hashes == {5: first[0].content_hash}
    again = known(legacy_line(simple_product(5), "2025-12-23T02:00:00"))
    assert again == [dropi.Seen(5, datetime(2025, 12, 23, 2, tzinfo=UTC), first[0].content_hash)]
    changed = known(legacy_line(simple_product(5, stock=4), "2025-12-23T03:00:00"))
    assert isinstance(changed[0], dropi.ProductRecord) and hashes[5] == changed[0].content_hash
    plain = dropi.parse_line(
        legacy_line(simple_product(5, stock=4), "2025-12-23T03:00:00").encode(),
        image_base_url="https://cdn.test/",
        max_line_bytes=10**6,
    )
    assert changed == plain
    # responses, rejects and junk take the general path, never a Seen
    response = json.dumps({"objects": [simple_product(5, stock=4)]})
    assert isinstance(known(response)[0], dropi.ProductRecord)
    assert known("{bad") == [dropi.Rejection("invalid_json", known("{bad")[0].detail)]
    assert known(json.dumps({"id": "x"}))[0].reason == "invalid_id"


@pytest.mark.parametrize("error", [MemoryError(), OSError(28, "No space left on device")])
def test_errors_that_are_not_about_the_line_are_raised_not_rejected(
    monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(dropi, "_normalise", fail)
    line = json.dumps(simple_product(1)).encode()
    with pytest.raises(type(error)):
        parse(line)
    with pytest.raises(type(error)):
        dropi.parse_line_known(line, image_base_url=BASE, max_line_bytes=MAX, last_hashes={})
    with pytest.raises(type(error)):
        dropi.parse_document(b"[\n" + line + b"\n]", image_base_url=BASE)


def test_a_bug_on_one_line_s_content_still_rejects_that_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("variations")

    monkeypatch.setattr(dropi, "_normalise", fail)
    (outcome,) = parse(json.dumps(simple_product(1)).encode())
    assert isinstance(outcome, Rejection) and outcome.reason == "internal_error"
    assert "KeyError" in outcome.detail
