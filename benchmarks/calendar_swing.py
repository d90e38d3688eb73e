"""How far a model's rates at a landmark move with the calendar date alone.

    .venv/bin/python benchmarks/calendar_swing.py MODEL DATASET --at 2019-01-01 --people 3000

The same people, with the same ages and histories, are read at the landmark with their calendar
time (birth dates) moved by -1 to +1 year in 3-month steps. On simulated data the true hazards
have no calendar trend but the pandemic's (from March 2020), so each outcome's population mean
rate should barely move; a model that ties rates to the phase of one date moves it, and a
population forecast made at that date carries the error, which a backtest one year earlier does
not see. Printed: each outcome's max/min of the mean rate over the shifts, and the median over
outcomes (covid-19 left out of the median: its rise at +1 year is real). With --smoothed, each
shift's rates are the mean over `calibration.calendar_shifts` around it, as `farr population`
reads them.

    .venv/bin/python benchmarks/calendar_swing.py MODEL DATASET --at 2019-01-01 --smoothed

`--shifts` reads other moves instead (years, comma-separated; 0 is always read): `--shifts -10,-5`
shows how far the rates drift over the years a backtest looks back.
"""

from __future__ import annotations

import argparse

import numpy as np

from farr.forecast.risk import outcome_rates
from farr.population.calibration import calendar_shifts
from farr.population.view import landmark_cohort

SHIFTS = np.arange(-1.0, 1.01, 0.25)  # years


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("dataset")
    parser.add_argument("--at", default="2019-01-01")
    parser.add_argument("--people", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoothed", action="store_true", help="Average each shift's rates as farr population does.")
    parser.add_argument("--shifts", help="Calendar moves in years, comma-separated (default -1 to +1 by 0.25).")
    args = parser.parse_args()
    shifts = np.unique([0.0, *map(float, args.shifts.split(","))]) if args.shifts else SHIFTS
    model, timelines, outcomes, _, mark = landmark_cohort(args.model, args.dataset, args.at)
    rng = np.random.default_rng(args.seed)
    mark = mark.subset(np.sort(rng.choice(len(mark.people), min(args.people, len(mark.people)), replace=False)))
    around = calendar_shifts(model.cfg.calendar_period) if args.smoothed else [0.0]
    means = np.array([np.mean([outcome_rates(model, timelines.calendar_moved(shift + offset), mark, outcomes)[:, :, 0]
                               .mean(axis=0) for offset in around], axis=0) for shift in shifts])
    swing = means.max(axis=0) / means.min(axis=0)
    print(f"{len(mark.people):,} people at {args.at}; mean rate relative to the unshifted one at shifts "
          + " ".join(f"{s:+.2f}" for s in shifts) + " years")
    unshifted = list(shifts).index(0.0)
    for outcome, ratio, column in zip(outcomes, swing, means.T):
        print(f"{outcome.name:24s} max/min {ratio:.2f}  " + " ".join(f"{m / column[unshifted]:.2f}" for m in column))
    steady = [ratio for outcome, ratio in zip(outcomes, swing) if outcome.name != "covid19"]
    print(f"median max/min over outcomes (covid-19 aside): {np.median(steady):.2f}")


if __name__ == "__main__":
    main()
