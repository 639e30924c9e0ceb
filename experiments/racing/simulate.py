"""Racing against fixed repeats, through the sweep's own searcher, on simulated scores.

    python experiments/racing/simulate.py [SWEEPS]

Each simulated sweep drives `engines.searcher.Arms` (with Optuna's sampler behind it, as a sweep
does) trial by trial, but a trial's score is drawn instead of trained: its configuration's true
mean + a seed effect shared by every arm of a repeat (sd 3 points) + its own noise (sd 2 points).
8 configurations, one control. The truth: config-1 is best, 1 and 2 points above the next two
(the size of effect masking papers report), 4 to 8 points above the other five, and 3 points
above the control. Arms are numbered in the order the
sampler proposes them, so the truth follows the number, not the searched values.

Compared: fixed repeats (6 per arm: 54 trials) and racing (2 repeats, then rounds up to 6, the
first test at 3 or 5). Reported: how often the sweep's best (the verdict's seed-blocked ranking)
is the true best, how often the verdict declares it above the control, and the trials spent.
"""

from __future__ import annotations

import statistics
import sys

import numpy as np
import optuna
from ray.tune.search.optuna import OptunaSearch

from smsweep.engines.searcher import Arms, DefineByRun
from smsweep.spec.space import Distribution
from smsweep.verdict.arms import Arm
from smsweep.verdict.stats import judge

CONFIGURATIONS = 8
BELOW = (0.0, 0.01, 0.02, 0.04, 0.05, 0.06, 0.07, 0.08)  # config-k's distance to the best
TRUE = {f"config-{k + 1}": 0.45 - below for k, below in enumerate(BELOW)}
CONTROL = 0.42  # the best is 3 points above the control
SEED_SD, NOISE_SD = 0.03, 0.02


def one_sweep(rng: np.random.Generator, repeats: int, racing: tuple[int, int] | None) -> dict:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    inner = OptunaSearch(
        space=DefineByRun({"masking.ratio": Distribution(uniform=(0.4, 0.6))}, {}),
        metric="miou",
        mode="max",
        sampler=optuna.samplers.RandomSampler(seed=int(rng.integers(1 << 30))),
    )
    arms = Arms(
        inner,
        {"none": {"masking.strategy": "none"}},
        repeats,
        configurations=CONFIGURATIONS,
        racing=racing,
    )
    seeds = rng.normal(0, SEED_SD, 64)
    runs = []
    for number in range(10_000):
        config = arms.suggest(f"t{number}")
        if config is None or config == Arms.FINISHED:
            break
        arm = Arm.of(config)
        truth = CONTROL if arm.control else TRUE[arm.key]
        value = truth + seeds[arm.repeat] + rng.normal(0, NOISE_SD)
        runs.append(arm.scored(value))
        arms.on_trial_complete(f"t{number}", {"miou": value})
    verdict = judge(runs, "miou")
    declared = verdict.best_vs_controls["none"].difference.excludes_zero()
    return {
        "trials": len(runs),
        "right": verdict.best.key == "config-1",
        "declared": declared and verdict.best.key == "config-1",
    }


def main(sweeps: int) -> None:
    rng = np.random.default_rng(0)
    settings = {
        "fixed, 6 repeats": (6, None),
        "racing 2 -> 6, first test at 3": (2, (6, 3)),
        "racing 2 -> 6, first test at 5": (2, (6, 5)),
        "fixed, 2 repeats": (2, None),
    }
    print(
        "| protocol | trials (mean, min-max) | best is the true best | declared above the control |"
    )
    print("|---|---|---|---|")
    for name, (repeats, racing) in settings.items():
        found = [one_sweep(rng, repeats, racing) for _ in range(sweeps)]
        trials = [f["trials"] for f in found]
        right = statistics.fmean(f["right"] for f in found)
        declared = statistics.fmean(f["declared"] for f in found)
        print(
            f"| {name} | {statistics.fmean(trials):.1f} ({min(trials)}-{max(trials)}) | "
            f"{right:.2f} | {declared:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
