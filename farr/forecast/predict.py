"""`farr forecast` and `farr generate`: per-person risks and sampled futures from a trained model."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl

from farr.events.io import read_outcomes
from farr.forecast.generate import death_tokens, expected_first_occurrences, sample_futures
from farr.forecast.landmark import Landmark, Outcome, landmark, landmark_ages, outcomes_for, timelines_for
from farr.forecast.risk import inference_model, model_risk, not_at_risk
from farr.model.data import predictable
from farr.model.train import load_model

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([ymwd])\s*$")
_YEARS = {"y": 1.0, "m": 1 / 12, "w": 7 / 365.25, "d": 1 / 365.25}


def parse_horizons(text: str) -> list[float]:
    """"1y,6m,30d" -> years; a part that is not a duration is an error naming it."""
    horizons = []
    for part in text.split(","):
        match = _DURATION.match(part)
        if not match or float(match[1]) <= 0:
            raise ValueError(f"horizon {part.strip()!r} is not a duration (use e.g. 1y, 6m, 2w, 30d)")
        horizons.append(float(match[1]) * _YEARS[match[2]])
    return horizons


def _setup(model_dir, dataset, at: str):
    model, tokenizer = load_model(model_dir)
    timelines = timelines_for(tokenizer, dataset)
    outcomes = outcomes_for(tokenizer, read_outcomes(dataset)) or _every_code(tokenizer)
    mark = landmark(timelines, landmark_ages(timelines, at), outcomes)
    if not len(mark.people):
        raise ValueError(f"{dataset}: nobody is registered and alive at --at {at}")
    return model, tokenizer, timelines, outcomes, mark


def _every_code(tokenizer):
    """Without outcome definitions, every coded event the model knows (not measurements) is one."""
    known = predictable(tokenizer.vocabulary).numpy()
    return [Outcome(token, np.array([i]), False) for i, token in enumerate(tokenizer.vocabulary)
            if known[i] and "/" in token and "//Q" not in token]


def forecast(model_dir, dataset, at: str, horizons: list[float], out: str | Path, *, draws: int = 0,
             seed: int = 0, bf16: bool = False) -> Path:
    """Write risks.parquet: subject_id, landmark_age, outcome, horizon_years, risk (and
    risk_sampled from `draws` sampled futures per person, when asked)."""
    model, tokenizer, timelines, outcomes, mark = _setup(model_dir, dataset, at)
    model = inference_model(model, bf16)
    risk = model_risk(model, timelines, mark, outcomes, horizons)
    blocked = not_at_risk(mark, outcomes)[:, :, None]
    columns = {"risk": np.where(blocked, np.nan, risk)}
    if draws:
        sampled = expected_first_occurrences(model, timelines, outcomes, mark, horizons, draws, seed)
        columns["risk_sampled"] = np.where(blocked, np.nan, sampled)
    table = _long_table(timelines, mark, outcomes, horizons, columns)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table.write_parquet(out / "risks.parquet")
    return out / "risks.parquet"


def _long_table(timelines, mark: Landmark, outcomes, horizons, columns: dict[str, np.ndarray]) -> pl.DataFrame:
    n, k, h = len(mark.people), len(outcomes), len(horizons)
    return pl.DataFrame({
        "subject_id": np.repeat(timelines.subject_id[mark.people], k * h),
        "landmark_age": np.repeat(mark.age, k * h).astype(np.float32),
        "outcome": np.tile(np.repeat([o.name for o in outcomes], h), n),
        "horizon_years": np.tile(np.asarray(horizons, np.float32), n * k),
    } | {name: values.reshape(-1).astype(np.float32) for name, values in columns.items()})


def generate(model_dir, dataset, at: str, years: float, samples: int, out: str | Path, *, seed: int = 0) -> Path:
    """Write futures.parquet: `samples` sampled future timelines per person after the landmark."""
    model, tokenizer, timelines, outcomes, mark = _setup(model_dir, dataset, at)
    futures = sample_futures(model, timelines, mark, years, samples, stop_tokens=death_tokens(outcomes), seed=seed)
    birth = timelines.birth_day[mark.people][futures.row].astype("datetime64[D]").astype("datetime64[us]")
    time = birth + (futures.age * 365.25 * 86_400e6).astype("timedelta64[us]")
    table = pl.DataFrame({"subject_id": timelines.subject_id[mark.people][futures.row],
                          "sample": futures.draw.astype(np.int32), "time": time,
                          "code": np.asarray(tokenizer.vocabulary)[futures.token]})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table.sort("subject_id", "sample", "time").write_parquet(out / "futures.parquet")
    return out / "futures.parquet"
