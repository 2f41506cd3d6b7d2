"""Property tests: whatever the bytes, the record model answers and never raises."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

import msgspec
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from dahell.dropi import ProductRecord, Rejection, Seen, parse_line, parse_line_known
from dahell.reasons import is_known_reject

BASE = "https://cdn.example/"
BOM = b"\xef\xbb\xbf"
FAST = settings(max_examples=250, deadline=None)
#: For the strategies that build whole products: generating them is the slow part.
FEWER = settings(max_examples=120, deadline=None)

#: Any code point, lone surrogates and NUL included.
ANY_TEXT = st.text(st.characters(blacklist_categories=()), max_size=20)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["12", " 7 ", "-3", "1.5", "NaN", "inf", "", "abc", "1e400", "12.0"]),
    st.booleans(),
    st.none(),
)
JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), ANY_TEXT)
JSON_ANY = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3),
    max_leaves=8,
)


def warehouse_rows() -> st.SearchStrategy[list[dict[str, Any]]]:
    row = st.fixed_dictionaries(
        {"warehouse_id": NUMBERS, "stock": NUMBERS},
        optional={"warehouse": st.fixed_dictionaries({"name": ANY_TEXT, "city": JSON_ANY})},
    )
    return st.lists(row, max_size=3)


PRODUCTS = st.fixed_dictionaries(
    {"id": NUMBERS},
    optional={
        "name": st.one_of(ANY_TEXT, NUMBERS, JSON_ANY),
        "sku": st.one_of(ANY_TEXT, NUMBERS),
        "description": ANY_TEXT,
        "type": st.sampled_from(["SIMPLE", "VARIABLE"]),
        "sale_price": NUMBERS,
        "suggested_price": NUMBERS,
        "user": st.one_of(
            st.none(),
            st.fixed_dictionaries({"id": NUMBERS, "name": ANY_TEXT, "store_name": ANY_TEXT}),
        ),
        "gallery": st.lists(
            st.fixed_dictionaries({"urlS3": st.one_of(st.none(), ANY_TEXT), "main": st.booleans()}),
            max_size=2,
        ),
        "categories": st.lists(st.one_of(ANY_TEXT, st.fixed_dictionaries({"name": ANY_TEXT}))),
        "warehouse_product": warehouse_rows(),
        "variations": st.lists(
            st.fixed_dictionaries(
                {"id": NUMBERS, "sale_price": NUMBERS, "stock": NUMBERS},
                optional={
                    "warehouse_product_variation": warehouse_rows(),
                    "attribute_values": st.lists(
                        st.fixed_dictionaries({"attribute_name": ANY_TEXT, "value": JSON_ANY}),
                        max_size=2,
                    ),
                },
            ),
            max_size=3,
        ),
        "extra": JSON_ANY,
    },
)


def encodings(value: Any) -> st.SearchStrategy[bytes]:
    """The ways writers put a value on a line: ASCII-escaped, UTF-8, or broken UTF-8."""
    ascii_line = json.dumps(value).encode()
    raw = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return st.sampled_from([ascii_line, raw])


def parse(data: bytes) -> list[ProductRecord | Rejection]:
    return parse_line(data, image_base_url=BASE, max_line_bytes=100_000)


def strings_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, msgspec.Struct):
        return [s for f in value.__struct_fields__ for s in strings_in(getattr(value, f))]
    if isinstance(value, (tuple, list)):
        return [s for item in value for s in strings_in(item)]
    return []


def assert_storable(outcome: ProductRecord | Rejection) -> None:
    if isinstance(outcome, Rejection):
        assert is_known_reject(outcome.reason), outcome
        return
    for text in strings_in(outcome):
        assert "\x00" not in text
        text.encode("utf-8")  # strict: no lone surrogates
    assert isinstance(orjson.loads(outcome.raw_json), dict)
    for price in (outcome.sale_price, outcome.suggested_price):
        assert price is None or (isinstance(price, Decimal) and price.is_finite() and price >= 0)
    assert all(level.stock_qty >= 0 for level in outcome.stock)
    assert 1 <= outcome.product_id < 2**63


@FAST
@given(st.binary(max_size=300))
def test_any_bytes_give_outcomes_and_never_raise(data: bytes) -> None:
    outcomes = parse(data)
    assert outcomes
    assert all(isinstance(o, ProductRecord | Rejection) for o in outcomes)
    for outcome in outcomes:
        assert_storable(outcome)


@FAST
@given(st.binary(max_size=300).filter(lambda b: b.removeprefix(BOM).lstrip()[:1] not in b"{["))
def test_bytes_that_are_not_an_object_or_array_give_exactly_one_outcome(data: bytes) -> None:
    assert len(parse(data)) == 1


@FAST
@given(JSON_ANY)
def test_any_json_that_is_not_a_response_or_array_gives_one_outcome(value: Any) -> None:
    if isinstance(value, list) or (
        isinstance(value, dict) and ({"objects", "isSuccess", "data"} & value.keys())
    ):
        return
    outcomes = parse(json.dumps(value).encode())
    assert len(outcomes) == 1
    assert_storable(outcomes[0])


@FAST
@given(PRODUCTS.flatmap(encodings))
def test_any_product_gives_exactly_one_storable_outcome(line: bytes) -> None:
    outcomes = parse(line)
    assert len(outcomes) == 1
    assert_storable(outcomes[0])


@FEWER
@given(PRODUCTS, st.booleans())
def test_any_legacy_line_gives_exactly_one_storable_outcome(
    raw: dict[str, Any], flattened: bool
) -> None:
    line: dict[str, Any] = {"id": raw.get("id"), "capture_timestamp": "2025-12-23T01:12:40"}
    if not flattened:
        line["raw_json"] = raw
    outcomes = parse(json.dumps(line).encode())
    assert len(outcomes) == 1
    assert_storable(outcomes[0])


@FEWER
@given(st.lists(PRODUCTS, min_size=1, max_size=3))
def test_a_response_gives_one_outcome_per_object(objects: list[dict[str, Any]]) -> None:
    line = json.dumps({"isSuccess": True, "objects": objects}).encode()
    outcomes = parse(line)
    assert len(outcomes) == len(objects)
    for outcome in outcomes:
        assert_storable(outcome)


def as_float(stock: int) -> float | int:
    """The stock as a float where that is exact (12 -> 12.0), else as it is."""
    return float(stock) if stock < 2**53 else stock


@FAST
@given(st.integers(min_value=1, max_value=2**63 - 1), st.integers(0, 10**12), st.integers(0, 2**62))
def test_valid_numbers_in_any_form_are_accepted(pid: int, price: int, stock: int) -> None:
    line = {
        "id": str(pid),
        "sale_price": str(price),
        "warehouse_product": [{"warehouse_id": 5, "stock": as_float(stock)}],
    }
    outcome = parse(json.dumps(line).encode())[0]
    assert isinstance(outcome, ProductRecord), outcome
    assert outcome.product_id == pid
    assert outcome.sale_price == price
    assert outcome.stock[0].stock_qty == stock
    assert not math.isnan(float(outcome.sale_price or 0))


@given(st.one_of(st.binary(max_size=300), PRODUCTS.flatmap(encodings)))
def test_parse_line_known_agrees_with_parse_line_and_never_raises(data: bytes) -> None:
    hashes: dict[int, bytes] = {}
    first = parse_line_known(data, image_base_url=BASE, max_line_bytes=10**6, last_hashes=hashes)
    assert first == parse_line(data, image_base_url=BASE, max_line_bytes=10**6)
    again = parse_line_known(data, image_base_url=BASE, max_line_bytes=10**6, last_hashes=hashes)
    if len(first) == 1 and isinstance(first[0], ProductRecord) and b"objects" not in data:
        assert again == [Seen(first[0].product_id, first[0].captured_at, first[0].content_hash)]
    else:
        assert again == first
