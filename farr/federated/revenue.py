"""`farr ledger revenue`: split a licence revenue among data providers by agreed terms.

terms.toml:

    currency = "GBP"
    [fixed]                    # fixed shares, by recipient (e.g. the NHS centrally)
    "NHS England" = 0.2
    [contribution]
    share = 0.8                # split among the sites of the model's ledger ...
    basis = "shapley"          # ... by "shapley", "leave_one_out" or "patients"
    [providers]                # optional: the organisation that receives each site's part
    "site1-london" = "NHS London region"

Shares must add up to 1. Negative contribution values count as zero. Amounts are in pennies, and
rounding remainders go to the largest fractional parts, so the parts add up to the amount exactly.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from farr.federated import ledger
from farr.reporting import Report

BASES = ("shapley", "leave_one_out", "patients")


def read_terms(file: str | Path) -> dict:
    file = Path(file)
    try:
        terms = tomllib.loads(file.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{file}: no such terms file") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{file}: not valid TOML ({error})") from None
    fixed = terms.get("fixed", {})
    contribution = terms.get("contribution", {"share": 0.0, "basis": "patients"})
    shares = [*fixed.values(), contribution.get("share", 0.0)]
    if not all(isinstance(s, (int, float)) and s >= 0 for s in shares):
        raise ValueError(f"{file}: every share must be a number ≥ 0")
    if abs(sum(shares) - 1) > 1e-9:
        raise ValueError(f"{file}: the shares add up to {sum(shares):g}, not 1")
    if contribution.get("basis", "patients") not in BASES:
        raise ValueError(f"{file}: contribution basis {contribution.get('basis')!r}: choose one of {', '.join(BASES)}")
    return {"currency": terms.get("currency", "GBP"), "fixed": fixed,
            "contribution": {"share": contribution.get("share", 0.0), "basis": contribution.get("basis", "patients")},
            "providers": terms.get("providers", {})}


def split_amount(amount: float, weights: dict[str, float]) -> dict[str, float]:
    """`amount` in proportion to `weights`, in whole pennies that add up to it exactly."""
    if amount < 0:
        raise ValueError(f"--amount must be ≥ 0, got {amount}")
    names = list(weights)
    w = np.array([weights[n] for n in names], float)
    pennies = round(amount * 100)
    exact = pennies * w / w.sum() if w.sum() > 0 else np.zeros(len(w))
    whole = np.floor(exact).astype(np.int64)
    for i in np.argsort(-(exact - whole), kind="stable")[: pennies - whole.sum() if w.sum() > 0 else 0]:
        whole[i] += 1
    return {n: int(p) / 100 for n, p in zip(names, whole)}


def contribution_weights(model_dir: str | Path, basis: str) -> tuple[dict[str, float], dict]:
    """Each site's weight under `basis`, from the model's latest training (and valuation) entry."""
    training = ledger.latest(model_dir, "training")
    if basis == "patients":
        return {s["site"]: float(s["patients"]) for s in training["sites"]}, training
    valuation = ledger.latest(model_dir, "valuation")["valuation"]
    return {s["site"]: max(0.0, float(s[basis])) for s in valuation["sites"]}, training


def revenue(model_dir: str | Path, amount: float, terms_file: str | Path, out: str | Path) -> dict:
    terms = read_terms(terms_file)
    weights, training = contribution_weights(model_dir, terms["contribution"]["basis"])
    fixed_share = sum(terms["fixed"].values())
    parts = split_amount(amount, {**terms["fixed"], "(contribution)": terms["contribution"]["share"]})
    by_site = split_amount(parts.pop("(contribution)"), weights)
    rows = [{"recipient": name, "site": None, "basis": "fixed share", "share": share, "amount": parts[name]}
            for name, share in terms["fixed"].items()]
    total_weight = sum(weights.values())
    for site, value in by_site.items():
        share = terms["contribution"]["share"] * (weights[site] / total_weight if total_weight else 0.0)
        rows.append({"recipient": terms["providers"].get(site, site), "site": site,
                     "basis": terms["contribution"]["basis"], "share": share, "amount": value})
    result = {"amount": amount, "currency": terms["currency"], "model_version": training["model_version"],
              "fixed_share": fixed_share, "contribution": terms["contribution"], "parts": rows}
    result["report"] = str(_report(result, training, out))
    return result


def _report(result: dict, training: dict, out: str | Path) -> Path:
    currency = result["currency"]
    report = Report("Revenue split among data providers")
    report.text(f"A revenue of {result['amount']:,.2f} {currency} from model version {result['model_version'][:16]}… "
                f"is split by the agreed terms: {result['fixed_share']:.0%} in fixed shares and "
                f"{result['contribution']['share']:.0%} among the sites that trained the model, in proportion to "
                f"each site's {result['contribution']['basis'].replace('_', '-')} contribution (negative values "
                "count as zero). Amounts are rounded to the penny and add up to the total exactly.")
    report.table(["recipient", "basis", "share", f"amount ({currency})"],
                 [[r["recipient"], r["basis"], f"{r['share']:.1%}", f"{r['amount']:,.2f}"] for r in result["parts"]])
    report.heading("What each site contributed (from the model's ledger)")
    report.text("Datasets are named by the SHA-256 of their metadata/farr.json, which lists a checksum of every file: "
                "the same hash means the same data.")
    report.table(["site", "dataset checksum", "patients", "events", "rounds", "dropouts", "rejected updates"],
                 [[s["site"], (s["manifest_sha256"] or "unknown")[:16] + "…", s["patients"], s["events"],
                   len(s["rounds_participated"]), len(s["dropouts"]), len(s["rejected_updates"])]
                  for s in training["sites"]])
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.4 * len(result["parts"])))
    ax.barh([r["recipient"] for r in result["parts"]][::-1], [r["amount"] for r in result["parts"]][::-1])
    ax.set_xlabel(currency)
    report.figure(fig, "revenue", "Each recipient's part of the revenue")
    return report.save(out)
