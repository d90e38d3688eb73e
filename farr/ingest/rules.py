"""The rules ingest applies to one patient-complete chunk, in this order:

1. opt-outs: patients who opted out (in a project not exempt) are dropped with all their
   records: counted, and recorded nowhere else, not even in quarantine;
2. patients: an invalid NHS number (Modulus 11), no identifier at all, sex other than F/M, no
   or a future date of birth, or a repeat of an earlier patient sends the patient to quarantine
   (and their records with them, counted);
3. pseudonyms: a patient's subject_id is the keyed HMAC of their NHS number, else of their own
   source identifier. Direct identifiers go; the date of birth is kept as its month, the
   postcode as its region. MEDS_BIRTH is put at the first of the birth month (a source's own
   MEDS_BIRTH is replaced), and a registration start in the birth month moves there too: it is
   often the exact date of birth;
4. records: one for an unknown patient, dated in the future, before birth, a day or more after
   death (the earliest MEDS_DEATH), with a malformed code, or repeating an earlier record
   exactly goes to quarantine.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from farr.events.schema import (
    BIRTH_CODE,
    CODE_PATTERN,
    DEATH_CODE,
    END_REASONS,
    ETHNICITIES,
    EVENT_SCHEMA,
    REGIONS,
    SUBJECT_SCHEMA,
)
from farr.governance.deidentify import MASK, nhs_number_problems, region_of_postcodes
from farr.governance.opt_out import OptOutPolicy
from farr.governance.pseudonymise import NHS_NUMBER_SYSTEM, ProjectKey, first_repeats
from farr.ingest.source import Chunk

QUARANTINE_COLUMNS = ("file", "record", "reason", "subject_id", "content")
KEEP, OPTED_OUT, QUARANTINE = "keep", "opted out", "quarantine"


@dataclass(frozen=True)
class Rules:
    key: ProjectKey
    policy: OptOutPolicy
    now: dt.datetime  # records after this are dated in the future (naive UTC)


@dataclass
class Counts:
    """What a run read, excluded and quarantined; adds up over chunks."""

    subjects_read: int = 0
    events_read: int = 0
    opted_out: Counter = field(default_factory=Counter)  # national, type1, subjects, events
    quarantined_subjects: Counter = field(default_factory=Counter)  # reason -> patients
    quarantined_records: Counter = field(default_factory=Counter)  # reason -> records
    key_systems: Counter = field(default_factory=Counter)  # identifier system -> patients kept

    def add(self, other: Counts) -> None:
        self.subjects_read += other.subjects_read
        self.events_read += other.events_read
        for name in ("opted_out", "quarantined_subjects", "quarantined_records", "key_systems"):
            getattr(self, name).update(getattr(other, name))


@dataclass
class Cleaned:
    events: pl.DataFrame  # EVENT_SCHEMA columns, sorted by (subject_id, time)
    subjects: pl.DataFrame  # SUBJECT_SCHEMA columns
    quarantine: pl.DataFrame  # QUARANTINE_COLUMNS
    checks: np.ndarray  # the pseudonym check value of each subject, in subjects' order
    counts: Counts


def clean(chunk: Chunk, rules: Rules) -> Cleaned:
    """Apply the rules to ``chunk``; consumes its patients and events (to bound memory)."""
    counts = Counts(subjects_read=chunk.patients.num_rows, events_read=chunk.events.num_rows)
    patients, events = pl.from_arrow(chunk.patients), _categorical_codes(chunk.events)
    chunk.patients = chunk.events = None
    patients = classify_patients(patients, rules)
    _count_patients(patients, events, counts)
    kept = patients.filter(pl.col("status") == KEEP).sort("subject_id")
    events = classify_events(events, patients, rules)
    bad_events = events.filter(pl.col("reason").is_not_null())
    events = events.filter(pl.col("reason").is_null()).drop("reason")
    events, repeats = _drop_repeats(pl.concat([events, _births(kept)]))
    bad_events = pl.concat([bad_events, repeats])
    counts.quarantined_records.update(dict(bad_events.group_by("reason").len().iter_rows()))
    quarantine = pl.concat([_patient_quarantine(patients), _event_quarantine(bad_events)])
    return Cleaned(events.select(EVENT_SCHEMA.names), _subjects(kept), quarantine,
                   kept["check"].to_numpy(), counts)


# ---------------------------------------------------------------------------------------------
# Patients


def _first_problem(*conditions: tuple[pl.Expr, pl.Expr]) -> pl.Expr:
    """The reason of the first condition that holds, else null."""
    (condition, reason), *rest = conditions
    expr = pl.when(condition).then(reason)
    for condition, reason in rest:
        expr = expr.when(condition).then(reason)
    return expr.otherwise(None)


def _identifiers(patients: pl.DataFrame) -> pl.DataFrame:
    """nhs (valid 10-digit NHS number), nhs_problem, and subject_key (what the HMAC keys)."""
    digits, reasons = nhs_number_problems(patients["nhs_number"])
    patients = patients.with_columns(nhs=pl.Series(digits, dtype=pl.String),
                                     nhs_problem=pl.Series(reasons, dtype=pl.String))
    return patients.with_columns(
        subject_key=pl.when(pl.col("nhs").is_not_null())
        .then(pl.lit(NHS_NUMBER_SYSTEM + "|") + pl.col("nhs"))
        .when(pl.col("nhs_number").is_null()).then(pl.col("local_id")))


def _opt_outs(patients: pl.DataFrame, policy: OptOutPolicy) -> pl.DataFrame:
    flags = {name: patients[f"{name}_opt_out"].fill_null(False).to_numpy() for name in ("national", "type1")}
    held = policy.opted_out(patients["nhs"].to_list(), flags)
    return patients.with_columns(out_national=pl.Series(held["national"]),
                                 out_type1=pl.Series(held["type1"]))


def _birth(patients: pl.DataFrame) -> pl.DataFrame:
    """birth_month (date) and born (the earliest time a record may have) of each patient."""
    month = pl.coalesce(pl.col("date_of_birth").dt.truncate("1mo"),
                        pl.col("year_month_of_birth").str.to_date("%Y-%m", strict=False))
    return patients.with_columns(birth_month=month).with_columns(
        born=pl.coalesce("date_of_birth", "birth_month").cast(pl.Datetime("us")))


def _patient_problems(now: dt.datetime) -> pl.Expr:
    sex = pl.col("sex")
    return _first_problem(
        (pl.col("nhs_problem").is_not_null(), pl.col("nhs_problem")),
        (pl.col("subject_key").is_null(), pl.lit("no NHS number and no source identifier")),
        (sex.is_null(), pl.lit("sex not recorded")),
        (~sex.is_in(["F", "M"]), pl.format("sex '{}' is neither F nor M, the sexes of the farr schema", sex)),
        (pl.col("birth_month").is_null(), pl.lit("no date of birth, or none to the month")),
        (pl.col("born") > now, pl.lit("date of birth in the future")),
        (~pl.col("patient_key").is_first_distinct(), pl.lit("patient repeated: same source id as an earlier record")),
    )


def _pseudonymise(patients: pl.DataFrame, key: ProjectKey) -> pl.DataFrame:
    """subject_id and check of each patient still kept; a repeat of an earlier one is a problem."""
    rows = np.flatnonzero((patients["status"] == KEEP).to_numpy())
    ids, checks = np.zeros(len(patients), np.int64), np.zeros(len(patients), np.uint64)
    ids[rows], checks[rows] = key.pseudonyms(patients["subject_key"].gather(rows).to_list())
    repeat = np.zeros(len(patients), bool)
    repeat[rows] = first_repeats(ids[rows], checks[rows])
    return patients.with_columns(subject_id=pl.Series(ids), check=pl.Series(checks)).with_columns(
        problem=pl.when(pl.Series(repeat))
        .then(pl.lit("duplicate patient: same identifier as an earlier record"))
        .otherwise("problem")
    ).with_columns(status=pl.when(pl.Series(repeat)).then(pl.lit(QUARANTINE)).otherwise("status"))


def classify_patients(patients: pl.DataFrame, rules: Rules) -> pl.DataFrame:
    """Every patient with ``status`` KEEP, OPTED_OUT or QUARANTINE (and its ``problem``)."""
    patients = _birth(_opt_outs(_identifiers(patients), rules.policy))
    patients = patients.with_columns(problem=_patient_problems(rules.now)).with_columns(
        status=pl.when(pl.col("out_national") | pl.col("out_type1")).then(pl.lit(OPTED_OUT))
        .when(pl.col("problem").is_not_null()).then(pl.lit(QUARANTINE))
        .otherwise(pl.lit(KEEP)))
    return _pseudonymise(patients, rules.key)


def _count_patients(patients: pl.DataFrame, events: pl.DataFrame, counts: Counts) -> None:
    """Opt-outs and quarantined patients, with the records that go with them."""
    per_patient = events.group_by("patient_key").len()
    status = patients.filter(pl.col("patient_key").is_first_distinct()).join(
        per_patient, on="patient_key", how="left").with_columns(pl.col("len").fill_null(0))
    out = patients.filter(pl.col("status") == OPTED_OUT)
    counts.opted_out.update({"subjects": out.height, "national": int(out["out_national"].sum()),
                             "type1": int(out["out_type1"].sum()),
                             "events": int(status.filter(pl.col("status") == OPTED_OUT)["len"].sum())})
    bad = patients.filter(pl.col("status") == QUARANTINE)
    counts.quarantined_subjects.update(dict(bad.group_by("problem").len().iter_rows()))
    bad_events = status.filter(pl.col("status") == QUARANTINE).group_by("problem").agg(pl.col("len").sum())
    counts.quarantined_records.update({f"patient quarantined: {reason}": n for reason, n in bad_events.iter_rows()})
    kept = patients.filter(pl.col("status") == KEEP)["subject_key"].str.split("|").list.first()
    counts.key_systems.update(dict(kept.value_counts().iter_rows()))


def _subjects(kept: pl.DataFrame) -> pl.DataFrame:
    region = pl.col("region")
    start = pl.col("registration_start")
    return kept.select(
        "subject_id", "sex",
        year_month_of_birth=pl.col("birth_month").dt.strftime("%Y-%m"),
        ethnicity=pl.when(pl.col("ethnicity").is_in(ETHNICITIES)).then("ethnicity"),
        imd_quintile=pl.when(pl.col("imd_quintile").is_between(1, 5)).then("imd_quintile"),
        region=pl.coalesce(pl.when(region.is_in(REGIONS)).then(region), region_of_postcodes(pl.col("postcode"))),
        practice_id="practice_id", site_id="site_id",
        registration_start=pl.when(start.dt.truncate("1mo") == pl.col("birth_month"))
        .then("birth_month").otherwise(start),
        registration_end="registration_end",
        end_reason=pl.when(pl.col("end_reason").is_in(END_REASONS)).then("end_reason"),
        national_opt_out=pl.col("national_opt_out").fill_null(False),
        type1_opt_out=pl.col("type1_opt_out").fill_null(False),
    ).select(SUBJECT_SCHEMA.names)


def _patient_quarantine(patients: pl.DataFrame) -> pl.DataFrame:
    """The quarantined patients, identifiers masked."""
    bad = patients.filter(pl.col("status") == QUARANTINE)
    masked = {name: pl.when(pl.col(name).is_not_null()).then(pl.lit(MASK))
              for name in ("nhs_number", "local_id", "postcode")}
    content = pl.struct(**masked, sex="sex",
                        year_month_of_birth=pl.col("birth_month").dt.strftime("%Y-%m"),
                        region="region", practice_id="practice_id")
    return bad.select(
        pl.col("file").cast(pl.Int32), pl.col("record").cast(pl.Int64), reason="problem",
        subject_id=pl.lit(None, pl.Int64), content=content.struct.json_encode())


# ---------------------------------------------------------------------------------------------
# Records


def _categorical_codes(events: pa.Table) -> pl.DataFrame:
    """Events with codes as a category: a few thousand distinct codes in millions of rows,
    held as 4-byte indices, so every copy below (join, filter, sort) is a fraction of the size."""
    index = events.schema.get_field_index("code")
    return pl.from_arrow(events.set_column(index, "code", pc.dictionary_encode(events["code"])))


def _valid_codes(codes: pl.Series) -> list[str]:
    return [code for code in codes.unique().drop_nulls().to_list() if CODE_PATTERN.match(code)]


def _event_side(patients: pl.DataFrame, events: pl.DataFrame) -> pl.LazyFrame:
    """Per source patient: subject_id (null unless kept), born, and the end of the day of death."""
    died = (events.lazy().filter(pl.col("code") == DEATH_CODE)
            .group_by("patient_key").agg(died=pl.col("time").min()))
    return (patients.lazy().filter(pl.col("patient_key").is_first_distinct())
            .select("patient_key", "born", known=pl.lit(True),
                    subject_id=pl.when(pl.col("status") == KEEP).then("subject_id"))
            .join(died, on="patient_key", how="left")
            .with_columns(after_death=pl.col("died").dt.truncate("1d") + pl.duration(days=1)))


def classify_events(events: pl.DataFrame, patients: pl.DataFrame, rules: Rules) -> pl.DataFrame:
    """The records of kept patients and of unknown ones, with the ``reason`` of those that do not
    pass (null for those that do). One lazy query: the joined columns are never all in memory."""
    time = pl.col("time")
    reason = _first_problem(
        (pl.col("known").is_null(), pl.lit("refers to no patient in the source")),
        (time > rules.now, pl.lit("dated in the future")),
        (time < pl.col("born"), pl.lit("dated before birth")),
        (time >= pl.col("after_death"), pl.lit("dated a day or more after death")),
        (~pl.col("code").is_in(_valid_codes(events["code"])),
         pl.lit("code is not '<VOCABULARY>/<code>' or 'MEDS_<NAME>'")),
    )
    return (events.lazy().join(_event_side(patients, events), on="patient_key", how="left", maintain_order="left")
            .filter((pl.col("known").is_null() | pl.col("subject_id").is_not_null()) & (pl.col("code") != BIRTH_CODE))
            .select("subject_id", "time", "code", pl.col("numeric_value").cast(pl.Float32), "file", "record",
                    reason=reason.cast(pl.Categorical))
            .collect())


def _births(kept: pl.DataFrame) -> pl.DataFrame:
    return kept.select("subject_id", time=pl.col("birth_month").cast(pl.Datetime("us")),
                       code=pl.lit(BIRTH_CODE, pl.Categorical), numeric_value=pl.lit(None, pl.Float32),
                       file=pl.lit(None, pl.Int32), record=pl.lit(None, pl.Int64))


def _drop_repeats(events: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Events sorted by (subject_id, time), and the exact repeats of an earlier record.

    Records at one time are ordered by code and value too, so that a repeat sits right after
    the record it repeats: one comparison with the row before finds them all, with no hashing
    (records sharing a time are common: a consultation codes several things at once).
    """
    keys = EVENT_SCHEMA.names
    events = events.sort(keys, nulls_last=False, maintain_order=True)
    repeat = events.select(pl.all_horizontal(pl.col(c).eq_missing(pl.col(c).shift(1)) for c in keys)).to_series()
    reason = pl.lit("exact repeat of an earlier record", pl.Categorical).alias("reason")
    if not repeat.any():
        return events, events.clear().with_columns(reason)
    return events.filter(~repeat), events.filter(repeat).with_columns(reason)


def _event_quarantine(bad: pl.DataFrame) -> pl.DataFrame:
    patient = pl.when(pl.col("subject_id").is_null()).then(pl.lit(MASK))
    content = pl.struct(patient=patient, time=pl.col("time").dt.to_string("%Y-%m-%dT%H:%M:%S%.f"),
                        code=pl.col("code").cast(pl.String), numeric_value="numeric_value")
    return bad.select(pl.col("file").cast(pl.Int32), pl.col("record").cast(pl.Int64), pl.col("reason").cast(pl.String),
                      pl.col("subject_id").cast(pl.Int64), content=content.struct.json_encode())
