"""Agreeing one vocabulary across sites before training, from what each site may share.

Each site fits a tokenizer on its own training split and shares only its tokens (codes and
demographic categories) seen at least `min_count` times, with their counts, and the quantile edges of its numeric codes (each edge an
order statistic of at least `min_count` values). The agreed tokenizer is the union, codes ordered
by total count, value edges averaged across sites weighted by their counts.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np

from farr.model.tokenizer import DEMOGRAPHICS, SPECIAL, Tokenizer

DEMOGRAPHIC_PREFIXES = tuple(f"{c.upper()}//" for c in DEMOGRAPHICS)


def shared_counts(site: str | Path, min_count: int = 10) -> dict:
    """What a site releases for the vocabulary: token counts ≥ min_count and value-bin edges."""
    tokenizer = Tokenizer(min_count=min_count).fit(site)
    timelines = tokenizer.transform(site)
    rows = timelines.rows_of(np.flatnonzero(timelines.split == 0))[1]
    counts = np.bincount(timelines.tokens[rows], minlength=len(tokenizer))
    released = {token: int(count) for token, count in zip(tokenizer.vocabulary, counts)
                if token not in SPECIAL and count >= min_count}
    return {"min_count": min_count, "counts": released, "bin_edges": tokenizer.bin_edges}


def agree(shared: list[dict]) -> Tokenizer:
    """The tokenizer every site trains with: the union of what the sites released."""
    if not shared:
        raise ValueError("no sites to agree a vocabulary with")
    min_counts = {s["min_count"] for s in shared}
    if len(min_counts) != 1:
        raise ValueError(f"sites used different min_count values {sorted(min_counts)}; agree one first")
    total = Counter()
    for s in shared:
        total.update(s["counts"])
    demographic = sorted(t for t in total if t.startswith(DEMOGRAPHIC_PREFIXES))
    codes = sorted((t for t in total if not t.startswith(DEMOGRAPHIC_PREFIXES)), key=lambda t: (-total[t], t))
    return Tokenizer(min_count=min_counts.pop(), vocabulary=[*SPECIAL, *demographic, *codes],
                     bin_edges=_pooled_edges(shared))


def _pooled_edges(shared: list[dict]) -> dict[str, list[float]]:
    """Per numeric code, the count-weighted mean of the sites' edges (sites whose edge count differs
    from the most common one, e.g. because ties merged two edges, are left out for that code)."""
    edges: dict[str, list[tuple[list[float], int]]] = {}
    for s in shared:
        for code, values in s["bin_edges"].items():
            edges.setdefault(code, []).append((values, max(1, sum(c for t, c in s["counts"].items()
                                                                    if t.split("//Q")[0] == code))))
    pooled = {}
    for code, entries in sorted(edges.items()):
        width = Counter(len(v) for v, _ in entries).most_common(1)[0][0]
        chosen = [(v, w) for v, w in entries if len(v) == width]
        mean = np.average([v for v, _ in chosen], axis=0, weights=[w for _, w in chosen])
        pooled[code] = sorted({float(x) for x in np.atleast_1d(mean)})
    return pooled


def vocabulary_sha256(tokenizer: Tokenizer) -> str:
    """A fingerprint of what fixes the model's shape and inputs: vocabulary and value bins."""
    text = json.dumps({"vocabulary": tokenizer.vocabulary, "bin_edges": tokenizer.bin_edges}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
