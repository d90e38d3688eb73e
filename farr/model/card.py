"""The model card: what a model was trained on, written beside its weights by every trainer.

Synthesis draws its people from `training_population`, population views refuse horizons beyond
`data_window`, and the federated ledger names datasets by `dataset.farr_json_sha256`. The
population is disclosure-controlled before it is written: joint cells of fewer than `min_cell`
people are withheld and counts are rounded, and span quantiles stop at the 5th and 95th
percentiles so that no one person's extreme value is recorded.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl

import farr
from farr.events.io import read_metadata, sha256_file
from farr.events.schema import FARR_METADATA_FILE
from farr.model.tokenizer import DAYS_PER_YEAR, DEMOGRAPHICS, Timelines, Tokenizer

CARD = "model_card.json"
MIN_CELL, ROUND_TO, BIRTH_BAND_YEARS = 10, 5, 5
SPAN_QUANTILES = tuple(range(5, 100, 5))  # percent


def write_card(model_dir: str | Path, dataset: str | Path, timelines: Timelines, tokenizer: Tokenizer,
               training: dict, privacy: dict | None = None) -> Path:
    """Describe the training split of `timelines` (from `dataset`) in `model_dir/model_card.json`."""
    train = timelines.take(np.flatnonzero(timelines.split == 0))
    card = {
        "farr_version": farr.__version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "dataset": _dataset(dataset, train),
        "data_window": data_window(train),
        "training_population": training_population(train, tokenizer),
        "training": training,
        "privacy": privacy or {"differential_privacy": False},
    }
    file = Path(model_dir) / CARD
    partial = file.with_suffix(".partial")
    partial.write_text(json.dumps(card, indent=1))
    partial.replace(file)
    return file


def read_card(model_dir: str | Path) -> dict:
    file = Path(model_dir) / CARD
    if not file.exists():
        raise ValueError(f"{model_dir}: no {CARD}, so its training population is not recorded; "
                         "retrain it with this version of farr")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{file}: not a model card ({error})") from None


def _dataset(dataset: str | Path, train: Timelines) -> dict:
    return {"farr_json_sha256": sha256_file(Path(dataset) / FARR_METADATA_FILE),
            "schema_version": read_metadata(dataset)["schema_version"],
            "subjects": len(train),
            "events": int(len(train.tokens) - len(train) * len(DEMOGRAPHICS))}


def data_window(timelines: Timelines) -> dict:
    """The calendar span the model saw people followed over (registration start to the last event),
    and how long they were followed: a forecast horizon beyond `follow_up_years` is extrapolation."""
    owner, index = timelines.rows_of(np.arange(len(timelines)))
    body = timelines.ages[index] > 0  # demographic tokens carry age 0
    if not body.any():
        raise ValueError("the training split has no events")
    last = (timelines.birth_day[owner[body]] + timelines.ages[index[body]].astype(np.float64) * DAYS_PER_YEAR).max()
    first = (timelines.birth_day + timelines.start_age.astype(np.float64) * DAYS_PER_YEAR).min()
    end = np.where(np.isnan(timelines.end_age), (last - timelines.birth_day) / DAYS_PER_YEAR, timelines.end_age)
    follow_up = np.percentile(end - timelines.start_age, 95)
    return {"first_date": _date(first), "last_date": _date(last), "follow_up_years": round(float(follow_up), 2)}


def _date(day: float) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=int(day))).isoformat()


def birth_year_band(birth_day: np.ndarray) -> np.ndarray:
    years = (np.asarray(birth_day, "datetime64[D]").astype("datetime64[Y]").astype(int) + 1970)
    return years - years % BIRTH_BAND_YEARS


def training_population(timelines: Timelines, tokenizer: Tokenizer) -> dict:
    """Disclosure-controlled demographics (joint, with birth band) and record spans per birth band."""
    prefix = timelines.tokens[timelines.offsets[:-1, None] + np.arange(len(DEMOGRAPHICS))]
    vocabulary = np.asarray(tokenizer.vocabulary)
    people = pl.DataFrame({c: vocabulary[prefix[:, j]] for j, c in enumerate(DEMOGRAPHICS)}).with_columns(
        birth_year_band=birth_year_band(timelines.birth_day), start_age=timelines.start_age,
        end_age=timelines.end_age)
    cells = people.group_by([*DEMOGRAPHICS, "birth_year_band"]).len().sort([*DEMOGRAPHICS, "birth_year_band"])
    released = cells.filter(pl.col("len") >= MIN_CELL)
    return {
        "min_cell": MIN_CELL, "rounded_to": ROUND_TO, "birth_band_years": BIRTH_BAND_YEARS,
        "people": _rounded(len(people)),
        "withheld_people": _rounded(int(cells["len"].sum() - released["len"].sum())),
        "demographics": [{"tokens": list(row[:len(DEMOGRAPHICS)]), "birth_year_band": row[-2],
                          "count": _rounded(row[-1])} for row in released.iter_rows()],
        "marginals": {column: _marginal(people, column) for column in (*DEMOGRAPHICS, "birth_year_band")},
        "record": _spans(people),
        "span_quantiles_percent": list(SPAN_QUANTILES),
    }


def _marginal(people: pl.DataFrame, column: str) -> dict[str, int]:
    """One-way counts: they survive suppression where joint cells do not (small populations)."""
    counts = people.group_by(column).len().filter(pl.col("len") >= MIN_CELL).sort(column)
    return {str(value): _rounded(count) for value, count in counts.iter_rows()}


def _spans(people: pl.DataFrame) -> list[dict]:
    """Quantiles of the ages at registration start and end, for each birth band of enough people."""
    spans = []
    for (band,), group in people.sort("birth_year_band").group_by("birth_year_band", maintain_order=True):
        if len(group) < MIN_CELL:
            continue
        quantile = lambda column: np.nanpercentile(group[column].to_numpy(), SPAN_QUANTILES).round(2).tolist()  # noqa: E731
        spans.append({"birth_year_band": band, "start_age": quantile("start_age"), "end_age": quantile("end_age")})
    return spans


def _rounded(count: int) -> int:
    return int(ROUND_TO * round(count / ROUND_TO))
