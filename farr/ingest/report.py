"""The short report of an ingest run (``report/report.html`` and ``report.md``): counts,
quarantine reasons and the quasi-identifier risk of the output."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np

from farr.governance.kanonymity import QUASI_IDENTIFIERS, Risk
from farr.ingest import manifest
from farr.reporting import Report

if TYPE_CHECKING:
    from farr.ingest.pipeline import IngestRun

REPORT_DIR = "report"


def _counts_table(report: Report, counts: dict) -> None:
    header = ["", "read", "written", "excluded (opt-out)", "quarantined"]
    rows = [[name, c["read"], c["written"], c["excluded_opt_out"], c["quarantined"]]
            for name, c in (("patients", counts["subjects"]), ("records", counts["records"]))]
    report.table(header, rows)


def _reasons_table(report: Report, title: str, reasons: dict) -> None:
    if reasons:
        report.table([title, "count"], [[reason, n] for reason, n in reasons.items()])


def _risk_section(report: Report, risk: Risk, when: str) -> None:
    report.text(f"{when}: {risk.records:,} records in {risk.classes:,} classes; smallest class "
                f"{risk.smallest_class} (k = {risk.k} {'met' if risk.met else 'NOT met'}); "
                f"{risk.unique:,} records unique ({risk.unique / max(risk.records, 1):.1%}).")
    if risk.below_k:
        report.table(["class size", "classes", "records"], [list(row) for row in risk.below_k])


def _histogram(sizes: np.ndarray, k: int) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    bins = np.unique(np.geomspace(1, max(sizes.max(), 2) + 1, 30).astype(int))
    ax.hist(sizes, bins=bins, weights=sizes, color="#4878a8")
    ax.axvline(k, color="#c0392b", linestyle="--", label=f"k = {k}")
    ax.set(xscale="log", xlabel="equivalence class size", ylabel="records", title="Records by class size")
    ax.legend()
    return fig


def write(run: IngestRun, directory: Path) -> Path:
    summary = manifest.build(run)
    report = Report(f"Ingest of {run.source.name} for project {run.project}")
    report.text(f"Source format {run.source_format}; key id {run.key_id}; subjects keyed by "
                + ", ".join(f"{k} ({n:,})" for k, n in summary["source"]["subjects_keyed_by"].items()) + ".")
    report.heading("Counts")
    _counts_table(report, summary["counts"])
    opt = summary["opt_outs"]
    report.text(f"Opt-outs upheld: {', '.join(opt['upheld']) or 'none'}; exemptions: "
                + (", ".join(f"{k} ({e['reason']})" for k, e in opt["exemptions"].items()) or "none") + ".")
    _reasons_table(report, "patients quarantined because", summary["counts"]["subjects_quarantined_by_reason"])
    _reasons_table(report, "records quarantined because", summary["counts"]["records_quarantined_by_reason"])
    _reasons_table(report, "read but not ingested", summary["counts"]["not_ingested"])
    report.heading("Quasi-identifier risk")
    report.text("Quasi-identifiers: " + ", ".join(QUASI_IDENTIFIERS)
                + f" (birth in {run.options.birth_band}-year bands).")
    _risk_section(report, run.risk_before, "As ingested")
    for step in run.generalisation:
        action = "withheld" if "withheld" in step else f"{step['suppressed']} suppressed"
        report.text(f"Generalisation: {step['records']:,} records in classes below k, {action}.")
    if run.risk is not run.risk_before:
        _risk_section(report, run.risk, "After generalisation")
    report.figure(_histogram(run.risk.class_sizes, run.options.k), "class_sizes",
                  "Records by the size of their equivalence class (log scale)")
    return report.save(directory)
