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
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """The whole flow on embedded defaults: simulate a population and report on it."""
    from farr.simulate.report import write_report
    from farr.simulate.simulator import simulate_dataset

    dataset = out / "population"
    simulate_dataset(dataset, patients, seed, overwrite=True, progress=sys.stderr.isatty())
    typer.echo(f"simulated {patients:,} people into {dataset}")
    typer.echo(f"report: {write_report(dataset)}")


@app.command()
@one_line_errors
def validate(dataset: Path = typer.Argument(..., help="A farr dataset directory.")) -> None:
    """Check a dataset's checksums and schema."""
    from farr.events.io import iter_shards

    verify(dataset)
    shards = sum(1 for _ in iter_shards(dataset))
    typer.echo(f"{dataset}: {shards} shards, checksums and schema valid")


if __name__ == "__main__":
    app()
