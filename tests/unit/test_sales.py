"""The research rules as pure functions: sales from stock falls, days observed, ranking, groups,
peso formatting."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dahell.i18n import format_cop, format_number, format_pct
from dahell.research.groups import UnionFind
from dahell.research.items import daily_totals, margin_pct, money
from dahell.research.sales import days_observed, per_day, rank_rate, units_sold

T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def test_falls_are_sales_and_rises_are_restocks() -> None:
    series = [(day(0), 50), (day(1), 48), (day(2), 100), (day(3), 97)]
    assert units_sold(series, day(-30), day(3)) == 5


def test_first_sighting_is_not_a_sale_but_the_value_before_the_window_counts() -> None:
    series = [(day(0), 50), (day(5), 40)]
    assert units_sold(series, day(-1), day(5)) == 10
    assert units_sold(series, day(1), day(5)) == 10  # 50 was known when the window opened
    assert units_sold([(day(5), 40)], day(1), day(5)) == 0
    assert units_sold(series, day(1), day(4)) == 0  # the fall was seen after the window


def test_days_observed_are_capped_by_window_first_and_last_sighting() -> None:
    assert days_observed(day(0), day(9), day(9), 30) == 9.0
    assert days_observed(day(0), day(9), day(9), 7) == 7.0
    assert days_observed(day(0), day(5), day(9), 7) == 3.0  # vanished at day 5
    assert days_observed(day(9), day(9), day(9), 30) == 0.0
    assert days_observed(day(10), day(12), day(9), 30) == 0.0  # first seen after `at`


def test_rates_and_the_ranking_rule() -> None:
    assert per_day(10, 0.0) is None
    assert per_day(16, 9.0) == 1.78
    assert rank_rate(10, 2.0) == pytest.approx(10 / 7)  # two days: shrunk
    assert rank_rate(45, 9.0) == 5.0  # more than a week: the observed rate


@given(st.lists(st.integers(0, 1000), min_size=1, max_size=30))
def test_sales_never_exceed_the_total_fall_plus_restocks(stocks: list[int]) -> None:
    series = [(day(i), q) for i, q in enumerate(stocks)]
    sold = units_sold(series, day(-1), day(len(stocks)))
    rises = sum(max(b - a, 0) for a, b in itertools.pairwise(stocks))
    assert 0 <= sold == stocks[0] - stocks[-1] + rises


def test_daily_totals_sum_warehouses_oldest_first() -> None:
    series = {1: [(day(0), 10), (day(2), 8)], 2: [(day(1), 5)]}
    assert daily_totals(series, day(2), 30) == [10, 15, 13]


def test_union_find_names_each_set_by_its_smallest_member() -> None:
    uf = UnionFind([5, 3, 9, 7])
    uf.union(9, 3)
    uf.union(7, 9)
    assert uf.groups() == {5: 5, 3: 3, 9: 3, 7: 3}


def test_money_and_margin() -> None:
    from decimal import Decimal

    assert money(Decimal("45000.00")) == 45000 and money(None) is None
    assert money(Decimal("1.50")) == 1.5
    assert margin_pct(Decimal(45000), Decimal(80000)) == 77.8
    assert margin_pct(Decimal(45000), None) is None
    assert margin_pct(Decimal(0), Decimal(10)) is None


def test_pesos_in_spanish_and_english() -> None:
    assert format_cop(45000) == "$ 45.000"
    assert format_cop(1234567, "en") == "$ 1,234,567"
    assert format_cop(None) == "-"
    assert format_cop(-5000) == "-$ 5.000"
    assert format_pct(77.78) == "77,8 %" and format_pct(77.78, "en") == "77.8%"
    assert format_number(1.785, "es", 2) == "1,79"
