"""The true model: serialisable, and shaped as its documentation says."""

import json

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from farr.simulate.calendar import from_datetime_us, to_datetime_us, to_days
from farr.simulate.engine import categorical
from farr.simulate.hazards import build_model, covid_log_multiplier, static_log_hazard


def test_model_round_trips_through_its_json():
    model = build_model()
    again = build_model(json.loads(model.to_json()))
    assert again.names == model.names
    for field in ("log_base", "chronic", "acute", "ethnicity", "frailty", "covid_log_calendar"):
        np.testing.assert_array_equal(getattr(again, field), getattr(model, field))


def test_sex_specific_cancers_and_mean_one_frailty():
    model = build_model()
    lp = static_log_hazard(model, np.array([True, False]), np.zeros(2, np.int8), np.full(2, 3, np.int8),
                           np.zeros(2))
    assert lp[0, model.index("breast_cancer")] == -np.inf and np.isfinite(lp[1, model.index("breast_cancer")])
    assert lp[1, model.index("prostate_cancer")] == -np.inf
    z = np.random.default_rng(0).standard_normal(400_000)
    k = model.index("type2_diabetes")
    multiplier = np.exp(z * model.frailty[k] - model.frailty[k] ** 2 / 2)
    assert abs(multiplier.mean() - 1) < 0.01


def test_covid_only_in_the_pandemic_years():
    model = build_model()
    assert covid_log_multiplier(model, np.array([2019.9]))[0] == -np.inf
    assert np.isfinite(covid_log_multiplier(model, np.array([2021.5]))[0])


@given(st.floats(min_value=1880, max_value=2100))
def test_calendar_conversions_agree(year):
    us = to_datetime_us(np.array([year]))
    assert abs(from_datetime_us(us)[0] - year) < 1 / (365 * 86_400) + 1e-9
    assert abs(to_days(np.array([year]))[0] - us[0] / 86_400e6) <= 1


@given(st.lists(st.floats(min_value=0.0, max_value=10.0), min_size=2, max_size=8))
def test_categorical_never_draws_a_zero_weight(weights):
    weights = np.array(weights)
    if weights.sum() == 0:
        return
    draws = categorical(np.random.default_rng(0), np.tile(weights, (500, 1)))
    assert (weights[draws] > 0).all()
