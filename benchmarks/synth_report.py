"""The synth report at scale, and the population realism check (train on synthetic, test on real).

    .venv/bin/python benchmarks/synth_report.py --patients 100000

Targets (issue 5): the report on 100k real vs 100k synthetic patients in under 5 minutes; a
predictor trained on synthetic data only reaches >= 95% of the AUROC of one trained on the real
(simulated) data (mean over outcomes of the TSTR/TRTR ratio, printed per outcome too).
Reuses the population and model of benchmarks/synth_throughput.py when given the same --work, or
takes a trained model and its training data (`--model out/benchmark-model/model --real
out/benchmark-model/population`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _measure import measured
from _populations import simulated_once, trained_once

from farr.synth import synthesize
from farr.synth.report import synth_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000, help="Real people simulated (and synthesised).")
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--model", type=Path, help="A trained model (with --real, its training data).")
    parser.add_argument("--real", type=Path, help="The real dataset the model was trained on.")
    parser.add_argument("--device", default="cpu", help="Where to sample: cpu, cuda or auto.")
    parser.add_argument("--work", type=Path, default=Path("out/benchmark-synth"))
    args = parser.parse_args()
    dataset, model = (args.real, args.model) if args.model else _trained(args)
    synthetic = args.work / f"synthetic-report-{time.time_ns()}"
    with measured() as m:
        synthesize(model, args.patients, synthetic, seed=2, device=args.device, workers=0)
    print(f"synthesized {args.patients:,} people in {m['seconds']:.0f} s")
    with measured() as m:
        result = synth_report(dataset, synthetic, args.work / f"report-{time.time_ns()}", model=model)
    print(f"synth report: {result['people']['real']:,} real vs {result['people']['synthetic']:,} synthetic in "
          f"{m['seconds']:.0f} s (target < 300 s at 100k vs 100k), peak {m['peak_gb']:.2f} GB")
    utility = result["utility"]
    for row in utility["outcomes"]:
        print(f"  {row['outcome']:<28} AUROC real-trained {row['trtr']:.3f}  synthetic-trained {row['tstr']:.3f}  "
              f"ratio {row['ratio']:.2f}")
    ratio = utility["ratio"]
    print(f"TSTR/TRTR mean AUROC ratio: {ratio if ratio is None else round(ratio, 3)} over {len(utility['outcomes'])} "
          f"outcomes (target >= 0.95): {'met' if ratio and ratio >= 0.95 else 'NOT met'}")
    gate = result["gate"]
    print("release gate: " + ("passed" if gate["passed"] else "FAILED") + "; " +
          ", ".join(f"{c['check']} {c['value'] if c['value'] is None else round(c['value'], 3)}" for c in gate["checks"]))


def _trained(args) -> tuple[Path, Path]:
    dataset = simulated_once(args.work / "population", args.patients, 7)
    return dataset, trained_once(dataset, args.work / f"model-{args.config}", args.config, args.steps)


if __name__ == "__main__":
    main()
