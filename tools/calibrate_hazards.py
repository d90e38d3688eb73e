"""Suggest baseline knots so that population-average simulated incidence meets the knots' targets.

Comorbidity multipliers and frailty selection move realised incidence away from the baseline
rates in `farr/simulate/hazards.py`. This simulates lifetimes for an England-like covariate mix,
measures the rate near each knot age (at risk and of the eligible sex, for first onsets), scales
the knots by target / realised, repeats, and writes `farr/simulate/baseline.py`. The shipped
file came from:  .venv/bin/python tools/calibrate_hazards.py --lives 150000 --iterations 4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import farr.simulate.baseline
from farr.simulate.engine import simulate
from farr.simulate.hazards import build_model, default_spec, static_log_hazard
from farr.simulate.population import draw_population
from farr.simulate.simulator import practices_per_site

HALF_WIDTH = 2.5  # years either side of a knot age, at most
MIN_AGE = 2  # rates change too fast in infancy for a band average to say anything: kept as targets


def lifetimes(spec: dict, lives: int, seed: int):
    model = build_model(spec)
    rng = np.random.default_rng(seed)
    pop = draw_population(model, lives, rng, practices_per_site(lives))
    lp = static_log_hazard(model, pop.male, pop.ethnicity, pop.imd_quintile, rng.standard_normal(lives))
    stop = np.full(lives, 100.0)
    window = (np.zeros(lives), stop)
    return simulate(model, lp, 1950 + 70 * rng.random(lives), np.zeros(lives), stop, rng, window=window), pop.male


def realised_rate(h, male, k: int, process: dict, lo: float, hi: float) -> tuple[float, int]:
    onset = h.onset[:, k]
    eligible = np.where(male, "M" in process["sexes"], "F" in process["sexes"])
    stop = h.end_age if process["recurrent"] else np.fmin(h.end_age, onset)
    years = (np.clip(np.minimum(stop, hi) - lo, 0, None) * eligible).sum()
    ages = h.recurrent_age[h.recurrent_process == k] if process["recurrent"] else onset
    events = int(np.sum((ages >= lo) & (ages < hi)))
    return 1000 * events / max(years, 1e-9), events


def recalibrate(spec: dict, h, male, targets: dict) -> None:
    for k, process in enumerate(spec["processes"]):
        if process["covid_era"]:
            continue
        knots = sorted(targets[process["name"]])
        for i, age in enumerate(knots):
            if age < MIN_AGE:
                continue
            left = (age - knots[i - 1]) / 2 if i else HALF_WIDTH
            right = (knots[i + 1] - age) / 2 if i + 1 < len(knots) else HALF_WIDTH
            lo, hi = max(age - min(left, HALF_WIDTH), 0), age + min(right, HALF_WIDTH)
            rate, events = realised_rate(h, male, k, process, lo, hi)
            if events >= 20:
                target = targets[process["name"]][age]
                process["incidence"][age] *= target / rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lives", type=int, default=100_000)
    parser.add_argument("--iterations", type=int, default=3)
    args = parser.parse_args()
    spec = default_spec()
    del spec["baseline"]  # start from the targets
    for p in spec["processes"]:
        p["incidence"] = {int(a): r for a, r in p["incidence"].items()}
    targets = {p["name"]: dict(p["incidence"]) for p in spec["processes"]}
    for i in range(args.iterations):
        h, male = lifetimes(spec, args.lives, seed=i)
        recalibrate(spec, h, male, targets)
    lines = [f'    "{p["name"]}": {{{", ".join(f"{a}: {r:.3g}" for a, r in p["incidence"].items())}}},'
             for p in spec["processes"] if not p["covid_era"]]
    target = Path(farr.simulate.baseline.__file__)
    header = target.read_text().split("BASELINE")[0]
    target.write_text(header + "BASELINE: dict[str, dict[int, float]] = {\n" + "\n".join(lines) + "\n}\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
