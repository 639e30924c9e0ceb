"""A trial's reports, and the one path they take.

Every pretraining partition and every fine-tuning evaluation ends with one `TrialReport`. Rank 0
of the training loop sends it on once its checkpoint is stored:

- to Ray Train with the checkpoint (`ray.train.report`), as `TrialReport.for_tune()`; in a sweep
  the Train run's `TuneReportCallback` hands it to Tune (console, scheduler, searcher);
- to the trial's MLflow run, straight from the loop (`recorder.Recorder`): the numbers at the
  partition or evaluation as step, the partition's gallery, the precision as a tag. Entries
  MLflow does not take wait in the trial's pending file (`tracking.RunLog`), which the trial's
  process logs before it ends the run;
- the last one (`done`) to RESULT_FILE beside the Train run: a trial that finished is replayed
  from it, not run again.

The reports of an attempt are also the loop's return value (`Result.return_value` under Ray
Train), so `trial.run_trial` hands them to a caller outside Tune.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

RESULT_FILE = "result.json"  # a finished trial's last report, beside its Train run
PRECISION_TAG = "smsweep.precision"  # a trial run's tag: e.g. "bf16 autocast + channels_last"
FINETUNE_METRICS = ("miou", "pixel_accuracy", "finetune_loss")
# What Tune gets of a pretraining report: progress for the console (Tune's scheduler and the
# searcher look past it: the score comes with fine-tuning).
PRETRAIN_PROGRESS = (
    "partition",
    "plan/partitions",
    "pretrain_steps",
    "plan/pretrain_steps",
    "recon_loss",
    "contrastive_loss",
    "scored_images",
    "scoring_actors",
    "scoring_seconds",
)
_FLAGS = ("phase", "done", "replayed", "precision", "transfer")


@dataclass(frozen=True)
class TrialReport:
    """One report: where the trial is, and every number it measured there."""

    phase: Literal["pretrain", "finetune"]
    metrics: dict[str, float | int]  # losses, scores, iou/<class>, cost/..., plan/..., steps
    done: bool = False  # the trial's last report
    replayed: bool = False  # a finished trial's last report, sent again (MLflow has it)
    precision: str | None = None  # what the forwards ran in, e.g. "bf16 autocast"
    transfer: str | None = None  # what fine-tuning took from pretraining
    gallery: str | None = field(default=None, compare=False)  # its gallery's copy, if any
    # its MLflow entry's timestamp (ms), stamped with its checkpoint: the same on every try, so
    # an entry logged again is stored once
    logged_at: int | None = field(default=None, compare=False)

    @classmethod
    def of(cls, values: dict[str, Any]) -> TrialReport:
        """From the loop's flat dict (also RESULT_FILE's and a checkpoint's form)."""
        numbers = {
            key: value
            for key, value in values.items()
            if key not in _FLAGS and isinstance(value, (int, float)) and not isinstance(value, bool)
        }
        return cls(
            phase=values["phase"],
            metrics=numbers,
            done=bool(values.get("done")),
            replayed=bool(values.get("replayed")),
            precision=values.get("precision"),
            transfer=values.get("transfer"),
        )

    @property
    def step(self) -> int:
        """The partition (pretraining) or the fine-tuning evaluation."""
        return int(self.metrics["partition" if self.phase == "pretrain" else "epoch"])

    def flat(self) -> dict[str, Any]:
        """The loop's flat dict again."""
        flags = {"done": self.done, "precision": self.precision, "transfer": self.transfer}
        flags |= {"replayed": True} if self.replayed else {}
        return {"phase": self.phase, **self.metrics} | {
            k: v for k, v in flags.items() if v is not None
        }

    def for_tune(self) -> dict[str, Any]:
        """What Tune sees: the scores, per-class and cost numbers and the evaluation count after
        fine-tuning; progress only during pretraining (no `done`: Tune reserves that key)."""
        if self.phase == "pretrain":
            return {k: v for k, v in self.metrics.items() if k in PRETRAIN_PROGRESS}
        numbers = {k: v for k, v in self.metrics.items() if k in FINETUNE_METRICS or "/" in k}
        return numbers | {
            "finetune_evaluation": self.step + 1,
            "finetune_steps": self.metrics["finetune_steps"],
        }

    def for_mlflow(self) -> dict[str, float | int]:
        """The numbers charted in MLflow (the plan is in the trial's config)."""
        return {k: v for k, v in self.metrics.items() if not k.startswith("plan/")}

    def again(self) -> TrialReport:
        return replace(self, replayed=True, gallery=None)
