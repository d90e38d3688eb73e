"""The timeline model: exact cached sampling, a loss that learns, and checkpoints that resume."""

import json
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import farr.model.train
from farr.model.card import read_card
from farr.model.data import (NO_EVENT_ID, PAD_ID, PREFIX, RECALL_SHARE, WIDTH_STEP, TrainingBatches, _targets,
                             _window_targets, born, landmark_histories, predictable, registration_marked, window,
                             with_earlier_queries)
from farr.model.ensemble import TimelineEnsemble, load_ensemble
from farr.model.gpt import IGNORE, MIN_YEARS, GPTConfig, TimeEncoding, TimelineGPT
from farr.model.sampling import _Context, sample_events
from farr.model.tokenizer import Tokenizer
from farr.model.train import CHECKPOINT, load_model, train


@pytest.fixture(scope="module")
def tokenizer(population):
    return Tokenizer().fit(population)


@pytest.fixture(scope="module")
def timelines(tokenizer, population):
    return tokenizer.transform(population)


def _model(vocab=30, seed=0, **kw):
    torch.manual_seed(seed)
    mask = torch.ones(vocab, dtype=torch.bool)
    mask[0] = False
    return TimelineGPT(GPTConfig(vocab_size=vocab, block_size=16, n_layer=2, n_head=2, n_embd=16, **kw), mask).eval()


def _timelines(n: int, length: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random tokens (never padding), ascending ages and birth dates (years since 1970)."""
    return (torch.randint(1, 30, (n, length)), torch.sort(torch.rand(n, length) * 80, dim=1).values,
            torch.rand(n) * 60 - 30)


def test_cached_step_equals_a_full_forward_pass():
    model = _model()
    tokens, ages, born = _timelines(3)
    with torch.no_grad():
        full = model.log_rates(tokens, ages, born)
        cache = []
        model.log_rates(tokens[:, :10], ages[:, :10], born, cache)
        padded = [(torch.cat([k, torch.zeros_like(k)[:, :, :6]], 2), torch.cat([v, torch.zeros_like(v)[:, :, :6]], 2))
                  for k, v in cache]
        for position in range(10, 16):
            step = model.step(tokens[:, position], ages[:, position], born, torch.full((3,), position), padded)
            torch.testing.assert_close(step, full[:, position], rtol=1e-4, atol=1e-4)


def test_copies_of_a_context_sample_as_the_repeated_contexts_do():
    model = _model()
    tokens, ages, born = _timelines(3)
    last, until = torch.full((3,), 9), ages[:, 9].repeat_interleave(2) + 20
    runs = [sample_events(model, *contexts, until, stop=[], never=[0], generator=torch.Generator().manual_seed(1),
                          max_events=30, copies=copies)
            for contexts, copies in (((tokens, ages, born, last), 2),
                                     ((tokens.repeat_interleave(2, 0), ages.repeat_interleave(2, 0),
                                       born.repeat_interleave(2), last.repeat_interleave(2)), 1))]
    assert len(runs[0].row) > 0 and set(runs[0].row.tolist()) == set(range(6))
    for field in ("row", "token"):
        np.testing.assert_array_equal(getattr(runs[0], field), getattr(runs[1], field))
    np.testing.assert_allclose(runs[0].age, runs[1].age, rtol=1e-5)


def test_rates_at_chosen_positions_equal_those_of_a_full_forward_pass():
    model = _model()
    tokens, ages, born = _timelines(4)
    with torch.no_grad():
        full = model.log_rates(tokens, ages, born)
        one = torch.tensor([3, 15, 0, 9])
        torch.testing.assert_close(model.log_rates(tokens, ages, born, at=one), full[torch.arange(4), one])
        several = torch.tensor([[2, 3, 4], [13, 14, 15], [0, 5, 6], [9, 10, 11]])
        torch.testing.assert_close(model.log_rates(tokens, ages, born, at=several),
                                   full[torch.arange(4)[:, None], several])


def test_loss_is_the_competing_risks_likelihood():
    model = _model()
    tokens = torch.tensor([[1, 2, 3, 4]])
    ages = torch.tensor([[0.0, 1.0, 1.0, 3.0]])
    targets = torch.tensor([[2, 3, 4, IGNORE]])
    exposure = torch.tensor([[1.0, 0.0, 2.0, 0.5]])
    born = torch.tensor([30.0])
    out = model(tokens, ages, born, targets, exposure)
    log_rate = model.log_rates(tokens, ages, born)[0]
    total = log_rate.logsumexp(-1).exp()
    expected = (-log_rate[0, 2] + total[0] * 1.0) + (-log_rate[1, 3] + log_rate[1].logsumexp(-1)) \
        + (-log_rate[2, 4] + total[2] * 2.0) + total[3] * 0.5
    torch.testing.assert_close(out["loss"] * 3, expected)


def test_an_event_on_the_same_day_is_a_one_day_wait_and_unobserved_time_is_not_timed():
    tokens = np.arange(1, PREFIX + 5)
    ages = np.r_[np.zeros(PREFIX), 10.0, 20.0, 20.0, 21.0].astype(np.float32)  # registered from 15 to 30
    targets, exposure = _targets(tokens, ages, 15.0, 30.0)
    np.testing.assert_allclose(exposure[PREFIX - 1:], [0.0, 5.0, MIN_YEARS, 1.0, 9.0], rtol=1e-6)
    assert targets[-1] == IGNORE and (targets[PREFIX - 1:-1] == tokens[PREFIX:]).all()


def test_the_registration_mark_times_the_first_registered_wait_and_is_not_a_target():
    tokens = np.arange(1, PREFIX + 4)
    ages = np.r_[np.zeros(PREFIX), 10.0, 12.0, 17.0].astype(np.float32)  # history dated before registration at 15
    tokens, ages = registration_marked(tokens, ages, 15.0)
    assert tokens[PREFIX + 2] == NO_EVENT_ID and ages[PREFIX + 2] == 15.0
    targets, exposure = _targets(tokens, ages, 15.0, 30.0)
    # the last code dated before registration: no observed time, and the mark is not an event to predict
    assert targets[PREFIX + 1] == IGNORE and exposure[PREFIX + 1] == 0.0
    # from the mark: two observed years to the first registered event, which is its target
    assert targets[PREFIX + 2] == tokens[PREFIX + 3] and exposure[PREFIX + 2] == pytest.approx(2.0)


def test_events_recorded_on_the_registration_day_follow_the_mark():
    tokens, ages = registration_marked(np.arange(1, PREFIX + 3), np.r_[np.zeros(PREFIX), 15.0, 15.0], 15.0)
    assert tokens[PREFIX] == NO_EVENT_ID and list(tokens[PREFIX + 1:]) == [PREFIX + 1, PREFIX + 2]


def test_training_and_landmark_histories_carry_the_registration_mark(timelines):
    fits = np.diff(timelines.offsets) < 500  # whole timelines: a cut window may start after the mark
    people = np.flatnonzero(fits & (timelines.end_age - timelines.start_age > 2))[:50]
    batch = TrainingBatches(timelines, people, 512, seed=0, no_event_per_year=0.0).batch_of(people)
    marks = batch["tokens"] == NO_EVENT_ID
    assert (marks.sum(1) == 1).all()  # no quiet years asked for: the mark alone
    np.testing.assert_allclose(batch["ages"][marks].numpy(), timelines.start_age[people])
    tokens, ages, birth, query = landmark_histories(timelines, people, timelines.start_age[people] + 1.0, 512)
    for born in (batch["born"], birth):  # calendar time = birth + age
        np.testing.assert_allclose(born.numpy(), timelines.birth_day[people] / 365.25, rtol=1e-6)
    marked = (tokens == NO_EVENT_ID) & (ages == torch.from_numpy(timelines.start_age[people])[:, None])
    assert (marked.sum(1) == 1).all() and (tokens[torch.arange(len(people)), query] == NO_EVENT_ID).all()


def test_an_earlier_landmarks_queries_see_only_its_own_history_and_nothing_sees_them():
    """Two histories (3 and 2 tokens, one query each); the first carries a 2-query chain seeing its
    first token and a 1-query chain seeing two, the second a chain seeing both of its tokens."""
    tokens = torch.tensor([[7, 8, 9, NO_EVENT_ID], [7, 8, NO_EVENT_ID, PAD_ID]])
    ages = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 5.0, 0.0]])
    tokens, ages, at, visible, slot = with_earlier_queries(
        tokens, ages, torch.tensor([3, 2]), 1, np.array([0, 0, 1]), np.array([1, 2, 2]), np.array([1.5, 2.5, 3.0]),
        np.array([2, 1, 1]))
    assert tokens.shape[1] == WIDTH_STEP and (tokens[:, 7:] == PAD_ID).all()  # one kernel shape per WIDTH_STEP
    assert tokens[0, :7].tolist() == [7, 8, 9] + [NO_EVENT_ID] * 4
    assert tokens[1, :7].tolist() == [7, 8] + [NO_EVENT_ID] * 2 + [PAD_ID] * 3
    assert ages[0, 4:7].tolist() == [1.5, 2.5, 2.5] and ages[1, 3].item() == 3.0
    assert at.tolist() == [[3, 4, 5, 6], [2, 3, 0, 0]] and slot.tolist() == [1, 3, 1]
    seen = [[set(np.flatnonzero(row).tolist()) for row in person] for person in visible.numpy()]
    assert seen[0][4:7] == [{0, 4}, {0, 4, 5}, {0, 1, 6}] and seen[1][3] == {0, 1, 3}
    assert all(seen[p][i] == set(range(i + 1)) for p, i in [(0, 0), (0, 3), (1, 2), (1, 9)])  # causal: chains unseen


@pytest.mark.parametrize("block, years_after", [(512, 0), (40, 0), (24, 4)])
def test_landmark_histories_are_each_persons_marked_history_windowed_as_in_training(timelines, block, years_after):
    """The batched histories against one person at a time: `registration_marked`, cut at the
    landmark, `window`ed, then the queries. Landmarks fall before, on and after registration
    starts, and a short block makes long histories recall their earlier codes."""
    rng = np.random.default_rng(block)
    people = rng.choice(len(timelines), 300, replace=False)
    start = timelines.start_age[people]
    at_age = np.where(rng.random(300) < 0.1, start, start + rng.uniform(-2.0, 30.0, 300))
    tokens, ages, _, query = landmark_histories(timelines, people, at_age, block, years_after=years_after)
    assert (query + years_after < block).all()
    windowed = 0
    for i, (p, age) in enumerate(zip(people, at_age)):
        marked, marked_ages = registration_marked(*timelines.of(p), start[i])
        seen = PREFIX + np.searchsorted(marked_ages[PREFIX:], age, side="left")
        keep = window(marked, seen, block - 1 - years_after)[0]
        windowed += len(keep) < seen
        width = len(keep) + 1 + years_after
        np.testing.assert_array_equal(tokens[i, :width], np.r_[marked[keep], [NO_EVENT_ID] * (1 + years_after)])
        queried = np.float32(age) + np.arange(1 + years_after, dtype=np.float32)
        np.testing.assert_array_equal(ages[i, :width], np.r_[marked_ages[keep], queried])
        assert query[i] == len(keep) and (tokens[i, width:] == PAD_ID).all() and (ages[i, width:] == 0).all()
    assert windowed > 0 or block == 512


def test_rates_move_with_calendar_time_at_the_same_ages():
    model = _model()
    tokens, ages, born = _timelines(2)
    with torch.no_grad():
        assert not torch.allclose(model.log_rates(tokens, ages, born), model.log_rates(tokens, ages, born + 5.0))


def test_calendar_time_is_encoded_down_to_a_year_and_age_down_to_a_month():
    model = _model()
    assert model.calendar.frequencies.max().item() == pytest.approx(2 * np.pi)
    assert model.age.frequencies.max().item() == pytest.approx(2 * np.pi * 12)


def test_unpredictable_tokens_have_no_rate():
    model = _model()
    rates = model.log_rates(torch.tensor([[1, 2]]), torch.tensor([[0.0, 1.0]]), torch.tensor([50.0]))
    assert torch.isinf(rates[..., 0]).all()


def test_training_learns_and_writes_a_loadable_model(trained):
    out, summary, _ = trained
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [20, 40, 60]
    assert log[-1]["val_loss"] < log[0]["val_loss"] - 0.3 and summary["tokens_per_second"] > 0
    model, tokenizer = load_model(out)
    assert model.cfg.vocab_size == len(tokenizer)


def test_a_model_from_before_the_calendar_encoding_is_refused_in_one_line(trained, tmp_path):
    out = tmp_path / "old"
    shutil.copytree(trained[0], out)
    state = torch.load(out / "model.pt", weights_only=False)
    del state["model"]["calendar.project.weight"]
    torch.save(state, out / "model.pt")
    with pytest.raises(ValueError, match=r"model.pt: not a model of this farr version.*calendar"):
        load_model(out)


def test_a_model_saved_before_the_calendar_period_loads_with_its_own_encoding(trained, tmp_path):
    out = tmp_path / "month"
    shutil.copytree(trained[0], out)
    state = torch.load(out / "model.pt", weights_only=False)
    del state["model_config"]["calendar_period"]
    state["model"]["calendar.frequencies"] = TimeEncoding(2 * len(state["model"]["calendar.frequencies"])).frequencies
    torch.save(state, out / "model.pt")
    model, _ = load_model(out)
    assert model.cfg.calendar_period == pytest.approx(1 / 12)
    assert model.calendar.frequencies.max().item() == pytest.approx(2 * np.pi * 12)


def test_a_run_killed_after_a_checkpoint_resumes_exactly(population, tmp_path, trained, monkeypatch):
    _, _, cfg = trained
    save = farr.model.train._save_checkpoint

    def crash_at_40(out, model, optimiser, batches, config, step):
        save(out, model, optimiser, batches, config, step)
        if step == 40:
            raise KeyboardInterrupt

    monkeypatch.setattr(farr.model.train, "_save_checkpoint", crash_at_40)
    with pytest.raises(KeyboardInterrupt):
        train(population, tmp_path / "a", cfg, progress=False)
    monkeypatch.setattr(farr.model.train, "_save_checkpoint", save)
    train(population, tmp_path / "a", cfg, resume=True, progress=False)
    reference, _ = load_model(trained[0])
    resumed, _ = load_model(tmp_path / "a")
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_existing_model_needs_resume_and_corrupt_checkpoint_is_named(population, tmp_path, trained):
    _, _, cfg = trained
    with pytest.raises(FileExistsError, match="--resume"):
        train(population, trained[0], cfg, progress=False)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupted checkpoint"):
        train(population, tmp_path / "m", cfg, resume=True, progress=False)


def test_training_windows_keep_the_demographic_prefix(tokenizer, timelines):
    batch = TrainingBatches(timelines, np.arange(len(timelines)), 32, seed=0)(64)
    assert (batch["tokens"][:, :PREFIX] > 0).all()
    demographic = ~predictable(tokenizer.vocabulary)
    targets = batch["targets"][batch["targets"] != IGNORE]
    assert not demographic[targets].any()
    assert (batch["exposure"] >= 0).all()


def test_training_moves_each_windows_calendar_time_and_nothing_else(timelines):
    """Jitter shifts a window's birth date (so its calendar time) uniformly within ±1 year, one
    shift per window; its tokens, ages and targets are those recorded, as are validation batches'."""
    people = np.arange(400)
    recorded = TrainingBatches(timelines, people, 32, seed=0).batch_of(people)
    moved = TrainingBatches(timelines, people, 32, seed=0, calendar_jitter=1.0).batch_of(people)
    assert recorded.keys() == moved.keys()
    assert all(torch.equal(recorded[key], moved[key]) for key in recorded if key != "born")
    assert torch.equal(recorded["born"], born(timelines.birth_day[people]))
    shift = (moved["born"] - recorded["born"]).numpy()
    assert np.abs(shift).max() <= 1.0 + 1e-3 and 0.5 < shift.std() < 0.65  # uniform on ±1: sd 0.58


def test_every_event_is_a_target_equally_often_however_long_the_timeline(timelines, monkeypatch):
    """The likelihood of the data counts every event once: a person's share of training targets
    must follow their number of events, whether the timeline fits the block or not."""
    people = np.arange(2000)
    batches = TrainingBatches(timelines, people, 32, seed=0, no_event_per_year=0.0)
    trained = np.zeros(len(timelines))
    sequence = batches._sequence

    def counted(p):
        row = sequence(p)
        trained[p] += (row[2] != IGNORE).sum()
        return row

    monkeypatch.setattr(batches, "_sequence", counted)
    for _ in range(6000):
        batches(4)
    whole = TrainingBatches(timelines, people, 10**6, seed=0, no_event_per_year=0.0)
    events = np.array([(whole._sequence(p)[2] != IGNORE).sum() for p in people])
    length = np.diff(timelines.offsets)[people]
    short, long = ((trained[people][group].sum() / events[group].sum()) for group in (length < 32, length > 64))
    assert (length > 64).sum() > 100 and 0.7 < long / short < 1.3  # drawing people alike: 0.12


def test_the_last_events_of_a_long_timeline_come_after_as_much_history_as_any_other(timelines):
    """An event's recent history in a training window must not tell where its timeline ends. When
    windows at the end were filled up to the block, the last event of every long timeline came
    after a full window in every draw (any other event does in one draw in `span`), and the model
    learnt a full window as a sign that the record, a life above all, was about to end."""
    person = int(np.argmin(np.abs(np.diff(timelines.offsets) - 64)))  # twice the block: a quarter of its windows end it
    batches = TrainingBatches(timelines, np.array([person]), 32, seed=0, no_event_per_year=0.0)
    windows = [batches._sequence(person) for _ in range(400)]
    at_end = [len(tokens) for tokens, _, targets, _ in windows if targets[-1] == IGNORE]
    assert len(at_end) > 50 and len(set(at_end)) > _window_targets(32) // 2  # filled to the block: one length


@given(st.lists(st.integers(1, 40), min_size=PREFIX, max_size=300), st.integers(8, 64), st.data())
def test_a_window_recalls_every_earlier_code(tokens, room, data):
    tokens = np.asarray(tokens)
    stop = data.draw(st.integers(PREFIX, len(tokens)))
    keep, pinned = window(tokens, stop, room)
    assert len(keep) <= max(room, PREFIX) and (np.diff(keep) > 0).all() and keep[-1] == stop - 1
    assert list(keep[:PREFIX]) == list(range(PREFIX)) and pinned >= PREFIX
    if stop > room:
        recent = keep[pinned:]
        assert list(recent) == list(range(recent[0], stop))
        earlier = tokens[PREFIX:recent[0]]
        seen = {code: (earlier == code).sum() for code in set(earlier.tolist()) - {NO_EVENT_ID}}
        recalled = tokens[keep[PREFIX:pinned]]
        assert len(set(recalled.tolist())) == len(recalled)  # each code once, at its first occurrence
        assert set(seen) == set(recalled.tolist()) or len(recalled) == room // RECALL_SHARE
        left_out = [seen[code] for code in seen if code not in recalled]
        assert not left_out or max(seen[code] for code in recalled) <= min(left_out)  # the rarest are recalled


@given(st.lists(st.integers(1, 40), min_size=80, max_size=200), st.integers(PREFIX + 4, 60))
def test_what_a_training_window_recalls_does_not_depend_on_its_targets(tokens, first):
    """Its early targets would otherwise learn which old codes recur later in the window from
    their absence among the recalled ones."""
    def recalled(timeline):
        keep, pinned = window(timeline, len(timeline), 64, first=first)
        return timeline[keep[PREFIX:pinned]].tolist()

    tokens = np.asarray(tokens)
    assert recalled(tokens) == recalled(np.r_[tokens[:first], np.full(len(tokens) - first, 41)])  # a new code


@pytest.mark.slow
def test_distributed_training_under_torchrun(population, tmp_path):
    """Two CPU processes with DistributedDataParallel (gloo), as on many GPUs."""
    import subprocess
    import sys
    from pathlib import Path

    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "ddp"
    run = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "farr.cli", "train",
                          str(population), "--out", str(out), "--config", "tiny", "--steps", "6", "--batch-size", "8"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (out / "model.pt").exists()
    model, tokenizer = load_model(out)
    assert model.cfg.vocab_size == len(tokenizer)


def test_the_model_card_records_a_disclosure_controlled_training_population(trained, population, tmp_path):
    out, _, _ = trained
    card = read_card(out)
    people = card["training_population"]
    assert card["dataset"]["subjects"] == pytest.approx(0.8 * 20_000, rel=0.03)
    assert people["demographics"] and all(cell["count"] >= 10 and cell["count"] % 5 == 0
                                          for cell in people["demographics"])
    assert sum(cell["count"] for cell in people["demographics"]) + people["withheld_people"] == \
        pytest.approx(people["people"], abs=5 * len(people["demographics"]))
    assert card["data_window"]["first_date"] < card["data_window"]["last_date"] <= "2025-01-01"
    with pytest.raises(ValueError, match="training population is not recorded"):
        read_card(tmp_path)


@pytest.mark.parametrize("members", [1, 2])
def test_sampling_past_a_full_window_recalls_history_and_keeps_the_cache_exact(members):
    """With two members, an ensemble's cache (every member's heads side by side) stays exact too."""
    torch.manual_seed(0)
    predictable = torch.arange(40) >= 10  # 0-9 stand for padding, specials and demographics
    models = [TimelineGPT(GPTConfig(vocab_size=40, block_size=24, n_layer=2, n_head=2, n_embd=16), predictable)
              for _ in range(members)]
    model = (models[0] if members == 1 else TimelineEnsemble(models)).eval()
    tokens = torch.zeros(2, 24, dtype=torch.long)
    tokens[:, :PREFIX + 1] = torch.tensor([3, 4, 5, 6, 7, 30])[:PREFIX + 1]
    ages = torch.zeros(2, 24)
    ages[:, PREFIX] = 20.0
    context = _Context(model, tokens, ages, torch.tensor([10.0, 20.0]), torch.full((2,), PREFIX))
    with torch.no_grad():
        for i in range(60):
            token = torch.tensor([10 + i % 12, 11 + i % 5])
            context.advance(token, context.age_at_last() + 0.1)
            fresh = model.log_rates(context.tokens, context.ages, context.born, at=context.last).exp()
            torch.testing.assert_close(context.rate, fresh, rtol=1e-4, atol=1e-6)
    assert (context.tokens[:, :PREFIX] == tokens[:, :PREFIX]).all()
    assert (context.tokens == 30).any(dim=1).all()  # the first event, long cut, is recalled
    for tokens_of, ages_of in zip(context.tokens, context.ages):
        body = ages_of[PREFIX:][tokens_of[PREFIX:] > 0]
        assert (body.diff() >= 0).all()  # recalled codes, then recent ones, in time order


def test_an_ensemble_reads_the_mean_of_its_members_rates():
    members = [_model(seed=0), _model(seed=1)]
    ensemble = TimelineEnsemble(members).eval()
    tokens, ages, born = _timelines(4)
    at = torch.tensor([3, 15, 0, 9])
    with torch.no_grad():
        for where in (None, at):
            rates = torch.stack([m.log_rates(tokens, ages, born, at=where).exp() for m in members]).mean(0)
            torch.testing.assert_close(ensemble.log_rates(tokens, ages, born, at=where).exp(), rates)
    assert not torch.allclose(*(m.log_rates(tokens, ages, born) for m in members))  # the members differ


def test_an_ensemble_of_one_model_twice_samples_as_the_model_alone():
    model = _model()
    tokens, ages, born = _timelines(3)
    until = ages[:, 9] + 20
    runs = [sample_events(m, tokens, ages, born, torch.full((3,), 9), until, stop=[], never=[0],
                          generator=torch.Generator().manual_seed(1), max_events=30)
            for m in (model, TimelineEnsemble([model, model]).eval())]
    assert len(runs[0].row) > 0
    np.testing.assert_array_equal(runs[0].token, runs[1].token)
    np.testing.assert_allclose(runs[0].age, runs[1].age, rtol=1e-5)


def test_an_ensemble_of_models_of_different_shapes_or_vocabularies_is_refused(trained, tmp_path):
    with pytest.raises(ValueError, match="share their shape; these differ: vocab_size"):
        TimelineEnsemble([_model(), _model(vocab=31)])
    other = tmp_path / "other"
    shutil.copytree(trained[0], other)
    vocabulary = json.loads((other / "tokenizer.json").read_text())
    vocabulary["vocabulary"][-1] = "SNOMED/0"
    (other / "tokenizer.json").write_text(json.dumps(vocabulary))
    with pytest.raises(ValueError, match="its tokenizer differs from .*'s; an ensemble's models must share one"):
        load_ensemble([trained[0], other])
    model, _ = load_ensemble([trained[0], trained[0]])
    assert isinstance(model, TimelineEnsemble) and model.cfg.n_head == 2 * load_model(trained[0])[0].cfg.n_head


def test_rates_integrated_along_sampled_paths_average_to_the_chance_of_a_first_event():
    model = _model()
    tokens, ages, born = _timelines(2)
    draws, ends = 2000, torch.tensor([0.2, 1.0])
    start = ages[:, 9].repeat_interleave(draws)
    groups = torch.zeros(30, 2)
    groups[[5, 6], 0], groups[20, 1] = 1.0, 1.0
    sampled = sample_events(model, tokens, ages, born, torch.full((2,), 9), start + 1.0, stop=[], never=[0],
                            generator=torch.Generator().manual_seed(3), max_events=40, copies=draws,
                            watch=(groups, start[:, None] + ends))
    first = np.full((2 * draws, 2), np.inf)
    for g in range(2):
        hit = groups[sampled.token, g].numpy() > 0
        np.minimum.at(first[:, g], sampled.row[hit], sampled.age[hit] - start.numpy()[sampled.row[hit]])
    for e, end in enumerate(ends.tolist()):
        occurred = (first <= end).reshape(2, draws, 2)
        exposed = sampled.exposed[:, :, e].reshape(2, draws, 2)
        np.testing.assert_allclose(exposed.mean(axis=1), occurred.mean(axis=1), atol=0.035)
        assert (exposed.std(axis=1) < occurred.std(axis=1)).all()  # less noise than counting events
