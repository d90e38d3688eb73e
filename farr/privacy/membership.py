"""Membership-inference attacks: can an attacker tell people the generator trained on from people
it never saw? Each attack scores an equal number of members (training split) and non-members
(held out); the AUC of the scores is 0.5 when nothing leaks.

- against the release: a member is closer to some synthetic record (score −DCR to the synthetic data);
- against the model: a member's timeline is more likely under the model (score −NLL per event,
  the loss-threshold attack of Yeom et al. 2018).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from farr.model.data import TrainingBatches
from farr.model.gpt import TimelineGPT
from farr.model.tokenizer import Timelines
from farr.privacy.reidentification import nearest


def auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    truth = np.r_[np.ones(len(member_scores)), np.zeros(len(nonmember_scores))]
    return float(roc_auc_score(truth, np.r_[member_scores, nonmember_scores]))


def distance_attack(members: torch.Tensor, nonmembers: torch.Tensor, synth: torch.Tensor, columns: int) -> dict:
    member_distance, _ = nearest(members, synth, columns)
    nonmember_distance, _ = nearest(nonmembers, synth, columns)
    return {"auc": auc(-member_distance, -nonmember_distance), "members": len(members), "nonmembers": len(nonmembers)}


@torch.no_grad()
def loss_attack(model: TimelineGPT, timelines: Timelines, members: np.ndarray, nonmembers: np.ndarray,
                seed: int = 0) -> dict:
    """AUC of −(per-event NLL) of each person's timeline under the model (one person per forward pass)."""
    model.eval()
    people = np.r_[members, nonmembers]
    batches = TrainingBatches(timelines, people, model.cfg.block_size, seed=seed)
    loss = np.array([float(model(**batches.batch_of(np.array([p])))["loss"]) for p in people])
    return {"auc": auc(-loss[:len(members)], -loss[len(members):]), "members": len(members),
            "nonmembers": len(nonmembers)}
