"""The variance components of a sweep with fine-tune repeats, checked where the truth is known:
simulated trials whose fine-tune noise and seed-bound noise are set."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from smsweep.verdict.stats import ArmRun, judge
from smsweep.verdict.variance import components, finetune_scores

FINETUNE_SD, SEED_SD, FINETUNES = 0.05, 0.02, 4


def _trials(rng, arms=6, repeats=12):
    """Per trial: its arm, repeat and F fine-tune scores = arm mean + seed effect (shared by
    the arms of a repeat) + the arm's own seed-bound part + each fine-tune's noise."""
    seeds = rng.normal(0, 0.03, repeats)
    found = []
    for arm in range(arms):
        for repeat in range(repeats):
            bound = 0.40 + 0.01 * arm + seeds[repeat] + rng.normal(0, SEED_SD)
            found.append((arm, repeat, list(bound + rng.normal(0, FINETUNE_SD, FINETUNES))))
    return found


def test_the_components_recover_the_fine_tune_and_the_seed_bound_noise():
    rng = np.random.default_rng(3)
    estimates = []
    for _ in range(20):
        trials = _trials(rng)
        runs = [
            ArmRun(f"c{arm}", "", None, repeat, statistics.fmean(scores))
            for arm, repeat, scores in trials
        ]
        residual = judge(runs, "miou").residual_sd
        found = components([scores for _, _, scores in trials], residual)
        estimates.append((found.finetune_sd, found.seed_sd, found.finetunes))
    finetune, seed, counts = zip(*estimates, strict=True)
    assert statistics.fmean(finetune) == pytest.approx(FINETUNE_SD, rel=0.05)
    assert statistics.fmean(seed) == pytest.approx(SEED_SD, rel=0.2)
    assert set(counts) == {FINETUNES}
    sentence = components([scores for _, _, scores in trials], residual).sentence()
    assert "fine-tunes of one pretraining differ by" in sentence
    assert "with finetune.repeats: 16" in sentence


def test_a_trial_without_fine_tune_repeats_has_no_components():
    assert components([[0.4], [0.5]], 0.02) is None
    metrics = {"finetune/0/miou": 0.4, "finetune/1/miou": float("nan"), "finetune/2/miou": 0.5}
    assert finetune_scores(metrics, "miou") == [0.4, 0.5]
    assert finetune_scores({"miou": 0.4}, "miou") == []
