"""The sweep dashboard: one self-contained HTML page per experiment directory.

`build_report(experiment_dir)` reads the sweep from MLflow (the parent run and its trial runs, via
the URI saved in `smsweep.json`), from Tune's state on disk (trial statuses and searched values,
the galleries under `train/`) and from the sweep's Optuna storage (the study), draws the sections
that `dashboards/sweep.yaml` lists with the template it names, writes
`experiment_dir/report.html` and logs it as an artifact of the sweep's parent run. The experiment
directory may be in an object store (s3://...): the page is built here and uploaded.

The page needs no network: plotly.js is inlined once and images are embedded as base64. A section
whose data is missing (no selective trial, too few trials for importances, ...) shows a short note.

Here: `main` and `build_report`. `load` reads the sweep (`Trial`, `Sweep`), `sections` holds
one builder per section kind, `page` loads the dashboard definition and renders the page, and
`helpers` the small functions they share.
"""

from __future__ import annotations

from pathlib import Path

from smsweep.engines import tracking
from smsweep.engines.store import Location
from smsweep.report.helpers import MISSING
from smsweep.report.load import SETTINGS_FILE, Sweep, Trial, load_sweep, ranked
from smsweep.report.page import (
    DASHBOARD_DIR,
    DASHBOARD_FILE,
    Section,
    load_dashboard,
    render,
)
from smsweep.report.sections import SECTIONS

REPORT_FILE = "report.html"


def main(path: str | Path | Location) -> int:
    """`python -m smsweep report PATH`: build the page; its path is the last line printed."""
    written = build_report(path)
    print(written)
    return 0


def build_report(experiment_dir: str | Path | Location) -> Location:
    """Write `experiment_dir/report.html`, log it to the sweep's parent run, return where."""
    dashboard = load_dashboard()
    sweep = load_sweep(experiment_dir, dashboard)
    page = render(sweep, dashboard).encode("utf-8")
    target = sweep.experiment_dir / REPORT_FILE
    target.write_bytes(page)
    with target.local_file() as local:
        tracking.SweepRun(sweep.mlflow_uri, "", sweep.run_id).client().log_artifact(
            sweep.run_id, str(local)
        )
    return target


__all__ = [
    "DASHBOARD_DIR",
    "DASHBOARD_FILE",
    "MISSING",
    "REPORT_FILE",
    "SECTIONS",
    "SETTINGS_FILE",
    "Section",
    "Sweep",
    "Trial",
    "build_report",
    "load_dashboard",
    "load_sweep",
    "main",
    "ranked",
    "render",
]
