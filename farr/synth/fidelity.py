"""Fidelity of a synthetic population to the real one, on token timelines in one vocabulary.

Prevalence is the share of people with at least one record of a token. Incidence and cumulative
incidence use age as the time scale with delayed entry: a person is at risk from registration
start until their first record of the outcome or registration end, so both populations are
measured the same way whatever their registration spans (cumulative incidence is
1 − exp(−Σ hazards) over one-year age bands, a piecewise-exponential estimate).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.stats import ks_2samp

from farr.forecast.landmark import Outcome
from farr.model.data import PREFIX
from farr.model.tokenizer import DEMOGRAPHICS, Timelines

RARE = 0.001  # prevalence below 0.1 %
TOP_PAIRS = 50  # most prevalent tokens whose pairwise co-occurrence is compared
AGE_BANDS = np.arange(0, 101, 5)
FOLD_TOLERANCE = 1.5  # a fold-change is preserved within this factor, in the same direction
MIN_CASES = 20  # fewer real cases in a subgroup: its fold-change is not judged
GAP_SAMPLE = 200_000
MIN_PERSON_YEARS = 20  # an age band with less time at risk gives no rate (one case would swamp it)


def presence(t: Timelines, vocabulary_size: int) -> sp.csr_matrix:
    """(people, tokens) 1 where the person has a record of the token (demographic prefix excluded)."""
    owner, index = t.rows_of(np.arange(len(t)))
    body = (index - t.offsets[owner]) >= PREFIX
    matrix = sp.csr_matrix((np.ones(body.sum(), np.float32), (owner[body], t.tokens[index[body]])),
                           shape=(len(t), vocabulary_size))
    matrix.data[:] = 1.0
    return matrix


def prevalence(t: Timelines, vocabulary_size: int) -> np.ndarray:
    return np.asarray(presence(t, vocabulary_size).mean(axis=0)).ravel()


def prevalence_agreement(real: np.ndarray, synth: np.ndarray, vocabulary: list[str]) -> dict:
    seen = (real > 0) | (synth > 0)
    r, s = real[seen], synth[seen]
    top = np.argsort(-real)[:15]
    return {"codes": int(seen.sum()), "pearson_r": float(np.corrcoef(r, s)[0, 1]) if seen.sum() > 1 else None,
            "max_abs_difference": float(np.abs(r - s).max()), "mean_abs_difference": float(np.abs(r - s).mean()),
            "top": [{"code": vocabulary[i], "real": float(real[i]), "synthetic": float(synth[i])} for i in top]}


def rare_events(real: np.ndarray, synth: np.ndarray) -> dict:
    rare = (real > 0) & (real < RARE)
    return {"threshold": RARE, "rare_codes": int(rare.sum()),
            "reproduced": int((synth[rare] > 0).sum()),
            "real_total_prevalence": float(real[rare].sum()), "synthetic_total_prevalence": float(synth[rare].sum()),
            "synthetic_only_codes": int(((synth > 0) & (real == 0)).sum())}


def cooccurrence(real: sp.csr_matrix, synth: sp.csr_matrix, real_prevalence: np.ndarray) -> dict:
    """Pairwise prevalence of the most prevalent tokens: mean |Δ| and Jensen–Shannon divergence."""
    top = np.argsort(-real_prevalence)[:TOP_PAIRS]
    upper = np.triu_indices(len(top), k=1)
    pairs = [np.asarray((m[:, top].T @ m[:, top]).todense())[upper] / max(m.shape[0], 1) for m in (real, synth)]
    p, q = (x / x.sum() if x.sum() else x for x in pairs)
    mid = (p + q) / 2
    kl = lambda a: float(np.sum(np.where(a > 0, a * np.log(np.where(a > 0, a, 1) / np.where(mid > 0, mid, 1)), 0)))  # noqa: E731
    return {"tokens": len(top), "pairs": len(pairs[0]), "mean_abs_difference": float(np.abs(pairs[0] - pairs[1]).mean()),
            "jensen_shannon": 0.5 * kl(p) + 0.5 * kl(q),
            "pearson_r": float(np.corrcoef(*pairs)[0, 1]) if len(pairs[0]) > 1 else None}


def gaps_in_days(t: Timelines, rng: np.random.Generator) -> np.ndarray:
    """Days between consecutive recorded events of a person (a sample of at most GAP_SAMPLE)."""
    owner, index = t.rows_of(np.arange(len(t)))
    body = (index - t.offsets[owner]) >= PREFIX
    owner, ages = owner[body], t.ages[index[body]].astype(np.float64)
    same = owner[1:] == owner[:-1]
    gaps = np.diff(ages)[same] * 365.25
    return rng.choice(gaps, GAP_SAMPLE, replace=False) if len(gaps) > GAP_SAMPLE else gaps


def gap_agreement(real: np.ndarray, synth: np.ndarray) -> dict:
    quantiles = [10, 25, 50, 75, 90]
    if not len(real) or not len(synth):
        return {"ks_complement": None}
    return {"ks_complement": float(1 - ks_2samp(real, synth).statistic),
            "real_quantiles_days": np.percentile(real, quantiles).round(1).tolist(),
            "synthetic_quantiles_days": np.percentile(synth, quantiles).round(1).tolist()}


def first_record_age(t: Timelines, outcome: Outcome) -> np.ndarray:
    """Each person's age at their first record of the outcome (inf: none)."""
    owner, index = t.rows_of(np.arange(len(t)))
    hit = np.isin(t.tokens[index], outcome.tokens) & ((index - t.offsets[owner]) >= PREFIX)
    first = np.full(len(t), np.inf)
    np.minimum.at(first, owner[hit], t.ages[index[hit]].astype(np.float64))
    return first


def incidence(t: Timelines, onset: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per age band: first records per 1,000 person-years registered and at risk, and the person-years."""
    start, end = t.start_age.astype(np.float64), t.end_age.astype(np.float64)
    exit_age = np.minimum(end, onset)
    low, high = edges[:-1], edges[1:]
    years = np.clip(np.minimum(exit_age[:, None], high) - np.maximum(start[:, None], low), 0, None).sum(axis=0)
    incident = (onset >= start) & (onset <= end)
    cases = np.histogram(onset[incident], bins=edges)[0]
    return np.where(years >= MIN_PERSON_YEARS, 1000 * cases / np.maximum(years, 1e-12), np.nan), years


def cumulative_incidence(t: Timelines, onset: np.ndarray) -> np.ndarray:
    """1 − exp(−Σ hazard) at ages 1..100, hazards per one-year band (bands without a rate add none)."""
    rate, _ = incidence(t, onset, np.arange(0, 101))
    return 1 - np.exp(-np.cumsum(np.nan_to_num(rate) / 1000))


def outcome_curves(real: Timelines, synth: Timelines, outcomes: list[Outcome]) -> list[dict]:
    rows = []
    for outcome in outcomes:
        onsets = first_record_age(real, outcome), first_record_age(synth, outcome)
        bands = [incidence(t, o, AGE_BANDS)[0] for t, o in zip((real, synth), onsets)]
        cumulative = [cumulative_incidence(t, o) for t, o in zip((real, synth), onsets)]
        rows.append({"outcome": outcome.name,
                     "incidence_per_1000_real": np.round(bands[0], 3).tolist(),
                     "incidence_per_1000_synthetic": np.round(bands[1], 3).tolist(),
                     "cumulative_real": np.round(cumulative[0], 4).tolist(),
                     "cumulative_synthetic": np.round(cumulative[1], 4).tolist(),
                     "cumulative_max_abs_difference": float(np.abs(cumulative[0] - cumulative[1]).max())})
    return rows


def demographic_tokens(t: Timelines, vocabulary: list[str]) -> dict[str, np.ndarray]:
    prefix = t.tokens[t.offsets[:-1, None] + np.arange(PREFIX)]
    names = np.asarray(vocabulary)
    return {c: names[prefix[:, j]] for j, c in enumerate(DEMOGRAPHICS)}


SUBGROUPS = {  # column -> (reference value, compared values)
    "sex": ("SEX//M", ["SEX//F"]),
    "ethnicity": ("ETHNICITY//White", ["ETHNICITY//Asian", "ETHNICITY//Black", "ETHNICITY//Mixed", "ETHNICITY//Other"]),
    "imd_quintile": ("IMD_QUINTILE//5", ["IMD_QUINTILE//1"]),
}


def subgroup_fold_changes(real: Timelines, synth: Timelines, outcomes: list[Outcome], vocabulary: list[str]) -> dict:
    """Prevalence ratio of each subgroup to its reference, real vs synthetic, for every outcome."""
    groups = demographic_tokens(real, vocabulary), demographic_tokens(synth, vocabulary)
    rows = []
    for outcome in outcomes:
        had = [np.isfinite(first_record_age(t, outcome)) for t in (real, synth)]
        for column, (reference, compared) in SUBGROUPS.items():
            for value in compared:
                ratios, cases = [], 0
                for g, h in zip(groups, had):
                    mine, ref = g[column] == value, g[column] == reference
                    cases = cases or int(h[mine].sum())
                    p, p_ref = h[mine].mean() if mine.any() else np.nan, h[ref].mean() if ref.any() else np.nan
                    ratios.append(p / p_ref if p_ref > 0 else np.nan)
                if cases < MIN_CASES or not np.all(np.isfinite(ratios)) or min(ratios) <= 0:
                    continue
                preserved = bool(np.sign(np.log(ratios[0])) == np.sign(np.log(ratios[1]))
                                 and abs(np.log(ratios[1] / ratios[0])) <= np.log(FOLD_TOLERANCE))
                rows.append({"outcome": outcome.name, "group": value, "reference": reference,
                             "real_fold_change": float(ratios[0]), "synthetic_fold_change": float(ratios[1]),
                             "preserved": preserved})
    return {"judged": len(rows), "preserved": sum(r["preserved"] for r in rows), "rows": rows}
