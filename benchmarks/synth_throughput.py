"""Synthetic generation throughput: patients per second from a trained model, per size preset or model.

    .venv/bin/python benchmarks/synth_throughput.py --patients 20000 --configs tiny,small [--device cuda]

Target (issue 5): >= 5,000 synthetic patients/s on CPU with batched sampling (10 million in under
an hour). Trains each preset briefly on a simulated population first (weights change the number
of events sampled per person, so the events/s figure is printed too). On a CPU, `--workers 0`
samples with one process a core; with `--device cuda`, on the GPU.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import polars as pl
import torch

from _measure import measured
from _populations import simulated_once, trained_once
from farr.events.io import read_metadata, scan_events
from farr.synth import synthesize
from farr.synth.synthesize import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=20_000, help="Synthetic patients to generate per preset.")
    parser.add_argument("--train-patients", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=300, help="Training steps per preset.")
    parser.add_argument("--configs", default="tiny,small")
    parser.add_argument("--models", help="Existing model directories (comma-separated) instead of --configs.")
    parser.add_argument("--format", default="meds")
    parser.add_argument("--device", default="cpu", help="Where to sample: cpu, cuda or auto.")
    parser.add_argument("--workers", type=int, default=0, help="Sampling processes on a CPU (0: one a core).")
    parser.add_argument("--work", type=Path, default=Path("out/benchmark-synth"))
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"CPU cores: {os.cpu_count()}; GPU: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}; "
          f"sampling on {device}" + (f" with {args.workers or os.cpu_count()} workers" if device == "cpu" else ""))
    models = [Path(m) for m in args.models.split(",")] if args.models else _trained(args)
    for model in models:
        out = args.work / f"synthetic-{model.name}-{time.time_ns()}"
        with measured() as m:
            synthesize(model, args.patients, out, fmt=args.format, seed=1, device=device, workers=args.workers)
        events = scan_events(out).filter(pl.col("code") != "MEDS_BIRTH").select(pl.len()).collect().item()
        print(f"{model}: {args.patients:,} patients ({events / args.patients:.0f} events each) in {m['seconds']:.1f} s: "
              f"{args.patients / m['seconds']:,.0f} patients/s, {events / m['seconds']:,.0f} events/s, "
              f"peak {m['peak_gb']:.2f} GB; 10 million would take {1e7 / (args.patients / m['seconds']) / 3600:.1f} h "
              f"(target >= 5,000 patients/s); rows written {read_metadata(out)['rows']:,}")


def _trained(args) -> list[Path]:
    """One briefly trained model a preset."""
    dataset = simulated_once(args.work / "population", args.train_patients, 7)
    return [trained_once(dataset, args.work / f"model-{preset}", preset, args.steps)
            for preset in args.configs.split(",")]


if __name__ == "__main__":
    main()
