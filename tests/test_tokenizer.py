"""The tokenizer: vocabulary rules, value bins, unknown codes, and the subject-level split."""

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from farr.events.io import DatasetError, scan_events
from farr.model.tokenizer import DEMOGRAPHICS, UNKNOWN, Tokenizer, split_of


@pytest.fixture(scope="module")
def fitted(population):
    return Tokenizer(min_count=10).fit(population)


def test_vocabulary_has_specials_demographics_grouped_codes_and_binned_values(fitted):
    vocab = fitted.vocabulary
    assert vocab[:3] == ["<pad>", "<no event>", UNKNOWN]
    assert {"SEX//F", "SEX//M", "REGION//London", "IMD_QUINTILE//1"} <= set(vocab)
    assert not any(t.startswith("ICD10/") and "." in t for t in vocab)  # grouped to 3 characters
    assert "LOINC/4548-4//Q1" in vocab and "LOINC/4548-4//Q5" in vocab and "LOINC/4548-4" not in vocab
    assert fitted.ids_of(["ICD10/U07.1"]) == fitted.ids_of(["ICD10/U07"])


@given(st.lists(st.one_of(st.none(), st.sampled_from([0.5, 1.0, 2.0, 7.5]), st.floats(-10, 10)), min_size=1))
def test_a_value_is_binned_above_every_edge_at_or_below_it(values):
    """Q1 below the first edge, Q(k + 1) from the k-th edge on (an edge belongs to the bin above it);
    a missing value, or a code without bins, keeps the plain code."""
    tokenizer = Tokenizer(bin_edges={"LAB/A": [0.5, 1.0, 2.0], "LAB/B": [7.5]}, icd10_characters=None)
    codes = ["LAB/A", "LAB/B", "LAB/C"] * len(values)
    events = pl.LazyFrame({"code": codes, "numeric_value": [v for v in values for _ in range(3)]},
                          schema={"code": pl.String, "numeric_value": pl.Float64})
    tokens = tokenizer._tokens(events).collect()["token"].to_list()
    for code, value, token in zip(codes, events.collect()["numeric_value"], tokens):
        edges = tokenizer.bin_edges.get(code)
        binned = value is not None and edges is not None
        assert token == (f"{code}//Q{np.searchsorted(edges, value, side='right') + 1}" if binned else code)


def test_rare_codes_become_unknown_and_are_counted(population):
    strict = Tokenizer(min_count=10**9).fit(population)
    timelines = strict.transform(population)
    events = scan_events(population).filter(pl.col("code") != "MEDS_BIRTH").select(pl.len()).collect().item()
    assert sum(timelines.unknown.values()) == events
    body = np.ones(len(timelines.tokens), bool)
    body[(timelines.offsets[:-1, None] + np.arange(len(DEMOGRAPHICS))).ravel()] = False
    assert (timelines.tokens[body] == strict.vocabulary.index(UNKNOWN)).all()


def test_timelines_are_sorted_and_carry_registration(fitted, population):
    timelines = fitted.transform(population)
    for p in range(0, len(timelines), 997):
        ages = timelines.ages[timelines.offsets[p] + len(DEMOGRAPHICS):timelines.offsets[p + 1]]
        assert (np.diff(ages) >= 0).all()
    assert (timelines.start_age <= timelines.end_age + 1e-3).all()


def test_saved_tokenizer_transforms_identically(fitted, population, tmp_path):
    fitted.save(tmp_path / "t.json")
    again = Tokenizer.load(tmp_path / "t.json")
    a, b = fitted.transform(population), again.transform(population)
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.ages, b.ages)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a farr tokenizer"):
        Tokenizer.load(tmp_path / "bad.json")


def test_unfitted_and_empty_inputs_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="not fitted"):
        Tokenizer().transform(tmp_path)
    with pytest.raises(DatasetError):
        Tokenizer().fit(tmp_path)


@given(st.lists(st.integers(0, 2**40), min_size=1, max_size=50))
def test_split_is_a_pure_function_of_the_subject(ids):
    ids = np.array(ids)
    assert np.array_equal(split_of(ids), split_of(ids.copy()))
    assert set(np.unique(split_of(ids))) <= {0, 1, 2}


def test_split_proportions():
    share = np.bincount(split_of(np.arange(1, 200_001)), minlength=3) / 200_000
    assert share == pytest.approx([0.8, 0.1, 0.1], abs=0.01)
