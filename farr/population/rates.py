"""Totals of per-person values within groups, with bootstrap replicates for intervals.

Intervals come from a Poisson bootstrap over people: every replicate gives each person a
Poisson(1) weight, the same weights for every grouping, so a replicate is one resampled
population and ratios, gradients and totals across groups stay consistent within it. The
bootstrap is used rather than rollouts of every person because the analytic risks are exact
expectations under the model (no Monte Carlo noise to average out) and cheap for millions of
people, while rollouts cost a model step per sampled event. Resampling people measures how well
a group's people stand for the group; the chance of the outcomes themselves (what a rollout would
add) is added per replicate from each group's Σ p(1 − p) where a prediction interval is wanted.
Neither measures the model's own error: that is what the oracle check is for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from farr.population.groups import group_index

PER_100K = 1e5
REPLICATES = 200
INTERVAL = (5.0, 95.0)  # percentiles: a 90% interval
CHUNK = 65_536  # people per block of bootstrap weights, to bound memory


@dataclass
class GroupTotals:
    """Column sums of per-person values within each group of one grouping."""

    names: np.ndarray  # (G,) group labels
    people: np.ndarray  # (G,) people in each group
    totals: np.ndarray  # (G, M)
    replicate_people: np.ndarray  # (B, G) weighted people in each bootstrap replicate
    replicates: np.ndarray  # (B, G, M)


def group_sums(index: np.ndarray, groups: int, values: np.ndarray) -> np.ndarray:
    """(groups, M) sums of the rows of `values` (n, M) by group `index` (n,)."""
    member = sp.csr_matrix((np.ones(len(index)), (index, np.arange(len(index)))), shape=(groups, len(index)))
    return np.asarray(member @ values)


def poisson_weights(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Poisson(1) draws as uint8 by inverting the CDF of uniforms (many times faster than
    `Generator.poisson`; P(weight > 12) ~ 1e-10 is folded into 12)."""
    k = np.arange(13)
    cdf = np.cumsum(np.exp(-1.0) / np.cumprod(np.maximum(k, 1)))
    return np.searchsorted(cdf[:-1].astype(np.float32), rng.random(shape, dtype=np.float32)).astype(np.uint8)


def bootstrap_totals(labels: dict[str, np.ndarray], values: np.ndarray, *, replicates: int = REPLICATES,
                     seed: int = 0) -> dict[str, GroupTotals]:
    """For each grouping (name -> (n,) labels), the group sums of `values` (n, M) and their
    bootstrap replicates."""
    rng = np.random.default_rng(seed)
    values = np.asarray(values, np.float32)
    n, m = values.shape
    found = {}
    for name, lab in labels.items():
        names, index = group_index(lab)
        found[name] = (names, index, np.zeros((replicates, len(names))), np.zeros((replicates, len(names), m)))
    for lo in range(0, n, CHUNK):
        block = slice(lo, min(n, lo + CHUNK))
        weight = poisson_weights(rng, (block.stop - lo, replicates))
        chunk = values[block]
        for names, index, people, sums in found.values():
            order = np.argsort(index[block], kind="stable")  # each group's rows become one slice
            ends = np.cumsum(np.bincount(index[block], minlength=len(names)))
            w, v = weight[order], chunk[order]
            for g in np.flatnonzero(np.diff(ends, prepend=0)):
                rows = slice(ends[g - 1] if g else 0, ends[g])
                w_g = w[rows].astype(np.float32)
                people[:, g] += w_g.sum(axis=0)
                sums[:, g] += w_g.T @ v[rows]
    return {name: GroupTotals(names, np.bincount(index, minlength=len(names)), group_sums(index, len(names), values),
                              people, sums) for name, (names, index, people, sums) in found.items()}


def ratio_interval(numerator: np.ndarray, denominator: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of numerator / denominator over the replicates (first axis)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = numerator / denominator
    return tuple(np.nanpercentile(ratio, INTERVAL, axis=0))


def cell_table(grouping: str, names: np.ndarray, outcomes: list[str], horizons: list[float],
               columns: dict[str, np.ndarray]) -> pl.DataFrame:
    """Long table, one row per (group, outcome, horizon) cell, from arrays that broadcast to
    (groups, outcomes, horizons)."""
    shape = (len(names), len(outcomes), len(horizons))
    g, j, t = (a.ravel() for a in np.indices(shape))
    keys = {"grouping": grouping, "group": names[g], "outcome": np.asarray(outcomes)[j],
            "horizon_years": np.asarray(horizons, dtype=float)[t]}
    return pl.DataFrame(keys | {name: np.broadcast_to(v, shape).ravel() for name, v in columns.items()})
