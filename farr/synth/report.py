"""`farr synth-report REAL SYNTH`: fidelity, utility and privacy of a synthetic release, the release
gate, and (only when it passes) the signed release manifest.

Both datasets are read as token timelines in one vocabulary fitted on the real training split
(every code kept, so rare codes can be compared). Privacy attacks use samples of at most
`SAMPLE` people per role (members: real training split; non-members and controls: the rest),
so the report's cost does not grow with the population beyond tokenising it.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from farr.events.io import DatasetError, read_metadata, read_outcomes, sha256_file
from farr.events.schema import FARR_METADATA_FILE
from farr.forecast.landmark import outcomes_for
from farr.model.card import read_card
from farr.model.data import PREFIX
from farr.model.tokenizer import Timelines, Tokenizer
from farr.model.train import load_model
from farr.privacy import membership, reidentification
from farr.reporting import Report
from farr.synth import fidelity, utility
from farr.synth.release import Thresholds, gate, write_manifest
from farr.synth.threads import single_threaded

SAMPLE = 5_000  # people per attack role
SYNTH_SAMPLE = 20_000  # synthetic records the attacker searches
LOSS_ATTACK_PEOPLE = 500
CODE_COLUMNS = 24  # most prevalent codes whose presence the attack tables hold
INFERENCE_SECRETS = 5


def synth_report(real: str | Path, synth: str | Path, out: str | Path, *, model: str | Path | None = None,
                 thresholds: Thresholds | None = None, seed: int = 0, keys: Path | None = None) -> dict:
    with single_threaded():
        return _synth_report(Path(real), Path(synth), Path(out), model, thresholds, seed, keys)


def _synth_report(real: Path, synth: Path, out: Path, model, thresholds: Thresholds | None, seed: int,
                  keys: Path | None) -> dict:
    release = _check_inputs(real, synth, model)
    rng = np.random.default_rng(seed)
    tokenizer = Tokenizer(min_count=1).fit(real)
    real_t, synth_t = tokenizer.transform(real), tokenizer.transform(synth)
    outcomes = outcomes_for(tokenizer, read_outcomes(real))
    size = len(tokenizer)
    result = {"release": release, "people": {"real": len(real_t), "synthetic": len(synth_t)},
              "fidelity": _fidelity(real_t, synth_t, outcomes, tokenizer.vocabulary, rng),
              "utility": utility.tstr(real_t, synth_t, outcomes, size),
              "privacy": _privacy(real_t, synth_t, tokenizer, real, model, thresholds or Thresholds(), rng)}
    result["gate"] = gate(result["privacy"], thresholds or Thresholds())
    prevalence = result["fidelity"].pop("prevalence_by_code")
    out.mkdir(parents=True, exist_ok=True)
    (out / "synth_report.json").write_text(json.dumps(result, indent=1, default=float))
    _write_html(result, prevalence, out)
    result["manifest"] = str(write_manifest(out, synth, result, keys) or "")
    return result


def _check_inputs(real: Path, synth: Path, model: str | Path | None) -> dict:
    """Both datasets readable and of one schema version; the model (if any) trained on `real`."""
    real_meta, synth_meta = read_metadata(real), read_metadata(synth)
    if real_meta["schema_version"] != synth_meta["schema_version"]:
        raise DatasetError(f"{real}: schema_version {real_meta['schema_version']}, but {synth} has "
                           f"{synth_meta['schema_version']}; compare datasets of one schema version")
    provenance = synth_meta.get("extra", {}).get("synthetic")
    if provenance is None:
        raise ValueError(f"{synth}: not a synthetic release (farr.json has no extra.synthetic; write it with "
                         "farr synthesize)")
    if model is not None:
        card = read_card(model)
        if card["dataset"]["farr_json_sha256"] != sha256_file(real / FARR_METADATA_FILE):
            raise ValueError(f"{model}: was not trained on {real} (its model card names another dataset), "
                             "so membership cannot be tested against it")
    return provenance


def _fidelity(real: Timelines, synth: Timelines, outcomes, vocabulary: list[str], rng) -> dict:
    size = len(vocabulary)
    presence = fidelity.presence(real, size), fidelity.presence(synth, size)
    prevalence = [np.asarray(p.mean(axis=0)).ravel() for p in presence]
    return {"prevalence": fidelity.prevalence_agreement(*prevalence, vocabulary),
            "rare_events": fidelity.rare_events(*prevalence),
            "cooccurrence": fidelity.cooccurrence(*presence, prevalence[0]),
            "time_between_events": fidelity.gap_agreement(fidelity.gaps_in_days(real, rng),
                                                          fidelity.gaps_in_days(synth, rng)),
            "outcomes": fidelity.outcome_curves(real, synth, outcomes),
            "subgroups": fidelity.subgroup_fold_changes(real, synth, outcomes, vocabulary),
            "prevalence_by_code": prevalence}


def attack_table(t: Timelines, codes: np.ndarray) -> np.ndarray:
    """(people, columns) integer table: demographic tokens, birth year, presence of `codes`."""
    prefix = t.tokens[t.offsets[:-1, None] + np.arange(PREFIX)]
    year = t.birth_day.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64)
    has = fidelity.presence(t, int(max(codes.max(initial=0), t.tokens.max(initial=0))) + 1)[:, codes].toarray()
    return np.column_stack([prefix, year, has.astype(np.int64)])


def timeline_keys(t: Timelines) -> np.ndarray:
    """A hash of each whole timeline: birth month, demographics and every (token, age in months)."""
    owner, index = t.rows_of(np.arange(len(t)))
    element = t.tokens[index].astype(np.int64) * 100_000 + np.round(t.ages[index] * 12).astype(np.int64)
    frame = pl.DataFrame({"owner": owner, "element": element}).group_by("owner", maintain_order=True).agg("element")
    return (frame["element"].hash().to_numpy() ^ pl.Series(t.birth_day.astype(np.int64)).hash().to_numpy())


def _sample(people: np.ndarray, n: int, rng) -> np.ndarray:
    return rng.choice(people, size=min(n, len(people)), replace=False)


def _privacy(real: Timelines, synth: Timelines, tokenizer: Tokenizer, real_dir: Path, model, thresholds: Thresholds,
             rng) -> dict:
    split = real.split
    members, others = np.flatnonzero(split == 0), np.flatnonzero(split != 0)
    if len(others) == 0 or len(members) == 0:
        raise ValueError(f"{real_dir}: needs people in both its training and held-out splits to test privacy")
    n = min(SAMPLE, len(others), len(members))
    member_rows, other_rows = _sample(members, n, rng), _sample(others, n, rng)
    synth_rows = _sample(np.arange(len(synth)), SYNTH_SAMPLE, rng)
    prevalence = np.asarray(fidelity.presence(real, len(tokenizer)).mean(axis=0)).ravel()
    codes = np.argsort(-prevalence)[:CODE_COLUMNS]
    real_table = attack_table(real, codes)
    tables = [real_table[member_rows], real_table[other_rows], attack_table(synth, codes)[synth_rows]]
    levels = reidentification.levels_of(*tables)
    ori, control, syn = (reidentification.one_hot(t, levels) for t in tables)
    columns = tables[0].shape[1]
    events = np.diff(synth.offsets) - PREFIX
    result = {
        "attack_table_columns": columns, "sample": n, "synthetic_sample": len(synth_rows),
        "exact_copies": reidentification.exact_copies(timeline_keys(synth), timeline_keys(real), events,
                                                       thresholds.copy_min_events),
        "distance_to_closest_record": reidentification.distance_to_closest_record(syn, ori, control, columns, rng),
        "membership": {"distance_attack": membership.distance_attack(ori, control, syn, columns),
                       "model_loss_attack": _loss_attack(model, real_dir, rng)},
        "singling_out": reidentification.singling_out(tables[0], tables[2], tables[1], n_attacks=min(500, n),
                                                      n_cols=3, rng=rng),
    }
    demographic_width = sum(len(lv) for lv in levels[:PREFIX + 1])
    result["linkability"] = reidentification.linkability(ori, syn, control, demographic_width,
                                                         (PREFIX + 1, columns - PREFIX - 1), rng)
    result["inference"] = [_inference(tables, levels, column, tokenizer.vocabulary[codes[column - PREFIX - 1]], rng)
                           for column in range(PREFIX + 1, min(columns, PREFIX + 1 + INFERENCE_SECRETS))]
    return result


def _inference(tables, levels, column: int, name: str, rng) -> dict:
    keep = [j for j in range(tables[0].shape[1]) if j != column]
    ori, control, syn = (reidentification.one_hot(t[:, keep], [levels[j] for j in keep]) for t in tables)
    secrets = (tables[0][:, column], tables[2][:, column], tables[1][:, column])
    return {"secret": name} | reidentification.inference(ori, syn, control, len(keep), secrets, rng)


def _loss_attack(model, real_dir: Path, rng) -> dict | None:
    if model is None:
        return None
    network, tokenizer = load_model(model)
    timelines = tokenizer.transform(real_dir)
    split = timelines.split
    members = _sample(np.flatnonzero(split == 0), LOSS_ATTACK_PEOPLE, rng)
    nonmembers = _sample(np.flatnonzero(split != 0), LOSS_ATTACK_PEOPLE, rng)
    return membership.loss_attack(network, timelines, members, nonmembers, seed=int(rng.integers(2**31)))


def _rounded(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.3f}"


def _write_html(result: dict, prevalence: list[np.ndarray], out: Path) -> Path:
    fid, util, priv, release = result["fidelity"], result["utility"], result["privacy"], result["release"]
    report = Report("Synthetic release report")
    privacy = release["privacy"]
    dp = (f"DP-SGD with ε = {privacy['epsilon']:.2f}, δ = {privacy['delta']:.1e}" if privacy.get("differential_privacy")
          else "no differential privacy (ε = ∞)")
    report.text(f"{result['people']['synthetic']:,} synthetic people against {result['people']['real']:,} real; "
                f"generator trained with {dp}. Release gate: {'PASSED' if result['gate']['passed'] else 'FAILED'}.")
    report.heading("Release gate")
    report.table(["check", "value", "limit", "passed"],
                 [[c["check"], "not measured" if c["value"] is None else float(c["value"]), float(c["limit"]),
                   "yes" if c["passed"] else "NO"] for c in result["gate"]["checks"]])
    report.heading("Fidelity")
    p = fid["prevalence"]
    report.text(f"Per-code prevalence over {p['codes']} codes: Pearson r {_rounded(p['pearson_r'])}, mean |Δ| "
                f"{p['mean_abs_difference']:.4f}, max |Δ| {p['max_abs_difference']:.4f}. Co-occurrence of the "
                f"{fid['cooccurrence']['tokens']} most common codes: Jensen–Shannon {fid['cooccurrence']['jensen_shannon']:.4f}."
                f" Time between events: KS complement {_rounded(fid['time_between_events']['ks_complement'])}. Rare codes "
                f"(< 0.1 %): {fid['rare_events']['reproduced']} of {fid['rare_events']['rare_codes']} reproduced. "
                f"Subgroup fold-changes preserved: {fid['subgroups']['preserved']} of {fid['subgroups']['judged']}.")
    real_prevalence, synth_prevalence = prevalence
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.loglog(real_prevalence + 1e-5, synth_prevalence + 1e-5, ".", alpha=0.5)
    ax.plot([1e-5, 1], [1e-5, 1], "k--", lw=0.8)
    ax.set(xlabel="real prevalence", ylabel="synthetic prevalence")
    report.figure(fig, "prevalence", "Share of people with each code, real vs synthetic")
    shown = fid["outcomes"][:6]
    if shown:
        fig, axes = plt.subplots(1, len(shown), figsize=(3 * len(shown), 3), squeeze=False)
        for ax, row in zip(axes[0], shown):
            ax.plot(range(1, 101), row["cumulative_real"], label="real")
            ax.plot(range(1, 101), row["cumulative_synthetic"], label="synthetic")
            ax.set(title=row["outcome"], xlabel="age")
        axes[0][0].legend()
        report.figure(fig, "cumulative_incidence", "Cumulative incidence by age (delayed entry), real vs synthetic")
        report.table(["outcome", "largest difference in cumulative incidence"],
                     [[r["outcome"], r["cumulative_max_abs_difference"]] for r in fid["outcomes"]])
    report.heading("Utility: train on synthetic, test on real")
    report.table(["outcome", "AUROC trained on real", "AUROC trained on synthetic", "ratio"],
                 [[r["outcome"], r["trtr"], r["tstr"], r["ratio"]] for r in util["outcomes"]])
    report.text(f"Mean AUROC trained on synthetic over mean AUROC trained on real: {_rounded(util['ratio'])}.")
    report.heading("Privacy")
    d = priv["distance_to_closest_record"]
    attacks = priv["membership"]
    report.table(["measure", "value"], [
        ["exact copies of timelines (≥ %d events)" % priv["exact_copies"]["min_events"], priv["exact_copies"]["copies"]],
        ["median DCR to training / holdout", f"{d['median_to_train']:.3f} / {d['median_to_holdout']:.3f}"],
        ["DCR overfitting protection", d["overfitting_protection"]],
        ["near-copy rate (holdout's own)", f"{d['near_copy_rate']:.4f} ({d['near_copy_rate_holdout']:.4f})"],
        ["membership AUC, distance attack", attacks["distance_attack"]["auc"]],
        ["membership AUC, model loss attack", attacks["model_loss_attack"]["auc"] if attacks["model_loss_attack"]
         else "no model given"],
        ["singling-out risk", priv["singling_out"]["risk"]],
        ["linkability risk", priv["linkability"]["risk"]],
        ["inference risk (max over secrets)", max((r["risk"] for r in priv["inference"]), default=0.0)]])
    report.text("Singling-out, linkability and inference follow Anonymeter's definitions (implemented in "
                "farr.privacy.reidentification: the anonymeter package's pins conflict with this project's).")
    return report.save(out)
