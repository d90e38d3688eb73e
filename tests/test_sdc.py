"""Statistical disclosure control of tables: primary rules, secondary suppression, rounding."""

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from farr.privacy.sdc import PROFILES, SDCProfile, apply_sdc

counts = st.lists(st.integers(0, 40), min_size=1, max_size=8)
tables = st.lists(counts, min_size=1, max_size=5)  # groups of rows


def grouped(groups: list[list[int]]) -> pl.DataFrame:
    return pl.DataFrame({"group": [g for g, rows in enumerate(groups) for _ in rows],
                         "n": [v for rows in groups for v in rows]})


@settings(max_examples=150, deadline=None)
@given(tables, st.sampled_from(sorted(PROFILES)))
def test_no_released_cell_is_below_the_threshold(groups, name):
    profile = PROFILES[name]
    safe = apply_sdc(grouped(groups), ["n"], name, group_columns=["group"]).table["n"]
    released = safe.drop_nulls().to_numpy()
    small = (released > 0) & (released < profile.threshold)
    assert not small.any()
    if profile.redact_at_or_below is not None:
        assert (released > profile.redact_at_or_below).all()
        assert (released % profile.round_to == 0).all()


@settings(max_examples=150, deadline=None)
@given(tables, st.sampled_from(sorted(PROFILES)))
def test_no_suppressed_cell_is_recoverable_from_a_margin_total(groups, name):
    """With each group's raw total published, the hidden cells of a group are never alone
    and never add up to less than the threshold (unless the whole group is hidden)."""
    raw = grouped(groups)
    safe = apply_sdc(raw, ["n"], name, group_columns=["group"]).table
    for g, rows in enumerate(groups):
        hidden = safe.filter(pl.col("group") == g)["n"].is_null().to_numpy()
        if hidden.any() and not hidden.all():
            assert hidden.sum() >= 2
            assert np.asarray(rows)[hidden].sum() >= PROFILES[name].threshold


@settings(max_examples=80, deadline=None)
@given(st.lists(st.lists(st.integers(0, 30), min_size=3, max_size=3), min_size=2, max_size=6))
def test_additive_columns_protect_row_and_column_totals(rows):
    table = pl.DataFrame(rows, schema=["a", "b", "c"], orient="row")
    safe = apply_sdc(table, ["a", "b", "c"], "minimum10", additive_columns=True).table
    hidden = safe.select(pl.all().is_null()).to_numpy()
    for line in (*hidden, *hidden.T):  # every row and every column is a margin
        assert line.sum() != 1


def test_an_already_safe_table_passes_unchanged():
    table = pl.DataFrame({"group": ["a", "a", "b"], "n": [10, 25, 40]})
    result = apply_sdc(table, ["n"], "opensafely", group_columns=["group"])
    assert result.passed and result.table.equals(table)


def test_a_hidden_small_cell_is_found_and_its_neighbour_hidden_too():
    table = pl.DataFrame({"group": ["a", "a", "a"], "n": [3, 50, 40]})
    result = apply_sdc(table, ["n"], "minimum10", group_columns=["group"])
    assert not result.passed
    assert [(f.row, f.rule) for f in result.findings] == [(0, "min_count"), (2, "secondary")]
    assert result.table["n"].to_list() == [None, 50, None]


def test_opensafely_redacts_zeros_and_rounds_half_up():
    table = pl.DataFrame({"n": [0, 7, 8, 12, 13, 100]}).with_row_index("cell")  # no margins
    safe = apply_sdc(table, ["n"], "opensafely", group_columns=["cell"]).table
    assert safe["n"].to_list() == [None, None, 10, 10, 15, 100]


def test_dominance_rule_hides_a_magnitude_cell_owned_by_two_contributors():
    table = pl.DataFrame({"n": [20, 30, 40], "cost": [100.0, 200.0, 300.0],
                          "cost_top2": [95.0, 40.0, 50.0]})
    result = apply_sdc(table, ["n"], "minimum10", dominance_columns={"cost": "cost_top2"})
    assert "cost_top2" not in result.table.columns
    assert result.table["cost"][0] is None and result.table["n"][0] is None
    assert {f.rule for f in result.findings} == {"dominance", "secondary"}


def test_bad_input_gives_clear_errors():
    table = pl.DataFrame({"n": [1, 2]})
    with pytest.raises(ValueError, match="unknown SDC profile"):
        apply_sdc(table, ["n"], "ons")
    with pytest.raises(ValueError, match="no column 'm'"):
        apply_sdc(table, ["m"], "minimum10")
    with pytest.raises(ValueError, match="negative"):
        apply_sdc(pl.DataFrame({"n": [-1]}), ["n"], SDCProfile("custom", min_count=5))
