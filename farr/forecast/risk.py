"""Risks from a trained model at a landmark: analytic from its rates, or by sampling futures.

Analytic: the model's rate λ_k of each outcome's tokens read at the landmark and on each
anniversary after it (a "no event" query token per year, so ageing and calendar time, such as
a pandemic, move the rate) gives the cumulative hazard Λ_k(h) = Σ_i λ_k,i · (share of year i
inside h), and P(k within h) = 1 − exp(−Λ_k(h)). With no anniversaries this is Delphi's reading:
the landmark rate held for the horizon. Monte Carlo: whole future timelines are sampled from
the model (`generate.py`) and the risk is the mean over them of the outcome's rate integrated
along each up to its first event within h, so later events can change what follows (and an
outcome that comes just after another event, as a diagnosis after the admission that finds it,
is counted, where the analytic reading misses it).
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np
import torch

from farr.forecast.landmark import Landmark, Outcome, outcome_columns
from farr.model.data import batches_by_size, history_lengths, landmark_histories, with_earlier_queries
from farr.model.gpt import TimelineGPT
from farr.model.tokenizer import Timelines

# People per forward pass. On a CPU the activations of a small batch stay in cache: 64 took 25% (bf16)
# to 35% (float32) less time than 512 on a 2-core EPYC (20,000 people). A GPU wants large batches.
BATCH = {"cpu": 64, "cuda": 512}
log = logging.getLogger(__name__)


def years_read(horizons: list[float]) -> int:
    """Anniversaries to read rates at so that every year of the longest horizon has its own rate."""
    return max(0, math.ceil(max(horizons)) - 1)


def outcome_rates(model: TimelineGPT, timelines: Timelines, mark: Landmark, outcomes: list[Outcome],
                  years_after: int = 0) -> np.ndarray:
    """(n, outcomes, 1 + years_after) rates per year of each outcome, read at each person's
    landmark and on the `years_after` anniversaries after it.

    People go in batches of similar history length, so little compute goes on padding. A model
    with bfloat16 blocks (`inference_model`) is read in them."""
    return cohort_rates(model, timelines, [(mark, years_after)], outcomes)[0]


def cohort_rates(model: TimelineGPT, timelines: Timelines, cohorts: list[tuple[Landmark, int]],
                 outcomes: list[Outcome]) -> list[np.ndarray]:
    """Each cohort's `outcome_rates` (cohort k read with years_after_k), in one forward pass per
    person where the histories allow: a person in several cohorts (a view's landmark and its
    backtests) is read at their latest landmark, with the earlier landmarks' queries appended
    (`data.with_earlier_queries`), wherever that history and all the queries fit the block; a
    history too long for them has its earlier landmarks read in a later pass, the same way."""
    read = _Reader(model, outcome_columns(outcomes, model.cfg.vocab_size))
    requests = _Requests(cohorts)
    out = [np.empty((len(mark.people), len(outcomes), 1 + years_after), np.float32) for mark, years_after in cohorts]
    pending = np.arange(len(requests.person))
    while len(pending):
        anchors, chains, pending = requests.nested(timelines, pending, model.cfg.block_size)
        for k in np.unique(requests.cohort[anchors]):
            mine = np.sort(anchors[requests.cohort[anchors] == k])
            _read_cohort(read, timelines, requests, mine, chains[np.isin(requests.owner[chains], mine)],
                         model.cfg.block_size, BATCH.get(read.device.type, BATCH["cuda"]), out)
    return out


def rides_along(timelines: Timelines, mark: Landmark, block: int, queries: int) -> np.ndarray:
    """(len(timelines),) bool: the people of `mark` whose history there leaves room in the block for
    `queries` more query tokens, so that `cohort_rates` reads their earlier landmarks (whose
    histories are the start of this one) in the same pass, at the cost of those queries alone."""
    rides = np.zeros(len(timelines), bool)
    rides[mark.people] = history_lengths(timelines, mark.people, mark.age) + queries <= block
    return rides


class _Requests:
    """Every cohort's people as one table of requests: cohort, row in it, person, landmark age and
    queries (1 + years_after)."""

    def __init__(self, cohorts: list[tuple[Landmark, int]]):
        self.cohort = np.concatenate([np.full(len(mark.people), k) for k, (mark, _) in enumerate(cohorts)])
        self.row = np.concatenate([np.arange(len(mark.people)) for mark, _ in cohorts])
        self.person = np.concatenate([mark.people for mark, _ in cohorts])
        self.age = np.concatenate([mark.age for mark, _ in cohorts]).astype(float)
        self.count = np.concatenate([np.full(len(mark.people), 1 + years) for mark, years in cohorts])
        self.owner = np.full(len(self.person), -1)  # the anchor request a chained one rides with
        self.length = np.zeros(len(self.person), np.int64)  # its unwindowed history's tokens (`history_lengths`)

    def nested(self, timelines: Timelines, pending: np.ndarray, block: int):
        """(anchors, chains, still pending): each person's latest pending request is an anchor; their
        others ride with it as chains (`owner`) where the anchor's history and every query fit the
        block, else wait for a later pass."""
        order = pending[np.lexsort((-self.age[pending], self.person[pending]))]
        first = np.r_[True, self.person[order][1:] != self.person[order][:-1]]
        anchors, person = order[first], np.cumsum(first) - 1  # each request's person, 0.. in `order`
        queries = np.bincount(person, weights=self.count[order]).astype(np.int64)
        self.length[anchors] = history_lengths(timelines, self.person[anchors], self.age[anchors])
        fits = (self.length[anchors] + queries <= block)[person] & ~first
        self.owner[order] = anchors[person]
        chains = order[fits]
        self.length[chains] = history_lengths(timelines, self.person[chains], self.age[chains])
        return anchors, chains, order[~fits & ~first]


def _read_cohort(read, timelines: Timelines, requests: _Requests, anchors: np.ndarray, chains: np.ndarray,
                 block: int, batch: int, out: list[np.ndarray]) -> None:
    """Rates of one cohort's `anchors` (sorted) and the `chains` riding with them, into `out`."""
    queries = int(requests.count[anchors[0]])
    where = np.searchsorted(anchors, requests.owner[chains])  # each chain's anchor
    order = np.argsort(where, kind="stable")
    chains, where = chains[order], where[order]
    extra = np.bincount(where, weights=requests.count[chains], minlength=len(anchors))

    def read_batch(rows: np.ndarray) -> None:
        people, ages = requests.person[anchors[rows]], requests.age[anchors[rows]]
        lo, hi = np.searchsorted(where, rows), np.searchsorted(where, rows, side="right")
        owner, ride = np.repeat(np.arange(len(rows)), hi - lo), chains[_ranges(lo, hi)]
        tokens, token_ages, birth, length = landmark_histories(timelines, people, ages, block, years_after=queries - 1)
        tokens, token_ages, at, visible, slot = with_earlier_queries(
            tokens, token_ages, length, queries, owner, requests.length[ride], requests.age[ride], requests.count[ride])
        rates = read(tokens, token_ages, birth, at, visible)
        out[requests.cohort[anchors[0]]][requests.row[anchors[rows]]] = rates[:, :, :queries]
        for k in np.unique(requests.cohort[ride]):  # each chain's queries, from its slot on
            of_k = requests.cohort[ride] == k
            columns = slot[of_k][:, None] + np.arange(out[k].shape[-1])
            out[k][requests.row[ride[of_k]]] = rates[owner[of_k][:, None], :, columns].transpose(0, 2, 1)

    _each_batch(read.device, read_batch, batches_by_size(np.minimum(requests.length[anchors] + queries + extra, block),
                                                         batch))


def _each_batch(device: torch.device, work, batches) -> None:
    """`work(rows)` for each batch (they write disjoint rows). On a CPU, one Python thread a core
    takes batches side by side, each op single-threaded: a small batch's ops gain little from
    a second core, and one batch's numpy preparation overlaps another's forward pass (13% less
    time on 2 cores, the same rates)."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        for rows in batches:
            work(rows)
        return
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(work, batches):  # re-raises a batch's error
                pass
    finally:
        torch.set_num_threads(threads)


def _ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The indices lo[i]..hi[i] − 1 of every i, concatenated."""
    size = hi - lo
    return np.repeat(lo - np.cumsum(size) + size, size) + np.arange(size.sum())


class _Reader:
    """Each outcome's rates per year at the query positions of a batch of histories."""

    def __init__(self, model: TimelineGPT, columns: np.ndarray):
        self.model = model
        self.device = next(model.parameters()).device
        self.columns = torch.from_numpy(columns).to(self.device)

    @torch.no_grad()
    def __call__(self, tokens, ages, birth, at, visible) -> np.ndarray:
        """(people, outcomes, queries)."""
        device = self.device
        log_rate = self.model.log_rates(tokens.to(device), ages.to(device), birth.to(device), at=at.to(device),
                                        visible=None if visible is None else visible.to(device))
        return (log_rate.exp() @ self.columns).transpose(1, 2).cpu().numpy()


def inference_model(model: TimelineGPT, bf16: bool) -> TimelineGPT:
    """The model, or, for `bf16` where its device multiplies bfloat16 natively, its copy with
    bfloat16 blocks (`TimelineGPT.bfloat16_blocks`) for reading rates and sampling futures: about
    twice as fast on CPUs with AVX-512 BF16, and a person's rates move by about 0.4% (median)."""
    return model.bfloat16_blocks() if bf16 and native_bf16(next(model.parameters()).device) else model


@cache  # warn once per process
def native_bf16(device: torch.device) -> bool:
    """Whether `device` multiplies bfloat16 natively. A CPU without it (AVX2 only) emulates them,
    about five times slower than float32, so asking for bf16 there gets float32 and a warning."""
    native = (torch.cuda.is_bf16_supported() if device.type == "cuda"
              else torch.ops.mkldnn._is_mkldnn_bf16_supported())  # oneDNN's own check of the CPU
    if not native:
        log.warning("--bf16: this %s has no native bfloat16 products (they would be emulated, several "
                    "times slower); running float32", device.type)
    return native


def model_risk(model: TimelineGPT, timelines: Timelines, mark: Landmark, outcomes: list[Outcome],
               horizons: list[float], *, anniversaries: bool = True) -> np.ndarray:
    """(n, outcomes, horizons) analytic risks, from rates on every anniversary up to the longest
    horizon (or, without `anniversaries`, from the landmark rate alone)."""
    years = years_read(horizons) if anniversaries else 0
    return analytic_risk(outcome_rates(model, timelines, mark, outcomes, years), horizons)


def analytic_risk(rates: np.ndarray, horizons: list[float]) -> np.ndarray:
    """(n, outcomes, horizons) probabilities 1 − exp(−Λ(h)) from `rates` (n, outcomes, years):
    year i's rate covers (i, i + 1]; the last one also covers the years after it."""
    years = rates.shape[-1]
    start = np.arange(years, dtype=float)
    length = np.clip(np.asarray(horizons, dtype=float)[:, None] - start, 0.0, None)  # (horizons, years)
    length[:, :-1] = np.minimum(length[:, :-1], 1.0)
    return 1.0 - np.exp(-(rates @ length.T))


def not_at_risk(mark: Landmark, outcomes: list[Outcome]) -> np.ndarray:
    """(n, outcomes) True where a new onset is impossible: the outcome is already recorded."""
    recurrent = np.array([o.recurrent for o in outcomes])
    return mark.had_before & ~recurrent
