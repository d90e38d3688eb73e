"""Cutting one dataset into per-site datasets (by NHS region or ICB), and naming a site's data.

A site is an ordinary farr dataset; the ledger names it by the SHA-256 of its metadata/farr.json,
which itself holds the checksum of every file, so the one hash pins the whole dataset.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl

from farr.events.io import DatasetWriter, read_metadata, scan_events, scan_subjects, sha256_file
from farr.events.schema import FARR_METADATA_FILE

GROUPINGS = {"region": "region", "icb": "site_id"}


def manifest_sha256(site: str | Path) -> str:
    """The SHA-256 of a site's metadata/farr.json (checked to be a farr dataset first)."""
    read_metadata(site)
    return sha256_file(Path(site) / FARR_METADATA_FILE)


def assign_sites(sizes: dict[str, int], sites: int | None) -> dict[str, int]:
    """Each group's site: one site per group, or groups packed into `sites` sites of similar size
    (largest group first, each to the smallest site so far)."""
    groups = sorted(sizes, key=lambda g: (-sizes[g], g))
    if sites is None or sites >= len(groups):
        return {g: i for i, g in enumerate(groups)}
    if sites < 1:
        raise ValueError(f"--sites must be at least 1, got {sites}")
    load = np.zeros(sites, np.int64)
    assignment = {}
    for g in groups:
        assignment[g] = int(np.argmin(load))
        load[assignment[g]] += sizes[g]
    return assignment


def split(dataset: str | Path, by: str, out: str | Path, *, sites: int | None = None,
          overwrite: bool = False) -> list[Path]:
    """Write one farr dataset per site under `out` and return their directories."""
    if by not in GROUPINGS:
        raise ValueError(f"--by {by!r}: choose one of {', '.join(GROUPINGS)}")
    metadata = read_metadata(dataset)
    column = GROUPINGS[by]
    subjects = scan_subjects(dataset).with_columns(pl.col(column).fill_null("unknown").alias("_group")).collect()
    sizes = dict(subjects.group_by("_group").len().iter_rows())
    assignment = assign_sites(sizes, sites)
    subjects = subjects.with_columns(pl.col("_group").replace_strict(assignment, return_dtype=pl.Int64).alias("_site"))
    out = Path(out)
    written = []
    for site in range(max(assignment.values()) + 1):
        members = subjects.filter(pl.col("_site") == site)
        groups = sorted(members["_group"].unique().to_list())
        name = f"site{site + 1}-" + _slug("+".join(groups))
        written.append(_write_site(dataset, members.drop("_group", "_site"), out / name, metadata, by, groups,
                                   overwrite))
    return written


def _write_site(dataset, members: pl.DataFrame, out: Path, metadata: dict, by: str, groups: list[str],
                overwrite: bool) -> Path:
    events = (scan_events(dataset).join(members.lazy().select("subject_id"), on="subject_id", how="semi")
              .sort("subject_id", "time", maintain_order=True).collect())
    with DatasetWriter(out, overwrite=overwrite, identifiable=metadata["identifiable"]) as writer:
        shard = writer.write_shard(0, events.to_arrow(), members.sort("subject_id").to_arrow())
        writer.commit([shard], created_by="farr federate split", dataset_name=out.name,
                      extra=metadata.get("extra", {}) | {"site": {by: groups}})
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9+]+", "-", text.lower()).strip("-")[:60]
