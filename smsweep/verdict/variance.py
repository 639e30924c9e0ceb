"""Where a sweep's noise comes from: the fine-tune or the pretraining seed.

With `finetune.repeats: F`, each trial reports its F fine-tunes' scores (`finetune/<f>/<metric>`)
beside their mean, the trial's score. Two variance components follow:

- **between fine-tunes of one pretraining**: the pooled variance of a trial's F scores around
  their mean (F - 1 degrees of freedom per trial). `finetune.repeats` divides it by F.
- **with the repeat seed**: what is left of a trial score's residual around the verdict's arm +
  seed model (`Verdict.residual_sd`, the noise a paired comparison sees) once the fine-tune part,
  variance / F, is taken out. Only more repeat seeds average it.

So a user sees which kind of repeat buys power: the planner's sd of one trial at F' fine-tunes is
sqrt(seed part + fine-tune part / F'). Pure Python.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Components:
    """The two sds (in units of the metric) and what they were measured on."""

    finetune_sd: float  # one fine-tune's score around its trial's mean
    seed_sd: float  # a trial's residual beyond the fine-tune part: comes with the repeat seed
    finetunes: int  # F of the trials measured
    trials: int

    def trial_sd(self, finetunes: int) -> float:
        """The residual sd of one trial's score with `finetunes` fine-tunes."""
        return math.sqrt(self.seed_sd**2 + self.finetune_sd**2 / finetunes)

    def sentence(self, scale: float = 100.0, unit: str = "points") -> str:
        more = 4 * self.finetunes
        return (
            f"Where the noise is (over {self.trials} trials of {self.finetunes} fine-tunes): "
            f"fine-tunes of one pretraining differ by {scale * self.finetune_sd:.1f} {unit} (sd; "
            f"finetune.repeats averages it), and {scale * self.seed_sd:.1f} {unit} come with the "
            f"repeat seed (only more repeats average it); a trial's sd is "
            f"{scale * self.trial_sd(self.finetunes):.1f} {unit} now, "
            f"{scale * self.trial_sd(more):.1f} with finetune.repeats: {more}."
        )

    def mlflow_metrics(self) -> dict[str, float]:
        return {"variance/finetune_sd": self.finetune_sd, "variance/seed_sd": self.seed_sd}


def finetune_scores(metrics: Mapping[str, object], metric: str) -> list[float]:
    """A trial's per-fine-tune scores of `metric` (`finetune/<f>/<metric>`), finite ones only."""
    found = []
    for f in range(1000):
        value = metrics.get(f"finetune/{f}/{metric}")
        if value is None:
            break
        if isinstance(value, int | float) and math.isfinite(value):
            found.append(float(value))
    return found


def components(per_trial: Sequence[Sequence[float]], residual_sd: float) -> Components | None:
    """The components from each trial's fine-tune scores and the verdict's residual sd of a
    trial; None without a trial of two or more fine-tunes, or without a residual sd."""
    measured = [list(scores) for scores in per_trial if len(scores) >= 2]
    if not measured or not math.isfinite(residual_sd):
        return None
    df = sum(len(scores) - 1 for scores in measured)
    within = sum(statistics.variance(scores) * (len(scores) - 1) for scores in measured) / df
    finetunes = round(statistics.fmean(len(scores) for scores in measured))
    seed = max(0.0, residual_sd**2 - within / finetunes)
    return Components(math.sqrt(within), math.sqrt(seed), finetunes, len(measured))
