"""Forecasting and evaluation: durations, landmarks, metrics, and the commands end to end."""

import json
import threading
from datetime import datetime

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from farr.cli import app
from farr.events.io import DatasetWriter, read_outcomes
from farr.forecast import metrics
from farr.forecast.generate import death_tokens, sample_futures
from farr.forecast.landmark import at_age, labels, landmark, landmark_day, outcomes_for
from farr.forecast.predict import parse_horizons
from farr.forecast import risk
from farr.forecast.risk import BATCH, analytic_risk, cohort_rates, outcome_rates
from farr.model.data import history_lengths
from farr.model.train import load_model
from farr.model.tokenizer import Tokenizer
from farr.simulate.oracle import Oracle
from farr.simulate.simulator import simulate_dataset

runner = CliRunner()


@given(st.lists(st.tuples(st.integers(1, 99), st.sampled_from("ymwd")), min_size=1, max_size=4))
def test_horizons_parse_as_durations(parts):
    years = parse_horizons(",".join(f"{n}{unit}" for n, unit in parts))
    per_unit = {"y": 1, "m": 1 / 12, "w": 7 / 365.25, "d": 1 / 365.25}
    assert years == pytest.approx([n * per_unit[u] for n, u in parts])


@pytest.mark.parametrize("bad", ["5x", "y", "-1y", "0y", "1y,,2y", "ten years"])
def test_a_horizon_that_is_not_a_duration_is_named(bad):
    with pytest.raises(ValueError, match="is not a duration"):
        parse_horizons(bad)


def test_binary_metrics_match_sklearn_and_go_na_when_small():
    rng = np.random.default_rng(0)
    risk = rng.random(5000)
    event = rng.random(5000) < risk
    cell = metrics.binary_metrics(event, risk)
    assert cell["auroc"] == pytest.approx(roc_auc_score(event, risk))
    assert cell["calibration_slope"] == pytest.approx(1.0, abs=0.15)
    assert abs(cell["calibration_in_the_large"]) < 0.02
    assert metrics.binary_metrics(event[:40], risk[:40])["auroc"] is None
    assert metrics.headroom(0.7, 0.5, 0.8) == pytest.approx(2 / 3)


@pytest.fixture(scope="module")
def cohort(population):
    tokenizer = Tokenizer().fit(population)
    timelines = tokenizer.transform(population)
    outcomes = outcomes_for(tokenizer, read_outcomes(population))
    return tokenizer, timelines, outcomes, landmark(timelines, at_age(timelines, 60.0), outcomes)


@given(st.lists(st.floats(0.0, 3.0), min_size=1, max_size=12), st.floats(0.1, 15.0))
def test_analytic_risk_integrates_each_years_rate(yearly, horizon):
    rates = np.array(yearly)[None, None, :]
    got = analytic_risk(rates, [horizon])[0, 0, 0]
    cover = [min(max(horizon - i, 0.0), 1.0) for i in range(len(yearly))]
    cover[-1] = max(horizon - (len(yearly) - 1), 0.0)  # the last rate holds beyond its year
    assert got == pytest.approx(1 - np.exp(-np.dot(yearly, cover)), abs=1e-9)
    assert analytic_risk(rates[..., :1], [horizon])[0, 0, 0] == pytest.approx(1 - np.exp(-yearly[0] * horizon))


def test_rates_read_on_anniversaries_start_from_the_landmark_rate(trained, cohort):
    model, _ = load_model(trained[0])
    tokenizer, timelines, outcomes, mark = cohort
    short = mark.subset(np.flatnonzero(np.diff(timelines.offsets)[mark.people] < 100)[:50])
    held = outcome_rates(model, timelines, short, outcomes)
    yearly = outcome_rates(model, timelines, short, outcomes, years_after=4)
    assert held.shape == (50, len(outcomes), 1) and yearly.shape == (50, len(outcomes), 5)
    np.testing.assert_allclose(yearly[..., 0], held[..., 0], rtol=1e-4)
    assert not np.allclose(yearly[..., 4], yearly[..., 0])  # ageing moves the rates


def test_a_persons_rates_do_not_depend_on_who_shares_their_batch(trained, cohort):
    """People go in batches of similar history length, padded to the longest: across batches,
    and alone, each person's rates are the same."""
    model, _ = load_model(trained[0])
    _, timelines, outcomes, mark = cohort
    people = np.arange(3 * BATCH["cpu"])
    together = outcome_rates(model, timelines, mark.subset(people), outcomes, years_after=2)
    for i in people[::37]:
        alone = outcome_rates(model, timelines, mark.subset(np.array([i])), outcomes, years_after=2)
        np.testing.assert_allclose(alone[0], together[i], rtol=1e-4, atol=1e-9)


def test_cohorts_read_together_get_the_rates_each_would_alone(trained, cohort):
    """A person in several cohorts is read once, at their latest landmark, with the earlier ones'
    queries appended (each seeing only the history before its own landmark); a history too long
    for all the queries has its earlier landmarks read in a later pass."""
    model, _ = load_model(trained[0])
    _, timelines, outcomes, _ = cohort
    ages = at_age(timelines, 72.0)
    cohorts = [(landmark(timelines, ages - back, outcomes), years) for back, years in ((0, 4), (1, 0), (5, 4), (7.5, 2))]
    latest = history_lengths(timelines, cohorts[0][0].people, cohorts[0][0].age)
    both = np.isin(cohorts[0][0].people, cohorts[2][0].people)
    fits = latest + 5 + 5 <= model.cfg.block_size
    assert (both & fits).sum() > 50 and (both & ~fits).sum() > 5  # both paths are taken
    together = cohort_rates(model, timelines, cohorts, outcomes)
    for (mark, years), rates in zip(cohorts, together):
        np.testing.assert_allclose(rates, outcome_rates(model, timelines, mark, outcomes, years), rtol=1e-4, atol=1e-9)


def test_batches_read_side_by_side_give_the_rates_read_one_after_another(trained, cohort, monkeypatch):
    """On a CPU with several threads, one Python thread a core reads batches side by side, each
    writing its own people's rows (and their earlier landmarks' rows); the rates are exactly those
    of one thread reading the batches in turn, and torch gets its threads back."""
    model, _ = load_model(trained[0])
    _, timelines, outcomes, _ = cohort
    ages = at_age(timelines, 72.0)
    cohorts = [(landmark(timelines, ages - back, outcomes), years) for back, years in ((0, 4), (1, 0))]
    readers, read = [], risk._Reader.__call__
    monkeypatch.setattr(risk._Reader, "__call__", lambda *a: readers.append(threading.get_ident()) or read(*a))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        in_turn, in_turn_readers = cohort_rates(model, timelines, cohorts, outcomes), set(readers)
        readers.clear()
        torch.set_num_threads(2)
        side_by_side = cohort_rates(model, timelines, cohorts, outcomes)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert len(in_turn_readers) == 1 and len(set(readers)) > 1 and threading.get_ident() not in readers
    for a, b in zip(side_by_side, in_turn):
        np.testing.assert_array_equal(a, b)


def test_sampled_events_and_their_exposures_belong_to_the_same_person(trained, cohort):
    """Futures are sampled in batches of similar history length and put back in the cohort's order.
    An outcome's rate stops accruing at its first event (or a death): where a person's future has
    one in the first year, its exposure no longer grows in the second, and where it has neither, it does."""
    model, _ = load_model(trained[0])
    _, timelines, outcomes, mark = cohort
    some = mark.subset(np.arange(200))
    dying = death_tokens(outcomes)
    futures = sample_futures(model, timelines, some, 2.0, 1, stop_tokens=dying, seed=0, watch=(outcomes, [1.0, 2.0]))
    grew = futures.exposed[:, 0, :, 1] > futures.exposed[:, 0, :, 0]  # (people, outcomes)
    first_year = futures.age - some.age[futures.row] <= 1.0

    def within_a_year(tokens) -> np.ndarray:
        return np.isin(np.arange(len(some.people)), futures.row[first_year & np.isin(futures.token, tokens)])

    died, checked = within_a_year(dying), 0
    for k, outcome in enumerate(outcomes):
        had = within_a_year(outcome.tokens)
        assert not grew[had, k].any() and grew[~had & ~died, k].all()
        checked += had.sum()
    assert checked > 20


@pytest.mark.parametrize("native", [True, False])
def test_bf16_runs_only_where_the_device_has_it(trained, cohort, monkeypatch, caplog, native):
    """Emulated bfloat16 is several times slower than float32, so without native support the
    rates are float32's exactly, with a warning; with it the blocks run in bfloat16 and the rates
    move by their rounding only (with the log-rates themselves in bfloat16 the median rate moved
    0.5% and the largest 1.5%)."""
    model, _ = load_model(trained[0])
    _, timelines, outcomes, mark = cohort
    short = mark.subset(np.arange(40))
    monkeypatch.setattr(risk.torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    risk.native_bf16.cache_clear()
    exact = outcome_rates(model, timelines, short, outcomes)
    fast_model = risk.inference_model(model, bf16=True)
    fast = outcome_rates(fast_model, timelines, short, outcomes)
    risk.native_bf16.cache_clear()
    assert ("no native bfloat16" in caplog.text) is not native
    assert fast_model.block_dtype == (torch.bfloat16 if native else torch.float32)
    assert model.block_dtype == torch.float32  # a copy: the model itself is untouched
    if native:
        assert not np.array_equal(fast, exact)
        moved = np.abs(fast / exact - 1)
        assert np.median(moved) < 1e-3 and moved.max() < 1e-2  # the head reads log-rates in float32
    else:
        np.testing.assert_array_equal(fast, exact)


def test_landmark_takes_registered_living_people_and_new_onsets(cohort):
    tokenizer, timelines, outcomes, mark = cohort
    assert len(mark.people) > 500
    assert (timelines.start_age[mark.people] <= 60).all() and (timelines.end_age[mark.people] > 60).all()
    event, usable = labels(mark, outcomes, 5.0)
    hypertension = [o.name for o in outcomes].index("hypertension")
    assert not usable[mark.had_before[:, hypertension], hypertension].any()
    admission = [o.name for o in outcomes].index("unplanned_admission")
    assert usable[mark.had_before[:, admission] & (mark.follow_up >= 5), admission].all()


def test_oracle_of_coded_outcomes_matches_what_the_record_shows(population, cohort):
    """The full chain: recorded labels from tokens vs the oracle's risk of a code within 5 years."""
    _, timelines, outcomes, mark = cohort
    oracle, truth = Oracle.from_dataset(population)
    rows = pl.DataFrame({"subject_id": timelines.subject_id[mark.people]}).with_row_index("i")
    truth = rows.join(pl.from_arrow(truth), on="subject_id").sort("i").drop("i").to_arrow()
    risks = oracle.risk_on_day(truth, landmark_day(timelines, mark), [5.0], draws=40, seed=1, recorded=True)
    event, usable = labels(mark, outcomes, 5.0)
    for name in ("hypertension", "type2_diabetes", "death", "unplanned_admission"):
        j, k = [o.name for o in outcomes].index(name), risks.outcomes.index(name)
        p, y = risks.probability[usable[:, j], k, 0], event[usable[:, j], j]
        p, y = p[~np.isnan(p)], y[~np.isnan(p)]
        se = np.sqrt(np.mean(p * (1 - p)) / len(p))
        assert abs(p.mean() - y.mean()) < 4 * se + 0.01, name


def test_forecast_generate_and_evaluate_from_the_command_line(population, trained, tmp_path):
    model = str(trained[0])
    result = runner.invoke(app, ["forecast", model, str(population), "--at", "60", "--horizon", "3m,1y",
                                 "--out", str(tmp_path / "f"), "--samples", "2"])
    assert result.exit_code == 0, result.output
    risks = pl.read_parquet(tmp_path / "f" / "risks.parquet")
    assert set(risks["horizon_years"].unique()) == {0.25, 1.0}
    ok = risks.drop_nulls("risk").filter(pl.col("risk").is_not_nan())
    assert ok["risk"].is_between(0, 1).all() and ok["risk_sampled"].is_between(0, 1).all()
    longer = ok.pivot(on="horizon_years", index=["subject_id", "outcome"], values="risk")
    assert (longer["1.0"] >= longer["0.25"]).all()

    result = runner.invoke(app, ["generate", model, str(population), "--at", "2015-01-01", "--horizon", "6m",
                                 "--samples", "2", "--out", str(tmp_path / "g")])
    assert result.exit_code == 0, result.output
    futures = pl.read_parquet(tmp_path / "g" / "futures.parquet")
    assert futures["time"].min() >= datetime(2015, 1, 1)
    assert set(futures["sample"].unique()) <= {0, 1}

    result = runner.invoke(app, ["evaluate", model, str(population), "--out", str(tmp_path / "e"),
                                 "--horizon", "5y"])
    assert result.exit_code == 0, result.output
    evaluation = json.loads((tmp_path / "e" / "evaluation.json").read_text())
    assert {"model", "floor", "supervised", "oracle"} <= {r["predictor"] for r in evaluation["landmark"]}
    assert "headroom_auroc_5y" in evaluation["summary"]
    assert "top10" in evaluation["next_event"]
    assert "AUROC by outcome" in (tmp_path / "e" / "report.html").read_text()

    external = simulate_dataset(tmp_path / "external", 3_000, seed=9, workers=1, progress=False)
    result = runner.invoke(app, ["evaluate", model, str(population), "--test", str(external),
                                 "--out", str(tmp_path / "x"), "--horizon", "5y"])
    assert result.exit_code == 0, result.output
    evaluation = json.loads((tmp_path / "x" / "evaluation.json").read_text())
    assert evaluation["test_dataset"] == str(external) and evaluation["people"] > 300


def test_a_dataset_in_another_vocabulary_is_refused(trained, tmp_path):
    out = tmp_path / "foreign"
    events = pa.table({"subject_id": pa.array([1, 1], pa.int64()),
                       "time": pa.array([10**15, 2 * 10**15], pa.timestamp("us")),
                       "code": ["XYZ/1", "XYZ/2"], "numeric_value": pa.array([None, None], pa.float32())})
    subjects = pa.table({"subject_id": pa.array([1], pa.int64()), "sex": ["F"], "year_month_of_birth": ["1950-01"],
                         "ethnicity": ["White"], "imd_quintile": pa.array([3], pa.int8()), "region": ["London"],
                         "practice_id": ["E01001"], "site_id": ["ICB01"],
                         "registration_start": pa.array([0], pa.date32()), "registration_end": pa.array([20000], pa.date32()),
                         "end_reason": ["extract_end"], "national_opt_out": [False], "type1_opt_out": [False]})
    with DatasetWriter(out) as writer:
        writer.commit([writer.write_shard(0, events, subjects)], created_by="test", dataset_name="foreign")
    result = runner.invoke(app, ["forecast", str(trained[0]), str(out), "--at", "60", "--out", str(tmp_path / "f")])
    assert result.exit_code == 2
    assert "vocabulary does not know" in result.output and len(result.output.strip().splitlines()) == 1


def test_a_landmark_that_is_neither_age_nor_date_is_named(population, trained, tmp_path):
    result = runner.invoke(app, ["forecast", str(trained[0]), str(population), "--at", "sixty",
                                 "--out", str(tmp_path / "f")])
    assert result.exit_code == 2
    assert "--at 'sixty' is neither an age in years nor a date" in result.output


def test_a_corrupted_model_is_named(population, trained, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(trained[0], broken)
    (broken / "model.pt").write_bytes(b"\x00" * 100)
    result = runner.invoke(app, ["evaluate", str(broken), str(population), "--out", str(tmp_path / "e")])
    assert result.exit_code == 2
    assert "model.pt: corrupted checkpoint" in result.output and len(result.output.strip().splitlines()) == 1
