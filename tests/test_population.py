"""Population health view: groupings, bootstrap totals, inequality indices, disclosure control, end to end."""

import json

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from farr.cli import app
from farr.events.io import read_outcomes
from farr.forecast.landmark import labels, landmark, landmark_ages, outcome_lookup, outcomes_for, timelines_for
from farr.forecast.predict import forecast
from farr.forecast.risk import _Requests, analytic_risk, not_at_risk, outcome_rates, rides_along
from farr.model.tokenizer import DAYS_PER_YEAR
from farr.model.train import TrainConfig, load_model, train
from farr.population import oracle as oracle_module
from farr.population import view as view_module
from farr.population import calibration, planning
from farr.population.calibration import band_factors, calendar_shifts, calibrated, halfway
from farr.population.backtest import KEYS, MIN_CASES, Z90, corrected, drift, evidence, model_error, unrecorded
from farr.population.groups import AGE_BANDS, GROUPINGS, age_band, parse_groupings
from farr.population.inequality import ridits, slope_indices
from farr.population.oracle import MIN_DRAWS, draws_for
from farr.population.report import impossible_cells
from farr.population.rates import bootstrap_totals
from farr.population.strata import STRATUM, standardised, stratum_corrections, stratum_scaled
from farr.population.view import (PHASES, PopulationConfig, _backtest_cohort, backtest_queries, backtest_sample,
                                  calendar_smoothed, check_horizons, landmark_cohort, population_view,
                                  validation_summary)
from farr.simulate.simulator import simulate_dataset

runner = CliRunner()
SMALL = dict(replicates=30, oracle_draws=4, planning_people=60)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """(model directory, dataset): 400 simulated people and a tiny model trained for a few steps."""
    root = tmp_path_factory.mktemp("population")
    dataset = simulate_dataset(root / "data", 400, seed=11, workers=1, progress=False)
    cfg = TrainConfig(preset="tiny", max_steps=6, batch_size=8, eval_every=3, checkpoint_every=3, warmup_steps=1,
                      min_count=1)
    train(dataset, root / "model", cfg, progress=False)
    return root / "model", dataset


@given(st.lists(st.sampled_from(list(GROUPINGS)), min_size=1, max_size=5, unique=True))
def test_known_groupings_parse_in_order(names):
    assert parse_groupings(",".join(names)) == names


@pytest.mark.parametrize("bad, message", [("region,postcode", "unknown grouping 'postcode'"),
                                          ("", "names no grouping"), ("sex,sex", "twice")])
def test_bad_groupings_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_groupings(bad)


def test_age_bands_start_at_their_lower_edges():
    bands = age_band(np.array([0.0, 17.99, 18.0, 64.5, 65.0, 84.9, 85.0, 101.0]))
    assert list(bands) == ["0-17", "0-17", "18-29", "45-64", "65-74", "75-84", "85+", "85+"]
    assert len(set(age_band(np.arange(0, 110, 0.5)))) == len(AGE_BANDS)


@given(st.floats(1.0, 1000.0), st.floats(-0.9, 5.0),
       st.lists(st.floats(0.05, 1.0), min_size=5, max_size=5))
def test_a_linear_gradient_gives_its_slope_and_ratio(intercept, relative, shares):
    shares = np.array(shares)
    slope = intercept * relative
    rates = intercept + slope * ridits(shares)
    sii, rii = slope_indices(rates, shares)
    assert sii == pytest.approx(slope, rel=1e-6, abs=1e-6)
    assert rii == pytest.approx((intercept + slope) / intercept, rel=1e-6)


def test_ridits_are_midpoints_of_cumulative_shares():
    assert ridits(np.array([1.0, 1.0, 2.0])) == pytest.approx([0.125, 0.375, 0.75])


def test_bootstrap_totals_sum_groups_and_resample_around_them():
    rng = np.random.default_rng(0)
    values = rng.random((5000, 3))
    labels = rng.choice(np.array(["a", "b", "c"]), 5000)
    sums = bootstrap_totals({"g": labels}, values, replicates=400, seed=1)["g"]
    assert list(sums.names) == ["a", "b", "c"]
    for g, name in enumerate(sums.names):
        assert sums.people[g] == (labels == name).sum()
        assert sums.totals[g] == pytest.approx(values[labels == name].sum(axis=0), rel=1e-5)
    mean = sums.replicates / sums.replicate_people[..., None]
    assert mean.mean(axis=0) == pytest.approx(sums.totals / sums.people[:, None], rel=0.01)
    # the spread of a resampled mean is the standard error of the mean
    assert mean.std(axis=0)[0, 0] == pytest.approx(values[labels == "a", 0].std() / np.sqrt(sums.people[0]), rel=0.2)


def _backtest(observed: list[int], expected: list[float]) -> pl.DataFrame:
    """One outcome and horizon: the whole population and one group per entry."""
    return pl.DataFrame({"grouping": ["all"] + ["region"] * len(observed),
                         "group": ["all"] + [f"g{i}" for i in range(len(observed))], "outcome": "x",
                         "horizon_years": 1.0, "observed_cases": [sum(observed), *observed],
                         "model_cases_followed": [float(sum(expected)), *map(float, expected)]})


def _noise(observed: list[int], expected: list[float]) -> list[float]:
    """The Poisson variance of each group's log(O/E) in `_backtest`, 1 / its cases expected at the
    overall O/E, and then the whole population's."""
    overall = (sum(observed) + 0.5) / (sum(expected) + 0.5)
    return [1 / ((e + 0.5) * overall) for e in expected] + [1 / (sum(observed) + 0.5)]


def _corrections(error: pl.DataFrame) -> dict[str, tuple[float, float]]:
    return {g: (float(np.exp(c)), v) for g, c, v in error.select("group", "log_correction", "error_variance").rows()}


def test_a_model_that_erred_alike_in_every_group_is_corrected_alike():
    error, overall = model_error(_backtest([2000] * 4, [1000] * 4))
    for factor, variance in _corrections(error).values():
        assert factor == pytest.approx(2.0, rel=1e-3) and variance == pytest.approx(1 / 8000.5)
    assert overall["tau2"].item() == pytest.approx(1 / 8000.5)  # no spread between groups: only the ratio's noise


def test_groups_that_erred_apart_keep_most_of_their_own_correction_and_a_wider_interval():
    observed, expected = [500, 1000, 2000, 4000, 4], [1000] * 4 + [4]
    error, _ = model_error(_backtest(observed, expected))
    got = _corrections(error)
    for group, truth in (("g0", 0.5), ("g1", 1.0), ("g2", 2.0), ("g3", 4.0)):
        assert got[group][0] == pytest.approx(truth, rel=0.05)
        assert got[group][1] > got["all"][1]
    assert 1 / _noise(observed, expected)[4] < MIN_CASES  # g4 expects too few at the overall O/E for its own
    assert got["g4"][0] == pytest.approx(got["all"][0])


def test_a_group_with_no_cases_where_the_model_expected_many_is_corrected_to_about_half_a_case():
    # a cancer of one sex: the model expected 250 cases in women and none were recorded
    error, _ = model_error(_backtest([0, 3000], [250, 3000]))
    factor, _ = _corrections(error)["g0"]
    assert 250 * factor == pytest.approx(0.5, rel=0.05)  # log((0 + ½) / (250 + ½)), kept whole


def test_each_grouping_is_shrunk_by_its_own_spread():
    """Age bands that erred apart keep most of their own corrections; regions that erred alike (within
    their noise) get the overall one. One spread over both groupings kept 37% of the small band's
    well-measured error (half the cases of 200 expected) and some of the regions' noise."""
    regions = _backtest([4950, 5000, 4975, 4975], [5000] * 4)  # with everyone: 19,900 cases of 20,000
    bands = (_backtest([100, 6400, 6800, 6600], [200, 6600, 6600, 6600]).filter(pl.col("grouping") != "all")
             .with_columns(pl.lit("age_band").alias("grouping"), ("age " + pl.col("group")).alias("group")))
    got = _corrections(model_error(pl.concat([regions, bands]))[0])
    for region in ("g0", "g1", "g2", "g3"):  # their interval still counts the error pooled over both groupings
        assert got[region][0] == pytest.approx(got["all"][0]) and got[region][1] > got["all"][1]
    kept = np.log(got["age g0"][0] / got["all"][0]) / np.log((100.5 / 200.5) / got["all"][0])
    assert kept > 0.55  # 0.61


def test_groups_expected_to_have_as_many_cases_are_shrunk_alike_whether_they_had_fewer_or_more():
    """With 1/O as the variance, the group that fell short of the model's 1,000 cases would look
    noisier than the one that exceeded them, and keep less of its own correction."""
    error, _ = model_error(_backtest([500, 2000, 1000, 1000], [1000] * 4))
    mu = np.log(4500.5 / 4000.5)
    got = _corrections(error)
    kept = {group: (np.log(got[group][0]) - mu) / (np.log((observed + 0.5) / 1000.5) - mu)
            for group, observed in (("g0", 500), ("g1", 2000))}
    assert 0.5 < kept["g0"] < 1 and kept["g0"] == pytest.approx(kept["g1"])


def test_drift_is_how_far_errors_moved_beyond_noise_and_it_widens_every_interval():
    recent, steady = _backtest([2000, 1000, 500], [1000] * 3), _backtest([2000, 1000, 500], [1000] * 3)
    moved = _backtest([1000, 1000, 1000], [1000] * 3)  # the older backtest found no error at all
    assert drift(recent, steady)["drift"].item() == 0.0  # identical errors: the noise alone, clipped at 0
    expected = np.mean([np.log(2000.5 / 1000.5) ** 2, 0.0, np.log(1000.5 / 500.5) ** 2, np.log(3500.5 / 3000.5) ** 2])
    noise = np.mean(np.add(_noise([2000, 1000, 500], [1000] * 3), _noise([1000] * 3, [1000] * 3)))
    assert drift(recent, moved)["drift"].item() == pytest.approx(expected - noise, rel=1e-6)
    without, overall = model_error(recent)
    within, wider = model_error(recent, drift(recent, moved))
    assert (within["error_variance"] - without["error_variance"]).to_numpy() == pytest.approx(expected - noise)
    assert wider["tau2"].item() == pytest.approx(overall["tau2"].item() + expected - noise)


def test_an_older_backtest_adds_its_evidence_as_far_as_the_drift_since_allows():
    recent, older = _backtest([2000, 1000, 500], [1000] * 3), _backtest([2000, 1000, 500], [1000] * 3)
    alone, _ = model_error(recent)
    steady = pl.DataFrame({"outcome": ["x"], "horizon_years": [1.0], "drift": [0.0]})
    pooled, _ = model_error(recent, steady, older)  # the same errors, and no drift: twice the evidence
    assert pooled["log_correction"].to_numpy() == pytest.approx(alone["log_correction"].to_numpy(), abs=0.01)
    assert pooled.filter(pl.col("group") == "all")["error_variance"].item() == pytest.approx(
        alone.filter(pl.col("group") == "all")["error_variance"].item() / 2)
    moved = _backtest([1000, 1000, 1000], [1000] * 3)  # the older backtest found no error at all
    for drifted, weight in ((0.0, 3500.5 / (3500.5 + 3000.5)), (1e6, 1.0)):  # inverse variances: 1 / (O + 0.5)
        mixed, _ = model_error(recent, steady.with_columns(drift=pl.lit(drifted)), moved)
        everyone = mixed.filter(pl.col("group") == "all")["log_correction"].item()
        assert everyone == pytest.approx(weight * np.log(3500.5 / 3000.5), rel=1e-3)


def test_an_outcome_whose_own_drift_is_lost_in_noise_takes_the_drift_pooled_over_outcomes():
    both = lambda x, y: pl.concat([x, y.with_columns(outcome=pl.lit("y"))])  # noqa: E731
    recent = both(_backtest([2000, 1000, 500], [1000] * 3), _backtest([2000, 1000, 500], [1000] * 3))
    older = both(_backtest([1000, 1000, 1000], [1000] * 3), _backtest([2000, 1000, 500], [1000] * 3))
    moved = [np.log(3500.5 / 3000.5) ** 2, np.log(2000.5 / 1000.5) ** 2, 0.0, np.log(1000.5 / 500.5) ** 2]
    noise_x = np.add(_noise([2000, 1000, 500], [1000] * 3), _noise([1000] * 3, [1000] * 3))
    noise_y = 2 * np.array(_noise([2000, 1000, 500], [1000] * 3))  # y's errors did not move: its own drift is 0
    got = dict(drift(recent, older).select("outcome", "drift").rows())
    assert got["x"] == pytest.approx(np.mean(moved) - np.mean(noise_x), rel=1e-6)
    assert got["y"] == pytest.approx((sum(moved) - sum(noise_x) - sum(noise_y)) / 8, rel=1e-6)
    assert 0 < got["y"] < got["x"]


def test_a_move_hidden_in_small_groups_noise_is_seen_in_the_overall_rate():
    """Every group's 20 cases became 25: within a group that is less than its noise, but the
    whole population's 60 becoming 75 is not, and every group shares that move."""
    recent, older = _backtest([25] * 3, [20] * 3), _backtest([20] * 3, [20] * 3)
    overall = np.log(75.5 / 60.5) ** 2 - 1 / 75.5 - 1 / 60.5
    assert np.log(25.5 / 20.5) ** 2 < 1 / 25.5 + 1 / 20.5 and overall > 0
    assert drift(recent, older)["drift"].item() == pytest.approx(overall, rel=1e-6)


def test_a_horizon_borrows_another_ones_errors_but_keeps_its_own_variance():
    short = _backtest([500, 1000, 2000], [1000] * 3)
    alike = evidence(_backtest([2500, 5000, 10000], [5000] * 3).with_columns(horizon_years=pl.lit(5.0)))
    flat = evidence(_backtest([5000] * 3, [5000] * 3).with_columns(horizon_years=pl.lit(5.0)))
    own, _ = model_error(short)
    same, _ = model_error(short, other=alike)  # the same errors on five times the cases
    pulled, _ = model_error(short, other=flat)  # no error there, far beyond noise: this one's are pulled in a little
    assert same["error_variance"].to_numpy() == pytest.approx(own["error_variance"].to_numpy())
    assert same["log_correction"].to_numpy() == pytest.approx(own["log_correction"].to_numpy(), abs=0.01)
    for group in ("g0", "g2"):
        mine, there = (t.filter(pl.col("group") == group)["log_correction"].item() for t in (own, pulled))
        assert abs(there) < abs(mine) and there * mine > 0


def test_an_error_within_a_short_horizons_noise_is_read_from_a_longer_ones_cases():
    """A 1-year backtest's 75 cases against 60 expected is within its noise of the 5-year backtest's
    finding that the model was right on 1,500 cases: its correction moves most of the way to none."""
    short = _backtest([25] * 3, [20] * 3)
    right = evidence(_backtest([500] * 3, [500] * 3).with_columns(horizon_years=pl.lit(5.0)))
    own, _ = model_error(short)
    borrowed, _ = model_error(short, other=right)
    mine, there = (t.filter(pl.col("group") == "all")["log_correction"].item() for t in (own, borrowed))
    assert mine == pytest.approx(np.log(75.5 / 60.5)) and 0 < there < 0.75 * mine
    assert borrowed["error_variance"].to_numpy() == pytest.approx(own["error_variance"].to_numpy())


def test_each_horizons_backtest_borrows_the_longest_other_ones_evidence(monkeypatch):
    backtests = {years: (_backtest([20, 30], [20.0, 20.0]).with_columns(horizon_years=pl.lit(years)),)
                 for years in (5.0, 2.0, 1.0)}
    borrowed = {}

    def recorded(backtest, *rest, other=None):
        borrowed[backtest["horizon_years"][0]] = other["horizon_years"].max()
        return model_error(backtest, *rest, other=other)

    monkeypatch.setattr(view_module, "model_error", recorded)
    view_module.backtest_error(backtests)
    assert borrowed == {5.0: 2.0, 2.0: 5.0, 1.0: 5.0}


def test_an_outcome_the_backtest_never_saw_recorded_is_left_uncorrected():
    never = _backtest([0, 0, 0], [20.0] * 3)  # the model expected 60 cases; none were recorded then
    rare = _backtest([0, 0], [1.0, 2.0])  # 3 expected: no cases is within chance
    assert unrecorded(never).rows() == [("x", 1.0)] and unrecorded(rare).is_empty()
    error, overall = model_error(never)
    assert error.is_empty() and overall.is_empty()
    table = pl.DataFrame({"grouping": ["all"], "group": ["all"], "outcome": "x", "horizon_years": 1.0,
                          "expected_cases": 60.0, "rate_per_100k": 100.0, "ci_lower_per_100k": 90.0,
                          "ci_upper_per_100k": 110.0, "pi_lower_per_100k": 80.0, "pi_upper_per_100k": 120.0})
    assert corrected(table, error, overall).row(0, named=True)["rate_per_100k"] == 100.0


def test_an_outcome_the_backtest_could_not_measure_gets_the_typical_error_of_those_it_did():
    table = pl.DataFrame({"grouping": "all", "group": "all", "outcome": ["new", "y"], "horizon_years": 1.0,
                          "expected_cases": 60.0, "rate_per_100k": 100.0, "ci_lower_per_100k": 90.0,
                          "ci_upper_per_100k": 110.0, "pi_lower_per_100k": 80.0, "pi_upper_per_100k": 120.0})
    error = pl.DataFrame({"grouping": "all", "group": "all", "outcome": "y", "horizon_years": 1.0,
                          "log_correction": np.log(1.5), "error_variance": 0.01})
    overall = pl.DataFrame({"outcome": ["y", "z"], "horizon_years": 1.0, "mu": [np.log(1.5), 0.0], "tau2": 0.04})
    new = corrected(table, error, overall).row(0, named=True)
    assert new["rate_per_100k"] == 100.0  # not corrected: its error was not measured
    typical = (np.log(1.5) ** 2 + 0.0 + 2 * 0.04) / 2
    half = np.sqrt(np.log(100 / 90) ** 2 + Z90 ** 2 * typical)
    assert new["ci_lower_per_100k"] == pytest.approx(100 * np.exp(-half))


def test_corrections_scale_rates_and_widen_both_intervals():
    table = pl.DataFrame({"grouping": ["all", "region"], "group": ["all", "new"], "outcome": "x", "horizon_years": 1.0,
                          "expected_cases": 50.0, "rate_per_100k": 100.0, "ci_lower_per_100k": 90.0,
                          "ci_upper_per_100k": 110.0, "pi_lower_per_100k": 80.0, "pi_upper_per_100k": 120.0})
    error = pl.DataFrame({"grouping": "all", "group": "all", "outcome": "x", "horizon_years": 1.0,
                          "log_correction": np.log(2.0), "error_variance": 0.01})
    overall = pl.DataFrame({"outcome": "x", "horizon_years": 1.0, "mu": np.log(3.0), "tau2": 0.04})
    out = corrected(table, error, overall)
    everyone, unseen = out.row(0, named=True), out.row(1, named=True)
    assert everyone["rate_per_100k"] == pytest.approx(200.0) and everyone["model_rate_per_100k"] == 100.0
    assert everyone["expected_cases"] == pytest.approx(100.0)
    half = np.sqrt(np.log(100 / 90) ** 2 + (Z90 * 0.1) ** 2)
    assert everyone["ci_lower_per_100k"] == pytest.approx(200 * np.exp(-half))
    assert unseen["rate_per_100k"] == pytest.approx(300.0)  # a group the backtest lacked: its outcome's correction
    assert unseen["pi_upper_per_100k"] / 300 > everyone["pi_upper_per_100k"] / 200


def _strata_error(rows: list[tuple[str, str, float, float]]) -> pl.DataFrame:
    """A `model_error` of the strata: (grouping, group, log correction, error variance) for outcome x at 1 year."""
    grouping, group, log_correction, variance = zip(*rows)
    return pl.DataFrame({"grouping": grouping, "group": group, "outcome": "x", "horizon_years": 1.0,
                         "log_correction": log_correction, "error_variance": variance})


def test_a_group_is_corrected_by_its_strata_in_proportion_to_its_expected_cases():
    # the model erred twice over in the old and not in the young; region A is three old people to one young
    error = _strata_error([("all", "all", 0.3, 0.001), (STRATUM, "old", np.log(2.0), 0.01),
                           (STRATUM, "young", 0.0, 0.04)])
    strata = np.array(["old", "old", "old", "young", "young", "young", "young", "old"])
    region = np.array(["A", "A", "A", "A", "B", "B", "B", "B"])
    index, log_correction, variance = stratum_corrections(error, strata, ["x"], [1.0])
    risk = np.full((8, 1, 1), 0.1, np.float32)
    assert stratum_scaled(risk, index, log_correction)[:, 0, 0] == pytest.approx([0.2] * 3 + [0.1] * 4 + [0.2])
    got = {g: (np.exp(c), v) for g, c, v in standardised({"region": region}, index, log_correction, variance, risk,
                                                         ["x"], [1.0]).select("group", "log_standard",
                                                                              "standard_variance").rows()}
    assert got["A"][0] == pytest.approx(7 / 4) and got["B"][0] == pytest.approx(5 / 4)
    assert got["A"][1] == pytest.approx((6 / 7) ** 2 * 0.01 + (1 / 7) ** 2 * 0.04)  # the shares of corrected cases
    high = standardised({"g": np.array(["a"])}, np.array([0]), np.log([[[2.0]]]), np.zeros((1, 1, 1)),
                        np.full((1, 1, 1), 0.8, np.float32), ["x"], [1.0])
    assert np.exp(high["log_standard"].item()) == pytest.approx(1 / 0.8)  # a risk corrected past 1 is 1


def test_a_stratum_the_backtest_lacked_takes_everyones_correction_and_an_outcome_it_never_measured_none():
    error = _strata_error([("all", "all", 0.3, 0.001), (STRATUM, "old", 0.7, 0.01)])
    index, log_correction, variance = stratum_corrections(error, np.array(["old", "new"]), ["x", "unmeasured"], [1.0])
    by_person = log_correction[index]
    assert by_person[:, 0, 0] == pytest.approx([0.7, 0.3]) and by_person[:, 1, 0] == pytest.approx([0.0, 0.0])
    assert variance[index][:, 0, 0] == pytest.approx([0.01, 0.001]) and (variance[index][:, 1] == 0).all()


@given(st.floats(-3, 3), st.floats(0, 1), st.lists(st.tuples(st.sampled_from("ab"), st.sampled_from("pq"),
                                                              st.floats(0, 1)), min_size=1, max_size=20))
def test_one_correction_in_every_stratum_corrects_every_group_by_it(log_correction, variance, people):
    strata, groups, shares = (np.array(column) for column in zip(*people))
    risks = (shares * min(1.0, np.exp(-log_correction))).astype(np.float32)  # none corrected past 1; the view's dtype
    error = _strata_error([("all", "all", log_correction, variance)]
                          + [(STRATUM, s, log_correction, variance) for s in "ab"])
    index, logs, variances = stratum_corrections(error, strata, ["x"], [1.0])
    out = standardised({"g": groups}, index, logs, variances, risks.reshape(-1, 1, 1), ["x"], [1.0])
    expecting = out.join(pl.DataFrame({"group": groups, "risk": risks}).group_by("group").agg(pl.col("risk").sum()),
                         on="group").filter(pl.col("risk") > 0)
    assert expecting["log_standard"].to_numpy() == pytest.approx(log_correction)
    assert (expecting["standard_variance"].to_numpy() <= variance + 1e-12).all()
    idle = out.join(expecting, on="group", how="anti")  # a group expecting no case has nothing to correct
    assert (idle["log_standard"] == 0).all() and (idle["standard_variance"] == 0).all()


def test_a_groups_strata_correction_comes_before_its_own_and_widens_its_interval():
    table = pl.DataFrame({"grouping": "region", "group": "A", "outcome": "x", "horizon_years": 1.0,
                          "expected_cases": 50.0, "rate_per_100k": 100.0, "ci_lower_per_100k": 90.0,
                          "ci_upper_per_100k": 110.0, "pi_lower_per_100k": 80.0, "pi_upper_per_100k": 120.0})
    error = pl.DataFrame({"grouping": "region", "group": "A", "outcome": "x", "horizon_years": 1.0,
                          "log_correction": np.log(1.2), "error_variance": 0.01})
    overall = pl.DataFrame({"outcome": "x", "horizon_years": 1.0, "mu": 0.0, "tau2": 0.01})
    by_strata = table.select(*KEYS, log_standard=pl.lit(np.log(1.5)), standard_variance=pl.lit(0.03))
    alone, both = corrected(table, error, overall).row(0, named=True), corrected(table, error, overall,
                                                                                by_strata).row(0, named=True)
    assert alone["rate_per_100k"] == pytest.approx(120.0) and both["rate_per_100k"] == pytest.approx(180.0)
    half = np.sqrt(np.log(100 / 90) ** 2 + Z90 ** 2 * 0.04)
    assert both["ci_lower_per_100k"] == pytest.approx(180 * np.exp(-half))


@given(st.lists(st.tuples(st.integers(0, 5000), st.floats(0.5, 5000.0)), min_size=1, max_size=12))
def test_backtest_corrections_are_finite_and_their_variances_positive(cells):
    error, overall = model_error(_backtest([o for o, _ in cells], [e for _, e in cells]))
    assert np.isfinite(error["log_correction"].to_numpy()).all()
    assert (error["error_variance"].to_numpy() > 0).all() and np.isfinite(error["error_variance"].to_numpy()).all()
    assert (overall["tau2"].to_numpy() > 0).all()


def test_a_horizon_beyond_the_training_window_is_refused(small):
    model, _ = small
    with pytest.raises(ValueError, match="beyond the model's training window"):
        check_horizons(model, [1.0, 40.0])


@pytest.fixture(scope="module")
def view(small):
    model, dataset = small
    return population_view(model, dataset, PopulationConfig(at="2018-01-01", horizons=(1.0, 5.0), samples=0,
                                                            **SMALL))


def test_released_counts_are_safe_and_rates_need_their_counts(view):
    rates = view["group_rates"]
    for column in ("people", "at_risk", "expected_cases", "observed_cases", "followed"):
        released = rates[column].drop_nulls().to_numpy()
        assert not ((released > 0) & (released <= 7)).any(), column
        assert (released % 5 == 0).all(), column
    hidden = rates.filter(pl.col("expected_cases").is_null() | pl.col("people").is_null())
    assert hidden["rate_per_100k"].is_null().all() and hidden["pi_upper_per_100k"].is_null().all()
    assert (hidden["sdc"] != "released").all()
    shown = rates.filter(pl.col("rate_per_100k").is_not_null())
    assert shown.height and (shown["sdc"] == "released").all() and shown["model_rate_per_100k"].is_not_null().all()
    assert ((shown["ci_lower_per_100k"] <= shown["rate_per_100k"] * 1.01)
            & (shown["rate_per_100k"] <= shown["ci_upper_per_100k"] * 1.01)).all()
    assert (shown["pi_upper_per_100k"] - shown["pi_lower_per_100k"]
            >= shown["ci_upper_per_100k"] - shown["ci_lower_per_100k"] - 1e-9).all()


def test_observed_rates_sit_beside_the_model_where_follow_up_exists(view):
    rates = view["group_rates"].filter(pl.col("observed_per_100k").is_not_null())
    assert rates.height
    assert (rates["followed"] <= rates["at_risk"] + 5).all()  # both rounded to 5
    modelled = rates.filter(pl.col("model_cases_followed").is_not_null())
    assert modelled.height and modelled["model_per_100k_followed"].is_not_null().all()


def test_every_grouping_partitions_the_landmark_population(view):
    people = view["group_rates"].filter(pl.col("outcome") == view["outcomes"][0], pl.col("horizon_years") == 1.0)
    total = people.filter(pl.col("grouping") == "all")["people"].item()
    assert total == view["people"]
    for grouping in GROUPINGS:
        part = people.filter(pl.col("grouping") == grouping)["people"]
        if part.null_count() == 0:  # rounding moves each cell by at most 2.5
            assert abs(part.sum() - total) <= 2.5 * (part.len() + 1)


def test_group_rates_match_the_per_person_forecast(small, tmp_path):
    """Unscaled, the whole population's rate is the mean analytic risk, over people at risk, from
    `farr forecast`."""
    model, dataset = small
    result = population_view(model, dataset, PopulationConfig(at="2018-01-01", horizons=(1.0,), samples=0,
                                                              sdc="minimum10", groupings=("sex",), backtest=False,
                                                              calendar_people=0, **SMALL))
    risks = pl.read_parquet(forecast(model, dataset, "2018-01-01", [1.0], tmp_path))
    expected = risks.group_by("outcome").agg((pl.col("risk").fill_nan(None).mean() * 1e5).alias("mean"))
    got = result["group_rates"].filter(pl.col("grouping") == "all").join(expected, on="outcome")
    assert got.height == len(result["outcomes"])
    assert abs(got["people"][0] - risks["subject_id"].n_unique()) <= 5  # rounded to 5 at most
    assert got["rate_per_100k"].to_numpy() == pytest.approx(got["mean"].to_numpy(), rel=0.006)


def test_inequality_validation_and_ranking_are_reported(view):
    inequality = view["inequality"]
    assert set(inequality["measure"]) >= {"sii_per_100k", "rii", "rate_ratio_imd1_vs_imd5"}
    assert (inequality.filter(pl.col("value").is_null())["sdc"] != "released").all()
    assert view["validation"]["all_groups"]["cells"] > 0
    assert 0.0 <= view["validation"]["all_groups"]["coverage_90pct_pi"] <= 1.0
    top = view["highest_risk"]
    assert top.height and (top["grouping"] != "all").all()
    for _, part in top.group_by("outcome", "horizon_years"):
        assert part.sort("rank")["rate_per_100k"].is_sorted(descending=True)


def test_validation_splits_the_error_into_level_and_pattern_and_counts_impossible_cells_apart():
    # outcome a: every rate 1.3 times the oracle's (the level is off, the pattern right);
    # outcome b: the level right, one group 1.5 times the oracle's;
    # outcome c: one sex's (oracle 0), where the model expects 6 cases in men and 0.4 in women
    cells = [("all", "all", "a", 130.0, 100.0), ("sex", "F", "a", 260.0, 200.0), ("sex", "M", "a", 65.0, 50.0),
             ("all", "all", "b", 100.0, 100.0), ("sex", "F", "b", 150.0, 100.0), ("sex", "M", "b", 100.0, 100.0),
             ("all", "all", "c", 16.0, 15.0), ("sex", "F", "c", 2.0, 0.0), ("sex", "M", "c", 30.0, 0.0)]
    table = pl.DataFrame(cells, schema=["grouping", "group", "outcome", "rate_per_100k", "oracle_per_100k"],
                         orient="row").with_columns(
        pl.lit(5.0).alias("horizon_years"), pl.lit(20_000).alias("people"),
        (pl.col("rate_per_100k") * 20_000 / 100_000).alias("expected_cases"),
        *(pl.col("rate_per_100k").mul(side).alias(f"{i}_{end}_per_100k")
          for i in ("ci", "pi") for end, side in (("lower", 0.9), ("upper", 1.1))))
    summary = validation_summary(table)
    large = summary["large_groups"]
    assert large["share_within_10pct"] == pytest.approx(3 / 7)
    assert large["share_within_10pct_relative"] == pytest.approx(3 / 4)  # the "all" rows are no groups here
    assert summary["outcomes"] == {"cells": 3, "share_within_10pct": pytest.approx(2 / 3)}
    assert large["oracle_zero"] == {"cells": 2, "model_expects_a_case": 1, "where": [
        {"outcome": "c", "horizon_years": 5.0, "groups": 1, "highest_rate_per_100k": 30.0}]}
    assert impossible_cells(large["oracle_zero"]).endswith(
        "in 1 of them: c at 5 years (1 of its groups, up to 30.0 per 100,000).")
    worse = {"outcome": "d", "horizon_years": 1.0, "groups": 2, "highest_rate_per_100k": 1234.5}
    assert "them: d at 1 year (2 of its groups, up to 1,234.5 per 100,000); c at 5 years" in impossible_cells(
        large["oracle_zero"] | {"where": [*large["oracle_zero"]["where"], worse]})


def test_the_view_times_each_phase(view):
    assert list(view["seconds"]) == list(PHASES)
    assert all(seconds >= 0 for seconds in view["seconds"].values())


@given(st.lists(st.booleans(), min_size=1, max_size=300), st.integers(1, 100), st.integers(0, 3))
def test_a_backtest_sample_keeps_who_rides_along_and_weights_up_a_draw_of_the_rest(rides, cap, seed):
    rides = np.array(rides)
    rows, weight = backtest_sample(rides, cap, seed)
    alone = (~rides).sum()
    assert np.all(np.diff(rows) > 0) and np.isin(np.flatnonzero(rides), rows).all()
    assert (~rides[rows]).sum() == min(cap, alone)
    assert weight[rides[rows]] == pytest.approx(1.0)
    assert weight.sum() == pytest.approx(len(rides))  # the weighted sample counts everyone
    again, _ = backtest_sample(rides, cap, seed)
    assert np.array_equal(rows, again)


@pytest.fixture(scope="module")
def small_read(small):
    """(model, timelines, outcomes) of `small`."""
    model, dataset = small
    net, tokenizer = load_model(model)
    return net, timelines_for(tokenizer, dataset), outcomes_for(tokenizer, read_outcomes(dataset))


def test_a_backtest_draws_only_among_people_who_cannot_ride_along(small_read):
    net, timelines, outcomes = small_read
    mark = landmark(timelines, landmark_ages(timelines, "2019-01-01"), outcomes)
    ages = landmark_ages(timelines, "2017-01-01")
    whole = landmark(timelines, ages, outcomes)
    rides = rides_along(timelines, mark, net.cfg.block_size, backtest_queries([1.0, 5.0]))
    assert 0 < rides[whole.people].sum() < len(whole.people)
    cut, weight = _backtest_cohort(timelines, ages, outcomes, PopulationConfig(backtest_people=3), rides)
    assert (~rides[cut.people]).sum() == 3 and np.isin(cut.people, whole.people).all()
    assert weight.sum() == pytest.approx(len(whole.people))
    # whoever rides along is read in the view's own pass, after their history there
    requests = _Requests([(mark, 4), (cut, 4)])
    anchors, chains, _ = requests.nested(timelines, np.arange(len(requests.person)), net.cfg.block_size)
    assert set(requests.person[chains]) >= set(cut.people[rides[cut.people]])


def test_a_weighted_backtest_sums_weighted_cases_and_their_design_effect(small_read):
    _, timelines, outcomes = small_read
    mark = landmark(timelines, landmark_ages(timelines, "2015-01-01"), outcomes)
    groups = {"all": np.full(len(mark.people), "all")}
    risk = np.full((len(mark.people), len(outcomes), 1), 0.1)
    weight = np.where(np.arange(len(mark.people)) % 2, 3.0, 1.0)
    plain, weighted = (view_module.observed_table(groups, mark, outcomes, [5.0], risk, w) for w in (None, weight))
    event, usable = labels(mark, outcomes, 5.0)
    cases = (event & usable) * weight[:, None]
    assert weighted["observed_cases"].to_list() == pytest.approx(cases.sum(axis=0).tolist())
    assert weighted["model_cases_followed"].to_list() == pytest.approx((0.1 * usable * weight[:, None]).sum(axis=0))
    had = cases.sum(axis=0) > 0
    assert weighted["design_effect"].to_numpy()[had] == pytest.approx((cases * weight[:, None]).sum(axis=0)[had]
                                                                      / cases.sum(axis=0)[had])
    assert "design_effect" not in plain.columns and plain["observed_cases"].dtype == pl.Int64


def test_a_design_effect_widens_the_poisson_variance_it_multiplies():
    table = _backtest([200, 100], [100.0, 100.0])
    weighted = table.with_columns(pl.Series("design_effect", [2.0, 3.0, None]))
    plain, heavier = (evidence(t).sort("group")["v"].to_numpy() for t in (table, weighted))
    assert heavier == pytest.approx(plain * np.array([2.0, 3.0, 2.0]))  # a group without cases takes everyone's


@pytest.mark.parametrize("people, asked, drawn", [(66_000, 100, 100), (200_000, 100, 50), (1_000_000, 100, 10),
                                                  (10 ** 8, 100, MIN_DRAWS), (10 ** 8, 4, 4)])
def test_a_large_cohort_gets_fewer_oracle_draws_a_person(people, asked, drawn):
    assert draws_for(people, asked) == drawn


def test_a_view_notes_when_the_oracle_drew_fewer_futures_than_asked(small, monkeypatch):
    model, dataset = small
    monkeypatch.setattr(oracle_module, "PERSON_DRAWS", 1_000)
    monkeypatch.setattr(view_module, "PERSON_DRAWS", 1_000)
    cfg = PopulationConfig(at="2018-01-01", horizons=(1.0,), samples=0, groupings=("sex",), backtest=False,
                           **(SMALL | {"oracle_draws": 20}))
    notes = population_view(model, dataset, cfg)["config"]["notes"]
    assert any(n.startswith(f"the oracle simulated {MIN_DRAWS} futures a person, not 20") for n in notes)
    assert any(n.startswith("no sampled futures (--samples 0)") for n in notes)  # so the risks are not scaled


def test_analytic_rates_are_scaled_to_the_sampled_futures_in_each_age_band(small, monkeypatch):
    """When every person's futures are sampled, the analytic rates of each age band are scaled to
    what the same futures give as per-person risks (`--risks rollout`, same seed)."""
    model, dataset = small
    monkeypatch.setattr(calibration, "MIN_PEOPLE", 1)  # every band of this small cohort has its own factors
    common = dict(at="2018-01-01", horizons=(1.0, 2.0), samples=4, groupings=("age_band",), sdc="minimum10",
                  backtest=False, **(SMALL | {"planning_people": 10 ** 6}))
    rates = {kind: population_view(model, dataset, PopulationConfig(risks=kind, **common))["group_rates"]
             .sort("group", "outcome", "horizon_years") for kind in ("analytic", "rollout")}
    analytic, rollout = (rates[k]["rate_per_100k"].to_numpy().astype(float) for k in ("analytic", "rollout"))
    compared = rollout > 0
    assert compared.sum() > 20
    np.testing.assert_allclose(analytic[compared], rollout[compared], rtol=0.02)


def test_rollout_risks_sample_each_persons_futures_once_and_plan_from_all_of_them(small, monkeypatch):
    """`--risks rollout` draws everyone's futures once: they give both the risks and the planning
    projections, which then count every person, not a subsample sampled a second time."""
    model, dataset = small
    sampled, sample_futures = [], planning.sample_futures
    monkeypatch.setattr(planning, "sample_futures",
                        lambda model, timelines, mark, *a, **k: sampled.append(len(mark.people))
                        or sample_futures(model, timelines, mark, *a, **k))
    cfg = PopulationConfig(at="2018-01-01", horizons=(1.0,), samples=2, risks="rollout", groupings=("sex",),
                           sdc="minimum10", backtest=False, **SMALL)
    result = population_view(model, dataset, cfg)
    assert len(sampled) == 1 and sampled[0] > cfg.planning_people
    assert set(result["planning"]["people_sampled"]) == set(result["planning"]["people"])


def _landmark_year(timelines, mark) -> float:
    """The calendar year (with fraction) of a landmark cohort's date, read from its people."""
    days = timelines.birth_day[mark.people] + mark.age * DAYS_PER_YEAR
    return round(float(np.median(days)) / DAYS_PER_YEAR + 1970, 1)


def test_each_backtest_cohort_is_scaled_by_futures_sampled_at_its_own_landmark(small, monkeypatch):
    """The landmark's factors alone would cancel in the correction (above and below its ratio);
    each backtest cohort's futures are sampled at its own date, for its own horizons, and its
    factors (halfway to the landmark's) scale it."""
    model, dataset = small
    called, scaled, rollouts, scale = [], [], view_module.rollouts, view_module._scaled
    monkeypatch.setattr(view_module, "rollouts", lambda model, timelines, mark, outcomes, horizons, **k:
                        called.append((_landmark_year(timelines, mark), tuple(horizons), k["people"], k["draws"]))
                        or rollouts(model, timelines, mark, outcomes, horizons, **k))
    monkeypatch.setattr(view_module, "_scaled", lambda risk, mark, factors: scaled.append(factors["all"].shape)
                        or scale(risk, mark, factors))
    cfg = PopulationConfig(at="2018-01-01", horizons=(1.0, 2.0), samples=2, groupings=("sex",), sdc="minimum10",
                           backtest_futures_people=40, **SMALL)
    population_view(model, dataset, cfg)
    assert called[0] == (2018.0, (1.0, 2.0), cfg.planning_people, 2)
    assert [(2018.0 - year, *rest) for year, *rest in called[1:]] == [
        (2, (2.0,), 40, 1), (4, (2.0,), 40, 1), (1, (1.0,), 40, 1), (2, (1.0,), 40, 1)]
    outcomes = len(view_module.read_outcomes(dataset))
    assert scaled == [(outcomes, 2)] + [(outcomes, 1)] * 4  # the view's own risks, then each backtest cohort's


def test_halfway_factors_are_the_geometric_mean_of_each_bands_two_readings():
    landmark = {"all": np.array([[2.0]]), "40-59": np.array([[4.0]]), "80+": np.array([[0.5]])}
    own = {"all": np.array([[0.5]]), "40-59": np.array([[1.0]])}
    assert {band: float(factor[0, 0]) for band, factor in halfway(landmark, own).items()} == {
        "all": 1.0, "40-59": 2.0, "80+": 0.5}  # a band own lacks takes own's everyone's


def test_sampled_over_analytic_risk_scales_each_age_bands_risks():
    analytic = np.full((300 + 50, 2, 1), 0.1)
    sampled = analytic.copy()
    sampled[:300, 0] = 0.2  # outcome 0: twice the analytic risk among the 300 aged 30
    age = np.r_[np.full(300, 30.0), np.full(50, 70.0)]
    factors = band_factors(analytic, sampled, age)
    np.testing.assert_allclose(factors["30-44"][:, 0], [2.0, 1.0])
    np.testing.assert_allclose(factors["65-74"], factors["all"])  # too few sampled people for their own
    risk = calibrated(np.array([[[0.1], [0.1]]] * 3 + [[[0.7], [0.1]]], np.float32),
                      np.array([30.0, 70.0, 90.0, 30.0]), factors)
    np.testing.assert_allclose(risk[0, :, 0], [0.2, 0.1], rtol=1e-6)
    np.testing.assert_allclose(risk[1:3, 0, 0], 0.1 * factors["all"][0, 0], rtol=1e-6)  # unsampled band: all
    assert risk[3, 0, 0] == 1.0  # a risk, at most 1


@given(st.floats(1 / 12, 5.0), st.floats(0.0, 2 * np.pi), st.integers(1, 3))
def test_calendar_shifts_average_out_the_period_and_its_harmonics(period, phase, harmonic):
    shifts = calendar_shifts(period)
    np.testing.assert_allclose(shifts, -shifts[::-1])  # centred on the date
    assert np.abs(shifts).max() < period / 2
    assert abs(np.cos(2 * np.pi * harmonic * shifts / period + phase).mean()) < 1e-9


def test_calendar_smoothing_gives_each_age_band_its_risks_averaged_over_calendar_shifts(small, monkeypatch):
    """With everyone in the subsample, each age band's smoothed expected cases are the mean of its
    expected cases read with calendar time moved by each shift; without a subsample, none move."""
    model_dir, dataset = small
    monkeypatch.setattr(calibration, "MIN_PEOPLE", 1)  # every band of this small cohort has its own factors
    model, timelines, outcomes, _, mark = landmark_cohort(model_dir, dataset, "2018-01-01")
    horizons = (1.0, 2.0)
    ok = ~not_at_risk(mark, outcomes)[:, :, None]

    def risk(shift: float) -> np.ndarray:
        rates = outcome_rates(model, timelines.calendar_moved(shift), mark, outcomes, years_after=1)
        return np.where(ok, analytic_risk(rates, list(horizons)), 0.0)

    at_date = risk(0.0)
    averaged = np.mean([risk(s) for s in calendar_shifts(model.cfg.calendar_period)], axis=0)
    cfg = PopulationConfig(calendar_people=10 ** 6)
    (smoothed,) = calendar_smoothed(model, timelines, [(mark, horizons)], [at_date], outcomes, cfg)
    assert not np.array_equal(smoothed, at_date)
    bands = age_band(mark.age)
    for band in np.unique(bands):
        rows = bands == band
        np.testing.assert_allclose(smoothed[rows].sum(axis=0), averaged[rows].sum(axis=0), rtol=1e-4, atol=1e-6)
    off = PopulationConfig(calendar_people=0)
    assert calendar_smoothed(model, timelines, [(mark, horizons)], [at_date], outcomes, off)[0] is at_date
    assert off.notes[0].startswith("no calendar smoothing")


def test_without_follow_up_there_are_no_observed_rates(small):
    model, dataset = small
    result = population_view(model, dataset, PopulationConfig(horizons=(1.0,), samples=0, groupings=("sex",),
                                                              **SMALL))
    assert result["group_rates"]["observed_per_100k"].is_null().all()


def test_without_data_one_horizon_back_there_is_no_backtest_and_a_note_says_so(small):
    model, dataset = small
    result = population_view(model, dataset, PopulationConfig(at="2001-06-01", horizons=(5.0,), samples=0,
                                                              groupings=("sex",), **SMALL))
    assert "model_rate_per_100k" not in result["group_rates"].columns
    assert any(note.startswith("no backtest of the 5-year horizon") for note in result["config"]["notes"])


def test_each_horizon_is_backtested_from_the_latest_landmark_its_follow_up_allows(small):
    """Data from 2000 reach one year back from mid-2001, not five: the 1-year rates are corrected
    by a backtest a year earlier, and the 5-year rates stay the model's own, with a note."""
    model, dataset = small
    result = population_view(model, dataset, PopulationConfig(at="2001-06-01", horizons=(1.0, 5.0), samples=0,
                                                              groupings=("sex",), **SMALL))
    rates = result["group_rates"].drop_nulls("rate_per_100k")
    moved = rates.filter(pl.col("rate_per_100k") != pl.col("model_rate_per_100k"))
    assert set(moved["horizon_years"]) == {1.0}
    notes = result["config"]["notes"]
    assert any(n.startswith("no backtest of the 5-year horizon") for n in notes)
    assert not any("1-year horizon: nobody" in n and n.startswith("no backtest") for n in notes)


def test_recorded_planning_events_are_each_persons_events_counted_one_at_a_time(small):
    """`planning.recorded` (vectorised, in chunks) against each person's own timeline: admissions
    and A&E attendances in each year after the landmark, and first records of conditions new
    since it, among the people followed through that year (or to their death)."""
    model, dataset = small
    _, timelines, outcomes, _, mark = landmark_cohort(model, dataset, "2018-01-01")
    regions, years = np.array(["north", "south"])[np.arange(len(mark.people)) % 2], 3
    table = planning.recorded(timelines, mark, outcomes, regions, years, chunk=7)
    lookup, names = outcome_lookup(outcomes, int(timelines.tokens.max()) + 1), [o.name for o in outcomes]
    expected = {}
    for i, person in enumerate(mark.people):
        tokens, ages = timelines.of(person)
        which, since = lookup[tokens], ages - mark.age[i]
        firsts = [since[(which == k) & (since >= 0)].min(initial=np.inf) for k, o in enumerate(outcomes)
                  if not o.recurrent and o.name != "death" and not mark.had_before[i, k]]
        for year in range(years):
            if not (mark.follow_up[i] >= year + 1 or mark.died_after[i] <= year + 1):
                continue
            inside = (since >= year) & (since < year + 1)
            kinds = which[inside]
            for measure, count in (("emergency_admissions", (kinds == names.index("unplanned_admission")).sum()),
                                   ("ae_attendances", (kinds == names.index("ae_attendance")).sum()),
                                   ("new_diagnoses", sum(year <= first < year + 1 for first in firsts))):
                key = (regions[i], measure, year + 1)
                people, events = expected.get(key, (0, 0))
                expected[key] = (people + 1, events + int(count))
    got = {(r, m, y): (f, e) for r, m, y, f, e in table.drop_nulls().rows()}
    assert got == expected and sum(e for _, e in got.values()) > 0


def test_the_command_writes_report_tables_and_planning(small, tmp_path):
    model, dataset = small
    result = runner.invoke(app, ["population", str(model), str(dataset), "--by", "region,imd", "--horizon", "1y,2y",
                                 "--at", "2018-01-01", "--samples", "1", "--backtest-people", "150", "--bf16",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name in ("report.html", "group_rates.csv", "inequality.csv", "highest_risk.csv", "planning.csv"):
        assert (tmp_path / name).exists(), name
    summary = json.loads((tmp_path / "population.json").read_text())
    assert summary["config"]["backtest_people"] == 150 and summary["config"]["bf16"]
    assert list(summary["seconds"]) == list(PHASES)
    planning = pl.read_csv(tmp_path / "planning.csv")
    assert set(planning["year"]) == {1, 2}
    assert set(planning["measure"]) == {"emergency_admissions", "ae_attendances", "new_diagnoses"}
    released = planning["projected"].drop_nulls()
    assert ((released == 0) | (released > 7)).all()
    beside = planning.filter(pl.col("observed_scaled").is_not_null())  # follow-up reaches 2 years past 2018
    assert beside.height and (beside["followed"] > 7).all() and (beside["observed_scaled"] >= 0).all()


def test_a_model_read_with_itself_as_an_ensemble_gives_its_own_view(small, tmp_path):
    model, dataset = small
    for out, extra in ((tmp_path / "one", []), (tmp_path / "twice", ["--with-model", str(model)])):
        result = runner.invoke(app, ["population", str(model), str(dataset), "--by", "sex", "--horizon", "1y",
                                     "--at", "2018-01-01", "--samples", "1", "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "twice" / "population.json").read_text())["models"] == 2
    assert "an ensemble of 2 models" in (tmp_path / "twice" / "report.html").read_text()
    one, twice = (pl.read_csv(tmp_path / name / "group_rates.csv") for name in ("one", "twice"))
    assert one["rate_per_100k"].drop_nulls().len() > 0
    np.testing.assert_allclose(twice["rate_per_100k"].to_numpy(), one["rate_per_100k"].to_numpy(), rtol=1e-3)


@pytest.mark.parametrize("args, message", [(["--by", "postcode"], "unknown grouping"),
                                           (["--with-model", "no-such-model"], "no-such-model"),
                                           (["--horizon", "40y"], "training window"),
                                           (["--sdc", "lax"], "unknown SDC profile"),
                                           (["--risks", "rollout", "--samples", "0"], "--risks"),
                                           (["--backtest-people", "0"], "--backtest-people"),
                                           (["--calendar-people", "-1"], "--calendar-people"),
                                           (["--backtest-futures-people", "0"], "--backtest-futures-people")])
def test_bad_options_give_one_line_errors(small, tmp_path, args, message):
    model, dataset = small
    result = runner.invoke(app, ["population", str(model), str(dataset), "--out", str(tmp_path), *args])
    assert result.exit_code != 0
    assert message in result.output and len(result.output.strip().splitlines()) == 1
