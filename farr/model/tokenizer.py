"""Patient timelines as token sequences: codes to a vocabulary, lab values to quantile bins,
demographics as leading tokens, and the age of every token and each birth date kept for the
model's continuous encodings of age and calendar time.

`Tokenizer` follows scikit-learn: `fit` learns the vocabulary and value bins from a dataset's
training split, `transform` turns any dataset into `Timelines`; both are saved with the model.
Codes seen fewer than `min_count` times, and codes the vocabulary never saw, become the explicit
UNKNOWN token and are counted.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl

from farr.events.io import DatasetError, scan_events, scan_subjects
from farr.events.schema import BIRTH_CODE

PAD, NO_EVENT, UNKNOWN = "<pad>", "<no event>", "<unknown>"
SPECIAL = (PAD, NO_EVENT, UNKNOWN)
DEMOGRAPHICS = ("sex", "ethnicity", "imd_quintile", "region", "birth_cohort")
COHORT_YEARS = 5  # birth cohort: a demographic group (calendar time enters from each birth date)
DAYS_PER_YEAR = 365.25
SPLIT_PERCENT = {"train": 80, "tuning": 10, "held_out": 10}


def split_of(subject_id: np.ndarray) -> np.ndarray:
    """Deterministic subject-level split (0 train, 1 tuning, 2 held out) from a hash of the id."""
    h = (np.asarray(subject_id, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)
    bucket = (h % np.uint64(100)).astype(np.int64)
    return np.searchsorted(np.cumsum(list(SPLIT_PERCENT.values())), bucket, side="right").astype(np.int8)


@dataclass
class Timelines:
    """Token sequences of many people, concatenated; person i owns [offsets[i], offsets[i+1])."""

    subject_id: np.ndarray  # (n,)
    offsets: np.ndarray  # (n + 1,)
    tokens: np.ndarray  # (N,) int32, each person's demographic tokens first
    ages: np.ndarray  # (N,) float32 years
    start_age: np.ndarray  # (n,) registration start: events before it were not observed as they happened
    end_age: np.ndarray  # (n,) registration end (death, moving away, end of extract)
    birth_day: np.ndarray  # (n,) days since 1970-01-01 of the (month of) birth
    unknown: Counter = field(default_factory=Counter)  # codes mapped to UNKNOWN, with counts

    def __len__(self) -> int:
        return len(self.subject_id)

    @property
    def split(self) -> np.ndarray:
        return split_of(self.subject_id)

    def of(self, person: int) -> tuple[np.ndarray, np.ndarray]:
        """One person's tokens and ages."""
        lo, hi = self.offsets[person], self.offsets[person + 1]
        return self.tokens[lo:hi], self.ages[lo:hi]

    def rows_of(self, people: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(owner, index): for every token of these people, its person's position in `people`
        and its index into `tokens` / `ages`."""
        lengths = self.offsets[people + 1] - self.offsets[people]
        index = np.repeat(self.offsets[people] - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        return np.repeat(np.arange(len(people)), lengths), index

    def calendar_moved(self, years: float) -> Timelines:
        """The same people, ages and histories with calendar time (birth dates) moved by `years`."""
        return replace(self, birth_day=self.birth_day + years * DAYS_PER_YEAR)

    def take(self, people: np.ndarray) -> Timelines:
        lengths = np.diff(self.offsets)[people]
        _, index = self.rows_of(people)
        return Timelines(self.subject_id[people], np.concatenate([[0], np.cumsum(lengths)]),
                         self.tokens[index], self.ages[index], self.start_age[people],
                         self.end_age[people], self.birth_day[people], self.unknown)


@dataclass
class Tokenizer:
    min_count: int = 10
    icd10_characters: int | None = 3  # group ICD-10 codes to this many characters (None: keep)
    value_bins: int = 5  # quantile bins for numeric values
    vocabulary: list[str] = field(default_factory=list)
    bin_edges: dict[str, list[float]] = field(default_factory=dict)

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, dataset: str | Path) -> Tokenizer:
        events = self._events(dataset).filter(pl.col("split") == 0)
        valued = (events.filter(pl.col("numeric_value").is_not_null())
                  .group_by("code").agg(pl.col("numeric_value").quantile(q).alias(f"q{i}")
                                        for i, q in enumerate(self._quantiles())).collect())
        self.bin_edges = {row[0]: sorted(set(row[1:])) for row in valued.iter_rows()}
        counts = (self._tokens(events).group_by("token").len().filter(pl.col("len") >= self.min_count)
                  .sort(["len", "token"], descending=[True, False]).collect())
        demographic = sorted(self._demographic_tokens(dataset).unpivot()["value"].unique().to_list())
        self.vocabulary = [*SPECIAL, *demographic, *counts["token"].to_list()]
        return self

    def _quantiles(self) -> list[float]:
        return [i / self.value_bins for i in range(1, self.value_bins)]

    # -- transforming ----------------------------------------------------------------------
    def transform(self, dataset: str | Path) -> Timelines:
        if not self.vocabulary:
            raise ValueError("tokenizer is not fitted: call fit() first")
        subjects = self._subjects(dataset).collect().sort("subject_id")
        if subjects.is_empty():
            raise DatasetError(f"{dataset}: the dataset has no subjects")
        ids = pl.DataFrame({"token": self.vocabulary, "id": np.arange(len(self.vocabulary), dtype=np.int32)})
        events = self._tokens(self._events(dataset)).join(ids.lazy(), on="token", how="left",
                                                          maintain_order="left")
        events = events.select("subject_id", "age", "token", "id").collect()
        unknown = Counter(dict(events.filter(pl.col("id").is_null())["token"].value_counts().iter_rows()))
        events = events.with_columns(pl.col("id").fill_null(self.vocabulary.index(UNKNOWN)))
        prefix = self._demographic_ids(subjects)
        return self._assemble(subjects, events, prefix, unknown)

    def _assemble(self, subjects: pl.DataFrame, events: pl.DataFrame, prefix: np.ndarray,
                  unknown: Counter) -> Timelines:
        n, width = prefix.shape
        owners, ids = events["subject_id"].to_numpy(), subjects["subject_id"].to_numpy()
        counts = np.searchsorted(owners, ids, side="right") - np.searchsorted(owners, ids, side="left")
        lengths = counts + width
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        tokens = np.empty(offsets[-1], np.int32)
        ages = np.zeros(offsets[-1], np.float32)
        starts = offsets[:-1]
        for j in range(width):
            tokens[starts + j] = prefix[:, j]
        body = np.ones(offsets[-1], bool)
        body[(starts[:, None] + np.arange(width)).ravel()] = False
        tokens[body] = events["id"].to_numpy()  # events are sorted by subject, then time
        ages[body] = events["age"].to_numpy()
        return Timelines(subjects["subject_id"].to_numpy(), offsets, tokens, ages,
                         subjects["start_age"].to_numpy().astype(np.float32),
                         subjects["end_age"].to_numpy().astype(np.float32),
                         subjects["birth_day"].to_numpy().astype(np.int32), unknown)

    def _demographic_ids(self, subjects: pl.DataFrame) -> np.ndarray:
        index = dict(zip(self.vocabulary, range(len(self.vocabulary))))
        tokens = self._demographic_tokens(subjects)
        return np.column_stack([tokens[c].replace_strict(index, default=index[UNKNOWN], return_dtype=pl.Int32)
                                .to_numpy() for c in DEMOGRAPHICS])

    # -- shared pieces ---------------------------------------------------------------------
    @staticmethod
    def _demographic_tokens(source: str | Path | pl.DataFrame) -> pl.DataFrame:
        subjects = source if isinstance(source, pl.DataFrame) else _with_cohort(scan_subjects(source)).collect()
        return subjects.select(pl.format(f"{c.upper()}//{{}}", pl.col(c).cast(pl.String).fill_null("unknown"))
                               .alias(c) for c in DEMOGRAPHICS)

    @staticmethod
    def _subjects(dataset: str | Path) -> pl.LazyFrame:
        birth = pl.col("year_month_of_birth").str.to_date("%Y-%m")
        years = lambda column: (pl.col(column) - birth).dt.total_days() / DAYS_PER_YEAR  # noqa: E731
        return _with_cohort(scan_subjects(dataset)).select(
            "subject_id", *DEMOGRAPHICS,
            birth.dt.epoch("d").alias("birth_day"),
            years("registration_start").fill_null(0.0).alias("start_age"),
            years("registration_end").alias("end_age"))

    def _events(self, dataset: str | Path) -> pl.LazyFrame:
        birth = scan_subjects(dataset).select(
            "subject_id", pl.col("year_month_of_birth").str.to_date("%Y-%m").cast(pl.Datetime("us")).alias("birth"))
        return (scan_events(dataset)
                .filter(pl.col("time").is_not_null() & (pl.col("code") != BIRTH_CODE))
                .join(birth, on="subject_id", how="left", maintain_order="left")
                .with_columns(((pl.col("time") - pl.col("birth")).dt.total_seconds() / (DAYS_PER_YEAR * 86_400))
                              .alias("age"),
                              pl.col("subject_id").map_batches(lambda s: pl.Series(split_of(s.to_numpy())),
                                                               return_dtype=pl.Int8).alias("split")))

    def _tokens(self, events: pl.LazyFrame) -> pl.LazyFrame:
        code = self._grouped(pl.col("code"))
        if not self.bin_edges:
            return events.with_columns(code.alias("token"))
        # One column per edge, not a list per event: with a list, 1M people's events took 28 s to tokenize, not 13.
        width = max(map(len, self.bin_edges.values()))
        edges = pl.DataFrame({"code": list(self.bin_edges), "binned": True} | {
            f"edge{i}": [e[i] if i < len(e) else None for e in self.bin_edges.values()] for i in range(width)},
            schema={"code": pl.String, "binned": pl.Boolean} | {f"edge{i}": pl.Float64 for i in range(width)})
        below = pl.sum_horizontal(pl.col(f"edge{i}") <= pl.col("numeric_value") for i in range(width))  # 0-based bin
        token = pl.when(pl.col("numeric_value").is_not_null() & pl.col("binned")).then(
            pl.format("{}//Q{}", code, below + 1)).otherwise(code)
        return (events.join(edges.lazy(), on="code", how="left", maintain_order="left")
                .with_columns(token.alias("token")).drop(edges.columns[1:]))

    def ids_of(self, codes: list[str]) -> list[int]:
        """Vocabulary ids of these codes (grouped as events are; codes not in it are skipped)."""
        grouped = pl.select(self._grouped(pl.lit(pl.Series(codes, dtype=pl.String)))).to_series().to_list()
        index = {token: i for i, token in enumerate(self.vocabulary)}
        return sorted({index[c] for c in grouped if c in index})

    def _grouped(self, code: pl.Expr) -> pl.Expr:
        if not self.icd10_characters:
            return code
        return code.str.replace(rf"^(ICD10/[A-Z][0-9A-Z]{{{self.icd10_characters - 1}}}).*$", "$1")

    # -- persistence -----------------------------------------------------------------------
    def save(self, file: str | Path) -> None:
        Path(file).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, file: str | Path) -> Tokenizer:
        try:
            return cls(**json.loads(Path(file).read_text()))
        except (OSError, json.JSONDecodeError, TypeError) as error:
            raise ValueError(f"{file}: not a farr tokenizer ({error})") from None

    def __len__(self) -> int:
        return len(self.vocabulary)


def _with_cohort(subjects: pl.LazyFrame) -> pl.LazyFrame:
    year = pl.col("year_month_of_birth").str.slice(0, 4).cast(pl.Int32)
    return subjects.with_columns((year - year % COHORT_YEARS).alias("birth_cohort"))
