"""Synthetic people drawn from a model card's disclosure-controlled training population.

Demographics and birth band come from the card's joint cells where it releases them; people of
the withheld cells (too small to release) are drawn column by column from what the one-way
marginals hold beyond the released cells, so every one-way marginal is kept while no withheld
combination is ever read. The birth month is uniform within the band; registration start and end ages are drawn
from the band's recorded quantiles (linear between them, so never beyond the 5th and 95th
percentiles the card keeps), ending no later than the model's data window.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from farr.model.tokenizer import COHORT_YEARS, DAYS_PER_YEAR, DEMOGRAPHICS

EPOCH = dt.date(1970, 1, 1)
MIN_SPAN_YEARS = 1 / 12  # a registration lasts at least a month


@dataclass
class People:
    """n synthetic people: demographic tokens (n, 4), birth day (days since 1970), registration ages."""

    demographics: np.ndarray  # (n, len(DEMOGRAPHICS)) str tokens, e.g. "SEX//F"
    birth_day: np.ndarray  # (n,) int
    start_age: np.ndarray  # (n,) float32 years
    end_age: np.ndarray  # (n,) float32 years
    window_end_age: np.ndarray  # (n,) age at the end of the model's data window

    def __len__(self) -> int:
        return len(self.birth_day)


def draw_people(card: dict, n: int, rng: np.random.Generator) -> People:
    population = card["training_population"]
    tokens, band = _demographics(population, n, rng)
    width = population["birth_band_years"]
    birth_month = rng.integers(0, 12 * width, size=n)
    birth_day = _first_of_month(band, birth_month)
    last_day = (dt.date.fromisoformat(card["data_window"]["last_date"]) - EPOCH).days
    window_end = np.maximum((last_day - birth_day) / DAYS_PER_YEAR, 0.0)
    start, end = _spans(population, band, rng)
    start = np.clip(start, 0.0, np.maximum(window_end - MIN_SPAN_YEARS, 0.0))
    end = np.clip(np.maximum(end, start + MIN_SPAN_YEARS), None, np.maximum(window_end, start + MIN_SPAN_YEARS))
    return People(tokens, birth_day, start.astype(np.float32), end.astype(np.float32), window_end)


def _demographics(population: dict, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(n, len(DEMOGRAPHICS)) tokens and birth bands: released cells in proportion to their counts,
    the withheld share from the residual one-way marginals."""
    cells = [c for c in population["demographics"] if c["count"] > 0]
    released = sum(c["count"] for c in cells)
    withheld = population.get("withheld_people", 0) if "marginals" in population else 0
    if released + withheld <= 0:
        raise ValueError("the model card releases no demographic cell and no marginal: "
                         "nothing to draw synthetic people from")
    joint = rng.random(n) < released / (released + withheld)
    tokens = np.empty((n, len(DEMOGRAPHICS)), dtype=object)
    band = np.empty(n, dtype=np.int64)
    if cells and joint.any():
        counts = np.array([c["count"] for c in cells], dtype=float)
        cell = rng.choice(len(cells), size=int(joint.sum()), p=counts / counts.sum())
        tokens[joint] = np.array([c["tokens"] for c in cells], dtype=object)[cell]
        band[joint] = np.array([c["birth_year_band"] for c in cells])[cell]
    rest = int((~joint).sum())
    if rest:
        marginals = population["marginals"]
        band[~joint] = _residual(marginals["birth_year_band"], cells, lambda c: str(c["birth_year_band"]), rest,
                                 rng).astype(np.int64)
        for j, column in enumerate(DEMOGRAPHICS):
            tokens[~joint, j] = (np.char.add("BIRTH_COHORT//", (band[~joint] - band[~joint] % COHORT_YEARS).astype(str))
                                 if column == "birth_cohort" else
                                 _residual(marginals[column], cells, lambda c, j=j: c["tokens"][j], rest, rng))
    return tokens.astype(str), band


def _residual(marginal: dict[str, int], cells: list[dict], value_of, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw values in proportion to the marginal less what the released cells already hold."""
    values = list(marginal)
    held = {v: 0 for v in values}
    for c in cells:
        if value_of(c) in held:
            held[value_of(c)] += c["count"]
    weight = np.array([max(marginal[v] - held[v], 0) for v in values], dtype=float)
    if weight.sum() <= 0:
        weight = np.array([marginal[v] for v in values], dtype=float)
    if weight.sum() <= 0:
        raise ValueError("the model card's marginals are all suppressed: nothing to draw synthetic people from")
    drawn = rng.choice(len(values), size=n, p=weight / weight.sum())
    return np.array(values, dtype=object)[drawn]


def _first_of_month(band_year: np.ndarray, month: np.ndarray) -> np.ndarray:
    months = (band_year - 1970) * 12 + month
    return np.asarray(months, dtype="datetime64[M]").astype("datetime64[D]").astype(np.int64)


def _spans(population: dict, band: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Start and end ages by inverse-CDF sampling from each band's quantiles (nearest recorded band)."""
    records = population["record"]
    if not records:
        raise ValueError("the model card records no registration spans (every birth band below min_cell)")
    recorded = np.array([r["birth_year_band"] for r in records])
    nearest = np.abs(band[:, None] - recorded[None, :]).argmin(axis=1)
    percents = np.asarray(population["span_quantiles_percent"], dtype=float) / 100
    start, end = np.empty(len(band)), np.empty(len(band))
    for j, record in enumerate(records):
        mine = nearest == j
        u = rng.uniform(percents[0], percents[-1], size=(2, int(mine.sum())))
        start[mine] = np.interp(u[0], percents, record["start_age"])
        end[mine] = np.interp(u[1], percents, record["end_age"])
    return start, end
