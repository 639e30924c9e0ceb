"""The comparisons a verdict makes, on arrays of sweeps: seed-blocked means, the best and the
runner-up, paired t-tests, and the corrections that hold the family's error rate.

`decide` works on scores shaped (sweeps, arms, repeats), NaN where a trial has no score, so the
same code judges one sweep (`stats.judge`) and thousands of simulated ones (the calibration
test). Arms are the K configurations first, then the C controls.

- Blocked means: the additive model score = arm + seed + noise, fitted by least squares over the
  cells that have a score (missing cells are filled with their fitted value until the fit stops
  moving, which converges to the least-squares fit). An arm's blocked mean is its fitted mean
  over all repeats, so a repeat an arm lacks does not carry that seed's luck into its mean.
- Picking the best: the best of K is compared with a control as one of K paired tests (Bonferroni
  over K: the best's test can only be significant if one of the K is), and with the runner-up as
  one of the K (K - 1) / 2 pairs. `picked` names an arm chosen before the seeds were drawn (a
  confirmation run): no factor for it.
- The family: Holm over the verdict's comparisons (best vs runner-up, best vs every control),
  each on its selection-corrected p-value. Each comparison's `level` is the alpha its interval
  is drawn at: the interval excludes zero exactly when the comparison is declared.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.stats import t as student_t

from smsweep.verdict.power import ALPHA, mde_array

_FIT_STEPS = 1000  # ample: the fill converges geometrically, in a few steps for a few holes


def blocked_means(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(blocked mean of every arm (sweeps, arms), residual sd of one score (sweeps,)) of the
    additive model arm + seed. Arms and repeats without any score are left out of the fit
    (their blocked mean is NaN); the sd is NaN without residual degrees of freedom."""
    seen = np.isfinite(scores)
    arms = seen.any(axis=2, keepdims=True)
    seeds = seen.any(axis=1, keepdims=True)
    live = arms & seeds
    count_arm = np.maximum(seeds.sum(axis=2, keepdims=True), 1)
    count_seed = np.maximum(arms.sum(axis=1, keepdims=True), 1)
    values = np.where(seen, scores, 0.0)
    # Start from each arm's own mean: exact when nothing is missing.
    start = values.sum(axis=2, keepdims=True) / np.maximum(seen.sum(axis=2, keepdims=True), 1)
    table = np.where(seen, scores, np.where(live, start, 0.0))
    for _ in range(_FIT_STEPS):
        arm_mean = table.sum(axis=2, keepdims=True) / count_arm
        seed_mean = table.sum(axis=1, keepdims=True) / count_seed
        grand = arm_mean.sum(axis=1, keepdims=True) / count_seed
        fitted = np.where(live, arm_mean + seed_mean - grand, 0.0)
        refilled = np.where(seen, scores, fitted)
        moved = np.abs(refilled - table).max() if refilled.size else 0.0
        table = refilled
        if moved <= 1e-13 * max(1.0, float(np.abs(values).max(initial=0.0))):
            break
    means = np.where(arms.squeeze(2), table.sum(axis=2) / count_arm.squeeze(2), np.nan)
    residual = np.where(seen, scores - fitted, 0.0)
    df = seen.sum(axis=(1, 2)) - (arms.sum(axis=(1, 2)) + seeds.sum(axis=(1, 2)) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt((residual**2).sum(axis=(1, 2)) / np.where(df > 0, df, np.nan))
    return means, sd


@dataclass(frozen=True)
class Tests:
    """One comparison (arm i minus arm j, repeat by repeat) in every sweep: arrays (sweeps,)."""

    first: np.ndarray  # arm index i
    second: np.ndarray  # arm index j
    mean: np.ndarray  # mean paired difference
    sd: np.ndarray  # sd of the paired differences (NaN when n < 2)
    n: np.ndarray  # shared repeats
    p: np.ndarray  # two-sided paired t-test (NaN when n < 2)
    selection: np.ndarray  # how many comparisons it was picked from (1: none)
    level: np.ndarray  # the alpha it is judged and its interval drawn at
    declared: np.ndarray  # the difference is declared (the interval excludes zero)

    @property
    def half_width(self) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            quantile = student_t.ppf(1 - self.level / 2, np.maximum(self.n - 1, 1))
            return np.where(self.n >= 2, quantile * self.sd / np.sqrt(self.n), np.nan)

    @property
    def mde(self) -> np.ndarray:
        """The smallest effect this comparison finds with 80 % power at its level."""
        return mde_array(self.sd, self.n, self.level)


def paired(scores: np.ndarray, first: np.ndarray, second: np.ndarray) -> dict[str, np.ndarray]:
    """Paired t-tests of arm first[s] minus arm second[s] in every sweep s, over the repeats
    both have."""
    rows = np.arange(scores.shape[0])
    differences = scores[rows, first] - scores[rows, second]
    n = np.isfinite(differences).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of a sweep with no pair
        mean = np.nanmean(differences, axis=1)
        sd = np.where(n >= 2, np.nanstd(differences, axis=1, ddof=1), np.nan)
        statistic = mean / (sd / np.sqrt(n))
        # sd 0: a constant difference is certain (p 0) unless it is 0 itself (p 1).
        statistic = np.where(sd == 0, np.where(mean == 0, 0.0, np.inf), statistic)
        p = np.where(n >= 2, 2 * student_t.sf(np.abs(statistic), np.maximum(n - 1, 1)), np.nan)
    return {"first": first, "second": second, "mean": mean, "sd": sd, "n": n, "p": p}


def holm(p: np.ndarray, selection: np.ndarray, alpha: float = ALPHA) -> tuple[np.ndarray, ...]:
    """Holm's step-down over the m columns of p (sweeps, m), each p first multiplied by its
    selection factor. Returns (declared, level), both (sweeps, m): a declared comparison's
    level is alpha / (selection x (m - its rank)); an undeclared one's, that of the step where
    the procedure stopped, so its interval at that level contains zero."""
    sweeps, m = p.shape
    adjusted = np.where(np.isnan(p), np.inf, p * selection)
    order = np.argsort(adjusted, axis=1, kind="stable")
    declared = np.zeros((sweeps, m), bool)
    level = np.zeros((sweeps, m))
    going = np.ones(sweeps, bool)
    stop_divisor = np.full(sweeps, float(m))
    rows = np.arange(sweeps)
    for rank in range(m):
        column = order[:, rank]
        divisor = float(m - rank)
        passes = going & (adjusted[rows, column] < alpha / divisor)
        stop_divisor = np.where(going & ~passes, divisor, stop_divisor)
        going &= passes
        declared[rows, column] = passes
        level[rows, column] = np.where(passes, divisor, 0.0)
    divisor = np.where(declared, level, stop_divisor[:, None])
    return declared, alpha / (selection * divisor)


@dataclass(frozen=True)
class Decisions:
    """What `decide` found in every sweep."""

    blocked: np.ndarray  # (sweeps, arms) blocked means
    residual_sd: np.ndarray  # (sweeps,) sd of one score around the additive fit
    ranking: np.ndarray  # (sweeps, K) configurations, best first
    vs_runner_up: Tests | None  # None with fewer than 2 configurations or a picked arm
    vs_controls: list[Tests]  # the best against each control


def decide(
    scores: np.ndarray,
    configurations: int,
    sign: float = 1.0,
    alpha: float = ALPHA,
    picked: int | None = None,
) -> Decisions:
    """Rank the `configurations` (the first arms of `scores`) on blocked means (`sign` -1 for a
    metric to minimise) and judge the best against the runner-up and every control as one
    family at `alpha`. `picked`: the configuration chosen before these repeats (a confirmation
    run), judged without a factor for having been picked. Configurations without any score
    rank last and are not counted among those the best was picked from."""
    scores = np.asarray(scores, float)
    sweeps, arms, _ = scores.shape
    blocked, residual_sd = blocked_means(scores)
    key = np.where(
        np.isnan(blocked[:, :configurations]), np.inf, -sign * blocked[:, :configurations]
    )
    ranking = np.argsort(key, axis=1, kind="stable")
    scored = np.isfinite(blocked[:, :configurations]).sum(axis=1)
    if picked is not None:
        best = np.full(sweeps, picked)
        picks = np.ones(sweeps)
    else:
        best = ranking[:, 0] if configurations else np.zeros(sweeps, int)
        picks = np.maximum(scored, 1).astype(float)
    raw = []
    if picked is None and configurations >= 2:
        raw.append((paired(scores, best, ranking[:, 1]), np.maximum(picks * (picks - 1) / 2, 1)))
    for control in range(configurations, arms):
        raw.append((paired(scores, best, np.full(sweeps, control)), picks))
    if not raw:
        return Decisions(blocked, residual_sd, ranking, None, [])
    p = np.stack([tests["p"] for tests, _ in raw], axis=1)
    selection = np.stack([factor for _, factor in raw], axis=1)
    declared, level = holm(p, selection, alpha)
    made = [
        Tests(**tests, selection=factor, level=level[:, i], declared=declared[:, i])
        for i, (tests, factor) in enumerate(raw)
    ]
    runner_up = made.pop(0) if picked is None and configurations >= 2 else None
    return Decisions(blocked, residual_sd, ranking, runner_up, made)
