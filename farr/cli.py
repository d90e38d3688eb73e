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
    calendar_jitter: float = typer.Option(
        0.0, "--calendar-jitter", min=0.0, help="Years each training window's calendar time may move (uniformly), "
        "so rates do not hang on one date's phase; a period effect is learnt blurred by as much (1000: "
        "the calendar encoding is noise; the date still shows through each history: advised for a model "
        "meant for `farr population`'s group rates, not for synthetic records)."),
) -> None:
    """Train a timeline transformer; CPU by default, CUDA when present, DDP under torchrun."""
    from farr.model.train import TrainConfig, train

    cfg = TrainConfig(preset=config, max_steps=steps, batch_size=batch_size, learning_rate=learning_rate,
                      minutes=minutes, seed=seed, calendar_jitter=calendar_jitter)
    summary = train(dataset, out, cfg, resume=resume, progress=sys.stderr.isatty())
    if summary:
        typer.echo(f"step {summary['step']}: validation loss {summary['val_loss']:.4f}, "
                   f"{summary['tokens_per_second']:,.0f} tokens/s; model in {out}")


BF16 = typer.Option(False, "--bf16",
                    help="bfloat16 matrix products: ~2x faster on CPUs that have them (float32 elsewhere).")


@app.command("forecast")
@one_line_errors
def forecast_command(
    model: Path = typer.Argument(..., help="A directory written by farr train."),
    dataset: Path = typer.Argument(..., help="A farr dataset."),
    at: str = typer.Option(..., "--at", help="Landmark: an age in years (60) or a date (2024-01-01)."),
    horizon: str = typer.Option("1y,5y,10y", "--horizon", help="Horizons, e.g. 1y,5y,10y or 6m."),
    out: Path = typer.Option(..., "--out", help="Directory for risks.parquet."),
    samples: int = typer.Option(0, "--samples", help="Also estimate risks from this many sampled futures."),
    bf16: bool = BF16,
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
    split: str = typer.Option("held_out", "--split", help="The part of DATASET to evaluate on: held_out, tuning or train."),
    test: Path = typer.Option(None, "--test", help="Evaluate on everyone in this dataset instead (external "
                                                  "validation); baselines are still fitted on DATASET."),
) -> None:
    """Landmark AUROC, Brier, calibration, Uno's C and next-event accuracy, against baselines and the oracle."""
    from farr.forecast.evaluate import EvaluationConfig, evaluate, save
    from farr.forecast.predict import parse_horizons
    from farr.forecast.report import write_evaluation_report

    cfg = EvaluationConfig(at=at, horizons=tuple(parse_horizons(horizon)), split=split)
    result = evaluate(model, dataset, cfg, test_dataset=test)
    save(result, out)
    typer.echo(f"report: {write_evaluation_report(result, out)}")


sde_app = typer.Typer(help="The secure data environment service.", no_args_is_help=True)
app.add_typer(sde_app, name="sde")
audit_app = typer.Typer(help="The SDE's hash-chained audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
SDE_DB = typer.Option(None, "--db", envvar="FARR_SDE_DB",
                      help="Database URL (default: SQLite in the workspace), e.g. postgresql://...")
SDE_WORKSPACE = typer.Option(Path("sde-workspace"), "--workspace", envvar="FARR_SDE_WORKSPACE",
                             help="Where job outputs, releases and the SQLite database live.")


@app.command("serve")
@one_line_errors
def serve_command(db: str = SDE_DB, workspace: Path = SDE_WORKSPACE,
                  host: str = typer.Option("127.0.0.1", "--host"),
                  port: int = typer.Option(8000, "--port"),
                  token_minutes: int = typer.Option(60, "--token-minutes", help="API token lifetime.")) -> None:
    """Start the SDE service (API docs at /docs, web pages at /ui)."""
    import uvicorn

    from farr.sde.app import create_app

    uvicorn.run(create_app(db, workspace, token_minutes=token_minutes), host=host, port=port,
                log_level="warning")


@sde_app.command("create-user")
@one_line_errors
def sde_create_user(username: str = typer.Argument(...),
                    role: str = typer.Option(..., "--role", help="admin, data_controller, researcher or output_checker."),
                    db: str = SDE_DB, workspace: Path = SDE_WORKSPACE) -> None:
    """Create a user (e.g. the first admin); the password comes from $FARR_SDE_PASSWORD or a prompt."""
    import os

    from farr.sde.app import bootstrap_user

    password = os.environ.get("FARR_SDE_PASSWORD") or typer.prompt(
        "password", hide_input=True, confirmation_prompt=True)
    bootstrap_user(db, workspace, username, password, role)
    typer.echo(f"created {role} {username}")


@audit_app.command("verify")
@one_line_errors
def audit_verify(db: str = SDE_DB, workspace: Path = SDE_WORKSPACE,
                 expect: str = typer.Option(None, "--expect", help="A head (ID:HASH) printed by an earlier verify: "
                                                                  "detects entries deleted from the end.")) -> None:
    """Check every hash and link of the audit log; exit 1 on the first tampered entry."""
    from farr.sde.app import verify_audit

    result = verify_audit(db, workspace, expect)
    if not result.ok:
        typer.echo(f"farr: audit log tampered at entry {result.first_bad}: {result.reason}", err=True)
        raise typer.Exit(1)
    typer.echo(f"audit log intact: {result.entries} entries; head {result.head} (keep it, pass it as --expect next time)")


@app.command("population")
@one_line_errors
def population_command(
    model: Path = typer.Argument(..., help="A directory written by farr train."),
    dataset: Path = typer.Argument(..., help="A farr dataset with outcome definitions."),
    with_model: list[Path] = typer.Option([], "--with-model",
                                          help="Another model of the same vocabulary and shape (repeatable): the "
                                          "view reads MODEL and these as one ensemble, the mean of their rates."),
    by: str = typer.Option("region,imd,ethnicity,age_band,sex", "--by", help="Groupings, comma-separated."),
    horizon: str = typer.Option("1y,5y", "--horizon", help="Horizons, e.g. 1y,5y."),
    out: Path = typer.Option(..., "--out", help="Directory for the CSV tables and the report."),
    at: str = typer.Option(None, "--at", help="Landmark date (YYYY-MM-DD); default: the dataset's last recorded date."),
    samples: int = typer.Option(2, "--samples", help="Futures sampled per person of a subsample, for the planning "
                                "projections and to scale the analytic risks (0: neither)."),
    risks: str = typer.Option("analytic", "--risks", help="analytic, or rollout: from --samples sampled futures."),
    sdc: str = typer.Option("opensafely", "--sdc", help="Disclosure control profile: opensafely or minimum10."),
    calendar_people: int = typer.Option(4_000, "--calendar-people",
                                        help="People of each cohort read with calendar time moved across one "
                                        "period of the model's calendar encoding, to smooth its rates over "
                                        "the date's phase (0: no smoothing)."),
    backtest: bool = typer.Option(True, "--backtest/--no-backtest",
                                  help="Correct rates and widen intervals by the model's error one horizon earlier."),
    backtest_people: int = typer.Option(30_000, "--backtest-people",
                                        help="In each backtest cohort, at most this many of the people who "
                                        "cost a forecast of their own (a random subsample, weighted up)."),
    backtest_futures_people: int = typer.Option(10_000, "--backtest-futures-people",
                                                help="People of each backtest cohort whose futures (one each) are "
                                                "sampled at its own date, to scale its analytic risks."),
    bf16: bool = BF16,
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Expected events by patient group, inequality across deprivation, planning projections."""
    from farr.forecast.predict import parse_horizons
    from farr.population.groups import parse_groupings
    from farr.population.report import write_population_report
    from farr.population.view import PopulationConfig, population_view, save

    cfg = PopulationConfig(groupings=tuple(parse_groupings(by)), horizons=tuple(parse_horizons(horizon)), at=at,
                           samples=samples, risks=risks, sdc=sdc, calendar_people=calendar_people, backtest=backtest,
                           backtest_people=backtest_people, backtest_futures_people=backtest_futures_people,
                           bf16=bf16, seed=seed)
    result = population_view([model, *with_model], dataset, cfg, progress=sys.stderr.isatty())
    save(result, out)
    typer.echo(f"report: {write_population_report(result, out)}")


@app.command("synthesize")
@one_line_errors
def synthesize_command(
    model: Path = typer.Argument(..., help="A model directory with a model card (farr train or train-private)."),
    patients: int = typer.Option(..., "--patients", help="Synthetic people to generate."),
    out: Path = typer.Option(..., "--out", help="Directory for the synthetic farr dataset (and its export)."),
    fmt: str = typer.Option("meds", "--format", help="meds (the farr dataset only), omop (+ OMOP CDM 5.4 CSV) "
                                                      "or fhir (+ FHIR R4 NDJSON)."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, or auto (the GPU when there is one)."),
    workers: int = typer.Option(0, "--workers", help="Sampling processes on a CPU (0: one a core); one on a GPU."),
) -> None:
    """Sample a synthetic population: people from the card's training population, lives from the model."""
    from farr.synth import synthesize

    out = synthesize(model, patients, out, fmt=fmt, seed=seed, device=device, workers=workers,
                     progress=sys.stderr.isatty())
    typer.echo(f"synthetic dataset: {out}")


@app.command("synth-report")
@one_line_errors
def synth_report_command(
    real: Path = typer.Argument(..., help="The real farr dataset the model was trained on."),
    synth: Path = typer.Argument(..., help="A synthetic dataset written by farr synthesize."),
    out: Path = typer.Option(..., "--out", help="Directory for synth_report.json, the report and the manifest."),
    model: Path = typer.Option(None, "--model", help="The generating model: adds a membership attack against it."),
    gate: Path = typer.Option(None, "--gate", help="JSON file of release-gate thresholds (default: built in)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Fidelity, utility and privacy of a synthetic release; a signed manifest only if the gate passes."""
    from farr.synth.release import Thresholds
    from farr.synth.report import synth_report

    thresholds = Thresholds.from_file(gate) if gate else Thresholds()
    result = synth_report(real, synth, out, model=model, thresholds=thresholds, seed=seed)
    typer.echo(f"report: {out / 'report.html'}")
    if not result["gate"]["passed"]:
        failed = ", ".join(c["check"] for c in result["gate"]["checks"] if not c["passed"])
        typer.echo(f"farr: release gate FAILED ({failed}); no release manifest written", err=True)
        raise typer.Exit(1)
    typer.echo(f"release gate passed; signed manifest: {result['manifest']}")


@app.command("train-private")
@one_line_errors
def train_private_command(
    dataset: Path = typer.Argument(..., help="A farr dataset (its training split is used)."),
    out: Path = typer.Option(..., "--out", help="Model directory (same layout as farr train's)."),
    epsilon: float = typer.Option(..., "--epsilon", help="Privacy budget ε for the whole run."),
    delta: float = typer.Option(None, "--delta", help="δ (default 1/(10n), n the training people; must be below 1/n)."),
    config: str = typer.Option("tiny", "--config", help="Model size: tiny, small, medium or large."),
    steps: int = typer.Option(500, "--steps"),
    batch_size: int = typer.Option(64, "--batch-size", help="Expected people per step (Poisson sampling)."),
    max_grad_norm: float = typer.Option(1.0, "--max-grad-norm", help="Per-person gradient clipping norm."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train a timeline transformer with DP-SGD (Opacus); the (ε, δ) spent goes into the model card."""
    from farr.privacy.dp import train_private

    result = train_private(dataset, out, epsilon=epsilon, delta=delta, preset=config, max_steps=steps,
                           batch_size=batch_size, max_grad_norm=max_grad_norm, seed=seed,
                           progress=sys.stderr.isatty())
    p = result["privacy"]
    typer.echo(f"model in {out}: ε = {p['epsilon']:.3f}, δ = {p['delta']:.2g}, σ = {p['noise_multiplier']:.3f}, "
               f"final loss {result['final_loss']:.3f}")


federate_app = typer.Typer(help="Federated training across sites (Flower), and its comparison report.")
app.add_typer(federate_app, name="federate")
ledger_app = typer.Typer(help="The contribution ledger of a federated model: show, value, share revenue.",
                         no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")
SITES = typer.Option(None, "--sites", help="Site dataset directories, comma-separated.")
ROUNDS = typer.Option(3, "--rounds", help="Federated rounds.")
LOCAL_STEPS = typer.Option(20, "--local-steps", help="Optimisation steps at each site per round.")
CONFIG = typer.Option("tiny", "--config", help="Model size: tiny, small, medium or large.")
STRATEGY = typer.Option("fedavg", "--strategy", help="fedavg, fedavgm (server momentum) or fedprox (all weighted "
                                                     "by site size).")


def _federation(rounds: int, local_steps: int, config: str, strategy: str, mu: float = 0.01,
                dp_noise: float | None = None, dp_clip: float = 1.0, batch_size: int = 16, seed: int = 0,
                momentum: float = 0.5, secure: bool = False, round_timeout: float | None = 3600.0):
    from farr.federated.client import LocalConfig
    from farr.federated.strategy import FederationConfig

    return FederationConfig(rounds=rounds, strategy=strategy, proximal_mu=mu, server_momentum=momentum,
                            dp_noise_multiplier=dp_noise, dp_clipping_norm=dp_clip, secure_aggregation=secure,
                            round_timeout_s=round_timeout,
                            local=LocalConfig(preset=config, local_steps=local_steps, batch_size=batch_size, seed=seed))


def _sites(sites: str | None) -> list[Path]:
    if not sites:
        raise ValueError("--sites: name the site datasets, comma-separated")
    return [Path(s) for s in sites.split(",") if s]


@federate_app.callback(invoke_without_command=True)
@one_line_errors
def federate_command(
    ctx: typer.Context, sites: str = SITES, rounds: int = ROUNDS, out: Path = typer.Option(None, "--out", help="Model directory."),
    strategy: str = STRATEGY, mu: float = typer.Option(0.01, "--mu", help="FedProx proximal weight μ."),
    momentum: float = typer.Option(0.5, "--server-momentum", help="FedAvgM: share of last round's step kept."),
    local_steps: int = LOCAL_STEPS, config: str = CONFIG, batch_size: int = typer.Option(16, "--batch-size"),
    dp_noise: float = typer.Option(None, "--dp-noise", help="Central DP: Gaussian noise multiplier on site updates."),
    dp_clip: float = typer.Option(1.0, "--dp-clip", help="Central DP: L2 clipping norm of each site's update."),
    secagg: bool = typer.Option(False, "--secagg", help="Flower SecAgg+: the server sees only the sum of the sites' models."),
    processes: bool = typer.Option(False, "--processes", help="One process per site, talking to a server on loopback."),
    round_timeout: float = typer.Option(3600.0, "--round-timeout",
                                        help="Seconds a site may take to answer in a round before it drops out of it."),
    min_count: int = typer.Option(10, "--min-count", help="Vocabulary: codes each site shares only from this count."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train one model across sites: each site's data stays in its own process."""
    if ctx.invoked_subcommand is not None:
        return
    from farr.federated.federate import agree_vocabulary, check_sites, federate

    if out is None:
        raise ValueError("--out: name the model directory")
    cfg = _federation(rounds, local_steps, config, strategy, mu, dp_noise, dp_clip, batch_size, seed, momentum, secagg,
                      round_timeout)
    checked = check_sites(_sites(sites))
    result = federate(checked, out, cfg, processes=processes, tokenizer=agree_vocabulary(checked, min_count))
    for r in result["rounds"]:
        typer.echo(f"round {r['round']}: {len(r['sites'])} sites aggregated, dropouts {r['dropouts'] or 'none'}, "
                   f"rejected {r['rejected'] or 'none'}, {r['mb_to_sites'] + r['mb_from_sites']:.2f} MB")
    typer.echo(f"model in {out}; ledger entry {result['ledger']['entry_sha256'][:16]}")


@federate_app.command("split")
@one_line_errors
def federate_split(dataset: Path = typer.Argument(..., help="A farr dataset."),
                   by: str = typer.Option("region", "--by", help="region or icb."),
                   out: Path = typer.Option(..., "--out", help="Directory for one dataset per site."),
                   sites: int = typer.Option(None, "--sites", help="Pack the groups into this many sites.")) -> None:
    """Cut a dataset into per-site datasets (a simulated federation)."""
    from farr.federated.sites import split

    for site in split(dataset, by, out, sites=sites):
        typer.echo(str(site))


@federate_app.command("compare")
@one_line_errors
def federate_compare(sites: str = SITES, pooled: Path = typer.Option(..., "--pooled", help="The dataset of all sites together."),
                     out: Path = typer.Option(..., "--out", help="Directory for the models and the report."),
                     rounds: int = ROUNDS, local_steps: int = LOCAL_STEPS, config: str = CONFIG,
                     strategy: str = STRATEGY, at: str = typer.Option("60", "--at", help="Landmark age or date."),
                     horizon: float = typer.Option(5.0, "--horizon", help="Years.")) -> None:
    """Pooled vs federated vs each site alone, on every site's held-out people."""
    from farr.federated.compare import compare
    from farr.forecast.evaluate import EvaluationConfig

    evaluation = EvaluationConfig(at=at, horizons=(horizon,), rollout_people=50, rollout_draws=5,
                                  next_event_people=300, oracle_draws=20)
    result = compare(_sites(sites), pooled, out, _federation(rounds, local_steps, config, strategy), evaluation)
    for name, value in result["mean_auroc"].items():
        typer.echo(f"{name}: mean AUROC {value if value is None else round(value, 3)}, "
                   f"validation NLL {result['mean_validation_nll'][name]:.3f}")
    typer.echo(f"report: {result['report']}")


@ledger_app.command("show")
@one_line_errors
def ledger_show(model: Path = typer.Argument(..., help="A federated model directory.")) -> None:
    """Every entry of the model's ledger, after checking its hash chain."""
    from farr.federated.ledger import describe

    typer.echo(describe(model))


@ledger_app.command("value")
@one_line_errors
def ledger_value(model: Path = typer.Argument(..., help="A federated model directory."), sites: str = SITES,
                 metric: str = typer.Option("nll", "--metric", help="nll (fast) or auroc."),
                 permutations: int = typer.Option(20, "--permutations", help="Monte-Carlo Shapley permutations."),
                 tolerance: float = typer.Option(0.01, "--tolerance", help="Truncation: fraction of the whole federation's gain."),
                 seed: int = typer.Option(0, "--seed")) -> None:
    """Leave-one-site-out and Monte-Carlo Shapley values of each site; appended to the ledger."""
    from farr.federated import ledger
    from farr.federated.valuation import ValuationConfig, federation_from_ledger, value_sites
    from farr.model.tokenizer import Tokenizer

    federation = federation_from_ledger(ledger.latest(model, "training")["training"])
    result = value_sites(_sites(sites), Tokenizer.load(model / "tokenizer.json"), federation,
                         ValuationConfig(metric=metric, permutations=permutations, tolerance=tolerance, seed=seed))
    ledger.append_valuation(model, result)
    for s in result["sites"]:
        typer.echo(f"{s['site']}: Shapley {s['shapley']:.4g} ± {s['shapley_standard_error']:.2g}, "
                   f"leave-one-out {s['leave_one_out']:.4g}")
    typer.echo(f"{result['coalitions_trained']} coalitions trained in {result['seconds']} s; recorded in the ledger")


@ledger_app.command("revenue")
@one_line_errors
def ledger_revenue(model: Path = typer.Argument(..., help="A federated model directory."),
                   amount: float = typer.Option(..., "--amount", help="Revenue to split."),
                   terms: Path = typer.Option(..., "--terms", help="terms.toml: fixed shares and the contribution part."),
                   out: Path = typer.Option(Path("revenue"), "--out", help="Directory for the report.")) -> None:
    """Split a revenue among data providers: fixed shares plus a contribution-weighted part."""
    from farr.federated.revenue import revenue

    result = revenue(model, amount, terms, out)
    for part in result["parts"]:
        typer.echo(f"{part['recipient']}: {part['amount']:,.2f} {result['currency']}")
    typer.echo(f"report: {result['report']}")


if __name__ == "__main__":
    app()
