"""The `farr` command line: one thin command per stage; the work lives in the stage packages."""

from __future__ import annotations

import sys
from functools import wraps
from pathlib import Path

import typer

from farr.events.io import DatasetError, verify

app = typer.Typer(help="farr: generative models of NHS patient timelines in a secure data environment.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

USER_ERRORS = (ValueError, FileExistsError, FileNotFoundError, PermissionError, DatasetError)


def one_line_errors(command):
    """Bad input ends the command with one clear line on stderr, not a traceback."""

    @wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as error:
            typer.echo(f"farr: error: {error}", err=True)
            raise typer.Exit(2) from None

    return run


@app.command()
@one_line_errors
def simulate(
    out: Path = typer.Option(..., "--out", help="Output dataset directory."),
    patients: int = typer.Option(10_000, "--patients", "-n", help="Number of people."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same bytes."),
    identifiable: bool = typer.Option(False, "--identifiable",
                                      help="Add NHS numbers, dates of birth, postcodes and opt-outs."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output directory."),
    workers: int = typer.Option(0, "--workers", help="Worker processes (0: one per core)."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write report/ beside the data."),
) -> None:
    """Simulate an England-like population whose true disease hazards are known."""
    from farr.simulate.report import write_report
    from farr.simulate.simulator import simulate_dataset

    simulate_dataset(out, patients, seed, identifiable=identifiable, overwrite=overwrite,
                     workers=workers or None, progress=sys.stderr.isatty())
    typer.echo(f"wrote {patients:,} people to {out}")
    if report:
        typer.echo(f"report: {write_report(out)}")


@app.command()
@one_line_errors
def demo(
    out: Path = typer.Option(Path("out/demo"), "--out", help="Where to write the demo."),
    patients: int = typer.Option(20_000, "--patients", "-n", help="Number of people to simulate."),
    steps: int = typer.Option(1500, "--steps", help="Training steps (at most --minutes of training)."),
    minutes: float = typer.Option(5.0, "--minutes", help="Training time budget."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """The whole flow on embedded defaults: simulate, train a small model, evaluate, report."""
    from farr.demo import DemoConfig, run_demo

    cfg = DemoConfig(patients=patients, seed=seed, train_steps=steps, train_minutes=minutes,
                     progress=sys.stderr.isatty())
    typer.echo(f"report: {run_demo(out, cfg, say=typer.echo)}")


@app.command()
@one_line_errors
def validate(dataset: Path = typer.Argument(..., help="A farr dataset directory.")) -> None:
    """Check a dataset's checksums and schema."""
    from farr.events.io import iter_shards

    verify(dataset)
    shards = sum(1 for _ in iter_shards(dataset))
    typer.echo(f"{dataset}: {shards} shards, checksums and schema valid")


@app.command()
@one_line_errors
def ingest(
    src: Path = typer.Argument(..., help="The extract: a directory or file in the --from format."),
    source_format: str = typer.Option(..., "--from",
                                      help="fhir (bundles, bulk NDJSON), omop (CSV, Parquet, .zip), meds, "
                                           "or farr-identifiable (farr simulate --identifiable)."),
    out: Path = typer.Option(..., "--out", help="Output dataset directory."),
    project: str = typer.Option(..., "--project", help="Project: its key links patients across its extracts."),
    key_dir: Path = typer.Option(None, "--key-dir",
                                 help="Project keys and settings, outside the data (default: $FARR_KEY_DIR, else ~/.farr/keys)."),
    opt_outs: Path = typer.Option(None, "--opt-outs", help="National data opt-outs: NHS numbers, one a line."),
    k: int = typer.Option(5, "--k", help="k of the k-anonymity report."),
    birth_band: int = typer.Option(5, "--birth-band", help="Years of birth per quasi-identifier band."),
    generalise: bool = typer.Option(False, "--generalise",
                                    help="Suppress quasi-identifiers, then withhold records, until k-anonymous."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output directory."),
    workers: int = typer.Option(0, "--workers", help="Worker processes (0: one per core)."),
) -> None:
    """Ingest an extract: pseudonymise, uphold opt-outs, quarantine bad records, report risk."""
    from farr.ingest import Options
    from farr.ingest import ingest as run_ingest

    options = Options(k=k, birth_band=birth_band, generalise=generalise, workers=workers or None,
                      progress=sys.stderr.isatty())
    run = run_ingest(source_format, src, out, project, key_dir=key_dir, opt_outs=opt_outs,
                     options=options, overwrite=overwrite)
    typer.echo(run.summary())


project_app = typer.Typer(help="Project settings kept beside the project key.", no_args_is_help=True)
app.add_typer(project_app, name="project")


@project_app.command("exempt")
@one_line_errors
def project_exempt(
    project: str = typer.Argument(..., help="The project."),
    national: bool = typer.Option(False, "--national", help="The national data opt-out."),
    type1: bool = typer.Option(False, "--type1", help="The type 1 (GP) opt-out."),
    reason: str = typer.Option(None, "--reason", help="The approval the exemption rests on."),
    revoke: bool = typer.Option(False, "--revoke", help="Withdraw the exemption."),
    key_dir: Path = typer.Option(None, "--key-dir", help="As for ingest."),
) -> None:
    """Exempt a project from one opt-out (or --revoke it); every ingest records it."""
    from farr.governance.opt_out import set_exemption
    from farr.governance.pseudonymise import key_dir as resolve_key_dir

    chosen = [name for name, given in (("national", national), ("type1", type1)) if given]
    if len(chosen) != 1:
        raise ValueError("name one opt-out: --national or --type1")
    file = set_exemption(resolve_key_dir(key_dir), project, chosen[0], reason, revoke=revoke)
    typer.echo(f"{project}: {chosen[0]} opt-out {'upheld again' if revoke else 'exempted'} ({file})")

@app.command("train")
@one_line_errors
def train_command(
    dataset: Path = typer.Argument(..., help="A farr dataset (its training split is used)."),
    out: Path = typer.Option(..., "--out", help="Model directory: weights, tokenizer, checkpoints, log."),
    config: str = typer.Option("small", "--config", help="Model size: tiny, small, medium or large."),
    steps: int = typer.Option(2000, "--steps", help="Optimisation steps."),
    batch_size: int = typer.Option(32, "--batch-size"),
    learning_rate: float = typer.Option(1e-3, "--lr"),
    minutes: float = typer.Option(None, "--minutes", help="Stop (with a checkpoint) after this much training."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in --out."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train a timeline transformer; CPU by default, CUDA when present, DDP under torchrun."""
    from farr.model.train import TrainConfig, train

    cfg = TrainConfig(preset=config, max_steps=steps, batch_size=batch_size, learning_rate=learning_rate,
                      minutes=minutes, seed=seed)
    summary = train(dataset, out, cfg, resume=resume, progress=sys.stderr.isatty())
    if summary:
        typer.echo(f"step {summary['step']}: validation loss {summary['val_loss']:.4f}, "
                   f"{summary['tokens_per_second']:,.0f} tokens/s; model in {out}")


@app.command("forecast")
@one_line_errors
def forecast_command(
    model: Path = typer.Argument(..., help="A directory written by farr train."),
    dataset: Path = typer.Argument(..., help="A farr dataset."),
    at: str = typer.Option(..., "--at", help="Landmark: an age in years (60) or a date (2024-01-01)."),
    horizon: str = typer.Option("1y,5y,10y", "--horizon", help="Horizons, e.g. 1y,5y,10y or 6m."),
    out: Path = typer.Option(..., "--out", help="Directory for risks.parquet."),
    samples: int = typer.Option(0, "--samples", help="Also estimate risks from this many sampled futures."),
    bf16: bool = typer.Option(False, "--bf16", help="bfloat16 matrix products: ~2x faster on CPUs that have them."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Each person's risk of every outcome within each horizon."""
    from farr.forecast.predict import forecast, parse_horizons

    path = forecast(model, dataset, at, parse_horizons(horizon), out, draws=samples, seed=seed, bf16=bf16)
    typer.echo(f"risks: {path}")


@app.command("generate")
@one_line_errors
def generate_command(
    model: Path = typer.Argument(..., help="A directory written by farr train."),
    dataset: Path = typer.Argument(..., help="A farr dataset whose histories to continue."),
    at: str = typer.Option(..., "--at", help="Landmark: an age in years or a date."),
    horizon: str = typer.Option("10y", "--horizon", help="How far to sample, e.g. 10y."),
    samples: int = typer.Option(10, "--samples", help="Futures per person."),
    out: Path = typer.Option(..., "--out", help="Directory for futures.parquet."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Sample whole future timelines after the landmark."""
    from farr.forecast.predict import generate, parse_horizons

    years = max(parse_horizons(horizon))
    typer.echo(f"futures: {generate(model, dataset, at, years, samples, out, seed=seed)}")


@app.command("evaluate")
@one_line_errors
def evaluate_command(
    model: Path = typer.Argument(..., help="A directory written by farr train."),
    dataset: Path = typer.Argument(..., help="A farr dataset with outcome definitions."),
    out: Path = typer.Option(..., "--out", help="Directory for evaluation.json and the report."),
    at: str = typer.Option("60", "--at", help="Landmark: an age in years, or a date (everyone registered then)."),
    horizon: str = typer.Option("1y,5y,10y", "--horizon"),
    split: str = typer.Option("held_out", "--split", help="held_out, tuning, train, or all."),
) -> None:
    """Landmark AUROC, Brier, calibration, Uno's C and next-event accuracy, against baselines and the oracle."""
    from farr.forecast.evaluate import EvaluationConfig, evaluate, save
    from farr.forecast.predict import parse_horizons
    from farr.forecast.report import write_evaluation_report

    cfg = EvaluationConfig(at=at, horizons=tuple(parse_horizons(horizon)), split=split)
    result = evaluate(model, dataset, cfg)
    save(result, out)
    typer.echo(f"report: {write_evaluation_report(result, out)}")


if __name__ == "__main__":
    app()
