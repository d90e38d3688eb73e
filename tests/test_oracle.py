"""The oracle against the process it describes: its risks must match simulated incidence."""

import numpy as np
import pyarrow as pa
import pytest

from farr.simulate.calendar import DAYS_PER_YEAR
from farr.simulate.codes import DIAGNOSES
from farr.simulate.engine import simulate
from farr.simulate.hazards import build_model, static_log_hazard
from farr.simulate import oracle as oracle_module
from farr.simulate.oracle import Oracle

LANDMARK, HORIZON = 60.0, 5.0


@pytest.fixture(scope="module")
def cohort():
    """People followed from birth, uncensored, with their truth at the landmark."""
    model = build_model()
    rng = np.random.default_rng(11)
    n = 30_000
    male = rng.random(n) < 0.5
    ethnicity = rng.integers(0, 5, n).astype(np.int8)
    imd = rng.integers(1, 6, n).astype(np.int8)
    frailty = rng.standard_normal(n)
    birth_year = 1950 + rng.random(n) * 10
    lp = static_log_hazard(model, male, ethnicity, imd, frailty)
    window = (np.full(n, LANDMARK), np.full(n, LANDMARK + HORIZON))
    h = simulate(model, lp, birth_year, np.zeros(n), np.full(n, LANDMARK + HORIZON), rng, window=window)
    columns = {"male": male, "ethnicity": ethnicity, "imd_quintile": imd, "frailty": frailty,
               "birth_year": birth_year}
    columns |= {f"onset_{name}": h.onset[:, k] for k, name in enumerate(model.names)
                if not model.recurrent[k]}
    return model, pa.table(columns), h


def test_oracle_matches_simulated_incidence(cohort):
    model, truth, h = cohort
    oracle = Oracle(model)
    alive = np.flatnonzero(~(h.onset[:, model.death] <= LANDMARK))
    risks = oracle.risk(truth.take(alive), LANDMARK, [HORIZON], draws=50, seed=3)
    checked = 0
    for j, name in enumerate(risks.outcomes):
        k = model.index(name)
        p = risks.probability[:, j, 0]
        at_risk = ~np.isnan(p)
        if model.recurrent[k]:
            first = np.full(len(h.onset), np.inf)
            np.minimum.at(first, h.recurrent_person[h.recurrent_process == k],
                          h.recurrent_age[h.recurrent_process == k])
            observed = first[alive] <= LANDMARK + HORIZON
        else:
            observed = h.onset[alive, k] <= LANDMARK + HORIZON
        observed, p = observed[at_risk], p[at_risk]
        if observed.sum() < 100:
            continue
        se = np.sqrt(np.mean(p * (1 - p)) / len(p))
        assert abs(observed.mean() - p.mean()) < 4 * se + 0.002, name
        checked += 1
    assert checked >= 15


def test_oracle_discriminates_and_is_calibrated_by_decile(cohort):
    model, truth, h = cohort
    alive = np.flatnonzero(~(h.onset[:, model.death] <= LANDMARK))
    risks = Oracle(model).risk(truth.take(alive), LANDMARK, [HORIZON], draws=50, seed=4)
    j = risks.outcomes.index("death")
    p = risks.probability[:, j, 0]
    observed = h.onset[alive, model.death] <= LANDMARK + HORIZON
    deciles = np.array_split(np.argsort(p, kind="stable"), 10)
    predicted = np.array([p[d].mean() for d in deciles])
    seen = np.array([observed[d].mean() for d in deciles])
    assert np.all(np.diff(predicted) >= 0)
    assert np.corrcoef(predicted, seen)[0, 1] > 0.95
    assert seen[-1] > 3 * seen[0]


def test_oracle_answers_alike_in_one_process_or_several(cohort, monkeypatch):
    model, truth, _ = cohort
    monkeypatch.setattr(oracle_module, "ROWS_PER_BATCH", 4_000)  # 200 people a batch: 3 batches
    people = truth.slice(0, 600)
    one, two = (Oracle(model).risk(people, 40.0, [1.0, 5.0], draws=20, seed=5, workers=w).probability for w in (1, 2))
    assert one.shape == (600, len(Oracle(model).outcomes), 2)
    np.testing.assert_array_equal(one, two)


def test_oracle_knows_only_the_past_and_marks_those_not_at_risk(cohort):
    model, truth, h = cohort
    risks = Oracle(model).risk(truth.slice(0, 500), 30.0, [1.0, 10.0], draws=20)
    had_t2d = h.onset[:500, model.index("type2_diabetes")] <= 30.0
    j = risks.outcomes.index("type2_diabetes")
    assert np.isnan(risks.probability[had_t2d, j]).all()
    assert not np.isnan(risks.probability[~had_t2d & ~(h.onset[:500, model.death] <= 30), j]).any()
    longer = risks.probability[..., 1] >= risks.probability[..., 0]
    assert longer[~np.isnan(risks.probability[..., 0])].all()


def test_true_likelihood_integrates_the_engine_hazard(cohort):
    """The compensator: over many windows, the integrated true hazard equals the event count."""
    from farr.simulate.oracle import EXACTLY_RECORDED

    model, truth, h = cohort
    people = np.flatnonzero(~(h.onset[:, model.death] <= LANDMARK))[:6000]
    end = np.fmin(h.onset[people, model.death], LANDMARK + HORIZON)
    window = (np.full(len(people), LANDMARK), end)
    ae = model.index("ae_attendance")
    rows = np.flatnonzero((h.recurrent_process == ae) & np.isin(h.recurrent_person, people))
    where = {p: i for i, p in enumerate(people)}
    person = np.array([where[p] for p in h.recurrent_person[rows]])
    died = np.flatnonzero(h.onset[people, model.death] <= LANDMARK + HORIZON)
    oracle = Oracle(model)
    sub = truth.take(people)
    birth = sub["birth_year"].to_numpy()
    day = lambda p, age: (birth[p] + age - 1970) * DAYS_PER_YEAR  # noqa: E731
    everyone = np.arange(len(people))
    window = (day(everyone, window[0]), day(everyone, window[1]))
    events = len(rows) + len(died)
    nll = oracle.negative_log_likelihood(sub, window, np.r_[person, died],
                                         day(np.r_[person, died], np.r_[h.recurrent_age[rows], end[died]]),
                                         ["ae_attendance"] * len(rows) + ["death"] * len(died))
    integral = oracle.negative_log_likelihood(sub, window, np.zeros(0, int), np.zeros(0), [])
    assert abs(integral - events) < 4 * np.sqrt(events)
    assert EXACTLY_RECORDED == ("ae_attendance", "death")
    assert np.isfinite(nll) and nll > integral - 10 * events


def test_people_past_the_oldest_tabulated_age_are_simulated_to_the_end():
    """Ages past MAX_AGE keep its hazards; time must still move on (it once stalled at 111)."""
    import signal

    model = build_model()
    rng = np.random.default_rng(3)
    n = 200
    lp = static_log_hazard(model, np.zeros(n, bool), np.zeros(n, np.int8), np.full(n, 3, np.int8), np.full(n, -3.0))
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("the simulation did not finish"))
    signal.alarm(30)
    try:
        h = simulate(model, lp, np.full(n, 1910.0), np.full(n, 110.5), np.full(n, 112.5), rng)
    finally:
        signal.alarm(0)
    dead = ~np.isnan(h.onset[:, model.death])
    assert np.all(dead | (h.end_age == 112.5)) and dead.any()


def test_recorded_risk_in_old_age_counts_no_code_after_death():
    """A diagnosis is coded some time after onset, and only while the record lasts: at 80, many
    who develop dementia or heart failure die before it is coded. The oracle's recorded risk must
    match the observation layer's rule (a code at onset + delay, kept if before death)."""
    model, rng = build_model(), np.random.default_rng(5)
    n, landmark, horizon = 40_000, 80.0, 5.0
    male, ethnicity = rng.random(n) < 0.5, rng.integers(0, 5, n).astype(np.int8)
    imd, frailty, birth_year = rng.integers(1, 6, n).astype(np.int8), rng.standard_normal(n), 1930 + rng.random(n) * 5
    lp = static_log_hazard(model, male, ethnicity, imd, frailty)
    h = simulate(model, lp, birth_year, np.zeros(n), np.full(n, landmark + horizon), rng,
                 window=(np.full(n, landmark), np.full(n, landmark + horizon)))
    died = np.where(np.isnan(h.onset[:, model.death]), np.inf, h.onset[:, model.death])
    truth = pa.table({"male": male, "ethnicity": ethnicity, "imd_quintile": imd, "frailty": frailty,
                      "birth_year": birth_year} | {f"onset_{name}": h.onset[:, k] for k, name in
                                                   enumerate(model.names) if not model.recurrent[k]})
    for name in ("dementia", "heart_failure"):
        rec, onset = DIAGNOSES[name], h.onset[:, model.index(name)]
        delay = rng.standard_exponential(n) * rec.delay_years
        kept = (rng.random(n) < rec.recorded) & (onset + delay <= died)
        coded = np.where(kept, onset + np.where(rng.random(n) < rec.hospital, 0.0, delay), np.inf)
        at_risk = np.flatnonzero((died > landmark) & ~(coded <= landmark))
        observed = coded[at_risk] <= landmark + horizon
        risks = Oracle(model).risk(truth.take(at_risk), landmark, [horizon], draws=20, seed=2, recorded=True)
        p = risks.probability[:, risks.outcomes.index(name), 0]
        se = np.sqrt(np.mean(p * (1 - p)) / len(p))
        assert abs(observed.mean() - p.mean()) < 4 * se + 0.002, name
