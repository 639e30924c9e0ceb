"""Rank 0's end of a trial's report path (`reports`): each report to the trial's MLflow run, its
gallery beside the Train run, and the last one to RESULT_FILE, which `finished_report` reads."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from smsweep.engines.store import Location
from smsweep.engines.tracking import TrialTracking
from smsweep.trial.reports import PRECISION_TAG, RESULT_FILE, TrialReport


class Recorder:
    """Rank 0's end of the report path (see the module doc). `run_dir`: the trial's Train run
    (local or in an object store), where galleries and RESULT_FILE go; `tracking`: the trial's
    MLflow run, or None outside a sweep."""

    def __init__(
        self, run_dir: str | Location | None, tracking: TrialTracking | None = None
    ) -> None:
        self.run_dir = Location.of(run_dir) if run_dir is not None else None
        self.run = tracking.open() if tracking is not None else None
        self.reports: list[TrialReport] = []

    def record(self, report: TrialReport, gallery: Path | None = None) -> None:
        """After the report's checkpoint is stored. The gallery is copied beside the run (the
        checkpoint holding it is deleted in time; a pending entry may still need it)."""
        copies = []
        if gallery is not None and self.run_dir is not None:
            copy = self.run_dir / "galleries" / gallery.name
            copy.write_bytes(gallery.read_bytes())
            copies.append(copy)
            report = replace(report, gallery=str(copy))
        self.reports.append(report)
        if not report.replayed:
            self._log(report, copies)
        if report.done and self.run_dir is not None:
            (self.run_dir / RESULT_FILE).write_text(json.dumps({"metrics": report.flat()}))

    def log_again(self, report: TrialReport) -> None:
        """The MLflow entry of a report sent before this attempt, with its own timestamp
        (`TrialReport.logged_at`): stored once whether or not MLflow had it."""
        self._log(report, [])

    def _log(self, report: TrialReport, artifacts: list[Location]) -> None:
        if self.run is None:
            return
        self.run.log(
            report.for_mlflow(),
            step=report.step,
            timestamp=report.logged_at,
            artifacts=artifacts,
            artifact_path="galleries",
            tags={PRECISION_TAG: report.precision} if report.precision else {},
        )


def finished_report(run_dir: str | Path | Location) -> TrialReport | None:
    """The last report of the trial whose Train run is `run_dir`, once it has finished (from
    its RESULT_FILE), else None."""
    try:
        return TrialReport.of(
            json.loads((Location.of(run_dir) / RESULT_FILE).read_text())["metrics"]
        )
    except FileNotFoundError:
        return None
    except (ValueError, KeyError):
        return None  # cut off mid-write (a local file): the run itself decides what follows
