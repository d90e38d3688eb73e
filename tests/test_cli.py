"""The command line: every command has --help; bad input ends in one clear line."""

import pytest
from typer.testing import CliRunner

from farr.cli import app

runner = CliRunner()


@pytest.mark.parametrize("command", [[], ["simulate"], ["demo"], ["validate"], ["train"], ["forecast"],
                                     ["generate"], ["evaluate"]])
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


@pytest.mark.parametrize("args, message", [
    (["-n", "-3"], "--patients must be at least 1, got -3"),
    (["-n", "10", "--seed", "-1"], "--seed must be non-negative"),
])
def test_invalid_arguments_fail_in_one_line_and_write_nothing(tmp_path, args, message):
    result = runner.invoke(app, ["simulate", "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 2
    assert result.output.strip() == f"farr: error: {message}" or message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_existing_output_is_kept_without_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    result = runner.invoke(app, ["simulate", "--out", str(out), "-n", "50"])
    assert result.exit_code == 2
    assert "exists and is not empty; pass --overwrite" in result.output
    assert (out / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging left behind

    result = runner.invoke(app, ["simulate", "--out", str(out), "-n", "50", "--overwrite", "--no-report"])
    assert result.exit_code == 0, result.output
    assert not (out / "precious.txt").exists()


def test_unwritable_destination_fails_in_one_line(tmp_path):
    result = runner.invoke(app, ["simulate", "--out", "/proc/farr-test/out", "-n", "10"])
    assert result.exit_code == 2
    assert "is not writable" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_simulate_then_validate(tmp_path):
    out = tmp_path / "pop"
    result = runner.invoke(app, ["simulate", "--out", str(out), "-n", "300", "--seed", "4", "--identifiable"])
    assert result.exit_code == 0, result.output
    assert (out / "report" / "report.html").exists()
    result = runner.invoke(app, ["validate", str(out)])
    assert result.exit_code == 0 and "checksums and schema valid" in result.output

    (out / "data" / "00000.parquet").write_bytes(b"PAR1 truncated")
    result = runner.invoke(app, ["validate", str(out)])
    assert result.exit_code == 2
    assert "data/00000.parquet" in result.output


def test_demo_simulates_trains_evaluates_and_reports(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "-n", "3000", "--steps", "30"])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "population" / "report" / "report.html").read_text()
    assert "Against published England figures" in html and "age_pyramid.png" in html
    assert "AUROC by outcome" in (tmp_path / "evaluation" / "report.html").read_text()
    assert "model evaluation" in (tmp_path / "report.html").read_text()
