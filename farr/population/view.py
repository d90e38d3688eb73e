"""`farr population`: expected events by patient group, inequality, planning and validation.

Every person registered and alive at the landmark gets the model's analytic risk of each
outcome within each horizon (people who already have a non-recurrent outcome are not at risk
of a new one). A group's expected cases are the sum of its people's risks, its rate the
expected cases per 100,000 people at risk; intervals come from a bootstrap over people
(`rates.py` says why). Observed rates sit beside them where follow-up reaches the horizon, and
on a simulated dataset the oracle's true expected rate for the same people does too.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from farr.events.io import read_outcomes
from farr.forecast.landmark import (Landmark, landmark, landmark_ages, labels, outcomes_for, registered,
                                    timelines_for)
from farr.forecast.generate import first_occurrence_risk
from farr.forecast.risk import analytic_risk, cohort_rates, inference_model, not_at_risk, rides_along, years_read
from farr.model.card import data_window, read_card
from farr.model.ensemble import load_ensemble
from farr.privacy.sdc import resolve_profile
from farr.population.backtest import CELL, KEYS, corrected, drift, evidence, model_error, unrecorded
from farr.population.calibration import band_factors, calendar_shifts, calibrated, halfway
from farr.population.disclosure import release_inequality, release_planning, release_rates
from farr.population.groups import GROUPINGS, group_index, group_labels
from farr.population.inequality import IMD_ORDER, imd_positions, slope_indices
from farr.population.oracle import PERSON_DRAWS, draws_for, oracle_group_rates
from farr.population.planning import project, recorded, rollouts
from farr.population.rates import (PER_100K, REPLICATES, GroupTotals, bootstrap_totals, cell_table, group_sums,
                                   ratio_interval)
from farr.population.strata import (STRATIFIED_BY, STRATUM, standardised, strata_of, stratum_corrections,
                                    stratum_scaled)

log = logging.getLogger(__name__)
VALIDATION_MIN_PEOPLE = 10_000  # groups this large are held to the 10% / coverage figures
TOP_GROUPS = 5


@dataclass
class PopulationConfig:
    groupings: tuple[str, ...] = tuple(GROUPINGS)
    horizons: tuple[float, ...] = (1.0, 5.0)
    at: str | None = None  # landmark date (or age); default: the last recorded date in the dataset
    samples: int = 2  # futures per sampled person, for the planning projections and the scaling of analytic
    # risks (`calibration.py`); 0: neither
    risks: str = "analytic"  # or "rollout": each person's risks from `samples` sampled futures (slower)
    planning_people: int = 10_000  # people whose futures are sampled (a random subsample); rollout risks sample all
    replicates: int = REPLICATES
    sdc: str = "opensafely"
    oracle_draws: int = 100  # the yardstick's own error: 1/sqrt(cases × draws), 2% for 20 cases a group
    # (fewer draws in a cohort over 100,000 people, whose groups are larger: `oracle.draws_for`)
    calendar_people: int = 4_000  # people of each cohort read with calendar time moved around its date, to
    # smooth the model's rates over one period of its calendar encoding (`calendar_smoothed`); 0: no smoothing
    backtest: bool = True  # correct rates and widen intervals by the model's error one horizon earlier
    backtest_people: int = 30_000  # in each backtest cohort, at most this many of the people who cost a forecast
    # of their own (a random subsample, weighted up: `backtest_sample`)
    backtest_futures_people: int = 10_000  # people of each backtest cohort whose futures (one each) are sampled,
    # for its own factors, taken halfway to the landmark's (`backtest_factors`)
    seed: int = 0
    bf16: bool = False
    notes: list[str] = field(default_factory=list)


def check_horizons(model_dir, horizons) -> float:
    """The model's training window in years; a horizon longer than it is an error."""
    window = read_card(model_dir)["data_window"]
    first, last = (dt.date.fromisoformat(window[k]) for k in ("first_date", "last_date"))
    years = (last - first).days / 365.25
    for h in horizons:
        if h > years:
            raise ValueError(f"--horizon {h:g}y is beyond the model's training window ({window['first_date']} to "
                             f"{window['last_date']}, {years:.1f} years): it never saw follow-up that long")
    return years


def model_directories(model_dir) -> list[Path]:
    """One model directory, or a list of them (an ensemble), as a list."""
    return [Path(model_dir)] if isinstance(model_dir, (str, Path)) else [Path(d) for d in model_dir]


def landmark_cohort(model_dir, dataset, at: str | None):
    """(model, timelines, outcomes, landmark, cohort): everyone registered and alive at `at`
    (default: the dataset's last recorded date); several models are read as their ensemble."""
    model, tokenizer = load_ensemble(model_directories(model_dir))
    timelines = timelines_for(tokenizer, dataset)
    outcomes = outcomes_for(tokenizer, read_outcomes(dataset))
    if not outcomes:
        raise ValueError(f"{dataset}: defines no outcomes the model knows (metadata/farr.json extra.outcomes)")
    at = at or data_window(timelines)["last_date"]
    mark = landmark(timelines, landmark_ages(timelines, at), outcomes)
    if not len(mark.people):
        raise ValueError(f"{dataset}: nobody is registered and alive at --at {at}")
    return model, timelines, outcomes, at, mark


# "per-person risks" reads the backtest cohorts' too (in the same forward passes: `cohort_rates`);
# "backtest corrections" compares them with what happened.
PHASES = ("landmark cohort", "per-person risks", "sampled futures", "calendar smoothing", "group totals",
          "backtest corrections", "oracle", "disclosure control")


@contextmanager
def _phases(progress: bool, seconds: dict[str, float]):
    """A `step(name)` that starts the next phase: shown when asked (stderr is a terminal), and
    each phase's wall-clock time kept in `seconds` and logged as it ends."""
    started, current = time.perf_counter(), PHASES[0]

    def finished():
        seconds[current] = round(time.perf_counter() - started, 1)
        log.info("population view: %s took %.1f s", current, seconds[current])

    def step(name: str):
        nonlocal started, current
        finished()
        started, current = time.perf_counter(), name
        bar.update(task, completed=PHASES.index(name), description=name)

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), disable=not progress,
                  transient=True) as bar:
        task = bar.add_task(PHASES[0], total=len(PHASES))
        yield step
        finished()


def population_view(model_dir, dataset, cfg: PopulationConfig | None = None, *, progress: bool = False) -> dict:
    """All tables, disclosure-controlled, with the SDC findings and the validation summary, from
    one model directory or a list of them (read as one ensemble: `farr.model.ensemble`)."""
    cfg = cfg or PopulationConfig()
    horizons = list(cfg.horizons)
    resolve_profile(cfg.sdc)  # a misspelt option fails before the work, not after
    if cfg.risks not in ("analytic", "rollout") or (cfg.risks == "rollout" and cfg.samples < 1):
        raise ValueError(f"--risks {cfg.risks!r}: choose analytic, or rollout with --samples of at least 1")
    if cfg.calendar_people < 0:
        raise ValueError(f"--calendar-people {cfg.calendar_people}: a number of people, or 0 for no smoothing")
    if cfg.backtest_people < 1:
        raise ValueError(f"--backtest-people {cfg.backtest_people}: a backtest needs at least one person")
    if cfg.backtest_futures_people < 1:
        raise ValueError(f"--backtest-futures-people {cfg.backtest_futures_people}: a backtest's factors need at "
                         "least one person")
    model_dirs = model_directories(model_dir)
    window_years = min(check_horizons(d, horizons) for d in model_dirs)
    seconds = {}
    with _phases(progress, seconds) as step:
        model, timelines, outcomes, at, mark = landmark_cohort(model_dirs, dataset, cfg.at)
        model = inference_model(model, cfg.bf16)
        groups, strata = landmark_groups(dataset, timelines, mark, cfg)
        past = backtest_cohorts(timelines, outcomes, at, cfg, rides_along(
            timelines, mark, model.cfg.block_size, backtest_queries(cfg.horizons))) if cfg.backtest else []
        step("per-person risks")
        cohorts = [(mark, tuple(cfg.horizons)), *((c, b.horizons) for b in past for c in b.cohorts)]
        at_risk, risk, drawn, past_risks = landmark_risks(model, timelines, cohorts, outcomes, cfg)
        step("sampled futures")
        planning, factors = sampled_futures(model, timelines, mark, outcomes, groups, at_risk, risk, drawn, cfg)
        past_factors = backtest_factors(model, timelines, cohorts[1:], past_risks, outcomes, cfg, factors)
        step("calendar smoothing")  # after the futures: they are scaled against the date's own reading
        risk, *past_risks = calendar_smoothed(model, timelines, cohorts, [risk, *past_risks], outcomes, cfg)
        risk = _scaled(risk, mark, factors)
        step("group totals")
        flat = risk.reshape(len(risk), -1)
        sums = bootstrap_totals(groups, np.concatenate([flat, at_risk, flat * (1 - flat)], axis=1),
                                replicates=cfg.replicates, seed=cfg.seed)
        names = [o.name for o in outcomes]
        table = rates_table(sums, names, horizons, seed=cfg.seed).join(
            observed_table(groups, mark, outcomes, horizons, risk), how="left", on=KEYS)
        step("backtest corrections")
        error = backtest(past, past_risks, past_factors, dataset, timelines, outcomes, cfg,
                         (groups, strata, risk)) if past else None
        if error is not None:
            table = corrected(table, *error)
        step("oracle")
        oracle = oracle_group_rates(dataset, timelines, mark, outcomes, horizons, groups, at_risk,
                                    draws=_oracle_draws(len(mark.people), cfg), seed=cfg.seed)
        if oracle is None:
            cfg.notes.append("no ground truth in the dataset: no validation against the oracle")
        else:
            table = table.join(oracle, how="left", on=KEYS)
        step("disclosure control")
        rates, rate_sdc = release_rates(table, cfg.sdc)
    everyone = rates.filter(pl.col("grouping") == "all")["people"][0]  # released (rounded), never the raw count
    result = {"config": asdict(cfg) | {"at": at}, "people": everyone, "models": len(model_dirs),
              "training_window_years": round(window_years, 2), "outcomes": names,
              "group_rates": rates, "highest_risk": highest_risk(rates), "sdc": {"group_rates": rate_sdc},
              "seconds": seconds}
    inequality = inequality_table(sums["imd"], names, horizons, _factors(table, "imd", sums["imd"].names, names,
                                                                          horizons)) if "imd" in sums else None
    if inequality is not None:
        result["inequality"] = release_inequality(inequality, rates)
    if planning is not None:
        result["planning"], result["sdc"]["planning"] = release_planning(planning, cfg.sdc)
    if oracle is not None:
        result["validation"] = validation_summary(table)
    return result


def _oracle_draws(people: int, cfg: PopulationConfig) -> int:
    """`oracle.draws_for`, with a note where a large cohort gets fewer draws than asked."""
    draws = draws_for(people, cfg.oracle_draws)
    if draws < cfg.oracle_draws:
        cfg.notes.append(f"the oracle simulated {draws} futures a person, not {cfg.oracle_draws}: the cohort is over "
                         f"{PERSON_DRAWS // cfg.oracle_draws:,} people, so its group rates are as precise as in a "
                         f"cohort that size with {cfg.oracle_draws}")
    return draws


def landmark_groups(dataset, timelines, mark, cfg: PopulationConfig) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(groups, strata): each landmark person's group in "all" and every grouping, and their age-sex
    stratum (`strata.py`), from one read of the subjects."""
    labels = group_labels(dataset, timelines.subject_id[mark.people], mark.age,
                          list(dict.fromkeys([*cfg.groupings, *STRATIFIED_BY])))
    return {"all": np.full(len(mark.people), "all")} | {g: labels[g] for g in cfg.groupings}, strata_of(labels)


def landmark_risks(model, timelines, cohorts: list[tuple[Landmark, tuple[float, ...]]], outcomes,
                   cfg: PopulationConfig):
    """(at risk (n, outcomes), risks (n, outcomes, horizons) with 0 where not at risk, drawn, and
    each later cohort's risks of its own horizons alike) of `cohorts`, the view's landmark cohort
    first: `analytic_risks`, drawn None; or rollout risks from `samples` sampled futures of
    everyone (new conditions play out too; drawn is `planning.rollouts`' (rows, futures) of
    the landmark cohort, so the planning reuses them)."""
    drawn = None
    if cfg.risks == "analytic":
        risks = analytic_risks(model, timelines, cohorts, outcomes)
    else:
        futures = [rollouts(model, timelines, m, outcomes, list(h), draws=cfg.samples, people=len(m.people),
                            seed=cfg.seed) for m, h in cohorts]
        drawn, risks = futures[0], [first_occurrence_risk(f) for _, f in futures]
    at_risk = [~not_at_risk(m, outcomes) for m, _ in cohorts]
    risks = [np.where(a[:, :, None], r, 0.0).astype(np.float32) for a, r in zip(at_risk, risks)]
    return at_risk[0], risks[0], drawn, risks[1:]


def analytic_risks(model, timelines, cohorts: list[tuple[Landmark, tuple[float, ...]]], outcomes) -> list[np.ndarray]:
    """Each cohort's analytic risks of its own horizons: the rates read at its landmark and on each
    anniversary, every cohort in one pass where a person's histories nest (`cohort_rates`)."""
    rates = cohort_rates(model, timelines, [(m, years_read(h)) for m, h in cohorts], outcomes)
    return [analytic_risk(r, list(h)) for r, (_, h) in zip(rates, cohorts)]


def sampled_futures(model, timelines, mark, outcomes, groups, at_risk, risk, drawn, cfg: PopulationConfig):
    """(planning table, factors): sampled futures give the planning projections and, for analytic
    risks, the factors that scale them to the futures (`calibration.py`): those `drawn` for rollout
    risks (everyone's), else a random `planning_people` of the cohort's. (None, None) without
    samples, and None factors for rollout risks."""
    if not cfg.samples:
        if cfg.risks == "analytic":
            cfg.notes.append("no sampled futures (--samples 0): no planning projections, and the rates are the "
                             "analytic reading alone, which misses cases that come after other events")
        return None, None
    horizons = list(cfg.horizons)
    sample, futures = drawn or rollouts(model, timelines, mark, outcomes, horizons, draws=cfg.samples,
                                        people=cfg.planning_people, seed=cfg.seed)
    regions, years = groups.get("region", groups["all"]), int(np.ceil(max(horizons)))
    planning = project(futures, sample, mark, outcomes, regions, years=years, draws=cfg.samples,
                       replicates=cfg.replicates, seed=cfg.seed).join(
        recorded(timelines, mark, outcomes, regions, years), on=["region", "measure", "year"], how="left")
    if cfg.risks != "analytic":
        return planning, None
    return planning, _futures_factors(risk[sample], at_risk[sample], mark.age[sample], futures)


def _futures_factors(risk: np.ndarray, at_risk: np.ndarray, age: np.ndarray, futures) -> dict[str, np.ndarray]:
    """`band_factors` of sampled people's futures over their analytic `risk` (both 0 where not `at_risk`)."""
    return band_factors(risk, np.where(at_risk[:, :, None], futures.exposed.mean(axis=1), 0.0), age)


def backtest_factors(model, timelines, cohorts: list[tuple[Landmark, tuple[float, ...]]], risks: list[np.ndarray],
                     outcomes, cfg: PopulationConfig, factors: dict | None) -> list[dict | None]:
    """The factors that scale each backtest cohort's analytic risks: halfway (`halfway`) between the
    landmark's `factors` and those of futures sampled at the cohort's own date, one each for a random
    `backtest_futures_people` of it; None for each where the view's risks are not scaled (no `factors`).
    With the landmark's alone, the factor cancels in the correction (the same above and below its
    ratio), which then carries the analytic reading's error, not the reported rates'; and how many
    cases come after other events moves with the window (on the simulator, one model's 5-year factor
    for type 2 diabetes was 1.52 at 2014-01-01 and 1.18 at 2019-01-01). With each cohort's own alone,
    the correction over-corrects where that move is not the model's error. On the 1M-patient
    benchmark (two models, two landmarks) halfway was the best or the second best of the three in
    each view, and the best on average."""
    if factors is None:
        return [None] * len(cohorts)
    found = []
    for (mark, horizons), risk in zip(cohorts, risks):
        sample, futures = rollouts(model, timelines, mark, outcomes, list(horizons), draws=1,
                                   people=cfg.backtest_futures_people, seed=cfg.seed)
        own = _futures_factors(risk[sample], ~not_at_risk(mark.subset(sample), outcomes), mark.age[sample], futures)
        columns = [list(cfg.horizons).index(h) for h in horizons]
        found.append(halfway({band: factor[:, columns] for band, factor in factors.items()}, own))
    return found


def calendar_smoothed(model, timelines, cohorts: list[tuple[Landmark, tuple[float, ...]]], risks: list[np.ndarray],
                      outcomes, cfg: PopulationConfig) -> list[np.ndarray]:
    """Each cohort's `risks` scaled in each age band (`calibration.py`) by a random `calendar_people`
    of it: their analytic risks averaged over calendar time moved across one period of the model's
    shortest calendar sinusoid (`calendar_shifts`), over their risks at the date itself. The
    subsamples are drawn in one random order of everyone, so a person drawn for one cohort is
    drawn for the others they are in, and is read for all of them in one pass (`cohort_rates`)."""
    if not cfg.calendar_people:
        cfg.notes.append("no calendar smoothing (--calendar-people 0): the rates carry the model's swing with the "
                         "phase of the date, and the backtests its swing at theirs")
        return risks
    rank = np.random.default_rng(cfg.seed).permutation(len(timelines))
    samples = [(mark.subset(np.sort(np.argsort(rank[mark.people])[:cfg.calendar_people])), horizons)
               for mark, horizons in cohorts]
    at_risk = [~not_at_risk(sample, outcomes)[:, :, None] for sample, _ in samples]

    def read_at(shift: float) -> list[np.ndarray]:
        read = analytic_risks(model, timelines.calendar_moved(shift), samples, outcomes)
        return [np.where(a, r, 0.0) for a, r in zip(at_risk, read)]

    at_date = read_at(0.0)
    moved = list(zip(*(read_at(shift) for shift in calendar_shifts(model.cfg.calendar_period))))
    return [calibrated(risk, mark.age, band_factors(own, np.mean(shifted, axis=0), sample.age))
            for risk, (mark, _), own, shifted, (sample, _) in zip(risks, cohorts, at_date, moved, samples)]


@dataclass
class Backtest:
    """The landmark cohorts backtesting `horizons`: `years` before the view's landmark, and twice
    `years` before it where the data reach (for the drift); each person's weight, the inverse of
    their chance of being drawn (`backtest_sample`)."""

    years: float
    horizons: tuple[float, ...]
    cohorts: list[Landmark]
    weights: list[np.ndarray]


def backtest_horizons(horizons) -> dict[float, tuple[float, ...]]:
    """Each backtest's years back (ceil(h)) and the horizons it checks, the longest first."""
    return {years: tuple(h for h in horizons if np.ceil(h) == years)
            for years in sorted({float(np.ceil(h)) for h in horizons}, reverse=True)}


def backtest_queries(horizons) -> int:
    """The query tokens a person in the view's cohort and in both cohorts of every backtest carries."""
    return 1 + years_read(horizons) + 2 * sum(1 + years_read(h) for h in backtest_horizons(horizons).values())


def backtest_cohorts(timelines, outcomes, at: str, cfg: PopulationConfig, rides: np.ndarray) -> list[Backtest]:
    """For each horizon h, the latest landmark whose h-year follow-up is complete (ceil(h) years
    before `at`) and a second one as far back again (`backtest_sample` of each, `rides` saying who
    rides along the view's own reading); none (with a note) where nobody was registered then."""
    ages, found = landmark_ages(timelines, at), []
    for years, horizons in backtest_horizons(cfg.horizons).items():
        cohorts, weights = zip(*(_backtest_cohort(timelines, ages - back, outcomes, cfg, rides)
                                 for back in (years, 2 * years)))
        if not len(cohorts[0].people):
            cfg.notes.append(f"no backtest of the {_years(horizons)} horizon: nobody in the data was registered "
                             f"{years:g} years before the landmark; its rates are the model's own and its intervals "
                             "leave out the model's error")
            continue
        kept = 2 if len(cohorts[1].people) else 1
        if kept == 1:
            cfg.notes.append(f"no drift estimate for the {_years(horizons)} horizon: nobody in the data was "
                             f"registered {2 * years:g} years before the landmark; its intervals assume the model "
                             f"errs as it did {years:g} years earlier")
        found.append(Backtest(years, horizons, list(cohorts[:kept]), list(weights[:kept])))
    return found


def backtest(past: list[Backtest], risks: list[np.ndarray], factors: list[dict | None], dataset, timelines,
             outcomes, cfg: PopulationConfig, view: tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]):
    """(error, outcome-wide error, each group's correction by its strata): the model's error per
    age-sex stratum, then per group once every person's risk carries their stratum's correction
    (`strata.py`; each `backtest_error`), from the `past` backtests' cohorts' `risks` (in order,
    each scaled here by its `factors` from `backtest_factors`); the strata's corrections of the
    groups of the `view`'s landmark cohort (its groups, strata and risks)."""
    names, risks, factors = [o.name for o in outcomes], iter(risks), iter(factors)
    read = [(b, [(c, weight, _scaled(next(risks), c, next(factors)), *landmark_groups(dataset, timelines, c, cfg))
                 for c, weight in zip(b.cohorts, b.weights)]) for b in past]
    by_stratum, _ = backtest_error({b.years: _backtest_tables(
        [(c, weight, {"all": groups["all"], STRATUM: s}, risk) for c, weight, risk, groups, s in cohorts],
        outcomes, b.horizons) for b, cohorts in read})

    def stratum_corrected(strata, risk, horizons):
        return stratum_scaled(risk, *stratum_corrections(by_stratum, strata, names, list(horizons))[:2])

    found = {}
    for b, cohorts in read:
        found[b.years] = _backtest_tables([(c, weight, groups, stratum_corrected(s, risk, b.horizons))
                                           for c, weight, risk, groups, s in cohorts], outcomes, b.horizons)
        _note_unrecorded(found[b.years][0], cfg)
    groups, strata, risk = view
    by_group = standardised(groups, *stratum_corrections(by_stratum, strata, names, list(cfg.horizons)), risk, names,
                            list(cfg.horizons))
    return *backtest_error(found), by_group


def _backtest_tables(cohorts: list[tuple[Landmark, np.ndarray, dict[str, np.ndarray], np.ndarray]], outcomes,
                     horizons) -> tuple[pl.DataFrame, ...]:
    """A backtest's (table, drift, older table), or its table alone, from each of its cohorts'
    (people, weights, groups, risks)."""
    tables = [observed_table(groups, c, outcomes, list(horizons), risk, weight) for c, weight, groups, risk in cohorts]
    return (tables[0], drift(*tables), tables[1]) if len(tables) == 2 else (tables[0],)


def backtest_error(found: dict[float, tuple[pl.DataFrame, ...]]):
    """(error, outcome-wide error) (`backtest.model_error`) from each backtest's (table, drift, older
    table), or its table alone, by years back; each horizon's corrections borrow the evidence of
    the longest other backtest (so the longest borrows the next longest's)."""
    evidences = {years: evidence(*tables) for years, tables in found.items()}
    parts = [model_error(*tables, other=next((e for y, e in evidences.items() if y != years), None))
             for years, tables in found.items()]
    return tuple(pl.concat(tables) for tables in zip(*parts))


def _scaled(risk: np.ndarray, mark, factors) -> np.ndarray:
    """A cohort's risks scaled in each age band by `factors` (`calibrated`), where there are any."""
    return risk if factors is None else calibrated(risk, mark.age, factors)


def _note_unrecorded(past: pl.DataFrame, cfg: PopulationConfig) -> None:
    for outcome, horizon in unrecorded(past).rows():
        cfg.notes.append(f"no backtest correction of {outcome} ({horizon:g}-year): the backtest cohort never had it "
                         "recorded though the model expected cases (it was not yet in the data), so its rates are "
                         "the model's own and its intervals count the typical error of the outcomes it measured")


def _backtest_cohort(timelines, ages, outcomes, cfg: PopulationConfig, rides: np.ndarray
                     ) -> tuple[Landmark, np.ndarray]:
    """The landmark cohort at `ages`, a `backtest_sample` of it, and its people's weights."""
    people = registered(timelines, ages)
    rows, weight = backtest_sample(rides[people], cfg.backtest_people, cfg.seed)
    return landmark(timelines, ages, outcomes, people[rows]), weight


def backtest_sample(rides: np.ndarray, cap: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, weights) of a backtest cohort whose people `rides` along the view's reading or not.
    Each backtest's people are read with the view's own (`cohort_rates`), so one who is in both,
    with room for every query, costs only their queries: all of them join. The others (who died
    or left since, or whose history is too long to share a pass) cost a forecast each: at most
    `cap` of them, drawn at random, each weighted by the inverse of their chance of being drawn,
    so that the cohort's weighted cases are those of everyone (the error variance counts the
    weights' noise: `observed_table`)."""
    alone = np.flatnonzero(~rides)
    if len(alone) <= cap:
        return np.arange(len(rides)), np.ones(len(rides))
    drawn = np.random.default_rng(seed).choice(alone, cap, replace=False)
    rows = np.sort(np.concatenate([np.flatnonzero(rides), drawn]))
    return rows, np.where(rides[rows], 1.0, len(alone) / cap)


def _years(horizons: list[float]) -> str:
    return ", ".join(f"{h:g}-year" for h in horizons)


def _factors(table: pl.DataFrame, grouping: str, groups: np.ndarray, outcomes: list[str], horizons: list[float]
             ) -> np.ndarray:
    """(groups, outcomes × horizons) backtest corrections of one grouping's rates (1 without a backtest)."""
    if "model_rate_per_100k" not in table.columns:
        return np.ones((len(groups), len(outcomes) * len(horizons)))
    rows = table.filter(pl.col("grouping") == grouping).with_columns(
        (pl.col("rate_per_100k") / pl.col("model_rate_per_100k")).fill_nan(1.0).fill_null(1.0).alias("factor"))
    cells = pl.DataFrame({"group": np.repeat(groups, len(outcomes) * len(horizons)),
                          "outcome": np.tile(np.repeat(outcomes, len(horizons)), len(groups)),
                          "horizon_years": np.tile(np.asarray(horizons, float), len(groups) * len(outcomes))})
    factor = cells.join(rows.select("group", "outcome", "horizon_years", "factor"), how="left",
                        on=["group", "outcome", "horizon_years"], maintain_order="left")["factor"].fill_null(1.0)
    return factor.to_numpy().reshape(len(groups), -1)


def rates_table(sums: dict[str, GroupTotals], outcomes: list[str], horizons: list[float], *, seed: int = 0
                ) -> pl.DataFrame:
    """Per grouping, group, outcome and horizon: people, at risk, expected cases, rate per 100,000 at
    risk, and two 90% intervals from the bootstrap replicates: `ci_*` for the expected rate (which
    people make up the group) and `pi_*` for the rate that will be observed (adding the chance of
    each person's outcome, Σ p(1 − p), as a normal draw per replicate: a rollout of the risks)."""
    k, h = len(outcomes), len(horizons)
    rng = np.random.default_rng(seed)
    parts = []
    for grouping, s in sums.items():
        shape = (len(s.names), k, h)
        expected, at_risk = s.totals[:, :k * h].reshape(shape), s.totals[:, k * h:k * h + k, None]
        boot_expected = s.replicates[..., :k * h].reshape(-1, *shape)
        boot_at_risk = s.replicates[..., k * h:k * h + k, None]
        chance = np.sqrt(s.replicates[..., k * h + k:].reshape(-1, *shape)) * rng.standard_normal(boot_expected.shape)
        ci = ratio_interval(boot_expected, boot_at_risk)
        pi = ratio_interval(np.maximum(boot_expected + chance, 0.0), boot_at_risk)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = expected / at_risk
        parts.append(cell_table(grouping, s.names, outcomes, horizons, {
            "people": s.people.astype(np.int64)[:, None, None], "at_risk": at_risk.astype(np.int64),
            "expected_cases": expected, "rate_per_100k": rate * PER_100K}
            | {f"{name}_{end}_per_100k": bound * PER_100K for name, (lower, upper) in (("ci", ci), ("pi", pi))
               for end, bound in (("lower", lower), ("upper", upper))}))
    return pl.concat(parts).with_columns(pl.col(pl.Float64).fill_nan(None))


def observed_table(groups: dict[str, np.ndarray], mark, outcomes, horizons, risk: np.ndarray,
                   weight: np.ndarray | None = None) -> pl.DataFrame:
    """Observed cases among people followed to the horizon (or to death), and the model's expected
    cases for the same people: where there is no follow-up, the columns are null. With `weight` (a
    backtest sample's), every sum is weighted, and `design_effect` holds the cases' mean weight
    Σw²y / Σwy (null without a case): how much more the weighted count varies than a count."""
    per_horizon = [labels(mark, outcomes, h) for h in horizons]
    followed = np.stack([usable for _, usable in per_horizon], axis=-1)  # (n, K, H)
    observed = np.stack([event & usable for event, usable in per_horizon], axis=-1)
    sums = [followed, observed, risk * followed] + ([] if weight is None else [observed * weight[:, None, None]])
    values = np.concatenate([x.reshape(len(risk), -1) for x in sums], axis=1).astype(np.float64)  # once, not per grouping
    if weight is not None:
        values *= weight[:, None]
    whole = np.int64 if weight is None else np.float64  # a weighted count need not be whole
    k, h = len(outcomes), len(horizons)
    parts = []
    for grouping, lab in groups.items():
        names, index = group_index(lab)
        total = group_sums(index, len(names), values).reshape(len(names), len(sums), k, h)
        cells = {"followed": total[:, 0].astype(whole), "observed_cases": total[:, 1].astype(whole),
                 "model_cases_followed": total[:, 2]}
        if weight is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                cells["design_effect"] = total[:, 3] / total[:, 1]
        parts.append(cell_table(grouping, names, [o.name for o in outcomes], horizons, cells))
    table = pl.concat(parts).with_columns(pl.col(pl.Float64).fill_nan(None))
    return table.with_columns(*(pl.when(pl.col("followed") > 0).then(pl.col(c)).otherwise(None)
                                for c in table.columns if c not in KEYS))


def inequality_table(s: GroupTotals, outcomes: list[str], horizons: list[float], factor: np.ndarray
                     ) -> pl.DataFrame | None:
    """Rate ratios of each IMD quintile against the least deprived, SII and RII, with intervals,
    from the quintiles' rates times their backtest corrections `factor` (groups, outcomes × horizons)."""
    order = imd_positions(s.names)
    if order is None:
        return None
    k, h = len(outcomes), len(horizons)
    at_risk_columns = k * h + np.repeat(np.arange(k), h)

    def rates(totals, people):  # (..., 5 quintiles, K*H), (..., 5, K*H)
        with np.errstate(divide="ignore", invalid="ignore"):
            return totals[..., order, :k * h] / people[..., order, :][..., at_risk_columns] * factor[order]

    point = rates(s.totals, s.totals)
    boot = rates(s.replicates, s.replicates)
    shares, boot_shares = s.totals[order][:, at_risk_columns], s.replicates[:, order][..., at_risk_columns]
    sii, rii = slope_indices(point.T, shares.T)
    boot_sii, boot_rii = slope_indices(np.swapaxes(boot, 1, 2), np.swapaxes(boot_shares, 1, 2))
    rows = []
    for cell in range(k * h):
        base = {"outcome": outcomes[cell // h], "horizon_years": horizons[cell % h]}
        for q, quintile in enumerate(IMD_ORDER[1:], start=1):
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio, boot_ratio = point[q, cell] / point[0, cell], boot[:, q, cell] / boot[:, 0, cell]
            rows.append(base | {"measure": f"rate_ratio_imd{quintile}_vs_imd5", "value": ratio}
                        | _interval(boot_ratio))
        rows.append(base | {"measure": "sii_per_100k", "value": sii[cell] * PER_100K}
                    | _interval(boot_sii[:, cell] * PER_100K))
        rows.append(base | {"measure": "rii", "value": rii[cell]} | _interval(boot_rii[:, cell]))
    return pl.DataFrame(rows).with_columns(pl.col(pl.Float64).fill_nan(None))


def _interval(replicates: np.ndarray) -> dict:
    finite = replicates[np.isfinite(replicates)]
    lower, upper = np.percentile(finite, (5, 95)) if len(finite) else (np.nan, np.nan)
    return {"lower": float(lower), "upper": float(upper)}


def highest_risk(rates: pl.DataFrame, top: int = TOP_GROUPS) -> pl.DataFrame:
    """For each outcome and horizon, the released groups with the highest rates."""
    return (rates.filter((pl.col("grouping") != "all") & pl.col("rate_per_100k").is_not_null())
            .sort("rate_per_100k", descending=True)
            .group_by("outcome", "horizon_years", maintain_order=True).head(top)
            .with_columns(pl.col("rate_per_100k").rank("ordinal", descending=True)
                          .over("outcome", "horizon_years").alias("rank"))
            .select("outcome", "horizon_years", "rank", "grouping", "group", "rate_per_100k",
                    "ci_lower_per_100k", "ci_upper_per_100k")
            .sort("outcome", "horizon_years", "rank"))


def validation_summary(table: pl.DataFrame) -> dict:
    """Model against oracle group rates: bias, within 10%, and interval coverage, for all groups
    and for groups of at least VALIDATION_MIN_PEOPLE people (computed before SDC: only simulated
    data has an oracle, so no number here is about a real person).
    A rate's error splits into its outcome's overall level and the group's place around it: each
    group's rate relative to its outcome's overall rate, against the oracle's same ratio, is the
    pattern between groups (who is at higher risk, the gradients), and `outcomes` holds the share of
    overall rates (one an outcome and horizon) within 10%, the level. A rate of 0 has no relative
    error, so cells where the oracle's is 0 (a cancer of the other sex, a disease before it existed)
    are counted apart, with those where the model expects a case or more (`oracle_zero`)."""
    impossible = table.filter(pl.col("oracle_per_100k") == 0)
    rows = table.filter(pl.col("oracle_per_100k").is_not_null() & (pl.col("oracle_per_100k") > 0)
                        & pl.col("rate_per_100k").is_not_null())
    raw = "model_rate_per_100k" if "model_rate_per_100k" in rows.columns else "rate_per_100k"
    rows = rows.with_columns((pl.col("rate_per_100k") / pl.col("oracle_per_100k") - 1).alias("bias"),
                             (pl.col(raw) / pl.col("oracle_per_100k") - 1).alias("bias_before_backtest"),
                             *(pl.col("oracle_per_100k").is_between(f"{i}_lower_per_100k", f"{i}_upper_per_100k")
                               .alias(f"covered_{i}") for i in ("ci", "pi")))
    overall = rows.filter(pl.col("grouping") == "all").select(*CELL, (pl.col("bias") + 1).alias("overall_ratio"))
    rows = rows.join(overall, on=CELL, how="left").with_columns(
        pl.when(pl.col("grouping") != "all").then((pl.col("bias") + 1) / pl.col("overall_ratio") - 1)
        .alias("bias_relative"))
    summary = {}
    for name, kept in (("all_groups", pl.lit(True)), ("large_groups", pl.col("people") >= VALIDATION_MIN_PEOPLE)):
        part = rows.filter(kept)
        summary[name] = {"cells": part.height} | ({} if not part.height else {
            "median_abs_bias": float(part["bias"].abs().median()),
            "mean_bias": float(part["bias"].mean()),
            "share_within_10pct": _within_10pct(part["bias"]),
            "share_within_10pct_relative": _within_10pct(part["bias_relative"]),
            "median_abs_bias_before_backtest": float(part["bias_before_backtest"].abs().median()),
            "coverage_90pct_ci": float(part["covered_ci"].mean()),
            "coverage_90pct_pi": float(part["covered_pi"].mean())})
        summary[name]["oracle_zero"] = _oracle_zero(impossible.filter(kept))
    summary["outcomes"] = {"cells": overall.height, "share_within_10pct": _within_10pct(overall["overall_ratio"] - 1)}
    summary["min_people_for_large"] = VALIDATION_MIN_PEOPLE
    return summary


def _oracle_zero(cells: pl.DataFrame) -> dict:
    """How many `cells` (the oracle's rate 0) there are, and per outcome and horizon those where the
    model expects at least one case: a number that would be read as a risk where there is none."""
    wrong = cells.filter(pl.col("expected_cases") >= 1)
    misses = wrong.group_by(CELL).agg(pl.len().alias("groups"),
                                      pl.col("rate_per_100k").max().alias("highest_rate_per_100k"))
    return {"cells": cells.height, "model_expects_a_case": wrong.height, "where": misses.sort(CELL).to_dicts()}


def _within_10pct(bias: pl.Series) -> float | None:
    """The share of biases (nulls left out) within ±10%; None where there are none."""
    bias = bias.drop_nulls()
    return float((bias.abs() <= 0.10).mean()) if len(bias) else None


def save(result: dict, out: str | Path) -> Path:
    """CSV tables and population.json (summary, SDC findings, validation) in `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name, value in result.items():
        if isinstance(value, pl.DataFrame):
            value.write_csv(out / f"{name}.csv", float_precision=6)
        else:
            summary[name] = value
    (out / "population.json").write_text(json.dumps(summary, indent=1, default=float))
    return out / "population.json"
