"""Federated training across sites, the contribution ledger, valuation and revenue."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.common.serde import message_from_proto
from flwr.proto.message_pb2 import Message as ProtoMessage
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from farr.cli import app
from farr.events.io import read_outcomes, scan_subjects, verify
from farr.federated import ledger
from farr.federated.client import LocalConfig, SiteClient, SiteTrainer
from farr.federated.federate import federate, initial_parameters, run_rounds
from farr.federated.revenue import read_terms, revenue, split_amount
from farr.federated.secure import InProcessLink, SiteGrid, loopback_grid, run_secure_rounds, site_app
from farr.federated.sites import assign_sites, split
from farr.federated.strategy import FederationConfig, build_strategy
from farr.federated.valuation import ValuationConfig, value_sites
from farr.federated.vocabulary import agree, shared_counts, vocabulary_sha256
from farr.model.card import read_card
from farr.model.tokenizer import Tokenizer
from farr.model.train import load_model
from farr.simulate.simulator import simulate_dataset

FAST = FederationConfig(rounds=2, local=LocalConfig(local_steps=3, batch_size=8, validation_batches=2))


@pytest.fixture(scope="module")
def pooled(tmp_path_factory):
    return simulate_dataset(tmp_path_factory.mktemp("fed") / "pooled", 900, seed=11, workers=1, progress=False)


@pytest.fixture(scope="module")
def sites(pooled, tmp_path_factory):
    return split(pooled, "region", tmp_path_factory.mktemp("fed") / "sites", sites=3)


@pytest.fixture(scope="module")
def tokenizer(sites):
    return agree([shared_counts(site, min_count=5) for site in sites])


@pytest.fixture(scope="module")
def trainers(sites, tokenizer):
    return [SiteTrainer(site, tokenizer, FAST.local) for site in sites]


@pytest.fixture(scope="module")
def model(sites, tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("fed") / "model"
    return out, federate(sites, out, FAST, tokenizer=tokenizer)


# -- sites and vocabulary -----------------------------------------------------------------------
def test_split_partitions_people_into_valid_site_datasets(pooled, sites):
    ids = [set(scan_subjects(s).collect()["subject_id"].to_list()) for s in sites]
    assert sum(map(len, ids)) == len(set().union(*ids)) == scan_subjects(pooled).select(pl.len()).collect().item()
    for site in sites:
        verify(site)
        assert read_outcomes(site) == read_outcomes(pooled)  # evaluation still finds the outcomes
        regions = scan_subjects(site).collect()["region"].unique().to_list()
        assert sorted(regions) == sorted(json.loads((site / "metadata/farr.json").read_text())["extra"]["site"]["region"])


def test_split_rejects_an_unknown_grouping(pooled, tmp_path):
    with pytest.raises(ValueError, match="--by 'postcode'"):
        split(pooled, "postcode", tmp_path / "x")


@given(st.dictionaries(st.text(min_size=1, max_size=5), st.integers(1, 1000), min_size=1, max_size=12),
       st.integers(1, 6))
def test_assign_sites_packs_every_group_into_at_most_n_sites(sizes, n):
    assignment = assign_sites(sizes, n)
    assert set(assignment) == set(sizes)
    assert set(assignment.values()) == set(range(min(n, len(sizes))))


def test_agreed_vocabulary_is_the_union_of_what_sites_release(sites, tokenizer):
    released = [shared_counts(site, min_count=5) for site in sites]
    assert all(count >= 5 for r in released for count in r["counts"].values())
    for r in released:
        assert set(r["counts"]) <= set(tokenizer.vocabulary)
    regions = [t for t in tokenizer.vocabulary if t.startswith("REGION//")]
    assert len(regions) > max(sum(t.startswith("REGION//") for t in r["counts"]) for r in released)
    with pytest.raises(ValueError, match="different min_count"):
        agree([released[0], {**released[1], "min_count": 3}])


# -- federated training -----------------------------------------------------------------------
def test_federate_writes_a_loadable_model_its_card_and_a_ledger_entry(model, sites):
    out, result = model
    net, tokenizer = load_model(out)
    assert all(np.isfinite(p.detach().numpy()).all() for p in net.parameters())
    card = read_card(out)
    assert [s["farr_json_sha256"] for s in card["dataset"]["sites"]] == [
        ledger.latest(out, "training")["sites"][i]["manifest_sha256"] for i in np.argsort([s.name for s in sites])]
    entry = ledger.latest(out, "training")
    assert entry["model_version"] == ledger.model_version(out)
    assert [s["rounds_participated"] for s in entry["sites"]] == [[1, 2]] * 3
    assert all(r["mb_to_sites"] > 0 and r["mb_from_sites"] > 0 for r in result["rounds"])


def test_ledger_is_append_only_and_detects_tampering(model, tmp_path):
    out, _ = model
    copy = tmp_path / "m"
    copy.mkdir()
    for name in ("model.pt", "tokenizer.json", ledger.LEDGER):
        (copy / name).write_bytes((out / name).read_bytes())
    ledger.append_valuation(copy, {"metric": "nll", "sites": [], "coalitions_trained": 0, "seconds": 0})
    assert [e["kind"] for e in ledger.read(copy)] == ["training", "valuation"]
    lines = (copy / ledger.LEDGER).read_text().splitlines()
    (copy / ledger.LEDGER).write_text("\n".join([lines[0].replace('"patients": ', '"patients": 1'), lines[1]]) + "\n")
    with pytest.raises(ValueError, match=":1: the entry was changed"):
        ledger.read(copy)
    (copy / ledger.LEDGER).write_text(lines[1] + "\n")
    with pytest.raises(ValueError, match=":1: the hash chain is broken"):
        ledger.read(copy)


class DropsOut(SiteClient):
    """A site whose process is lost in the second round."""

    def fit(self, parameters, config):
        if int(config["server_round"]) == 2:
            raise ConnectionError("site lost")
        return super().fit(parameters, config)


class SendsBadUpdates(SiteClient):
    """A site that sends NaN in round 1 and a wrongly shaped update in round 2."""

    def fit(self, parameters, config):
        updated, n, metrics = super().fit(parameters, config)
        if int(config["server_round"]) == 1:
            updated[0] = np.full_like(updated[0], np.nan)
        else:
            updated[1] = updated[1][:-1]
        return updated, n, metrics


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "secagg+"])
def test_dropouts_and_bad_updates_are_recorded_and_training_continues(trainers, tokenizer, secure):
    """Under secure aggregation the sites check their own updates, and SecAgg+ unmasks the lost site's share."""
    for t in trainers:
        t.reset()
    good, lost, bad = trainers
    cfg = replace(FAST, secure_aggregation=secure)
    strategy = run_rounds([SiteClient(good), DropsOut(lost), SendsBadUpdates(bad)], tokenizer, cfg)
    assert all(np.isfinite(p).all() for p in strategy.current)
    records = strategy.records
    assert records[good.name]["rounds"] == [1, 2]
    assert records[lost.name]["rounds"] == [1] and records[lost.name]["dropouts"] == [2]
    reasons = [r["reason"] for r in records[bad.name]["rejected"]]
    assert records[bad.name]["rounds"] == [] and reasons[0].startswith("non-finite") and reasons[1].startswith("malformed")
    assert [r["aggregated"] for r in strategy.rounds] == [True, True]


# -- secure aggregation (its dropouts and bad updates: above) ------------------------------------
SECURE = replace(FAST, secure_aggregation=True)


class Recording(SiteClient):
    """A site that keeps the update it sent."""

    def fit(self, parameters, config):
        self.update, self.examples, metrics = super().fit(parameters, config)
        return self.update, self.examples, metrics


class Tapped(InProcessLink):
    """A link that keeps every byte a site sends to the server."""

    sent: list[bytes] = []

    def recv_bytes(self):
        self.sent.append(super().recv_bytes())
        return self.sent[-1]


def test_secure_aggregation_gives_the_weighted_average_and_never_shows_one_sites_update(trainers, tokenizer):
    for t in trainers:
        t.reset()
    clients = [Recording(t) for t in trainers]
    grid = SiteGrid({node: Tapped(site_app(client, clipped=False), node) for node, client in enumerate(clients, 1)})
    cfg = replace(SECURE, rounds=1)
    strategy = build_strategy(cfg, initial_parameters(tokenizer, cfg.local), vocabulary_sha256(tokenizer), len(clients))
    run_secure_rounds(grid, strategy, cfg)
    weights = [c.examples for c in clients]
    expected = [np.average(np.stack(layer), axis=0, weights=weights) for layer in zip(*(c.update for c in clients))]
    for got, want in zip(strategy.current, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)
    largest = max(range(len(expected)), key=lambda i: expected[i].size)
    assert all(c.update[largest].tobytes() not in data for c in clients for data in Tapped.sent)
    assert strategy.rounds[0]["mb_from_sites"] > strategy.rounds[0]["mb_to_sites"] > 0  # masked sums cost more


class FallsSilent(InProcessLink):
    """A site that stays connected but stops answering at one SecAgg+ stage of the second round."""

    def __init__(self, app, node_id, stage: str):
        super().__init__(app, node_id)
        self.stage, self.silent = stage, False

    def send_bytes(self, data):
        message = message_from_proto(ProtoMessage.FromString(data))
        stage = message.content.config_records.get("secaggplus_configs", {}).get("stage")
        self.silent = self.silent or (message.metadata.group_id, stage) == ("2", self.stage)
        if not self.silent:
            super().send_bytes(data)

    def poll(self, timeout):
        return not self.silent

    def recv_bytes(self):
        assert not self.silent, "the server waited for an answer that was never coming"
        return super().recv_bytes()


@pytest.mark.parametrize("stage, aggregated", [("collect_masked_vectors", True), ("setup", False)])
def test_a_site_silent_past_the_round_timeout_drops_out_and_the_federation_goes_on(trainers, tokenizer, stage,
                                                                                    aggregated):
    """Silent once its keys are shared, a site's mask is removed with the others' shares and the round
    is aggregated without it; silent at the round's setup, Flower's SecAgg+ asks the others for
    shares of keys it never sent, so the round stops (and is logged), but nothing waits forever."""
    for t in trainers:
        t.reset()
    grid = SiteGrid({1: InProcessLink(site_app(SiteClient(trainers[0]), clipped=False), 1),
                     2: FallsSilent(site_app(SiteClient(trainers[1]), clipped=False), 2, stage),
                     3: InProcessLink(site_app(SiteClient(trainers[2]), clipped=False), 3)})
    cfg = replace(SECURE, round_timeout_s=0.5)
    strategy = build_strategy(cfg, initial_parameters(tokenizer, cfg.local), vocabulary_sha256(tokenizer), 3)
    run_secure_rounds(grid, strategy, cfg)
    assert [r["aggregated"] for r in strategy.rounds] == [True, aggregated]
    assert strategy.records[trainers[1].name]["dropouts"] == [2]
    assert strategy.rounds[1]["dropouts"] == [trainers[1].name]  # not the sites the protocol failed after it
    assert grid.lost == {2: "no answer within the round timeout (train)"}
    if aggregated:
        assert sorted(strategy.rounds[1]["sites"]) == sorted(t.name for t in (trainers[0], trainers[2]))


def test_secure_aggregation_stops_a_round_it_cannot_unmask_and_logs_it(trainers, tokenizer):
    for t in trainers[:2]:
        t.reset()
    strategy = run_rounds([SiteClient(trainers[0]), DropsOut(trainers[1])], tokenizer, SECURE)
    assert [r["aggregated"] for r in strategy.rounds] == [True, False]
    assert strategy.records[trainers[1].name]["dropouts"] == [2]
    with pytest.raises(ValueError, match="--secagg: secure aggregation needs at least 2 sites, got 1"):
        run_rounds([SiteClient(trainers[0])], tokenizer, SECURE)


def test_secure_aggregation_with_differential_privacy_clips_at_the_sites(sites, tokenizer, tmp_path):
    cfg = replace(SECURE, rounds=1, dp_noise_multiplier=0.5, dp_clipping_norm=0.5)
    federate(sites[:2], tmp_path / "secdp", cfg, tokenizer=tokenizer)
    privacy = read_card(tmp_path / "secdp")["privacy"]
    assert privacy["secure_aggregation"].startswith("Flower SecAgg+") and privacy["differential_privacy"]
    assert "each site clips its own update" in privacy["mechanism"]
    assert ledger.read(tmp_path / "secdp")[0]["training"]["secure_aggregation"] is True
    assert "aggregated securely (SecAgg+)" in ledger.describe(tmp_path / "secdp")


def test_a_site_with_another_vocabulary_stops_training_with_a_clear_error(trainers, tokenizer, sites):
    other = Tokenizer(min_count=5).fit(sites[0])
    stranger = SiteTrainer(sites[0], other, FAST.local)
    with pytest.raises(ValueError, match=re.escape(f"site {sites[0].name}: trains with a different vocabulary")):
        run_rounds([SiteClient(trainers[1]), SiteClient(stranger)], tokenizer, replace(FAST, rounds=1))


def test_fedprox_with_differential_privacy_runs_and_is_recorded(sites, tokenizer, tmp_path):
    cfg = replace(FAST, rounds=1, strategy="fedprox", proximal_mu=0.1, dp_noise_multiplier=0.5, dp_clipping_norm=0.5)
    federate(sites[:2], tmp_path / "dp", cfg, tokenizer=tokenizer)
    card = read_card(tmp_path / "dp")
    assert card["privacy"]["differential_privacy"] and card["privacy"]["noise_multiplier"] == 0.5
    assert card["training"]["strategy"] == "fedprox"


def test_server_momentum_carries_part_of_the_last_step_into_the_next():
    class Site:
        cid = "1"

    def update(values):
        return Site(), FitRes(Status(Code.OK, ""), ndarrays_to_parameters([values.astype(np.float32)]), 10,
                              {"site": "a", "vocabulary_sha256": "v"})

    strategy = build_strategy(replace(FAST, strategy="fedavgm", server_momentum=0.5), [np.zeros(3, np.float32)], "v", 1)
    strategy._sampled = [Site.cid]
    strategy.aggregate_fit(1, [update(np.ones(3))], [])
    np.testing.assert_allclose(strategy.current[0], 1.0)  # the first round moves as far as the sites did
    strategy.aggregate_fit(2, [update(strategy.current[0] + 1)], [])
    np.testing.assert_allclose(strategy.current[0], 2.5)  # then the sites' step plus half the last one


def test_bad_federation_settings_are_refused(sites, model):
    with pytest.raises(ValueError, match="--strategy 'fedsgd'"):
        FederationConfig(strategy="fedsgd")
    with pytest.raises(ValueError, match="--round-timeout must be positive seconds, got 0"):
        FederationConfig(round_timeout_s=0)
    with pytest.raises(FileExistsError, match="already holds a model"):
        federate(sites, model[0], FAST)
    with pytest.raises(FileNotFoundError, match="no such site dataset"):
        federate([sites[0], sites[0].parent / "missing"], sites[0].parent / "m", FAST)


# -- valuation and revenue ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def valuation(sites, tokenizer):
    return value_sites(sites, tokenizer, replace(FAST, rounds=1), ValuationConfig(permutations=4, tolerance=0.0))


def test_shapley_values_add_up_to_the_gain_of_the_whole_federation(valuation):
    gain = valuation["utility_all_sites"] - valuation["utility_no_sites"]
    assert sum(s["shapley"] for s in valuation["sites"]) == pytest.approx(gain, rel=1e-9)
    assert valuation["coalitions_trained"] <= 2 ** 3


def test_revenue_splits_the_amount_exactly_by_the_terms(model, valuation, tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    for name in ("model.pt", "tokenizer.json", ledger.LEDGER):
        (out / name).write_bytes((model[0] / name).read_bytes())
    ledger.append_valuation(out, valuation)
    terms = tmp_path / "terms.toml"
    terms.write_text('[fixed]\n"NHS England" = 0.25\n[contribution]\nshare = 0.75\nbasis = "shapley"\n')
    result = revenue(out, 1000.01, terms, tmp_path / "report")
    amounts = [p["amount"] for p in result["parts"]]
    assert math.isclose(sum(amounts), 1000.01, abs_tol=1e-9) and amounts[0] == 250.0
    assert (tmp_path / "report" / "report.md").read_text().count("site") >= 3


@settings(max_examples=50)
@given(st.floats(0, 1e7), st.lists(st.floats(0, 100), min_size=1, max_size=8))
def test_split_amount_adds_up_to_the_penny(amount, weights):
    parts = split_amount(amount, {str(i): w for i, w in enumerate(weights)})
    if sum(weights) > 0:
        assert round(sum(parts.values()) * 100) == round(amount * 100)
    assert all(v >= 0 for v in parts.values())


@pytest.mark.parametrize("text, message", [
    ('[fixed]\n"NHS" = 0.5\n[contribution]\nshare = 0.6\nbasis = "shapley"\n', "add up to 1.1"),
    ('[contribution]\nshare = 1.0\nbasis = "votes"\n', "basis 'votes'"),
    ("[fixed\n", "not valid TOML"),
])
def test_bad_terms_are_refused(tmp_path, text, message):
    (tmp_path / "t.toml").write_text(text)
    with pytest.raises(ValueError, match=message):
        read_terms(tmp_path / "t.toml")


# -- command line -------------------------------------------------------------------------------
def test_cli_shows_the_ledger_and_refuses_bad_input(model, sites):
    runner = CliRunner()
    shown = runner.invoke(app, ["ledger", "show", str(model[0])])
    assert shown.exit_code == 0 and "hash chain intact" in shown.output and sites[0].name in shown.output
    refused = runner.invoke(app, ["federate", "--sites", str(sites[0]), "--out", "x", "--secagg"])
    assert refused.exit_code == 2 and "secure aggregation needs at least 2 sites" in refused.output
    missing = runner.invoke(app, ["federate", "--out", "x"])
    assert missing.exit_code == 2 and "--sites" in missing.output


@pytest.mark.slow
@pytest.mark.parametrize("secure", [False, True], ids=["flower-grpc", "secagg+"])
def test_sites_as_separate_processes_on_loopback(sites, tokenizer, tmp_path, secure):
    cfg = replace(FAST, rounds=1, secure_aggregation=secure)
    result = federate(sites[:2], tmp_path / "loop", cfg, processes=True, tokenizer=tokenizer)
    assert result["rounds"][0]["aggregated"] and sorted(result["rounds"][0]["sites"]) == sorted(s.name for s in sites[:2])
    assert ledger.read(tmp_path / "loop")[0]["sites"][0]["rounds_participated"] == [1]


@pytest.mark.slow
def test_a_site_process_that_cannot_start_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match="site empty: its process exited before connecting: .*not a farr tokenizer"):
        with loopback_grid([tmp_path / "empty"], ["--tokenizer", str(tmp_path / "none.json"), "--local", "{}"], 60):
            pass


@pytest.mark.slow
def test_compare_scores_pooled_federated_and_each_site_alone_on_every_site(pooled, sites, tokenizer, tmp_path):
    from farr.federated.compare import compare
    from farr.forecast.evaluate import EvaluationConfig

    evaluation = EvaluationConfig(horizons=(5.0,), rollout_people=5, rollout_draws=2, next_event_people=20, oracle_draws=2)
    result = compare(sites[:2], pooled, tmp_path / "cmp", replace(FAST, rounds=1), evaluation, tokenizer=tokenizer)
    names = ["pooled", "federated", *[f"alone:{s.name}" for s in sites[:2]]]
    assert list(result["validation_nll"]) == names
    assert all(np.isfinite(v) for losses in result["validation_nll"].values() for v in losses.values())
    assert result["most_minority_site"] in {s.name for s in sites[:2]}
    assert (tmp_path / "cmp" / "report.md").exists() and (tmp_path / "cmp" / "models" / "federated" / "model.pt").exists()


def test_a_federation_where_every_update_is_bad_writes_no_model(trainers, tokenizer, sites, tmp_path, monkeypatch):
    import farr.federated.federate as federation

    monkeypatch.setattr(federation, "SiteClient", SendsBadUpdates)
    with pytest.raises(ValueError, match="no round could be aggregated.*non-finite"):
        federate(sites[:1], tmp_path / "none", replace(FAST, rounds=1), tokenizer=tokenizer)
    assert not (tmp_path / "none" / "model.pt").exists()
