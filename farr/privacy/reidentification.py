"""Re-identification risk of a synthetic release: copies, distance to closest record, and
Anonymeter-style singling-out, linkability and inference attacks.

Records are rows of a small discrete table (demographics, birth year, presence of the most
common codes). Distances are the mean over columns of a mismatch (0 or 1), the categorical form
of the SDMetrics distance to closest record, computed with one-hot matrix products in chunks.

The `anonymeter` package (1.1.0) pins numpy < 1.27 and pyarrow < 22, which conflict with this
project's numpy 2.4 and pyarrow 26, so its definitions are implemented here (Giomi et al.,
PoPETs 2023; statice/anonymeter): each attack runs on training records ("main"), on records the
generator never saw ("control") and as a random guess ("baseline"); success rates are Wilson
score estimates and risk = (r_main − r_control) / (1 − r_control), clipped to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import norm

CHUNK = 2048


def one_hot(table: np.ndarray, levels: list[np.ndarray]) -> torch.Tensor:
    """(n, columns) integer codes -> (n, Σ levels) float one-hot, columns scaled so a mismatch adds 1."""
    blocks = [torch.from_numpy((table[:, j, None] == lv[None, :]).astype(np.float32)) for j, lv in enumerate(levels)]
    return torch.cat(blocks, dim=1) / np.sqrt(2.0)


def levels_of(*tables: np.ndarray) -> list[np.ndarray]:
    joined = np.vstack(tables)
    return [np.unique(joined[:, j]) for j in range(joined.shape[1])]


def nearest(query: torch.Tensor, reference: torch.Tensor, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Distance (share of mismatching columns) from each query row to its closest reference row, and its index."""
    distance, index = [], []
    reference_norm = (reference * reference).sum(dim=1)
    for lo in range(0, len(query), CHUNK):
        q = query[lo:lo + CHUNK]
        d = (q * q).sum(dim=1)[:, None] + reference_norm[None, :] - 2 * q @ reference.T
        best = d.min(dim=1)
        distance.append(best.values.clamp(min=0) / columns)
        index.append(best.indices)
    return torch.cat(distance).numpy(), torch.cat(index).numpy()


def exact_copies(synth_keys: np.ndarray, real_keys: np.ndarray, synth_events: np.ndarray, min_events: int) -> dict:
    """Synthetic timelines of at least `min_events` events identical to a real one (by key)."""
    long = synth_events >= min_events
    copied = np.isin(synth_keys[long], real_keys)
    return {"min_events": min_events, "eligible": int(long.sum()), "copies": int(copied.sum()),
            "rate": float(copied.mean()) if long.any() else 0.0}


def distance_to_closest_record(synth: torch.Tensor, train: torch.Tensor, holdout: torch.Tensor, columns: int,
                               rng: np.random.Generator) -> dict:
    """DCR of synthetic rows to the training data and to an equal-sized holdout.

    Overfitting protection = min(2(1 − p), 1), p the share of synthetic rows closer to training
    than to holdout, ties counted half (SDMetrics; ≈ 0.5 when the generator learnt no individual).
    A near copy is a synthetic row at most as far from a training record as the closest 1% of holdout
    records are; the excess is its rate beyond the holdout's own (what unseen real people show)."""
    train = train[rng.choice(len(train), size=min(len(train), len(holdout)), replace=False)]
    to_train, _ = nearest(synth, train, columns)
    to_holdout, _ = nearest(synth, holdout, columns)
    holdout_to_train, _ = nearest(holdout, train, columns)
    p = float(np.mean(to_train < to_holdout) + 0.5 * np.mean(to_train == to_holdout))  # ties count half
    near = float(np.percentile(holdout_to_train, 1))
    rate, reference = float(np.mean(to_train <= near)), float(np.mean(holdout_to_train <= near))
    return {"median_to_train": float(np.median(to_train)), "median_to_holdout": float(np.median(to_holdout)),
            "p5_to_train": float(np.percentile(to_train, 5)), "p5_to_holdout": float(np.percentile(to_holdout, 5)),
            "closer_to_train_share": p, "overfitting_protection": min(2 * (1 - p), 1.0),
            "near_copy_threshold": near, "near_copy_rate": rate, "near_copy_rate_holdout": reference,
            "near_copy_excess": rate - reference}


@dataclass(frozen=True)
class Rate:
    value: float
    error: float


def wilson(successes: int, trials: int, confidence: float = 0.95) -> Rate:
    """Wilson score estimate of a success rate and its half-width."""
    z = norm.ppf((1 + confidence) / 2)
    n = max(trials, 1)
    value = (successes + z * z / 2) / (n + z * z)
    error = z / (n + z * z) * np.sqrt(successes * (n - successes) / n + z * z / 4)
    return Rate(float(value), float(error))


def risk(main: Rate, control: Rate, baseline: Rate) -> dict:
    value = (main.value - control.value) / (1 - control.value) if control.value < 1 else 0.0
    return {"risk": float(np.clip(value, 0, 1)), "main_rate": main.value, "control_rate": control.value,
            "baseline_rate": baseline.value, "trustworthy": baseline.value < main.value,
            "main_error": main.error}


def singling_out(ori: np.ndarray, syn: np.ndarray, control: np.ndarray, n_attacks: int, n_cols: int,
                 rng: np.random.Generator) -> dict:
    """Multivariate singling out: predicates (values of `n_cols` random columns of a synthetic row that
    is unique in the synthetic data on them; more columns when such rows are rare) succeed when they
    match exactly one target record."""
    queries = []
    for attempt in range(n_attacks * 20):
        if len(queries) == n_attacks:
            break
        width = min(syn.shape[1], n_cols + attempt // (2 * n_attacks))  # widen when few predicates are unique
        row, cols = syn[rng.integers(len(syn))], rng.choice(syn.shape[1], width, replace=False)
        if (syn[:, cols] == row[cols]).all(axis=1).sum() == 1:
            queries.append((cols, row[cols]))
    guesses = [(cols, np.array([rng.choice(np.unique(syn[:, c])) for c in cols])) for cols, _ in queries]

    def successes(records, predicates):
        return sum(int((records[:, cols] == values).all(axis=1).sum() == 1) for cols, values in predicates)

    n = len(queries)
    return risk(wilson(successes(ori, queries), n), wilson(successes(control, queries), n),
                wilson(successes(ori, guesses), n)) | {"attacks": n}


def linkability(ori: torch.Tensor, syn: torch.Tensor, control: torch.Tensor, split: int, columns: tuple[int, int],
                rng: np.random.Generator) -> dict:
    """Linkability: targets' nearest synthetic row on the first `split` one-hot columns (one attribute
    set) and on the rest (the other); success when both point to the same synthetic row."""
    def rate(targets):
        _, a = nearest(targets[:, :split], syn[:, :split], columns[0])
        _, b = nearest(targets[:, split:], syn[:, split:], columns[1])
        return wilson(int((a == b).sum()), len(targets))

    guess = rng.integers(len(syn), size=(2, len(ori)))
    return risk(rate(ori), rate(control), wilson(int((guess[0] == guess[1]).sum()), len(ori))) | {"attacks": len(ori)}


def inference(ori: torch.Tensor, syn: torch.Tensor, control: torch.Tensor, columns: int, secret_of: tuple[np.ndarray, ...],
              rng: np.random.Generator) -> dict:
    """Attribute inference: guess each target's secret as that of its nearest synthetic row on the
    other columns (`ori`, `syn`, `control` exclude the secret); `secret_of` = (ori, syn, control) secrets."""
    ori_secret, syn_secret, control_secret = secret_of

    def rate(targets, truth):
        _, index = nearest(targets, syn, columns)
        return wilson(int((syn_secret[index] == truth).sum()), len(truth))

    guess = syn_secret[rng.integers(len(syn), size=len(ori_secret))]
    return risk(rate(ori, ori_secret), rate(control, control_secret),
                wilson(int((guess == ori_secret).sum()), len(ori_secret))) | {"attacks": len(ori_secret)}
