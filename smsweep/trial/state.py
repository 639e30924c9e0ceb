"""The trial's state, typed and checkpointed whole, and the store that writes it with each report.

Each pretraining partition and each fine-tuning evaluation ends with a report and a checkpoint:
`STATE_FILE` (the weights, the optimizer, where the trial is, its compute seconds, the RNG state,
the resolved spec, the tracking run ids, and while it fine-tunes with `finetune.repeats` the
other fine-tunes' states; read with `weights_only=True`) and `META_FILE` (where
the trial is and the report, which tells a restarted trial that it is done, with the timestamp
of the report's MLflow entry). A restarted trial resumes after the last one, and logs that report
to MLflow again first: a kill between the checkpoint and its MLflow entry loses no entry, and an
entry MLflow has is stored once (same step, value and timestamp).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import nn

from smsweep import faults
from smsweep.method import mrm
from smsweep.spec.config import SweepSpec
from smsweep.trial import integrity
from smsweep.trial.reports import TrialReport
from smsweep.trial.resources import trial_cost

STATE_FILE, META_FILE = "state.pt", "meta.json"
Phase = Literal["pretrain", "finetune"]


@dataclass
class TrialState:
    """Where a trial is and what it has spent. `model` and `optimizer` are the state dicts of
    the checkpoint it resumes from (None: a fresh start); `last_report` its last report."""

    phase: Phase = "pretrain"
    partition: int = -1  # the last pretraining partition done (-1: none, or fine-tuning)
    epoch: int = -1  # the last fine-tuning evaluation done
    best_score: float | None = None  # search.score: best, over the evaluations so far
    recent: list[float] = field(default_factory=list)  # search.score: tail, the last scores
    compute_seconds: float = 0.0
    scoring_seconds: float = 0.0
    saved_seconds: float = 0.0  # partition 0 taken from the cache
    run_ids: dict[str, str] = field(default_factory=dict)  # which MLflow runs it belongs to
    model: dict[str, torch.Tensor] | None = None
    optimizer: dict[str, Any] | None = None
    # fine-tunes 1.. of `finetune.repeats` while fine-tuning (`repeats.Repeats`); None: one
    finetunes: list[dict[str, Any]] | None = None
    probe: dict[str, Any] | None = None  # finetune.probe's parked state while fine-tuning
    last_report: dict[str, Any] = field(default_factory=dict)
    last_logged_at: int | None = None  # the last report's MLflow timestamp (ms), if its meta has it

    @property
    def resumed(self) -> bool:
        return self.model is not None

    @property
    def finished(self) -> bool:
        return bool(self.last_report.get("done"))

    def at_pretraining(self, partition: int) -> None:
        self.phase, self.partition, self.epoch = "pretrain", partition, -1

    def at_finetuning(self, epoch: int, best_score: float | None) -> None:
        self.phase, self.partition, self.epoch = "finetune", -1, epoch
        self.best_score = best_score

    def where(self) -> dict[str, Any]:
        """The position keys of a checkpoint (as older checkpoints hold them)."""
        where: dict[str, Any] = {
            "phase": self.phase,
            "partition": self.partition,
            "epoch": self.epoch,
        }
        if self.phase == "finetune":
            where["best_score"] = self.best_score
            if self.recent:
                where["recent"] = list(self.recent)
        return where


class Session(Protocol):
    rank: int

    def report(self, metrics: dict[str, Any], directory: Path | None) -> None: ...


class Recorder(Protocol):
    def record(self, report: TrialReport, gallery: Path | None = None) -> None: ...

    def log_again(self, report: TrialReport) -> None: ...


class Checkpoints:
    """Writes a report's checkpoint and hands both on: to the session (Ray Train, and Tune
    beyond it, or the in-process session), then to the recorder (MLflow, galleries, result).
    Counts the trial's compute seconds between reports."""

    def __init__(
        self,
        spec: SweepSpec,
        session: Session,
        recorder: Recorder | None,
        attempt_started: float,
    ) -> None:
        self.spec, self.session, self.recorder = spec, session, recorder
        self.attempt_started = attempt_started  # wall clock, in the trial's process
        self.started = time.perf_counter()
        # the last report MLflow has, when the checkpoint to resume from was damaged
        self.logged_through: integrity.Position | None = None

    def restore(self, directory: Path | None, run_ids: dict[str, str]) -> TrialState:
        """The state of the checkpoint in `directory`, or a fresh one (None)."""
        if directory is None:
            return TrialState(run_ids=run_ids)
        directory = Path(directory)
        damaged = integrity.damaged(directory, (STATE_FILE, META_FILE))
        if damaged:  # cut short (a lost node, a full disk): never load half a model
            self.logged_through = integrity.logged_through(directory / META_FILE)
            integrity.warn(damaged, "the trial starts again from the beginning")
            return TrialState(run_ids=run_ids)
        meta: dict[str, Any] = {"metrics": {}}
        if (directory / META_FILE).is_file():
            meta = json.loads((directory / META_FILE).read_text())
        saved = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
        if saved["spec"] != self.spec.to_yaml():
            raise ValueError(
                f"checkpoint {directory} was written for a different trial config; "
                "resume with the spec it was written with, or start a new run name"
            )
        torch.set_rng_state(saved["torch_rng"])
        return TrialState(
            phase=saved["phase"],
            partition=saved["partition"],
            epoch=saved["epoch"],
            best_score=saved.get("best_score"),
            recent=list(saved.get("recent", [])),
            compute_seconds=saved["compute_seconds"],
            scoring_seconds=saved.get("scoring_seconds", 0.0),
            saved_seconds=saved.get("saved_seconds", 0.0),
            run_ids=saved["run_ids"] or run_ids,
            model=saved["model"],
            optimizer=saved.get("optimizer"),
            finetunes=saved.get("finetunes"),
            probe=saved.get("probe"),
            last_report=meta["metrics"],
            last_logged_at=meta.get("logged_at"),
        )

    def report(
        self,
        state: TrialState,
        metrics: dict[str, Any],
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        gallery: Path | None = None,
    ) -> float:
        """Report `metrics` with a checkpoint of `state` (rank 0); returns the compute seconds
        since the previous report."""
        now = time.perf_counter()
        seconds, self.started = now - self.started, now
        state.compute_seconds += seconds
        metrics["compute_seconds"] = state.compute_seconds
        state.scoring_seconds += metrics.get("scoring_seconds", 0.0)
        finished = bool(metrics.get("done"))
        if finished:
            wall = time.time() - self.attempt_started
            metrics |= trial_cost(self.spec, wall, state.compute_seconds, state.scoring_seconds)
            metrics["cost/partition0_saved_seconds"] = state.saved_seconds
        if self.session.rank != 0:
            self.session.report(TrialReport.of(metrics).for_tune(), None)
            return seconds
        # A finished trial never trains again: its last checkpoint keeps the final weights only.
        saved = {
            **state.where(),
            # a finished trial exports the plain U-Net (an MRM Rebuilder is training-only)
            "model": (mrm.segmentation_part(model) if finished else model).state_dict(),
            **({} if finished else {"optimizer": optimizer.state_dict()}),
            # the other fine-tunes of finetune.repeats, while they train (the export: fine-tune 0)
            **({"finetunes": state.finetunes} if state.finetunes and not finished else {}),
            **({"probe": state.probe} if state.probe and not finished else {}),
            "compute_seconds": state.compute_seconds,
            "scoring_seconds": state.scoring_seconds,
            "saved_seconds": state.saved_seconds,
            "torch_rng": torch.get_rng_state(),
            "spec": self.spec.to_yaml(),
            "run_ids": state.run_ids,
        }
        logged_at = int(time.time() * 1000)
        with tempfile.TemporaryDirectory() as directory:
            root = Path(directory)
            torch.save(saved, root / STATE_FILE)
            meta = {
                **state.where(),
                "compute_seconds": state.compute_seconds,
                "run_ids": state.run_ids,
                "metrics": metrics,  # the last one tells a restarted trial that it is done
                "logged_at": logged_at,
            }
            (root / META_FILE).write_text(json.dumps(meta))
            integrity.seal(root, (STATE_FILE, META_FILE))  # a reader can tell it is whole
            if gallery is not None:
                (root / gallery.name).write_bytes(gallery.read_bytes())
                gallery.unlink()
                gallery.parent.rmdir()
            report = replace(TrialReport.of(metrics), logged_at=logged_at)
            self.send(report, root, root / gallery.name if gallery else None)
        return seconds

    def log_again(self, state: TrialState) -> None:
        """Rank 0 of a resumed trial: the report of its checkpoint to MLflow again, with the
        entry's own timestamp (MLflow stores it once). A kill after the checkpoint was stored
        and before its MLflow entry was written loses no entry, the score of a finished trial
        included; not the gallery of a pretraining report, whose copy was never made."""
        if self.recorder is None or not state.last_report or state.last_logged_at is None:
            return  # older checkpoints have no timestamp: logged again, they would be doubled
        report = replace(TrialReport.of(state.last_report), logged_at=state.last_logged_at)
        self.recorder.log_again(report)

    def send(self, report: TrialReport, root: Path | None, gallery: Path | None = None) -> None:
        """Rank 0: the report with its checkpoint to the session, then, once the checkpoint is
        stored, to the recorder."""
        logged = self.logged_through
        if logged is not None and integrity.position(report.flat()) <= logged:
            report = report.again()  # MLflow has it: logged before a damaged checkpoint
        self.session.report(report.for_tune(), root)
        faults.pause_for_a_kill(f"log:{report.phase}:{report.step}")  # stored, not yet logged
        if self.recorder is not None:
            self.recorder.record(report, gallery)
