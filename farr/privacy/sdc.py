"""Statistical disclosure control (SDC) of aggregate tables before they leave the environment.

A table holds count columns (and optionally magnitude columns) for rows of groups. A cell is
*primarily* suppressed when it is disclosive on its own: a count below the profile's minimum
(zeros are safe there), a count at or below the OpenSAFELY redaction level (zeros included), or
a magnitude cell dominated by its largest contributors (the n/k rule: the n largest contributions
make up more than k of the cell). Because the total of a margin (the rows of one group, or the
count columns of one row when they add up) may be published, a margin with a single suppressed
cell would give it away by subtraction; *secondary* suppression hides the next-smallest cells of
that margin until at least two are hidden and the hidden cells add up to no less than the
threshold. Released counts are then rounded to the profile's base. Totals must be computed from
the safe table (as ehrQL does), never from the raw one.

Suppressed cells are null in the safe table; every decision is a finding (row, column, rule).
A table *passes* when it needed no change at all: what an output checker wants to see.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl


@dataclass(frozen=True)
class SDCProfile:
    """A risk appetite: which cells are disclosive, and how released counts are rounded."""

    name: str
    min_count: int = 0  # counts 1..min_count-1 are suppressed (0 is safe)
    redact_at_or_below: int | None = None  # counts 0..this are suppressed (OpenSAFELY: 7)
    dominance_n: int = 2  # n/k rule for magnitude cells
    dominance_k: float | None = None  # None: no dominance rule
    round_to: int = 1  # round released counts to the nearest multiple

    @property
    def threshold(self) -> int:
        """The smallest count a margin's hidden cells must add up to."""
        return max(self.min_count, (self.redact_at_or_below or 0) + 1)


PROFILES = {
    "minimum10": SDCProfile("minimum10", min_count=10, dominance_n=2, dominance_k=0.9),
    "opensafely": SDCProfile("opensafely", redact_at_or_below=7, round_to=5),
}


@dataclass(frozen=True)
class SDCFinding:
    row: int
    column: str
    rule: str  # min_count | redact | dominance | secondary | rounding


@dataclass
class SDCResult:
    profile: SDCProfile
    table: pl.DataFrame  # the safe table: suppressed cells null, counts rounded
    findings: list[SDCFinding] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.findings

    @property
    def suppressed(self) -> int:
        return sum(f.rule != "rounding" for f in self.findings)

    def summary(self) -> dict:
        rules: dict[str, int] = {}
        for finding in self.findings:
            rules[finding.rule] = rules.get(finding.rule, 0) + 1
        return {"profile": self.profile.name, "passed": self.passed, "cells_suppressed":
                self.suppressed, "findings_by_rule": rules, "rows": self.table.height}


def resolve_profile(profile: SDCProfile | str) -> SDCProfile:
    if isinstance(profile, SDCProfile):
        return profile
    if profile not in PROFILES:
        raise ValueError(f"unknown SDC profile {profile!r}; one of {', '.join(PROFILES)}")
    return PROFILES[profile]


def primary_rules(values: np.ndarray, profile: SDCProfile) -> np.ndarray:
    """For each count cell, the rule that suppresses it ('' when safe). NaN cells were hidden."""
    rule = np.full(values.shape, "", dtype=object)
    if profile.min_count > 0:
        rule[(values > 0) & (values < profile.min_count)] = "min_count"
    if profile.redact_at_or_below is not None:
        rule[values <= profile.redact_at_or_below] = "redact"
    return rule


def dominated(totals: np.ndarray, top_n: np.ndarray, profile: SDCProfile) -> np.ndarray:
    """The n/k rule: the n largest contributions make up more than k of the cell's total."""
    if profile.dominance_k is None:
        return np.zeros(totals.shape, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(totals > 0, top_n / totals, 0.0)
    return share > profile.dominance_k


def margins(table: pl.DataFrame, group_columns, count_columns: list[str],
            additive_columns: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every margin as (row indices, column indices) of the count matrix."""
    group_sets = group_columns or [[]]
    if isinstance(group_sets[0], str):
        group_sets = [group_sets]
    found = []
    for keys in group_sets:
        if keys:
            row_groups = (table.with_row_index("_row").group_by(keys, maintain_order=True)
                          .agg("_row")["_row"].to_list())
        else:
            row_groups = [list(range(table.height))]
        found += [(np.array(rows), np.array([j])) for rows in row_groups
                  for j in range(len(count_columns))]
    if additive_columns and len(count_columns) > 1:
        found += [(np.array([i]), np.arange(len(count_columns))) for i in range(table.height)]
    return found


def secondary_suppression(values: np.ndarray, hidden: np.ndarray, margin_list, threshold: int
                          ) -> np.ndarray:
    """Cells to hide so no margin gives a hidden cell away; repeats until every margin is safe."""
    hidden = hidden.copy()
    changed = True
    while changed:
        changed = False
        for rows, cols in margin_list:
            cells = values[np.ix_(rows, cols)].ravel()
            mask = hidden[np.ix_(rows, cols)].ravel()
            if not mask.any() or mask.all():
                continue
            # a cell hidden before we saw it (null) may hold anything: count it as enough
            hidden_sum = np.nansum(cells[mask]) + threshold * np.isnan(cells[mask]).sum()
            if mask.sum() >= 2 and hidden_sum >= threshold:
                continue
            candidates = np.where(mask, np.inf, np.nan_to_num(cells, nan=np.inf))
            pick = int(np.argmin(candidates))
            r, c = rows[pick // len(cols)], cols[pick % len(cols)]
            hidden[r, c] = changed = True
    return hidden


def apply_sdc(table: pl.DataFrame, count_columns: list[str], profile: SDCProfile | str, *,
              group_columns: list[str] | list[list[str]] | None = None,
              additive_columns: bool = False,
              dominance_columns: dict[str, str] | None = None) -> SDCResult:
    """Apply ``profile`` to ``table``'s count columns; returns the safe table and the findings.

    group_columns: rows sharing these values form a margin whose total may be published (a list
    of lists gives several margins, e.g. both dimensions of a cross-table); None: the whole table.
    additive_columns: the count columns of a row add up to a row total that may be published.
    dominance_columns: magnitude column -> column holding the sum of its n largest contributions;
    dominated cells are suppressed (with their count cells in the same row), a magnitude is hidden
    wherever a count of its row is, and the helper columns are dropped from the safe table.
    """
    profile = resolve_profile(profile)
    dominance_columns = dominance_columns or {}
    needed = list(count_columns) + [c for pair in dominance_columns.items() for c in pair]
    for name in needed + [c for keys in (group_columns or []) for c in
                          ([keys] if isinstance(keys, str) else keys)]:
        if name not in table.columns:
            raise ValueError(f"SDC: no column {name!r} in the table (columns: {table.columns})")
    if not count_columns:
        raise ValueError("SDC: name at least one count column")
    values = table.select(pl.col(count_columns).cast(pl.Float64)).to_numpy().reshape(
        table.height, len(count_columns))
    if np.any(values < 0):
        raise ValueError("SDC: count columns hold negative values; counts cannot be negative")
    rule = primary_rules(values, profile)
    hidden = (rule != "") | np.isnan(values)
    dominated_rows = np.zeros(table.height, dtype=bool)
    for magnitude, top in dominance_columns.items():
        dominated_rows |= dominated(table[magnitude].cast(pl.Float64).to_numpy(),
                                    table[top].cast(pl.Float64).to_numpy(), profile)
    rule[dominated_rows[:, None] & (rule == "")] = "dominance"
    hidden |= dominated_rows[:, None]
    all_hidden = secondary_suppression(values, hidden, margins(
        table, group_columns, count_columns, additive_columns), profile.threshold)
    rule[all_hidden & ~hidden] = "secondary"
    findings = [SDCFinding(int(i), count_columns[j], rule[i, j])
                for i, j in zip(*np.nonzero(rule != ""))]
    released = np.where(all_hidden, np.nan, values)
    if profile.round_to > 1:
        rounded = np.floor(released / profile.round_to + 0.5) * profile.round_to  # half up
        findings += [SDCFinding(int(i), count_columns[j], "rounding")
                     for i, j in zip(*np.nonzero(~np.isnan(released) & (rounded != released)))]
        released = rounded
    safe = table.with_columns(
        pl.Series(name, released[:, j], dtype=pl.Float64, nan_to_null=True)
        .cast(table.schema[name] if table.schema[name].is_numeric() else pl.Int64)
        for j, name in enumerate(count_columns))
    row_hidden = pl.Series(dominated_rows | all_hidden.any(axis=1))  # magnitudes follow counts
    safe = safe.with_columns(pl.when(row_hidden).then(None).otherwise(pl.col(m)).alias(m)
                             for m in dominance_columns)
    safe = safe.drop(list(dominance_columns.values()))
    findings += [SDCFinding(int(i), m, "dominance") for m in dominance_columns
                 for i in np.nonzero(dominated_rows)[0]]
    findings.sort(key=lambda f: (f.row, f.column, f.rule))
    return SDCResult(profile, safe, findings)
