"""The training loop of one trial: its pretraining phase, then its fine-tuning phase.

In a sweep it runs in a Ray Train worker (a `TorchTrainer.fit` costs ~15 s of fixed overhead on
a small machine, so one fit runs the whole trial); `session.LocalSession` runs it in-process.
This module only composes: the context every phase reads (`phases.context`), the state restored
from the last checkpoint (`phases.state`), the collaborators (the scorer, in-process or the Ray
actors of `scoring_actors`; the checkpoint store; the recorder; the partition-0 cache), and the
two phases (`phases.pretraining`, `phases.finetuning`). Budgets are optimizer steps
(`budget.trial_budget`) and the learning rate is a function of the step (`schedule`), so a
resumed trial trains exactly as an uninterrupted one. The data split and the partitions follow
spec.seed; the draws follow the trial's repeat seed (`phases.context.repeat_seed`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from smsweep.engines.recorder import Recorder
from smsweep.engines.session import RayTrainSession, Session
from smsweep.method import build
from smsweep.method.data import Source
from smsweep.method.data.pretraining import open_pretrain_source, trial_splits
from smsweep.method.precision import resolve_precision
from smsweep.method.scoring import InProcessScorer
from smsweep.spec.config import SweepSpec
from smsweep.trial import partition0
from smsweep.trial.budget import trial_budget
from smsweep.trial.context import TrialContext, repeat_seed
from smsweep.trial.finetuning import Finetuning
from smsweep.trial.inputs import TrialInput
from smsweep.trial.masks import PartitionMasks, Scorer
from smsweep.trial.objectives import objective
from smsweep.trial.pretraining import Pretraining
from smsweep.trial.reports import TrialReport
from smsweep.trial.state import Checkpoints, TrialState


def train_loop(config: dict[str, Any]) -> list[TrialReport]:
    """Ray Train entry point (config: {"trial": TrialInput}); returns rank 0's reports of this
    attempt."""
    return Trial(config["trial"], RayTrainSession()).run()


def run_in_process(
    spec: SweepSpec,
    directory: str | Path,
    *,
    source: Source | None = None,
    pretrain_source: Source | None = None,
    device: str | None = None,
    partition0_cache: str | Path | None = None,
) -> list[TrialReport]:
    """The whole trial in this process (no Ray): checkpoints under `directory`; returns this
    attempt's reports. Calling it again resumes after the last checkpoint. `pretrain_source`
    stands for pretrain.data (cross-pretraining). Scoring runs in-process: set
    `resources.scoring_actors: 0`. With `partition0_cache` (a folder), partition 0 comes from
    there when another trial stored it."""
    from smsweep.engines.session import LocalSession
    from smsweep.method.data import open_source

    if spec.resources.scoring_actors:
        raise ValueError("in-process trials score in-process: set resources.scoring_actors: 0")
    trial = TrialInput(
        spec=spec,
        source=source if source is not None else open_source(spec.data, seed=spec.seed),
        run_dir=str(directory),
        partition0_cache=str(partition0_cache) if partition0_cache else None,
        pretrain_source=pretrain_source,
    )
    return Trial(trial, LocalSession(directory, device=device)).run()


class Trial:
    """One trial's loop: what is left of its pretraining, then of its fine-tuning."""

    def __init__(self, given: TrialInput, session: Session) -> None:
        spec = given.spec
        # What pretrains: the fine-tuning source itself, or pretrain.data (cross-pretraining).
        cross = given.pretrain_source
        cross = cross if cross is not None else open_pretrain_source(spec)
        splits = trial_splits(spec, given.source, cross)
        device = session.device
        self.context = TrialContext(
            spec=spec,
            seed=repeat_seed(spec),
            source=given.source,
            pretrain_source=cross if cross is not None else given.source,
            splits=splits,
            budget=trial_budget(spec, splits, workers=session.world),
            device=device,
            precision=resolve_precision(
                spec.model.precision, device, channels_last=spec.model.channels_last
            ),
            rank=session.rank,
            world=session.world,
        )
        self.session = session
        tracking = given.tracking
        self.recorder = Recorder(given.run_dir, tracking) if session.rank == 0 else None
        # when this attempt began, in the trial's process (a Train worker starts seconds later)
        started_at = float(given.started_at or time.time())
        self.checkpoints = Checkpoints(spec, session, self.recorder, started_at)
        # the trial's runs, kept in its checkpoints (which run a checkpoint belongs to)
        run_ids = {"sweep": tracking.sweep_run_id, "trial": tracking.run_id} if tracking else {}
        with session.restored() as directory:
            self.state: TrialState = self.checkpoints.restore(directory, run_ids)
        self.partition0 = None  # the cache entry of this trial's partition 0
        if given.partition0_cache and session.world == 1:  # DDP: every rank has its own RNG
            self.partition0 = partition0.CachedPartition(
                given.partition0_cache,
                spec,
                self.context.seed,
                str(self.context.precision),
                device.type,
            )

    def run(self) -> list[TrialReport]:
        """Train what is left of the trial; rank 0's reports of this attempt (others: [])."""
        state, context = self.state, self.context
        self.checkpoints.log_again(state)  # the entry a kill may have cut off, stored once
        if state.finished:
            # Finished, but killed before the trial's result file was written: report it again
            # (replayed: log_again has just made sure MLflow has it).
            self.checkpoints.send(TrialReport.of(state.last_report).again(), None)
            return self.recorder.reports if self.recorder else []
        pretrained = None
        if context.spec.masking.strategy != "none" and state.phase == "pretrain":
            scorer = self._scorer()
            try:
                pretrained = self._pretraining(scorer).run(state)
            finally:
                scorer.close()
        Finetuning(context, self.checkpoints, self.session).run(state, pretrained)
        return self.recorder.reports if self.recorder else []

    def _pretraining(self, scorer: Scorer) -> Pretraining:
        spec, context = self.context.spec, self.context
        strategy, warmup = build.masking_strategy(spec), build.warmup_strategy(spec)
        masks = PartitionMasks(context, strategy, warmup, scorer, build.mask_refresh(spec))
        chosen = objective(context, strategy, warmup, masks)
        return Pretraining(context, chosen, self.checkpoints, self.session, self.partition0)

    def _scorer(self) -> Scorer:
        """The scoring actors (rank 0, `resources.scoring_actors`, a model-based strategy with
        partitions left to score, reconstruction), else scoring in this process. The actors
        start now, while partition 0 trains (until one has, the trial scores blocks itself);
        they load the pretraining source."""
        context, spec = self.context, self.context.spec
        strategy = build.masking_strategy(spec)
        first = self.state.partition + 1 if self.state.resumed else 0
        scores_later = strategy.needs_model and max(first, 1) < spec.pretrain.partitions
        reconstruction = spec.pretrain.objective == "reconstruction"
        if context.rank == 0 and spec.resources.scoring_actors and scores_later and reconstruction:
            from smsweep.engines.scoring_actors import ActorScorer  # Ray: only where actors score

            return ActorScorer(spec, context.pretrain_source)
        size = spec.data.image_size
        return InProcessScorer(strategy, context.pretrain_source, size, context.precision)
