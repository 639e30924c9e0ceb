"""The verdict where users compare runs: a sweep's runs, written by the sweep's own tracking code
into a real sqlite store, served by a real `mlflow server` and drawn by its UI in headless
Chromium. The trial runs carry their arms' names and the parent run's description the verdict."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from smsweep.engines import tracking
from smsweep.engines.store import Location
from smsweep.spec.load import validate_spec
from smsweep.summary import SweepSummary, finish, ranked
from smsweep.verdict.arms import CONFIGURATION, CONTROL, TRIAL_INDEX, Arm
from smsweep.verdict.stats import Verdict
from tests.test_report import _browser
from tests.test_reliability import _free_port, _stop

REPEATS = 3
ARMS = {  # the trial config of each arm (without its repeat) and its mIoU per repeat
    "config-1": (
        {"masking.strategy": "random", "masking.ratio": 0.592, "masking.patch_size": 4,
         CONFIGURATION: 1},
        [0.41, 0.43, 0.42],
    ),
    "config-2": (
        {"masking.strategy": "selective", "masking.ratio": 0.55, "masking.patch_size": 12,
         "masking.samples": 5, CONFIGURATION: 2},
        [0.46, 0.47, 0.45],
    ),
    "control:none": ({"masking.strategy": "none", CONTROL: "none"}, [0.38, 0.40, 0.39]),
}  # fmt: skip


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Served:
    """A finished sweep's MLflow store: 3 arms x 3 repeats, each trial's run opened as a trial
    opens it (`Arm.run_name`, `Arm.tags`), the sweep ended by `summary.finish`."""
    root = tmp_path_factory.mktemp("ui")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    spec = validate_spec(
        {"name": "ui", "search": {"num_samples": 2, "repeats": REPEATS, "controls": ["none"]}}
    )
    experiment_dir = root / "runs" / "ui"
    experiment_dir.mkdir(parents=True)
    run = tracking.start_sweep_run(uri, "ui", "ui", {}, experiment_dir)
    rows = []
    for config, scores in ARMS.values():
        for repeat, score in enumerate(scores):
            arm = Arm.of({**config, TRIAL_INDEX: repeat})
            trial_id = f"trial_{len(rows):05d}"
            trial = tracking.TrialRun(
                run,
                trial_id,
                arm.run_name(REPEATS),
                arm.params,
                tags=arm.tags() | {tracking.PHASE: tracking.SEARCH},
            )
            trial.log({"miou": score}, step=0)
            trial.end("FINISHED")
            rows.append({"trial_id": trial_id, "status": "TERMINATED", "miou": score, "arm": arm})
    summary = SweepSummary(
        Location.of(experiment_dir),
        uri,
        rows=ranked(rows, "miou", "max"),
        trial_ids={row["trial_id"] for row in rows},
    )
    finish(spec, run, summary, echo=lambda line: None)
    return Served(uri, run, [row["arm"].run_name(REPEATS) for row in rows], summary.verdict)


@pytest.fixture(scope="module")
def server(sweep, tmp_path_factory) -> str:
    """`mlflow server` over the sweep's store, on 127.0.0.1 only; stopped when the module ends."""
    root = tmp_path_factory.mktemp("server")
    port = _free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1", "--backend-store-uri", sweep.uri]
    process = subprocess.Popen(
        command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    address = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{address}/health", timeout=2).read()
            break
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, "no MLflow server"
            time.sleep(0.5)
    yield address
    _stop(process)


@dataclass(frozen=True)
class Served:
    uri: str
    run: tracking.SweepRun
    names: list[str]  # the trial runs' names, as the trials open them
    verdict: Verdict


def _page_text(address: str, route: str, profile: Path) -> str:
    """The text the MLflow UI draws at `route` (its app routes after `#`), once its requests
    have been answered: the DOM Chromium holds, without tags."""
    command = [_browser(), "--headless", "--no-sandbox", "--disable-gpu"]
    command += ["--disable-dev-shm-usage", "--no-first-run", f"--user-data-dir={profile}"]
    command += ["--window-size=1600,2000", "--virtual-time-budget=15000", "--dump-dom"]
    done = subprocess.run(
        [*command, f"{address}/#{route}"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", done.stdout, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())


@pytest.mark.slow
def test_the_mlflow_ui_shows_the_trial_runs_by_arm_and_the_verdict_on_the_sweeps_run(
    sweep, server, tmp_path
):
    runs = tracking.trial_runs(sweep.run)
    assert sorted(run.info.run_name for run in runs) == sorted(sweep.names)
    assert {run.data.tags[tracking.PHASE] for run in runs} == {tracking.SEARCH}
    found = urllib.request.urlopen(
        urllib.request.Request(
            f"{server}/api/2.0/mlflow/runs/search",
            data=json.dumps({"experiment_ids": [sweep.run.experiment_id]}).encode(),
            headers={"Content-Type": "application/json"},
        ),
        timeout=30,
    )
    served = {run["info"]["run_name"] for run in json.load(found)["runs"]}
    assert served == {*sweep.names, "ui"}

    # The experiment's table, sorted by mIoU (which lists the trial runs beside their parent).
    table = _page_text(
        server,
        f"/experiments/{sweep.run.experiment_id}/runs?orderByKey=metrics.%60miou%60&orderByAsc=false",
        tmp_path / "profile",
    )
    for name in sweep.names:
        assert name in table, name
    assert "config-2 strategy=selective ratio=0.55 patch_size=12 samples=5 · repeat 2/3" in table

    # The sweep's run: its description is the verdict, and its child runs are listed by name.
    page = _page_text(
        server, f"/experiments/{sweep.run.experiment_id}/runs/{sweep.run.run_id}",
        tmp_path / "profile",
    )  # fmt: skip
    description = page[page.index("Description") : page.index("Metrics (")]
    assert "Verdict: miou (last validation)" in description
    for sentence in sweep.verdict.sentences():
        assert " ".join(sentence.split()) in description, sentence
    best = sweep.verdict.best
    assert f"config-2 {best.label} 3 {best.interval.mean:.3f}" in description
    assert "control none 3 0.390" in description
    children = page[page.index("Child runs") :]
    for name in sweep.names:
        assert name in children, name
